use crate::harness::*;

#[tokio::test]
async fn a_write_through_a_plain_sqlite_connection_is_captured_and_synced() {
    let env = Env::start().await;
    let a = env.client("a");
    {
        // The app's own connection: no Burrow functions registered, its own transaction.
        let mut plain = rusqlite::Connection::open(env.db("a")).unwrap();
        plain
            .busy_timeout(std::time::Duration::from_secs(5))
            .unwrap();
        let tx = plain.transaction().unwrap();
        tx.execute("INSERT INTO routes(id, driver_id) VALUES ('r9', 'bob')", [])
            .unwrap();
        tx.execute("UPDATE routes SET day = 'mon' WHERE id = 'r9'", [])
            .unwrap();
        tx.commit().unwrap();
        // A rolled-back write leaves no op behind.
        let tx = plain.transaction().unwrap();
        tx.execute("INSERT INTO routes(id, driver_id) VALUES ('gone', 'x')", [])
            .unwrap();
        tx.rollback().unwrap();
    }
    assert_eq!(a.status().unwrap().pending_ops, 2);
    env.sync(&a).await;
    let b = env.client("b");
    env.sync(&b).await;
    assert_eq!(
        rows(&b, "SELECT id, driver_id, day FROM routes"),
        vec![serde_json::json!({"id": "r9", "driver_id": "bob", "day": "mon"})]
    );
}

#[tokio::test]
async fn python_sqlite3_writes_are_captured_when_python_is_present() {
    // The brief's ORM case: another SQLite library (Python's) writes the file.
    let Ok(out) = std::process::Command::new("python3")
        .arg("--version")
        .output()
    else {
        eprintln!("python3 not installed; the rusqlite plain-connection test covers capture");
        return;
    };
    assert!(out.status.success());
    let env = Env::start().await;
    let a = env.client("a");
    let script = format!(
        "import sqlite3\nc = sqlite3.connect({:?}, timeout=10)\nc.execute(\"INSERT INTO shipments(status, pieces) VALUES ('py', 7)\")\nc.commit()\n",
        env.db("a").display().to_string()
    );
    let run = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(a.status().unwrap().pending_ops, 1);
    env.sync(&a).await;
    let b = env.client("b");
    env.sync(&b).await;
    assert_eq!(
        rows(&b, "SELECT status, pieces FROM shipments"),
        vec![serde_json::json!({"status": "py", "pieces": 7})]
    );
}

#[tokio::test]
async fn updates_capture_only_changed_fields_and_no_op_updates_nothing() {
    let env = Env::start().await;
    let a = env.client("a");
    a.execute("INSERT INTO shipments(id, status, pieces) VALUES ('s1', 'new', 1)")
        .unwrap();
    let r = a.execute("UPDATE shipments SET status = 'new'").unwrap();
    assert_eq!(
        r.ops_captured, 0,
        "an update that changes nothing is not an op"
    );
    let r = a.execute("UPDATE shipments SET pieces = 2").unwrap();
    assert_eq!(r.ops_captured, 1);
    let data = a
        .with_connection(|c| {
            Ok(c.query_row(
                "SELECT data FROM _burrow_outbox ORDER BY seq DESC LIMIT 1",
                [],
                |r| r.get::<_, String>(0),
            )?)
        })
        .unwrap();
    assert_eq!(data, "{\"pieces\":2}");
}

#[tokio::test]
async fn wrong_types_and_id_changes_are_refused_locally() {
    let env = Env::start().await;
    let a = env.client("a");
    assert!(
        a.execute("INSERT INTO shipments(id, pieces) VALUES ('s1', 'many')")
            .is_err()
    );
    assert!(
        a.execute("INSERT INTO shipments(id, meta) VALUES ('s1', '{not json')")
            .is_err()
    );
    assert!(
        a.execute("INSERT INTO shipments(id, fragile) VALUES ('s1', 2)")
            .is_err()
    );
    a.execute("INSERT INTO shipments(id) VALUES ('s1')")
        .unwrap();
    let e = a.execute("UPDATE shipments SET id = 's2'").unwrap_err();
    assert!(e.to_string().contains("cannot change"), "{e}");
    assert_eq!(
        a.status().unwrap().pending_ops,
        1,
        "failed statements captured nothing"
    );
}

