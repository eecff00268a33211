//! Client error types.

use crate::transport::TransportError;

/// Anything the client library can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// SQLite refused a statement or the file is unusable; the code stays matchable.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The schema file is invalid or cannot replace the one the database is at.
    #[error(transparent)]
    Schema(#[from] burrow_core::SchemaError),
    /// The database has no Burrow metadata and no schema was supplied.
    #[error("{0} is not a Burrow database yet: pass --schema (Client::open) to create it")]
    NotInitialized(String),
    /// Stored internal state is unreadable (damaged file or a bug).
    #[error("corrupt internal state: {0}")]
    Corrupt(String),
    /// Talking to the server failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The server answered something the protocol does not allow.
    #[error("protocol violation: {0}")]
    Protocol(String),
}

impl Error {
    /// Whether retrying later may succeed (network trouble, server busy) as opposed to
    /// needing action (auth, configuration).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Transport(t) => t.is_retryable(),
            Error::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                matches!(
                    e.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                )
            }
            _ => false,
        }
    }
}

/// The error a failpoint injects: an SQLite I/O error, as a failing disk would give.
#[cfg(feature = "failpoints")]
pub fn injected(point: &str) -> Error {
    Error::Sqlite(rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR),
        Some(format!("injected by failpoint {point}")),
    ))
}

/// Result alias for the client library.
pub type Result<T> = std::result::Result<T, Error>;
