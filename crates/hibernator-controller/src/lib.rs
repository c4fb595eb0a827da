//! The Hibernator controller. `main.rs` parses flags and calls [`run`]; the reconcile pipeline
//! is fetch -> validate -> resolve references -> decide (pure, [`decide`]) -> apply (Jobs,
//! restore data, Events) -> one status patch when something changed.

pub mod clock;
pub mod decide;
pub mod jobs;
pub mod restore;
