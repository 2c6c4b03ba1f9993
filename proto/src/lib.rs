//! Vigil's own gRPC contracts. Services meet only through these packages:
//! `vigil.telemetry.v1` (agent → ingest), `vigil.query.v1` (readers → query),
//! `vigil.alerting.v1` and `vigil.heartbeat.v1`.
//!
//! Generated at build time from `proto/` by `tonic-prost-build` fed with the
//! pure-Rust `protox` compiler, so no system `protoc` is needed.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

/// Encoded `FileDescriptorSet` of every Vigil package, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/vigil_descriptor.bin"));

pub mod telemetry {
    pub mod v1 {
        tonic::include_proto!("vigil.telemetry.v1");
    }
}

pub mod query {
    pub mod v1 {
        tonic::include_proto!("vigil.query.v1");
    }
}

pub mod alerting {
    pub mod v1 {
        tonic::include_proto!("vigil.alerting.v1");
    }
}

pub mod heartbeat {
    pub mod v1 {
        tonic::include_proto!("vigil.heartbeat.v1");
    }
}
