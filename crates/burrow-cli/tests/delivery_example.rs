//! The worked example of `examples/delivery/` as a user runs it: `burrow serve --config`,
//! `burrow token --claim role=…`, and scriptable clients — a driver holds today's route only.
//! A bad rule stops the server with a message naming the rule and the position.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use common::{BIN, Server, burrow, spawn_server, stdout};
use std::path::{Path, PathBuf};
use std::process::Command;

fn example(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/delivery")
        .join(file)
}

fn serve(data: &Path, config: &Path) -> (Server, String) {
    let schema = example("schema.toml");
    spawn_server(&[
        "--data".as_ref(),
        data.as_os_str(),
        "--schema".as_ref(),
        schema.as_os_str(),
        "--config".as_ref(),
        config.as_os_str(),
    ])
}

fn token(data: &Path, user: &str, role: &str) -> String {
    let out = burrow(&[
        "token",
        "--data",
        data.to_str().unwrap(),
        "--user",
        user,
        "--claim",
        &format!("role={role}"),
    ]);
    stdout(&out).trim().to_string()
}

fn client(db: &Path, token: &str, args: &[&str]) -> String {
    let schema = example("schema.toml");
    let mut all = vec![
        "client",
        "--db",
        db.to_str().unwrap(),
        "--schema",
        schema.to_str().unwrap(),
        "--token",
        token,
    ];
    all.extend_from_slice(args);
    stdout(&burrow(&all))
}

#[test]
fn the_delivery_example_serves_a_driver_todays_route_only() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (_server, url) = serve(&data, &example("burrow.toml"));
    let dispatcher = token(&data, "disp", "dispatcher");
    let ann = token(&data, "ann", "driver");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    // examples/delivery/burrow.toml: timezone = "+01:00".
    let today = burrow_core::rules::today(now_ms, 60);

    let office = dir.path().join("office.db");
    client(
        &office,
        &dispatcher,
        &[
            "exec",
            &format!(
                "INSERT INTO routes(id, driver_id, day) VALUES ('r1', 'ann', '{today}'), ('r2', 'bob', '{today}'), ('r3', 'ann', '2020-01-01');
                 INSERT INTO shipments(id, route_id, status, address) VALUES ('s1', 'r1', 'planned', 'Main St 1'), ('s2', 'r2', 'planned', 'Elm St 2'), ('s3', 'r3', 'planned', 'Old Rd 3')"
            ),
        ],
    );
    client(&office, &dispatcher, &["sync", "--server", &url]);

    let phone = dir.path().join("ann.db");
    client(&phone, &ann, &["sync", "--server", &url]);
    let rows = client(
        &phone,
        &ann,
        &["query", "--json", "SELECT id FROM shipments ORDER BY id"],
    );
    let rows: serde_json::Value = serde_json::from_str(&rows).unwrap();
    assert_eq!(rows, serde_json::json!([{"id": "s1"}]));
    let rows = client(&phone, &ann, &["query", "--json", "SELECT id FROM routes"]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&rows).unwrap(),
        serde_json::json!([{"id": "r1"}])
    );
    // She may sign s1 but not re-address it.
    client(
        &phone,
        &ann,
        &[
            "exec",
            "UPDATE shipments SET status = 'delivered', signature = 'Ann' WHERE id = 's1'",
        ],
    );
    client(
        &phone,
        &ann,
        &[
            "exec",
            "UPDATE shipments SET address = 'Elsewhere' WHERE id = 's1'",
        ],
    );
    client(&phone, &ann, &["sync", "--server", &url]);
    let rejected = client(&phone, &ann, &["rejected", "--json"]);
    let rejected: serde_json::Value = serde_json::from_str(&rejected).unwrap();
    assert_eq!(rejected.as_array().unwrap().len(), 1);
    assert_eq!(rejected[0]["code"], "permission_denied");
    client(&office, &dispatcher, &["sync", "--server", &url]);
    let s1 = client(
        &office,
        &dispatcher,
        &[
            "query",
            "--json",
            "SELECT status, address FROM shipments WHERE id = 's1'",
        ],
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&s1).unwrap(),
        serde_json::json!([{"status": "delivered", "address": "Main St 1"}])
    );
}

#[test]
fn a_bad_rule_stops_the_server_naming_the_rule_and_position() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("burrow.toml");
    std::fs::write(
        &config,
        "[streams.my_routes]\ntable = \"routes\"\nwhere = \"driver_id = auth.sub AND dai = today()\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--data"])
        .arg(dir.path().join("data"))
        .args(["--listen", "127.0.0.1:0", "--schema"])
        .arg(example("schema.toml"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("streams.my_routes.where"), "{err}");
    assert!(err.contains("1:26"), "position of `dai`: {err}");
    assert!(err.contains("dai"), "{err}");
}
