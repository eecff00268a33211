//! The embeddable Burrow client: the app's SQLite database is the source of truth; writes to
//! synced tables are captured by triggers into a persistent outbox in the same transaction;
//! [`Client::sync`] uploads ops and downloads changes by cursor, each page applied atomically
//! with the cursor, pending local edits kept visible on top.

pub mod apply;
pub mod client;
pub mod ddl;
pub mod error;
pub mod journal;
pub mod lanes;
pub mod live;
pub mod merged;
pub mod network;
pub mod open;
pub mod outbox;
pub mod quarantine;
pub mod recovery;
pub mod runner;
pub mod sql_value;
pub mod subscriptions;
pub mod tls;
pub mod transport;

pub use client::{
    Client, ClientOptions, ExecReport, InFlightStatus, LostWrite, RejectedOp, Resolution, Status,
    SyncReport,
};
pub use error::{Error, FailureKind, Result};
pub use network::{Network, NetworkPolicy, NetworkState};
pub use recovery::Recovery;
pub use runner::{RunOptions, SyncEvent, SyncState, TokenProvider};
pub use subscriptions::SubscriptionStatus;
pub use tls::ExtraRoots;
pub use transport::{
    HttpTimeouts, HttpTransport, LiveEndpoint, TrafficStats, Transport, TransportError,
};
