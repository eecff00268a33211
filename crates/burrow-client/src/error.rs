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
    /// The app asked for something that cannot be done (e.g. resolving a conflict that is not
    /// open); nothing changed.
    #[error("{0}")]
    Invalid(String),
    /// The app reported no network: nothing was attempted, nothing changed.
    #[error("offline: no sync attempted (the app reported no network)")]
    Offline,
    /// The server answered something the protocol does not allow.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// Reading or writing the op journal (`<db>.journal`) failed.
    #[error("op journal {path}: {source}")]
    Journal {
        /// The journal file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Moving a damaged database file aside failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The database is damaged and cannot be rebuilt automatically: no schema was given and
    /// neither the op journal nor the damaged file holds one. Nothing was changed on disk.
    #[error(
        "{path} is damaged ({reason}) and cannot be rebuilt: no op journal holds its schema; \
         open it with a schema (Client::open, or --schema) to rebuild it from the server"
    )]
    Unrecoverable {
        /// The database file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl Error {
    /// Whether retrying later may succeed (network trouble, server busy) as opposed to
    /// needing action (auth, configuration).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Transport(t) => t.is_retryable(),
            Error::Offline => true,
            Error::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                matches!(
                    e.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                )
            }
            _ => false,
        }
    }

    /// Whether SQLite reports the database file as damaged (`SQLITE_CORRUPT`) or not a
    /// database at all (`SQLITE_NOTADB`). Reopening the client rebuilds such a database.
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            Error::Sqlite(rusqlite::Error::SqliteFailure(e, _))
                if matches!(
                    e.code,
                    rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase
                )
        )
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
