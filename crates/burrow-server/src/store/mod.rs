//! The storage boundary of the server. A [`ServerStore`] owns rows, the dedup/change record of
//! every op and the conflict log; it applies each local transaction atomically with the shared
//! resolution rules of `burrow_core::resolve`. SQLite ([`SqliteServerStore`]) is the default;
//! PostgreSQL implements the same trait later.

mod conflict_log;
mod scope;
mod sqlite;

pub use sqlite::SqliteServerStore;

use crate::error::StoreError;
use crate::validate::Rejection;
use burrow_core::conflict::ConflictEntry;
use burrow_core::resolve::CustomResolvers;
use burrow_core::rules::{Denied, Subscription, SyncRules};
use burrow_core::{ClaimSet, Cursor, Op, OutcomeKind, RowChange, Schema};
use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;

/// What conflict resolution needs besides the ops: the served schema (each column's policy)
/// and the registered custom resolvers.
#[derive(Debug, Clone)]
pub struct ResolveEnv {
    /// The schema the server serves.
    pub schema: Arc<Schema>,
    /// `custom:NAME` resolvers by name.
    pub custom: Arc<CustomResolvers>,
    /// Sync rules and write permissions (`burrow.toml`); `None`: every user reads and writes
    /// everything.
    pub rules: Option<Arc<SyncRules>>,
}

impl ResolveEnv {
    /// An environment with no custom resolvers and no sync rules.
    pub fn new(schema: Schema) -> ResolveEnv {
        ResolveEnv {
            schema: Arc::new(schema),
            custom: Arc::new(CustomResolvers::new()),
            rules: None,
        }
    }
}

/// Where a client stands in selective sync (carried in its cursor; docs/protocol.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScopePosition {
    /// Hash of the bucket set the client holds completely (0 = none yet).
    pub scope: u64,
    /// Catch-up of newly granted buckets: rows up to this sequence were sent.
    pub catchup_after: u64,
    /// Hash of the buckets being caught up.
    pub catchup_target: u64,
}

/// What a pull under sync rules needs to know about the requester.
#[derive(Debug, Clone)]
pub struct ScopeRequest {
    /// The rules.
    pub rules: Arc<SyncRules>,
    /// The served schema (column types for lookups).
    pub schema: Arc<Schema>,
    /// The requester's token claims (`sub`, `role`, …).
    pub claims: ClaimSet,
    /// The app's subscriptions to parameterised streams.
    pub subscriptions: Vec<Subscription>,
    /// Server time, for `today()`.
    pub now_ms: u64,
    /// Rows the same request's ops just wrote `(table, row id)`: those outside the grants are
    /// evicted from the writer's device (it may write what it may not read).
    pub written: Vec<(String, String)>,
    /// Where the client stands.
    pub position: ScopePosition,
}

/// One uploaded op after validation.
#[derive(Debug, Clone)]
pub struct IngestOp {
    /// The op's id within its client.
    pub client_seq: u64,
    /// Hash of the op as sent, to tell a retry from an id reused for another payload.
    pub payload_hash: u64,
    /// The validated op, or why it was refused.
    pub op: Result<Op, Rejection>,
}

/// One local transaction of an upload: applied all-or-nothing.
#[derive(Debug, Clone)]
pub struct IngestTx {
    /// The client's transaction number.
    pub tx_id: u64,
    /// Its ops in client order.
    pub ops: Vec<IngestOp>,
    /// More parts of this transaction follow in later requests: hold these ops.
    pub more_parts: bool,
}

/// An authenticated upload.
#[derive(Debug, Clone)]
pub struct IngestRequest {
    /// The authenticated user (`sub`).
    pub user_id: String,
    /// The uploading device.
    pub client_id: String,
    /// Local transactions in upload order.
    pub txs: Vec<IngestTx>,
    /// Server wall time, recorded with conflicts.
    pub now_ms: u64,
    /// The uploading user's token claims (for `prefer` rules and custom resolvers).
    pub claims: ClaimSet,
    /// How far the device's clock is ahead of the server's (negative: behind), measured
    /// from this request; op times are corrected by it (`docs/design/time.md`).
    pub clock_offset_ms: i64,
    /// Policies and resolvers.
    pub env: ResolveEnv,
}

/// The store's answer to an upload.
#[derive(Debug, Clone)]
pub struct IngestResult {
    /// `(client_seq, outcome, change seq)` for every op, in request order; the change seq is
    /// the sequence of the change the op made (0 when it changed nothing).
    pub outcomes: Vec<(u64, OutcomeKind, u64)>,
    /// The head sequence after the commit: a client whose cursor reaches it holds the
    /// results of all these ops.
    pub head_seq: u64,
    /// Under sync rules: the buckets the commit wrote to (live pushes go to their holders);
    /// `None` when anyone may be concerned (no rules, or a write to a table lookups read).
    pub touched: Option<BTreeSet<String>>,
}

/// A download request.
#[derive(Debug, Clone)]
pub struct PullRequest {
    /// Where the client is.
    pub cursor: Cursor,
    /// Upper bound on the page's uncompressed size.
    pub page_bytes_max: usize,
    /// Most rows the page reads (rows left out as the client's own count too).
    pub page_rows_max: usize,
    /// Leave out fields (and tombstones) last written by this replica: the client learnt
    /// them from its ops' outcomes. `None` sends everything.
    pub exclude_replica: Option<u64>,
    /// The requesting device's replica tag: conflict records are sent only to the devices
    /// involved in them.
    pub audience: u64,
    /// Selective sync: read only what the rules grant the requester (`None`: everything).
    pub scope: Option<ScopeRequest>,
}

/// One page of changes.
#[derive(Debug, Clone)]
pub struct Page {
    /// Rows changed after the cursor, in order of their latest change.
    pub changes: Vec<RowChange>,
    /// The cursor to store with this page.
    pub cursor: Cursor,
    /// More pages follow.
    pub more: bool,
    /// The server's head sequence when the page was read.
    pub head_seq: u64,
    /// Selective sync: the position to store with the cursor.
    pub position: ScopePosition,
    /// Subscriptions the rules refused, with the reason.
    pub refused: Vec<(Subscription, Denied)>,
    /// Under sync rules: the buckets the requester holds now.
    pub grants: Option<BTreeSet<String>>,
}

/// The server's storage backend.
pub trait ServerStore: Send + Sync + 'static {
    /// Deduplicates, resolves and commits an upload; answers per op.
    fn ingest(
        &self,
        req: IngestRequest,
    ) -> impl Future<Output = Result<IngestResult, StoreError>> + Send;

    /// Prepares the selective-sync index for `rules` (rebuilt when the rules changed since
    /// the last start). Called once at startup, before any request.
    fn install_rules(
        &self,
        rules: Arc<SyncRules>,
        schema: Arc<Schema>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Reads one page of changes after the cursor.
    fn pull(&self, req: PullRequest) -> impl Future<Output = Result<Page, StoreError>> + Send;

    /// The user a client id is bound to (the first user that uploaded with it), if any.
    fn client_owner(
        &self,
        client_id: &str,
    ) -> impl Future<Output = Result<Option<String>, StoreError>> + Send;

    /// The latest committed sequence.
    fn head_seq(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// The most recent conflict log entries (every overwritten or losing value, and every
    /// manual conflict), newest last.
    fn conflicts(
        &self,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<ConflictEntry>, StoreError>> + Send;
}
