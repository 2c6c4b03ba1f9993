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

/// What kind of failure a domain error is, for the one mapping to gRPC
/// status codes and HTTP status codes below. A client always learns what was
/// wrong and whether retrying may help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is wrong; retrying it unchanged fails again.
    InvalidArgument,
    NotFound,
    Unauthenticated,
    PermissionDenied,
    /// A limit was hit; retry later or send less.
    ResourceExhausted,
    /// A dependency is down or overloaded; retrying later may succeed.
    Unavailable,
    /// Vigil's own fault.
    Internal,
}

impl ErrorKind {
    pub fn grpc_code(self) -> tonic::Code {
        match self {
            Self::InvalidArgument => tonic::Code::InvalidArgument,
            Self::NotFound => tonic::Code::NotFound,
            Self::Unauthenticated => tonic::Code::Unauthenticated,
            Self::PermissionDenied => tonic::Code::PermissionDenied,
            Self::ResourceExhausted => tonic::Code::ResourceExhausted,
            Self::Unavailable => tonic::Code::Unavailable,
            Self::Internal => tonic::Code::Internal,
        }
    }

    pub fn http_status(self) -> http::StatusCode {
        match self {
            Self::InvalidArgument => http::StatusCode::BAD_REQUEST,
            Self::NotFound => http::StatusCode::NOT_FOUND,
            Self::Unauthenticated => http::StatusCode::UNAUTHORIZED,
            Self::PermissionDenied => http::StatusCode::FORBIDDEN,
            Self::ResourceExhausted => http::StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable => http::StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => http::StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Implemented by every domain error that reaches a client.
pub trait ServiceError: std::error::Error {
    fn kind(&self) -> ErrorKind;

    /// The gRPC status for this error, with its message.
    fn to_status(&self) -> tonic::Status {
        tonic::Status::new(self.kind().grpc_code(), self.to_string())
    }

    /// The HTTP status and message for this error.
    fn to_http(&self) -> (http::StatusCode, String) {
        (self.kind().http_status(), self.to_string())
    }
}

/// Binds a TCP listener, naming the address when it cannot.
/// An error with its sources, `outer: inner: innermost`: library errors
/// often say little at the top ("error sending request") and the cause
/// below.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

pub(crate) async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, RuntimeError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| RuntimeError::Bind { addr, source })
}
