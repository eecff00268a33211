//! Poison ops: a refused op is quarantined with its reason, blocks nothing behind it, and can be
//! edited and retried, or discarded.

use crate::harness::*;
use burrow_core::Schema;

/// The app's schema has a column the server does not serve yet: writes to it are refused.
fn newer_schema() -> Schema {
    let text = SCHEMA.replace("version = 1", "version = 2").replace(
        "pieces = \"integer\"",
        "pieces = \"integer\"\nnote = \"text\"",
    );
    Schema::from_toml_str(&text).unwrap()
}

#[tokio::test]
async fn a_poisoned_op_blocks_nothing_and_can_be_edited_retried_or_discarded() {
    let env = Env::start().await;
    let a = burrow_client::Client::open(env.db("a"), &newer_schema()).unwrap();
    a.execute("INSERT INTO shipments(id, status, note) VALUES ('s1', 'new', 'fragile')")
        .unwrap();
    a.execute("INSERT INTO shipments(id, status, note) VALUES ('s2', 'new', 'x')")
        .unwrap();
    insert_routes(&a, 1_000);
    let r = env.sync(&a).await;
    assert_eq!(r.ops_rejected, 2, "{r:?}");
    assert_eq!(
        r.ops_acked, 1_000,
        "the 1,000 later ops went through: {r:?}"
    );
    let status = a.status().unwrap();
    assert_eq!(status.pending_ops, 0);
    let rejected = a.rejected_ops().unwrap();
    assert_eq!(rejected.len(), 2);
    assert_eq!(rejected[0].code, "schema_version_unsupported");
    // The refused rows are not shown as if they had synced.
    assert!(rows(&a, "SELECT id FROM shipments").is_empty());

    // Edit and retry the first: without the column the server does not know.
    let fixed = serde_json::json!({ "status": "new" });
    let new_seq = a
        .retry_rejected(rejected[0].client_seq, fixed.as_object().cloned())
        .unwrap();
    assert!(new_seq > rejected[1].client_seq, "queued again at the end");
    assert_eq!(
        rows(&a, "SELECT id, status FROM shipments"),
        vec![serde_json::json!({"id": "s1", "status": "new"})],
        "the retried values show at once"
    );
    assert!(
        a.retry_rejected(rejected[0].client_seq, None).is_err(),
        "it left the rejected list"
    );
    // An edit the schema refuses is refused locally, nothing changes.
    let bad = serde_json::json!({ "pieces": "many" });
    assert!(
        a.retry_rejected(rejected[1].client_seq, bad.as_object().cloned())
            .is_err()
    );
    a.discard_rejected(rejected[1].client_seq).unwrap();
    assert!(a.discard_rejected(rejected[1].client_seq).is_err());
    let r = env.sync(&a).await;
    assert_eq!((r.ops_acked, r.ops_rejected), (1, 0), "{r:?}");
    assert!(a.rejected_ops().unwrap().is_empty());
    let b = env.client("b");
    env.sync(&b).await;
    assert_eq!(
        rows(&b, "SELECT id, status FROM shipments"),
        vec![serde_json::json!({"id": "s1", "status": "new"})]
    );
    assert_eq!(
        rows(&b, "SELECT count(*) AS n FROM routes"),
        vec![serde_json::json!({"n": 1000})]
    );
}

#[tokio::test]
async fn retrying_one_op_of_a_refused_transaction_sends_the_whole_transaction_again() {
    let env = Env::start().await;
    let a = burrow_client::Client::open(env.db("a"), &newer_schema()).unwrap();
    a.execute(
        "INSERT INTO routes(id, day) VALUES ('r1', 'mon');
         INSERT INTO shipments(id, route_id, note) VALUES ('s1', 'r1', 'x')",
    )
    .unwrap();
    let r = env.sync(&a).await;
    assert_eq!(r.ops_rejected, 2);
    let rejected = a.rejected_ops().unwrap();
    let poisoned = rejected
        .iter()
        .find(|o| o.table == "shipments")
        .unwrap()
        .client_seq;
    let fixed = serde_json::json!({ "route_id": "r1" });
    a.retry_rejected(poisoned, fixed.as_object().cloned())
        .unwrap();
    assert!(
        a.rejected_ops().unwrap().is_empty(),
        "the route went with it"
    );
    assert_eq!(a.status().unwrap().pending_ops, 2);
    let r = env.sync(&a).await;
    assert_eq!(r.ops_acked, 2, "{r:?}");
    let b = env.client("b");
    env.sync(&b).await;
    assert_eq!(
        rows(
            &b,
            "SELECT s.id, r.day FROM shipments s JOIN routes r ON r.id = s.route_id"
        ),
        vec![serde_json::json!({"id": "s1", "day": "mon"})]
    );
}

/// A refused insert while a later edit of the same row is still queued: the device shows
/// what the remaining edit makes of the row (its values, NULL elsewhere) — exactly what the
/// server ends up with — not the refused values.
#[tokio::test]
async fn a_refused_insert_with_a_later_queued_edit_shows_what_the_server_will_hold() {
    let env = Env::start().await;
    let a = env.client("a");
    let long = "x".repeat(300); // ids above 256 bytes are refused: invalid_row_id
    // One local transaction: the insert of r1 is refused with its poisoned sibling.
    a.execute(&format!(
        "INSERT INTO routes(id, driver_id, day) VALUES ('r1', 'ann', 'mon');
         INSERT INTO routes(id, driver_id, day) VALUES ('{long}', 'ann', 'mon')"
    ))
    .unwrap();
    // A later transaction edits r1.
    a.execute("UPDATE routes SET day = 'tue' WHERE id = 'r1'")
        .unwrap();
    let t = env.transport("ann");
    a.sync(&t).await.unwrap();
    let rejected = a.rejected_ops().unwrap();
    assert!(
        rejected.iter().any(|r| r.code == "invalid_row_id"),
        "{rejected:?}"
    );
    // Whatever the server made of the rest, the device shows the same.
    let b = env.client("b");
    b.sync(&env.transport("bob")).await.unwrap();
    a.sync(&t).await.unwrap();
    assert_eq!(a.state_hash().unwrap(), b.state_hash().unwrap());
    assert_eq!(
        rows(&a, "SELECT id, driver_id, day FROM routes"),
        vec![serde_json::json!({"id": "r1", "driver_id": null, "day": "tue"})],
        "the refused insert's values are not shown; the later edit is"
    );
}
