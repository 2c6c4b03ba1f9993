//! What every Vigil service shares, so that each service crate only holds its
//! own domain logic and one process can host several services:
//!
//! - [`config`]: layered, typed configuration (defaults → file → `VIGIL_…`
//!   environment with `__` nesting → validation). Unknown keys stop start-up.
//! - [`telemetry`]: one tracing setup (env filter, plain or JSON).
//! - [`grpc`]: a tonic server with timeout, concurrency limit, load shedding,
//!   request tracing and metrics, plus gRPC health checking and reflection.
//! - [`http`]: an axum server with the same limits and `/healthz`, `/readyz`,
//!   `/metrics` (Prometheus text exposition).
//! - [`shutdown`]: SIGTERM/SIGINT handling that lets servers drain.
//! - [`auth`]: projects and their API keys.
//! - [`service`]: the shared `main` of every service binary.

pub mod auth;
pub mod config;
pub mod error;
pub mod grpc;
pub mod http;
#[cfg(feature = "http-client")]
pub mod http_client;
pub mod metrics;
pub mod rate;
pub mod service;
pub mod shutdown;
pub mod telemetry;
pub mod time;

pub use error::{ErrorKind, RuntimeError, ServiceError};
pub use metrics::{Metrics, Readiness};
pub use shutdown::Shutdown;