#[tokio::test]
async fn two_processes_writing_the_same_file_do_not_fail_with_locked() {
    let env = Env::start().await;
    let path = env.db("shared");
    drop(env.client("shared"));
    let mut handles = Vec::new();
    for w in 0..4 {
        let path = path.clone();
        handles.push(std::thread::spawn(move || {
            let c = burrow_client::Client::open(&path, &schema()).unwrap();
            for i in 0..50 {
                c.execute(&format!(
                    "INSERT INTO routes(id, driver_id) VALUES ('w{w}-{i}', 'd')"
                ))
                .unwrap();
            }
        }));
    }
    for h in handles {
        h.join().unwrap();
    }
    let c = burrow_client::Client::open_existing(&path).unwrap();
    assert_eq!(c.status().unwrap().pending_ops, 200);
    env.sync(&c).await;
    assert_eq!(c.status().unwrap().pending_ops, 0);
}

/// JSON functions hand their result to the trigger with a JSON subtype; the captured value
/// must still be the column's text (a JSON string value included).
#[tokio::test]
async fn json_columns_written_with_json_functions_sync_as_written() {
    let env = Env::start().await;
    let a = env.client("a");
    a.execute(
        "INSERT INTO shipments(id, meta) VALUES ('s1', json_object('tags', json_array('a')));
         INSERT INTO shipments(id, meta) VALUES ('s2', json_quote('plain'));
         UPDATE shipments SET meta = json_insert(meta, '$.tags[#]', 'b') WHERE id = 's1'",
    )
    .unwrap();
    env.sync(&a).await;
    assert_eq!(a.status().unwrap().pending_ops, 0);
    let b = env.client("b");
    env.sync(&b).await;
    let want = rows(&a, "SELECT id, meta FROM shipments ORDER BY id");
    assert_eq!(
        want,
        vec![
            serde_json::json!({"id": "s1", "meta": r#"{"tags":["a","b"]}"#}),
            serde_json::json!({"id": "s2", "meta": r#""plain""#}),
        ]
    );
    assert_eq!(rows(&b, "SELECT id, meta FROM shipments ORDER BY id"), want);
}

#[tokio::test]
async fn a_transaction_can_override_the_lane_of_its_ops() {
    let env = Env::start().await;
    let a = env.client("a");
    // routes are `normal` in the schema; this transaction is critical.
    a.write_with_priority(burrow_core::Priority::Critical, |tx| {
        tx.execute_batch(
            "INSERT INTO routes(id, day) VALUES ('r1', 'mon');
             INSERT INTO routes(id, day) VALUES ('r2', 'tue');",
        )
    })
    .unwrap();
    a.execute("INSERT INTO routes(id, day) VALUES ('r3', 'wed')")
        .unwrap();
    let lanes = a.status().unwrap().pending_by_lane;
    assert_eq!(lanes.get("critical"), Some(&2), "{lanes:?}");
    assert_eq!(lanes.get("normal"), Some(&1), "{lanes:?}");
    env.sync(&a).await;
    assert_eq!(a.status().unwrap().pending_ops, 0);
}

/// Upload lanes: a critical transaction overtakes bulk ones queued before it, but never an
/// earlier transaction on the same row or on a row it references.
#[tokio::test]
async fn critical_ops_upload_before_bulk_ones_but_never_overtake_what_they_depend_on() {
    let env = Env::start().await;
    let a = burrow_client::Client::open_with(
        env.db("a"),
        &schema(),
        None,
        burrow_client::ClientOptions {
            upload_ops_max: 5,
            ..Default::default()
        },
    )
    .unwrap();
    // 20 bulk transactions first (routes are `normal`: make them bulk), then a route the
    // critical shipment references, then unrelated critical shipments.
    for i in 0..20 {
        a.write_with_priority(burrow_core::Priority::Bulk, |tx| {
            tx.execute(
                "INSERT INTO routes(id, day) VALUES (?1, 'mon')",
                [format!("bulk-{i:02}")],
            )
        })
        .unwrap();
    }
    a.write_with_priority(burrow_core::Priority::Bulk, |tx| {
        tx.execute("INSERT INTO routes(id, day) VALUES ('r-late', 'tue')", [])
    })
    .unwrap();
    a.execute("INSERT INTO shipments(id, route_id) VALUES ('s-dep', 'r-late')")
        .unwrap();
    a.execute("INSERT INTO shipments(id, route_id) VALUES ('s-free', NULL)")
        .unwrap();
    // The first upload request (5 ops at most) carries the critical work first: the route
    // the dependent shipment references goes along (priority inheritance).
    let mut conn = burrow_client::open::connect(&env.db("a")).unwrap();
    let batch = burrow_client::outbox::read_batch(
        &mut conn,
        &schema(),
        burrow_client::outbox::BatchLimits::new(5, 1 << 20),
        burrow_client::network::all_lanes(),
        None,
    )
    .unwrap();
    drop(conn);
    let order: Vec<String> = batch
        .txs
        .iter()
        .flat_map(|t| t.ops.iter().map(|o| o.row_id.clone()))
        .collect();
    assert_eq!(order[..3], ["r-late", "s-dep", "s-free"], "{order:?}");
    env.sync(&a).await;
    assert_eq!(a.status().unwrap().pending_ops, 0);
    let b = env.client("b");
    env.sync(&b).await;
    assert_eq!(
        rows(&b, "SELECT count(*) AS n FROM routes"),
        vec![serde_json::json!({"n": 21})]
    );
}

/// Network policy: offline attempts nothing; metered sends the critical lane only (and what it
/// depends on); unmetered sends the rest.
#[tokio::test]
async fn metered_sends_critical_work_only_and_offline_sends_nothing() {
    use burrow_client::{Network, NetworkState};
    let env = Env::start().await;
    let a = env.client("a");
    a.write_with_priority(burrow_core::Priority::Bulk, |tx| {
        tx.execute(
            "INSERT INTO routes(id, day) VALUES ('photo-batch', 'mon')",
            [],
        )
    })
    .unwrap();
    a.execute("INSERT INTO routes(id, day) VALUES ('r-normal', 'mon')")
        .unwrap();
    a.execute("INSERT INTO shipments(id, status) VALUES ('s1', 'delivered')")
        .unwrap();
    let state = |network| NetworkState {
        network,
        low_battery: false,
    };
    a.set_network(state(Network::Offline));
    let err = a.sync(&env.transport("ann")).await.unwrap_err();
    assert!(matches!(err, burrow_client::Error::Offline), "{err}");
    assert!(err.is_retryable());
    assert_eq!(a.status().unwrap().pending_ops, 3, "nothing attempted");
    assert_eq!(a.status().unwrap().last_sync_at, None);

    a.set_network(state(Network::Metered));
    let r = env.sync(&a).await;
    assert_eq!(r.ops_acked, 1, "only the critical shipment: {r:?}");
    let lanes = a.status().unwrap().pending_by_lane;
    assert_eq!(lanes.get("critical"), None, "{lanes:?}");
    assert_eq!(lanes.get("bulk"), Some(&1));
    assert_eq!(lanes.get("normal"), Some(&1));
    // Low battery on Wi-Fi: normal goes, bulk still waits.
    a.set_network(NetworkState {
        network: Network::Unmetered,
        low_battery: true,
    });
    let r = env.sync(&a).await;
    assert_eq!(r.ops_acked, 1, "{r:?}");
    a.set_network(state(Network::Unmetered));
    let r = env.sync(&a).await;
    assert_eq!(r.ops_acked, 1, "{r:?}");
    assert_eq!(a.status().unwrap().pending_ops, 0);
}

/// A request carries one lane: a critical op queued behind bulk rows goes alone (it does not
/// wait for bulk bytes packed behind it), and a bulk request is held to the bulk size.
#[tokio::test]
async fn a_request_carries_one_lane_and_bulk_requests_stay_small() {
    let env = Env::start().await;
    let a = env.client("a");
    for i in 0..20 {
        a.write_with_priority(burrow_core::Priority::Bulk, |tx| {
            tx.execute(
                "INSERT INTO routes(id, day) VALUES (?1, ?2)",
                [format!("photo-{i:02}"), "x".repeat(500)],
            )
        })
        .unwrap();
    }
    a.execute("INSERT INTO shipments(id, status) VALUES ('s-urgent', 'delivered')")
        .unwrap();
    let limits = burrow_client::outbox::BatchLimits {
        ops_max: 10_000,
        bytes_max: 4 << 20,
        bulk_bytes_max: 3_000,
    };
    let read = |limits| {
        let mut conn = burrow_client::open::connect(&env.db("a")).unwrap();
        burrow_client::outbox::read_batch(
            &mut conn,
            &schema(),
            limits,
            burrow_client::network::all_lanes(),
            None,
        )
        .unwrap()
    };
    let first = read(limits);
    assert_eq!(
        first.op_count, 1,
        "the critical op goes alone: {:?}",
        first.by_lane
    );
    assert_eq!(first.txs[0].ops[0].row_id, "s-urgent");
    // Once it is answered, bulk requests carry about `bulk_bytes_max` (whole transactions).
    env.sync(&a).await;
    for i in 0..20 {
        a.write_with_priority(burrow_core::Priority::Bulk, |tx| {
            tx.execute(
                "UPDATE routes SET day = ?2 WHERE id = ?1",
                [format!("photo-{i:02}"), "y".repeat(500)],
            )
        })
        .unwrap();
    }
    let bulk = read(limits);
    assert!(
        (2..=8).contains(&bulk.op_count),
        "a bulk request holds a few 500-byte ops, not all 20: {}",
        bulk.op_count
    );
    let unlimited = read(burrow_client::outbox::BatchLimits::new(10_000, 4 << 20));
    assert_eq!(unlimited.op_count, 20);
}

/// App reads go through their own read-only connection: while a write (or a sync applying a
/// page) holds the library's write connection, `query_json` answers at once with the last
/// committed state instead of waiting.
#[tokio::test]
async fn app_reads_do_not_wait_for_a_transaction_in_progress() {
    let env = Env::start().await;
    let a = std::sync::Arc::new(env.client("a"));
    a.execute("INSERT INTO routes(id, driver_id) VALUES ('r1', 'ann')")
        .unwrap();
    let reader = a.clone();
    a.write(|tx| {
        tx.execute("UPDATE routes SET driver_id = 'bob' WHERE id = 'r1'", [])?;
        // A reader on another thread, while this transaction holds the write connection.
        let (done, seen) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(reader.query_json("SELECT driver_id FROM routes"));
        });
        let got = seen
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("query_json waited for the write transaction");
        assert_eq!(
            got.unwrap()[0]["driver_id"],
            serde_json::json!("ann"),
            "the reader sees the last committed state"
        );
        Ok(())
    })
    .unwrap();
    assert_eq!(
        rows(&a, "SELECT driver_id FROM routes"),
        [serde_json::json!({"driver_id": "bob"})]
    );
    // Writes through the read path are refused, not silently uncaptured.
    assert!(a.query_json("DELETE FROM routes").is_err());
}
