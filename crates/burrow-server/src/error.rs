//! Server error types: store failures and startup failures.

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The underlying SQLite database failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored row could not be decoded (the data file is damaged).
    #[error("stored row {table}/{row_id} is unreadable: {source}")]
    Corrupt {
        /// Table of the row.
        table: String,
        /// Primary key.
        row_id: String,
        /// Decoder error.
        #[source]
        source: prost::DecodeError,
    },
    /// The client id is bound to another user.
    #[error("client id {client_id} belongs to another user")]
    ClientBound {
        /// The replayed client id.
        client_id: String,
    },
    /// The blocking task running the query died.
    #[error("store task failed: {0}")]
    Task(String),
    /// A sync rule's parameter lookup failed.
    #[error("sync rule lookup failed: {0}")]
    Rules(String),
}

/// The error a failpoint injects: an SQLite I/O error, as a failing disk would give.
#[cfg(feature = "failpoints")]
pub fn injected(point: &str) -> StoreError {
    StoreError::Sqlite(rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR),
        Some(format!("injected by failpoint {point}")),
    ))
}

/// The server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Opening or migrating the store failed.
    #[error("cannot open store: {0}")]
    Store(#[from] StoreError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address as given.
        addr: String,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// The schema names a `custom:NAME` resolver that was not registered.
    #[error(
        "column {column} uses policy custom:{name}, but no resolver named \"{name}\" is registered"
    )]
    MissingResolver {
        /// `table.column`.
        column: String,
        /// The resolver name.
        name: String,
    },
    /// The JWKS file of `[auth] jwks_file` is unusable.
    #[error(transparent)]
    Jwks(#[from] crate::auth::JwksError),
    /// A limit has a value the server cannot work with.
    #[error("limit {name}: {message}")]
    InvalidLimit {
        /// The limit's name (its field in `Limits` and its key in `[limits]`).
        name: &'static str,
        /// What is wrong.
        message: String,
    },
    /// Reading or creating the data directory or secret failed.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The path involved.
        path: String,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
}
