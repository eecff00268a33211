//! The CLI contract, exercised through real processes: `serve`, `token`, `client exec`,
//! `client query --json`, `client sync`, `client status --json`, `demo --json`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{BIN, SCHEMA, Server, burrow, spawn_server, stdout};

fn start_server(data: &Path, schema: &Path) -> (Server, String) {
    spawn_server(&[
        "--data".as_ref(),
        data.as_os_str(),
        "--schema".as_ref(),
        schema.as_os_str(),
    ])
}

/// A server process serving `schema` (written to a file in a new temporary directory) and a
/// token for user `ann`: `(dir, schema file, server, url, token)`.
fn serve_schema(
    schema: &str,
) -> (
    tempfile::TempDir,
    std::path::PathBuf,
    Server,
    String,
    String,
) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("schema.toml");
    std::fs::write(&path, schema).unwrap();
    let data = dir.path().join("data");
    let (server, url) = start_server(&data, &path);
    let token = stdout(&burrow(&[
        "token",
        "--data",
        data.to_str().unwrap(),
        "--user",
        "ann",
    ]));
    (dir, path, server, url, token.trim().to_string())
}

#[test]
fn quickstart_two_clients_through_a_server_process() {
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("schema.toml");
    std::fs::write(&schema, SCHEMA).unwrap();
    let data = dir.path().join("data");
    let (_server, url) = start_server(&data, &schema);
    assert!(
        data.join("secret").exists(),
        "secret generated on first start"
    );
    let token = stdout(&burrow(&[
        "token",
        "--data",
        data.to_str().unwrap(),
        "--user",
        "ann",
        "--claim",
        "role=driver",
        "--ttl",
        "1h",
    ]));
    let token = token.trim();
    assert_eq!(token.split('.').count(), 3);
    let a = dir.path().join("a.db");
    let b = dir.path().join("b.db");
    let (a, b, s) = (
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        schema.to_str().unwrap(),
    );
    stdout(&burrow(&[
        "client",
        "--db",
        a,
        "--schema",
        s,
        "exec",
        "INSERT INTO routes(id, driver_id, day) VALUES ('r1', 'ann', 'mon'); INSERT INTO shipments(id, route_id, status) VALUES ('s1', 'r1', 'loaded')",
    ]));
    let st: serde_json::Value =
        serde_json::from_str(&stdout(&burrow(&["client", "--db", a, "status", "--json"]))).unwrap();
    for key in [
        "client_id",
        "pending_ops",
        "cursor",
        "last_sync_at",
        "rejected_ops",
    ] {
        assert!(st.get(key).is_some(), "status --json lacks {key}: {st}");
    }
    assert_eq!(st["pending_ops"], 2);
    assert_eq!(st["last_sync_at"], serde_json::Value::Null);
    stdout(&burrow(&[
        "client", "--db", a, "sync", "--server", &url, "--token", token,
    ]));
    // --schema is accepted after the subcommand too, and the token may come from the env.
    let out = Command::new(BIN)
        .args(["client", "--db", b, "sync", "--server", &url, "--schema", s])
        .env("BURROW_TOKEN", token)
        .output()
        .unwrap();
    stdout(&out);
    let rows: serde_json::Value = serde_json::from_str(&stdout(&burrow(&[
        "client",
        "--db",
        b,
        "query",
        "SELECT status, id FROM shipments",
        "--json",
    ])))
    .unwrap();
    assert_eq!(rows, serde_json::json!([{"status": "loaded", "id": "s1"}]));
    let keys: Vec<&String> = rows[0].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["status", "id"], "keys keep the SELECT order");
    let st: serde_json::Value =
        serde_json::from_str(&stdout(&burrow(&["client", "--db", a, "status", "--json"]))).unwrap();
    assert_eq!(st["pending_ops"], 0);
    assert!(st["cursor"].as_u64().unwrap() >= 2);
    assert!(st["last_sync_at"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn sync_failures_exit_non_zero_with_a_one_line_reason() {
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("schema.toml");
    std::fs::write(&schema, SCHEMA).unwrap();
    let data = dir.path().join("data");
    let (_server, url) = start_server(&data, &schema);
    let db = dir.path().join("a.db");
    let (db, s) = (db.to_str().unwrap(), schema.to_str().unwrap());
    stdout(&burrow(&[
        "client",
        "--db",
        db,
        "--schema",
        s,
        "exec",
        "INSERT INTO routes(id) VALUES ('r1')",
    ]));
    let bad = burrow(&[
        "client",
        "--db",
        db,
        "sync",
        "--server",
        &url,
        "--token",
        "not-a-token",
    ]);
    assert_eq!(bad.status.code(), Some(77));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("token_invalid"), "{err}");
    let down = burrow(&[
        "client",
        "--db",
        db,
        "sync",
        "--server",
        "http://127.0.0.1:9",
        "--token",
        "x",
    ]);
    assert_eq!(down.status.code(), Some(69));
    let st: serde_json::Value = serde_json::from_str(&stdout(&burrow(&[
        "client", "--db", db, "status", "--json",
    ])))
    .unwrap();
    assert_eq!(st["pending_ops"], 1, "nothing dropped");
    assert!(st["last_error"].as_str().unwrap().contains("network"));
    // A --ca-cert that holds no certificate is named, before anything is attempted.
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "not a certificate").unwrap();
    let bad_ca = burrow(&[
        "client",
        "--db",
        db,
        "--ca-cert",
        not_pem.to_str().unwrap(),
        "sync",
        "--server",
        "https://127.0.0.1:9",
        "--token",
        "x",
    ]);
    assert_eq!(bad_ca.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad_ca.stderr);
    assert!(
        err.contains("--ca-cert") && err.contains("no CERTIFICATE"),
        "{err}"
    );
    let missing = burrow(&[
        "client",
        "--db",
        dir.path().join("new.db").to_str().unwrap(),
        "status",
    ]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("--schema"));
}

