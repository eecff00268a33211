use crate::harness::*;
use burrow_core::Schema;

const V2_EXTRA: &str = "\n[tables.scans]\npriority = \"bulk\"\n[tables.scans.columns]\nid = \"text\"\ncode = \"text\"\n";

fn v2() -> Schema {
    let text = SCHEMA.replace("version = 1", "version = 2").replace(
        "pieces = \"integer\"",
        "pieces = \"integer\"\nnote = \"text\"",
    ) + V2_EXTRA;
    Schema::from_toml_str(&text).unwrap()
}

#[tokio::test]
async fn upgrade_adds_tables_and_columns_keeping_rows_and_pending_ops() {
    let env = Env::start().await;
    let path = env.db("a");
    {
        let a = env.client("a");
        a.execute("INSERT INTO shipments(id, status) VALUES ('s1', 'synced')")
            .unwrap();
        env.sync(&a).await;
        a.execute("INSERT INTO shipments(id, status) VALUES ('s2', 'pending')")
            .unwrap();
        assert_eq!(a.status().unwrap().pending_ops, 1);
    }
    let a = burrow_client::Client::open(&path, &v2()).unwrap();
    assert_eq!(a.status().unwrap().schema_version, 2);
    assert_eq!(
        a.status().unwrap().pending_ops,
        1,
        "pending op survived the upgrade"
    );
    assert_eq!(
        rows(&a, "SELECT id, status, note FROM shipments ORDER BY id"),
        vec![
            serde_json::json!({"id": "s1", "status": "synced", "note": null}),
            serde_json::json!({"id": "s2", "status": "pending", "note": null}),
        ]
    );
    a.execute("INSERT INTO scans(id, code) VALUES ('c1', 'X'); UPDATE shipments SET note = 'n' WHERE id = 's1';")
        .unwrap();
    assert_eq!(
        a.status().unwrap().pending_ops,
        3,
        "new table and column are captured"
    );
    // The v1 server refuses v2 ops with a reason; the v1 op still goes through.
    let r = env.sync(&a).await;
    assert_eq!(r.ops_rejected, 2);
    let st = a.status().unwrap();
    assert_eq!(st.rejected_ops, 2);
    let codes: Vec<&str> = st.rejected.iter().map(|o| o.code.as_str()).collect();
    assert_eq!(
        codes,
        ["schema_version_unsupported", "transaction_rejected"],
        "{:?}",
        st.rejected
    );
    assert!(
        st.rejected[0].message.contains("scans"),
        "the reason names the table"
    );
    let b = env.client("b");
    env.sync(&b).await;
    assert_eq!(rows(&b, "SELECT id FROM shipments ORDER BY id").len(), 2);
}

#[tokio::test]
async fn incompatible_schema_change_fails_clearly_and_changes_nothing() {
    let env = Env::start().await;
    let path = env.db("a");
    {
        let a = env.client("a");
        a.execute("INSERT INTO shipments(id, status) VALUES ('s1', 'x')")
            .unwrap();
    }
    let before = std::fs::read(&path).unwrap();
    let retyped = Schema::from_toml_str(
        &SCHEMA
            .replace("version = 1", "version = 2")
            .replace("weight_kg = \"real\"", "weight_kg = \"text\""),
    )
    .unwrap();
    let err = burrow_client::Client::open(&path, &retyped)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("weight_kg") && err.contains("changed type"),
        "{err}"
    );
    let removed = Schema::from_toml_str(
        &SCHEMA
            .replace("version = 1", "version = 2")
            .replace("address = \"text\"\n", ""),
    )
    .unwrap();
    assert!(
        burrow_client::Client::open(&path, &removed)
            .unwrap_err()
            .to_string()
            .contains("removed")
    );
    let unbumped = Schema::from_toml_str(&(SCHEMA.to_string() + V2_EXTRA)).unwrap();
    assert!(
        burrow_client::Client::open(&path, &unbumped)
            .unwrap_err()
            .to_string()
            .contains("bump")
    );
    let a = burrow_client::Client::open_existing(&path).unwrap();
    assert_eq!(a.status().unwrap().schema_version, 1);
    assert_eq!(a.status().unwrap().pending_ops, 1);
    assert_eq!(
        rows(&a, "SELECT status FROM shipments"),
        vec![serde_json::json!({"status": "x"})]
    );
    drop(a);
    let _ = before;
}

#[tokio::test]
async fn an_old_client_keeps_fields_it_does_not_know_and_shows_them_after_upgrading() {
    // Server at v2; client still at v1 downloads rows with a column it does not know.
    let env = Env::start_with(|c| c.schema = v2()).await;
    let new = burrow_client::Client::open(env.db("new"), &v2()).unwrap();
    new.execute("INSERT INTO shipments(id, status, note) VALUES ('s1', 'x', 'hello'); INSERT INTO scans(id, code) VALUES ('c1', 'Q');")
        .unwrap();
    env.sync(&new).await;
    let old = env.client("old");
    env.sync(&old).await;
    assert_eq!(
        rows(&old, "SELECT status FROM shipments"),
        vec![serde_json::json!({"status": "x"})]
    );
    // The old app edits the row: it must not wipe the unknown column.
    old.execute("UPDATE shipments SET status = 'y'").unwrap();
    env.sync(&old).await;
    drop(old);
    let upgraded = burrow_client::Client::open(env.db("old"), &v2()).unwrap();
    assert_eq!(
        rows(&upgraded, "SELECT status, note FROM shipments"),
        vec![serde_json::json!({"status": "y", "note": "hello"})],
        "the field downloaded before the upgrade appears without a re-download"
    );
    assert_eq!(
        rows(&upgraded, "SELECT code FROM scans"),
        vec![serde_json::json!({"code": "Q"})]
    );
    env.sync(&new).await;
    assert_eq!(new.state_hash().unwrap(), upgraded.state_hash().unwrap());
}
