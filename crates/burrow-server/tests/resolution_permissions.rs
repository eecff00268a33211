//! Closing a manual conflict under write permissions (docs/conflicts.md, docs/sync-rules.md):
//! only a device involved in the conflict may close it, and only while its user may update the
//! conflicted column of the row; the refusal has no effect and leaves the record open.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use burrow_core::conflict::{CONFLICTS_TABLE, ConflictStatus};
use burrow_core::{OpKind, OutcomeKind, Value};
use burrow_server::store::ServerStore;

mod common;

use common::RulesStore;

const SCHEMA: &str = r#"
version = 1
[tables.routes.columns]
id = "text"
driver_id = "text"
[tables.shipments.columns]
id = "text"
route_id = { type = "text", references = "routes" }
note = { type = "text", policy = "manual" }
"#;

const RULES: &str = r#"
[streams.my_shipments]
table = "shipments"
when = "auth.role = 'driver'"
where = "route_id IN (SELECT id FROM routes WHERE driver_id = auth.sub)"

[streams.everything]
table = "shipments"
when = "auth.role = 'admin'"

[[permissions]]
table = "*"
actions = ["insert", "update", "delete"]
when = "auth.role = 'admin'"

[[permissions]]
table = "shipments"
actions = ["update"]
columns = ["note"]
when = "auth.role = 'driver' AND route_id IN (SELECT id FROM routes WHERE driver_id = auth.sub)"
"#;

struct World {
    base: RulesStore,
    seq: u64,
}

impl World {
    fn new() -> World {
        World {
            base: RulesStore::new(SCHEMA, RULES),
            seq: 0,
        }
    }

    /// One op in its own transaction from user `user` (device `dev-{user}`).
    async fn write(
        &mut self,
        user: &str,
        role: &str,
        op: (&str, &str, OpKind, u64),
        fields: Vec<(&str, Value)>,
    ) -> OutcomeKind {
        self.seq += 1;
        self.base
            .write_one((user, role, self.seq), op, fields)
            .await
    }

    async fn close(&mut self, user: &str, role: &str, conflict: &str) -> OutcomeKind {
        self.write(
            user,
            role,
            (CONFLICTS_TABLE, conflict, OpKind::Update, 0),
            vec![("status", Value::Text("resolved".into()))],
        )
        .await
    }

    async fn status(&self, conflict: &str) -> ConflictStatus {
        let log = self.base.store.conflicts(100).await.unwrap();
        log.iter().find(|c| c.id == conflict).unwrap().status
    }
}

fn denied(o: &OutcomeKind) -> bool {
    matches!(o, OutcomeKind::Rejected { code, .. } if code == "permission_denied")
}

#[tokio::test]
async fn only_an_involved_device_that_may_write_the_column_closes_a_conflict() {
    let mut w = World::new();
    let route = ("routes", "r1", OpKind::Insert, 0);
    let o = w
        .write(
            "boss",
            "admin",
            route,
            vec![("driver_id", Value::Text("u0".into()))],
        )
        .await;
    assert!(!matches!(o, OutcomeKind::Rejected { .. }), "{o:?}");
    let o = w
        .write(
            "boss",
            "admin",
            ("shipments", "s1", OpKind::Insert, 0),
            vec![
                ("route_id", Value::Text("r1".into())),
                ("note", Value::Text("start".into())),
            ],
        )
        .await;
    assert!(!matches!(o, OutcomeKind::Rejected { .. }), "{o:?}");
    let base = w.base.store.head_seq().await.unwrap();
    // Two concurrent edits of the manual column open a conflict between u0 and boss.
    for (user, role, note) in [
        ("u0", "driver", "u0's note"),
        ("boss", "admin", "boss's note"),
    ] {
        let o = w
            .write(
                user,
                role,
                ("shipments", "s1", OpKind::Update, base),
                vec![("note", Value::Text(note.into()))],
            )
            .await;
        assert!(!matches!(o, OutcomeKind::Rejected { .. }), "{o:?}");
    }
    let log = w.base.store.conflicts(100).await.unwrap();
    let open = log
        .iter()
        .find(|c| c.row_id == "s1" && c.status == ConflictStatus::Open)
        .expect("an open manual conflict");
    let id = open.id.clone();

    // u1 may update the note of shipments on u1's routes, but is not involved.
    let o = w.close("u1", "driver", &id).await;
    assert!(denied(&o), "{o:?}");
    assert_eq!(w.status(&id).await, ConflictStatus::Open);

    // The route goes to u1: u0 is involved but may no longer write the note.
    let o = w
        .write(
            "boss",
            "admin",
            ("routes", "r1", OpKind::Update, 0),
            vec![("driver_id", Value::Text("u1".into()))],
        )
        .await;
    assert!(!matches!(o, OutcomeKind::Rejected { .. }), "{o:?}");
    let o = w.close("u0", "driver", &id).await;
    assert!(denied(&o), "{o:?}");
    assert_eq!(w.status(&id).await, ConflictStatus::Open);

    // The dispatcher, involved and allowed, closes it.
    let o = w.close("boss", "admin", &id).await;
    assert!(!matches!(o, OutcomeKind::Rejected { .. }), "{o:?}");
    assert_eq!(w.status(&id).await, ConflictStatus::Resolved);
}