#[test]
fn demo_passes_and_reports_json() {
    let started = Instant::now();
    let out = burrow(&["demo", "--devices", "6", "--duration", "8", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(out.status.success(), "exit {:?}: {report}", out.status);
    assert!(
        out.stderr.is_empty(),
        "--json prints nothing on stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for key in [
        "offline_availability",
        "sync_success_rate",
        "lost_writes",
        "duplicates",
        "converged",
        "conflicts",
        "propagation_ms",
        "bytes_per_op",
        "drain_seconds",
    ] {
        assert!(report.get(key).is_some(), "missing {key}: {report}");
    }
    assert!(report["propagation_ms"]["p50"].is_number(), "{report}");
    assert!(report["propagation_ms"]["p99"].is_number(), "{report}");
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["lost_writes"], 0);
    assert_eq!(report["duplicates"], 0);
    assert_eq!(report["converged"], true);
    assert_eq!(report["offline_availability"].as_f64(), Some(1.0));
    assert!(report["sync_success_rate"].as_f64().unwrap() > 0.999);
    assert!(report["sync"]["reconnects"].is_u64(), "{report}");
    assert!(report["writes"]["offline_attempted"].as_u64().unwrap() > 0);
    // The workload must keep exercising conflicts and the reassignment.
    assert!(
        report["conflicts"]["logged"].as_u64().unwrap() >= 1,
        "{report}"
    );
    assert!(
        report["reassignment"]["evicted_rows"].as_u64().unwrap() >= 1,
        "{report}"
    );
    assert_eq!(report["reassignment"]["rows_after"], 0, "{report}");
    assert_eq!(report["reassignment"]["lost"], 0, "{report}");
    assert!(
        report["conflicts"]["counter"]["increments"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert!(report["conflicts"]["text"]["edits"].as_u64().unwrap() > 0);
    assert!(report["drain_seconds"].as_f64().unwrap() < 60.0);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the short demo took {:?}",
        started.elapsed()
    );
}

#[test]
fn several_processes_write_the_same_database_without_locked_errors() {
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("schema.toml");
    std::fs::write(&schema, SCHEMA).unwrap();
    let db = dir.path().join("shared.db");
    let (db, s) = (db.to_str().unwrap(), schema.to_str().unwrap());
    stdout(&burrow(&["client", "--db", db, "--schema", s, "status"]));
    for round in 0..5 {
        let children: Vec<Child> = (0..4)
            .map(|p| {
                Command::new(BIN)
                    .args(["client", "--db", db, "exec"])
                    .arg(format!(
                        "INSERT INTO scans(id, code) VALUES ('p{p}-{round}', 'x'); UPDATE scans SET code = 'y' WHERE id = 'p{p}-{round}'"
                    ))
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for c in children {
            let out = c.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let st: serde_json::Value = serde_json::from_str(&stdout(&burrow(&[
        "client", "--db", db, "status", "--json",
    ])))
    .unwrap();
    assert_eq!(
        st["pending_ops"], 40,
        "every write of every process captured"
    );
}

#[test]
fn manual_conflict_listed_and_resolved_through_the_cli() {
    let (dir, schema, _server, url, token) = serve_schema(
        "version = 1\n[tables.items.columns]\nlabel = { type = \"text\", policy = \"manual\" }\n",
    );
    let token = token.as_str();
    let (a, b, s) = (
        dir.path().join("a.db"),
        dir.path().join("b.db"),
        schema.to_str().unwrap(),
    );
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    let sync = |db: &str| {
        stdout(&burrow(&[
            "client", "--db", db, "--schema", s, "sync", "--server", &url, "--token", token,
        ]))
    };
    stdout(&burrow(&[
        "client",
        "--db",
        a,
        "--schema",
        s,
        "exec",
        "INSERT INTO items(id, label) VALUES ('i1', 'start')",
    ]));
    sync(a);
    sync(b);
    stdout(&burrow(&[
        "client",
        "--db",
        a,
        "exec",
        "UPDATE items SET label = 'from a'",
    ]));
    stdout(&burrow(&[
        "client",
        "--db",
        b,
        "exec",
        "UPDATE items SET label = 'from b'",
    ]));
    sync(a);
    sync(b);
    sync(a);
    let list = |db: &str| -> serde_json::Value {
        serde_json::from_str(&stdout(&burrow(&[
            "client",
            "--db",
            db,
            "conflicts",
            "--json",
        ])))
        .unwrap()
    };
    for db in [a, b] {
        let l = list(db);
        assert_eq!(l.as_array().unwrap().len(), 1, "{l}");
        assert_eq!(l[0]["status"], "open");
        assert_eq!(l[0]["versions"].as_array().unwrap().len(), 2);
        assert_eq!(l[0]["versions"][1]["version"], 1);
    }
    let l = list(b);
    let id = l[0]["id"].as_str().unwrap().to_string();
    let loser = l[0]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["won"] == false)
        .unwrap();
    let (pick, picked) = (
        loser["version"].to_string(),
        loser["value"].as_str().unwrap().to_string(),
    );
    // Neither or both choices: usage error (exit 2).
    let none = burrow(&["client", "--db", b, "resolve", &id]);
    assert_eq!(none.status.code(), Some(2));
    stdout(&burrow(&[
        "client", "--db", b, "resolve", &id, "--pick", &pick,
    ]));
    sync(b);
    sync(a);
    for db in [a, b] {
        let l = list(db);
        assert_eq!(l[0]["status"], "resolved", "{l}");
        assert_eq!(l[0]["resolution"], serde_json::json!(picked));
        let rows: serde_json::Value = serde_json::from_str(&stdout(&burrow(&[
            "client",
            "--db",
            db,
            "query",
            "SELECT label FROM items",
            "--json",
        ])))
        .unwrap();
        assert_eq!(rows, serde_json::json!([{ "label": picked }]));
        let open = list_open(db);
        assert!(open.as_array().unwrap().is_empty());
    }
    // Resolving again is refused with a reason.
    let again = burrow(&["client", "--db", b, "resolve", &id, "--value", "\"x\""]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not open"));
}

fn list_open(db: &str) -> serde_json::Value {
    serde_json::from_str(&stdout(&burrow(&[
        "client",
        "--db",
        db,
        "conflicts",
        "--open",
        "--json",
    ])))
    .unwrap()
}

#[test]
fn refused_ops_are_listed_retried_edited_and_discarded_through_the_cli() {
    let (dir, _, _server, url, token) =
        serve_schema("version = 1\n[tables.items.columns]\nlabel = \"text\"\n");
    let token = token.as_str();
    // The app is one version ahead: a column the server does not serve yet.
    let app_schema = dir.path().join("app.toml");
    std::fs::write(
        &app_schema,
        "version = 2\n[tables.items.columns]\nlabel = \"text\"\nnote = \"text\"\n",
    )
    .unwrap();
    let db = dir.path().join("a.db");
    let (db, s) = (db.to_str().unwrap(), app_schema.to_str().unwrap());
    stdout(&burrow(&[
        "client",
        "--db",
        db,
        "--schema",
        s,
        "exec",
        "--priority",
        "critical",
        "INSERT INTO items(id, label, note) VALUES ('i1', 'a', 'x'); INSERT INTO items(id, label, note) VALUES ('i2', 'b', 'y')",
    ]));
    stdout(&burrow(&[
        "client",
        "--db",
        db,
        "exec",
        "INSERT INTO items(id, label) VALUES ('i3', 'c')",
    ]));
    stdout(&burrow(&[
        "client", "--db", db, "sync", "--server", &url, "--token", token,
    ]));
    let rejected = |db: &str| -> serde_json::Value {
        serde_json::from_str(&stdout(&burrow(&[
            "client", "--db", db, "rejected", "--json",
        ])))
        .unwrap()
    };
    let seq_of = |list: &serde_json::Value, id: &str| -> String {
        list.as_array()
            .unwrap()
            .iter()
            .find(|o| o["row_id"] == id)
            .unwrap()["client_seq"]
            .to_string()
    };
    let list = rejected(db);
    // i3 too: an insert carries every column, `note` (null) included.
    assert_eq!(list.as_array().unwrap().len(), 3, "{list}");
    assert_eq!(list[0]["code"], "schema_version_unsupported");
    assert_eq!(list[1]["code"], "transaction_rejected");
    // An edit that is not a JSON object is a usage error; the list is unchanged.
    let i1 = seq_of(&list, "i1");
    assert!(
        !burrow(&["client", "--db", db, "retry", &i1, "--data", "[1]"])
            .status
            .success()
    );
    // Retrying i1 (edited) queues its whole refused transaction again: i2 goes along unedited.
    stdout(&burrow(&[
        "client",
        "--db",
        db,
        "retry",
        &i1,
        "--data",
        r#"{"label": "a"}"#,
    ]));
    assert_eq!(rejected(db).as_array().unwrap().len(), 1);
    stdout(&burrow(&[
        "client", "--db", db, "sync", "--server", &url, "--token", token,
    ]));
    let list = rejected(db);
    assert_eq!(
        list.as_array().unwrap().len(),
        3,
        "i2 still names the column: {list}"
    );
    stdout(&burrow(&[
        "client",
        "--db",
        db,
        "discard",
        &seq_of(&list, "i3"),
    ]));
    assert!(
        !burrow(&["client", "--db", db, "discard", &seq_of(&list, "i3")])
            .status
            .success()
    );
    stdout(&burrow(&[
        "client",
        "--db",
        db,
        "retry",
        &seq_of(&list, "i2"),
        "--data",
        r#"{"label": "b"}"#,
    ]));
    stdout(&burrow(&[
        "client", "--db", db, "sync", "--server", &url, "--token", token,
    ]));
    assert!(rejected(db).as_array().unwrap().is_empty());
    let rows: serde_json::Value = serde_json::from_str(&stdout(&burrow(&[
        "client",
        "--db",
        db,
        "query",
        "SELECT id, label FROM items ORDER BY id",
        "--json",
    ])))
    .unwrap();
    assert_eq!(
        rows,
        serde_json::json!([{"id": "i1", "label": "a"}, {"id": "i2", "label": "b"}])
    );
}
