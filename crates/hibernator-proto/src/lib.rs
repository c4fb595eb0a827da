//! Generated bindings of `proto/hibernator/runner/v1/runner.proto`: the protocol between the
//! runners and the controller.

/// Version 1 of the runner protocol.
pub mod v1 {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("hibernator.runner.v1");
}

#[cfg(feature = "testing")]
pub mod testing;

/// Metadata key carrying the runner's bearer token.
pub const AUTHORIZATION: &str = "authorization";

/// The audience runner tokens are issued for.
pub const TOKEN_AUDIENCE: &str = "hibernator";
