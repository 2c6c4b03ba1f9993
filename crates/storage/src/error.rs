use std::path::PathBuf;

/// Storage failures. [`StorageError::is_transient`] tells callers whether a
/// retry may succeed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error(
        "{service} cannot run on its own with the embedded redb backend: redb is one file opened by one process. \
         Run the whole suite in one process with `vigil up`, or set storage.backend = \"clickhouse\" for split deployments"
    )]
    RedbNeedsMonolith { service: &'static str },
    #[error("cannot open store {path}: {message}")]
    Open { path: PathBuf, message: String },
    #[error("store {path} is already open in another process (redb is single-process)")]
    AlreadyOpen { path: PathBuf },
    #[error("invalid data: {0}")]
    InvalidData(String),
    #[error("storage I/O failed: {0}")]
    Io(String),
    #[error("corrupt record in store: {0}")]
    Corrupt(String),
}

impl StorageError {
    /// Whether the same request may succeed later (disk full, I/O trouble).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Io(_))
    }
}

macro_rules! io_from {
    ($($t:ty),*) => {$(
        impl From<$t> for StorageError {
            fn from(e: $t) -> Self {
                Self::Io(e.to_string())
            }
        }
    )*};
}

io_from!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

impl vigil_runtime::ServiceError for StorageError {
    fn kind(&self) -> vigil_runtime::ErrorKind {
        use vigil_runtime::ErrorKind;
        match self {
            Self::InvalidData(_) => ErrorKind::InvalidArgument,
            Self::Io(_) | Self::AlreadyOpen { .. } => ErrorKind::Unavailable,
            Self::RedbNeedsMonolith { .. } | Self::Open { .. } | Self::Corrupt(_) => {
                ErrorKind::Internal
            }
        }
    }
}
