//! The in-memory controller side of the runner protocol, as a process: for running the
//! runner by hand against moto or LocalStack.
//!
//! `cargo run -p hibernator-proto --features testing --example fake-controller`
//!
//! Listens on 127.0.0.1:9444 (or `FAKE_CONTROLLER_ADDR`), accepts the bearer token in
//! `FAKE_CONTROLLER_TOKEN` (default `local-token`), keeps restore records in memory (first
//! record per resource wins) and prints each new record. Ctrl-C stops it.

use std::collections::BTreeMap;
use std::time::Duration;

use hibernator_proto::testing::FakeController;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::var("FAKE_CONTROLLER_ADDR").unwrap_or_else(|_| "127.0.0.1:9444".into());
    let token = std::env::var("FAKE_CONTROLLER_TOKEN").unwrap_or_else(|_| "local-token".into());
    let controller = FakeController::start_at(addr.parse()?, &token, "local").await?;
    println!(
        "fake controller on {} (restore data in memory; Ctrl-C stops it)",
        controller.endpoint()
    );
    let mut shown = BTreeMap::new();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        for (key, value) in controller.records() {
            if shown.get(&key) != Some(&value) {
                println!("record {key} = {value}");
                shown.insert(key, value);
            }
        }
    }
}
