//! Helpers shared by the store's integration tests.
#![allow(dead_code)]

use burrow_core::rules::SyncRules;
use burrow_core::{ClaimSet, Hlc, Op, OpKind, OutcomeKind, Schema, Value, op::FieldValue};
use burrow_server::store::{
    IngestOp, IngestRequest, IngestTx, ResolveEnv, ServerStore, SqliteServerStore,
};
use std::sync::Arc;

/// A real SQLite store in a temporary directory with a schema and sync rules installed in
/// its resolve environment, and a clock that ticks once per write.
pub struct RulesStore {
    _dir: tempfile::TempDir,
    pub store: SqliteServerStore,
    pub env: ResolveEnv,
    pub rules: Arc<SyncRules>,
    pub clock: u64,
}

impl RulesStore {
    /// The store for `schema` (TOML) under `rules` (TOML).
    pub fn new(schema: &str, rules: &str) -> RulesStore {
        let dir = tempfile::tempdir().unwrap();
        let schema = Schema::from_toml_str(schema).unwrap();
        let rules = Arc::new(SyncRules::parse(rules, &schema).unwrap());
        let store = SqliteServerStore::open(&dir.path().join("s.db")).unwrap();
        let mut env = ResolveEnv::new(schema);
        env.rules = Some(rules.clone());
        RulesStore {
            _dir: dir,
            store,
            env,
            rules,
            clock: 1_800_000_000_000,
        }
    }

    /// One op, alone in local transaction `seq`, from user `user` with `role` (device
    /// `dev-{user}`); returns the server's outcome.
    pub async fn write_one(
        &mut self,
        (user, role, seq): (&str, &str, u64),
        (table, row, kind, base_seq): (&str, &str, OpKind, u64),
        fields: Vec<(&str, Value)>,
    ) -> OutcomeKind {
        self.clock += 1;
        let op = Op {
            client_seq: seq,
            tx: seq,
            table: table.into(),
            row_id: row.into(),
            kind,
            fields: FieldValue::list(fields),
            hlc: Hlc::from_ms(self.clock),
            base_seq,
        };
        let result = self
            .store
            .ingest(IngestRequest {
                user_id: user.into(),
                client_id: format!("dev-{user}"),
                txs: vec![IngestTx {
                    tx_id: seq,
                    ops: vec![IngestOp {
                        client_seq: seq,
                        payload_hash: seq,
                        op: Ok(op),
                    }],
                    more_parts: false,
                }],
                now_ms: self.clock,
                claims: ClaimSet::new().with("sub", user).with("role", role),
                clock_offset_ms: 0,
                env: self.env.clone(),
            })
            .await
            .unwrap();
        result.outcomes[0].1.clone()
    }
}
