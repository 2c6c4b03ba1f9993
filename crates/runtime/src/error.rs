use std::net::SocketAddr;

/// Errors of the shared runtime.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{server} server failed: {message}")]
    Serve { server: String, message: String },
    #[error("cannot set up gRPC reflection: {0}")]
    Reflection(String),
    #[error("invalid endpoint `{endpoint}`: {message}")]
    Endpoint { endpoint: String, message: String },
}
