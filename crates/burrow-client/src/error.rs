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

/// What kind of failure stopped a sync, so an app (a status badge, a dashboard, the demo's
/// report) can react without parsing messages. [`Error::failure_kind`] maps every error to one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The app reported no network; nothing was attempted.
    Offline,
    /// The server could not be reached (refused, unreachable, DNS, TLS handshake).
    Unreachable,
    /// The server did not answer in time.
    Timeout,
    /// The connection broke mid-exchange on every resume of the attempt.
    ConnectionLost,
    /// The server refused the token (401): a new token is needed.
    Unauthorized,
    /// The server asked the client to slow down (429).
    RateLimited,
    /// The server failed or is unavailable (5xx).
    ServerError,
    /// The server refused the request itself (another 4xx: too large, client id taken, …).
    Refused,
    /// The response could not be decoded or broke the protocol.
    BadResponse,
    /// The client is misconfigured (an unreadable root certificate, an invalid schema, a
    /// database opened without one).
    Configuration,
    /// Local storage failed (SQLite, the op journal, a damaged file).
    Storage,
    /// The app asked for something that cannot be done.
    Invalid,
}

impl FailureKind {
    /// The kind's stable name, as serialized (`connection_lost`, `rate_limited`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Offline => "offline",
            FailureKind::Unreachable => "unreachable",
            FailureKind::Timeout => "timeout",
            FailureKind::ConnectionLost => "connection_lost",
            FailureKind::Unauthorized => "unauthorized",
            FailureKind::RateLimited => "rate_limited",
            FailureKind::ServerError => "server_error",
            FailureKind::Refused => "refused",
            FailureKind::BadResponse => "bad_response",
            FailureKind::Configuration => "configuration",
            FailureKind::Storage => "storage",
            FailureKind::Invalid => "invalid",
        }
    }

    /// Whether the failure is the network's (the device's link, not the server or the app).
    pub fn is_network(self) -> bool {
        matches!(
            self,
            FailureKind::Offline
                | FailureKind::Unreachable
                | FailureKind::Timeout
                | FailureKind::ConnectionLost
        )
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Error {
    /// The HTTP status and the server's stable error code, when the server answered with an
    /// error.
    pub fn server_status(&self) -> Option<(u16, &str)> {
        match self {
            Error::Transport(t) => t.server_status(),
            _ => None,
        }
    }

    /// The kind of failure this is (see [`FailureKind`]).
    ///
    /// ```
    /// use burrow_client::{Error, FailureKind, TransportError};
    ///
    /// let busy = Error::Transport(TransportError::Status {
    ///     status: 429,
    ///     code: "rate_limited".into(),
    ///     message: "slow down".into(),
    ///     retry_after_ms: Some(1_000),
    /// });
    /// assert_eq!(busy.failure_kind(), FailureKind::RateLimited);
    /// assert!(Error::Offline.failure_kind().is_network());
    /// ```
    pub fn failure_kind(&self) -> FailureKind {
        match self {
            Error::Transport(t) => t.failure_kind(),
            Error::Offline => FailureKind::Offline,
            Error::Protocol(_) => FailureKind::BadResponse,
            Error::Invalid(_) => FailureKind::Invalid,
            Error::Schema(_) | Error::NotInitialized(_) => FailureKind::Configuration,
            Error::Sqlite(_)
            | Error::Corrupt(_)
            | Error::Journal { .. }
            | Error::Io { .. }
            | Error::Unrecoverable { .. } => FailureKind::Storage,
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
