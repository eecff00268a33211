use crate::harness::*;
use burrow_server::ServerStore;

#[tokio::test]
async fn two_devices_round_trip_every_type() {
    let env = Env::start().await;
    let a = env.client("a");
    let b = env.client("b");
    a.execute(
        "INSERT INTO routes(id, driver_id, day) VALUES ('r1', 'ann', '2026-11-26');
         INSERT INTO shipments(id, route_id, status, address, weight_kg, photo, meta, fragile, pieces)
         VALUES ('s1', 'r1', 'loaded', 'Main St 1', 12.5, x'00ff10', '{\"k\":[1,2]}', 1, 3);",
    )
    .unwrap();
    assert_eq!(a.status().unwrap().pending_ops, 2);
    let ra = env.sync(&a).await;
    assert_eq!(ra.ops_acked, 2);
    assert_eq!(
        ra.changes_received, 0,
        "the server does not echo a client's own writes"
    );
    assert_eq!(
        a.status().unwrap().pending_ops,
        0,
        "acked ops leave the outbox"
    );
    env.sync(&b).await;
    let got = rows(&b, "SELECT * FROM shipments");
    assert_eq!(
        got,
        vec![serde_json::json!({
            "id": "s1", "route_id": "r1", "status": "loaded", "address": "Main St 1",
            "weight_kg": 12.5, "photo": "00ff10", "meta": "{\"k\":[1,2]}", "fragile": 1, "pieces": 3
        })]
    );
    assert_eq!(a.state_hash().unwrap(), b.state_hash().unwrap());
    // An update and a delete travel too.
    b.execute("UPDATE shipments SET status = 'delivered', photo = NULL; DELETE FROM routes;")
        .unwrap();
    env.sync(&b).await;
    env.sync(&a).await;
    assert_eq!(
        rows(&a, "SELECT status, photo FROM shipments"),
        vec![serde_json::json!({"status": "delivered", "photo": null})]
    );
    assert!(rows(&a, "SELECT * FROM routes").is_empty());
    assert_eq!(a.state_hash().unwrap(), b.state_hash().unwrap());
    assert!(a.status().unwrap().last_sync_at.is_some());
}

#[tokio::test]
async fn ids_are_generated_when_the_app_omits_them() {
    let env = Env::start().await;
    let a = env.client("a");
    a.execute(
        "INSERT INTO routes(driver_id) VALUES ('x'); INSERT INTO routes(driver_id) VALUES ('y');",
    )
    .unwrap();
    let ids = rows(&a, "SELECT id FROM routes ORDER BY rowid");
    let (i0, i1) = (
        ids[0]["id"].as_str().unwrap(),
        ids[1]["id"].as_str().unwrap(),
    );
    assert_eq!(i0.len(), 36);
    assert_eq!(&i0[14..15], "7", "UUIDv7 layout: {i0}");
    assert_ne!(i0, i1);
    assert!(i0[..13] <= i1[..13], "time-ordered prefix");
    let b = env.client("b");
    env.sync(&a).await;
    env.sync(&b).await;
    assert_eq!(a.state_hash().unwrap(), b.state_hash().unwrap());
}

#[tokio::test]
async fn pending_local_edit_stays_visible_after_a_download() {
    let env = Env::start().await;
    let a = env.client("a");
    let b = env.client("b");
    a.execute("INSERT INTO shipments(id, status, address) VALUES ('s1', 'new', 'A')")
        .unwrap();
    env.sync(&a).await;
    env.sync(&b).await;
    // b edits offline; a changes the same and another field; b downloads only.
    b.execute("UPDATE shipments SET status = 'b-local'")
        .unwrap();
    a.execute("UPDATE shipments SET status = 'a-remote', address = 'B'")
        .unwrap();
    env.sync(&a).await;
    // The upload is held back (no outcome), the download still applies.
    let held = b.sync(&Faulty::new(&env, Fault::HoldUploads)).await;
    assert!(held.is_err(), "no outcome for the held upload");
    assert_eq!(b.status().unwrap().pending_ops, 1);
    assert_eq!(
        rows(&b, "SELECT status, address FROM shipments"),
        vec![serde_json::json!({"status": "b-local", "address": "B"})],
        "the unsynced local value stays, the remote field arrives"
    );
}

#[tokio::test]
async fn a_batch_resent_after_a_lost_response_is_applied_once() {
    let env = Env::start().await;
    let a = env.client("a");
    a.execute("INSERT INTO shipments(id, pieces) VALUES ('s1', 1); INSERT INTO shipments(id, pieces) VALUES ('s2', 2);")
        .unwrap();
    let lossy = Faulty::new(&env, Fault::LoseResponse(1));
    assert!(a.sync(&lossy).await.is_err(), "the response was lost");
    assert_eq!(
        a.status().unwrap().pending_ops,
        2,
        "not acked, so still queued"
    );
    assert!(
        a.status()
            .unwrap()
            .last_error
            .unwrap()
            .contains("response lost")
    );
    let head_after_first = env.server.store().head_seq().await.unwrap();
    let r = a.sync(&lossy).await.unwrap();
    assert_eq!(r.ops_acked, 2);
    assert_eq!(
        env.server.store().head_seq().await.unwrap(),
        head_after_first,
        "no new changes"
    );
    env.assert_applied_once(&a, &[1, 2]);
    assert_eq!(a.status().unwrap().pending_ops, 0);
}

#[tokio::test]
async fn a_connection_broken_mid_request_is_resumed_within_the_same_sync() {
    let env = Env::start().await;
    let a = env.client("a");
    a.execute("INSERT INTO shipments(id, pieces) VALUES ('s1', 1); INSERT INTO shipments(id, pieces) VALUES ('s2', 2);")
        .unwrap();
    // The server applies the upload twice over, and the client hears nothing either time.
    let broken = Faulty::new(&env, Fault::DropConnection { from: 1, to: 2 });
    let r = a
        .sync(&broken)
        .await
        .expect("the sync resumes and completes");
    assert!(r.complete);
    assert_eq!(r.resumed, 2);
    assert_eq!(r.ops_acked, 2, "the third exchange is answered");
    assert_eq!(broken.requests.load(std::sync::atomic::Ordering::SeqCst), 3);
    assert_eq!(a.status().unwrap().pending_ops, 0);
    env.assert_applied_once(&a, &[1, 2]);
}

#[tokio::test]
async fn a_connection_that_breaks_every_request_fails_the_sync_after_a_bounded_number_of_resumes() {
    let env = Env::start().await;
    let a = env.client("a");
    a.execute("INSERT INTO shipments(id, pieces) VALUES ('s1', 1)")
        .unwrap();
    let broken = Faulty::new(
        &env,
        Fault::DropConnection {
            from: 1,
            to: usize::MAX,
        },
    );
    let e = a
        .sync(&broken)
        .await
        .expect_err("a dead link fails the sync");
    assert!(
        matches!(
            e,
            burrow_client::Error::Transport(burrow_client::TransportError::ConnectionLost(_))
        ),
        "{e}"
    );
    assert_eq!(
        broken.requests.load(std::sync::atomic::Ordering::SeqCst),
        burrow_client::client::RESUMES_MAX as usize + 1,
        "the first request and RESUMES_MAX resumes, then the runner's backoff takes over"
    );
    assert_eq!(a.status().unwrap().pending_ops, 1, "still queued");
    let r = env.sync(&a).await;
    assert_eq!(r.ops_acked, 1);
    env.assert_applied_once(&a, &[1]);
}

#[tokio::test]
async fn client_killed_between_server_commit_and_local_ack_loses_and_duplicates_nothing() {
    let env = Env::start().await;
    let path = env.db("a");
    let id = {
        let a = env.client("a");
        a.execute("INSERT INTO shipments(id, pieces) VALUES ('s1', 1)")
            .unwrap();
        let lossy = Faulty::new(&env, Fault::LoseResponse(1));
        let _ = a.sync(&lossy).await;
        a.client_id().to_string()
        // The client is dropped here: the process "died" before applying the response.
    };
    let a = burrow_client::Client::open_existing(&path).unwrap();
    assert_eq!(a.client_id(), id, "the client id is stable across restarts");
    assert_eq!(a.status().unwrap().pending_ops, 1);
    env.sync(&a).await;
    assert_eq!(a.status().unwrap().pending_ops, 0);
    assert_eq!(env.server.store().op_effect_count(&id, 1).unwrap(), 1);
    let (ops, live_rows) = env.server.store().counts().unwrap();
    assert_eq!((ops, live_rows), (1, 1));
    let b = env.client("b");
    env.sync(&b).await;
    assert_eq!(
        rows(&b, "SELECT pieces FROM shipments"),
        vec![serde_json::json!({"pieces": 1})]
    );
}

#[tokio::test]
async fn initial_sync_of_10000_rows_pages_and_converges() {
    let env = Env::start().await;
    let a = env.client("a");
    a.write(|tx| {
        let mut stmt = tx.prepare(
            "INSERT INTO shipments(id, route_id, status, address, weight_kg, pieces) VALUES (?1, 'r1', 'loaded', ?2, ?3, ?4)",
        )?;
        for i in 0..10_000 {
            stmt.execute(rusqlite::params![format!("s{i:05}"), format!("Street {i}, 1000 City"), i as f64 / 10.0, i])?;
        }
        Ok(())
    })
    .unwrap();
    let up = env.sync(&a).await;
    assert_eq!(up.ops_acked, 10_000);
    assert!(up.requests >= 2, "uploads are bounded per request");
    let opts = burrow_client::ClientOptions {
        page_bytes_max: 64 * 1024,
        ..Default::default()
    };
    let b = burrow_client::Client::open_with(env.db("b"), &schema(), None, opts).unwrap();
    let down = env.sync(&b).await;
    assert_eq!(down.changes_received, 10_000);
    assert!(
        down.requests > 5,
        "downloaded in several pages: {}",
        down.requests
    );
    assert_eq!(
        rows(&b, "SELECT count(*) AS n FROM shipments")[0]["n"],
        10_000
    );
    assert_eq!(a.state_hash().unwrap(), b.state_hash().unwrap());
    assert_eq!(
        b.cursor().unwrap().since,
        env.server.store().head_seq().await.unwrap()
    );
}

#[tokio::test]
async fn a_local_transaction_larger_than_a_request_is_sent_in_parts_and_applied_atomically() {
    let env = Env::start().await;
    let opts = burrow_client::ClientOptions {
        upload_ops_max: 300,
        ..Default::default()
    };
    let a = burrow_client::Client::open_with(env.db("a"), &schema(), None, opts).unwrap();
    a.write(|tx| {
        for i in 0..1_000 {
            tx.execute(
                "INSERT INTO routes(id, day) VALUES (?1, 'mon')",
                [format!("r{i:04}")],
            )?;
        }
        Ok(())
    })
    .unwrap();
    // The first three parts are held; nothing is visible to others until the last arrives.
    let b = env.client("b");
    let stop_after = Faulty::new(&env, Fault::OfflineAfter(3));
    assert!(a.sync(&stop_after).await.is_err());
    env.sync(&b).await;
    assert!(
        rows(&b, "SELECT id FROM routes").is_empty(),
        "staged parts are not visible"
    );
    assert_eq!(
        a.status().unwrap().pending_ops,
        1_000,
        "staged ops stay in the outbox"
    );
    let r = env.sync(&a).await;
    assert_eq!(r.ops_acked, 1_000);
    assert_eq!(a.status().unwrap().pending_ops, 0);
    env.sync(&b).await;
    assert_eq!(rows(&b, "SELECT count(*) AS n FROM routes")[0]["n"], 1_000);
}

#[tokio::test]
async fn a_lost_response_to_the_last_part_still_acknowledges_every_part() {
    let env = Env::start().await;
    let opts = burrow_client::ClientOptions {
        upload_ops_max: 100,
        ..Default::default()
    };
    let a = burrow_client::Client::open_with(env.db("a"), &schema(), None, opts).unwrap();
    a.write(|tx| {
        for i in 0..250 {
            tx.execute("INSERT INTO routes(id) VALUES (?1)", [format!("r{i:04}")])?;
        }
        Ok(())
    })
    .unwrap();
    // Parts 1 and 2 are staged; the response to part 3 (which applies all) is lost.
    let drop_third = Faulty::new(&env, Fault::LoseResponse(3));
    assert!(a.sync(&drop_third).await.is_err());
    let r = env.sync(&a).await;
    assert_eq!(
        r.ops_acked, 250,
        "the resent last part answers for all parts"
    );
    assert_eq!(a.status().unwrap().pending_ops, 0);
    env.assert_applied_once(&a, &[1, 150, 250]);
}

#[tokio::test]
async fn a_row_deleted_during_a_multi_page_initial_sync_is_deleted_on_the_new_device() {
    let env = Env::start().await;
    let a = env.client("a");
    insert_routes(&a, 500);
    env.sync(&a).await;
    let opts = burrow_client::ClientOptions {
        page_bytes_max: 2_000,
        ..Default::default()
    };
    let b = burrow_client::Client::open_with(env.db("b"), &schema(), None, opts).unwrap();
    let one_page = Faulty::new(&env, Fault::OfflineAfter(1));
    assert!(b.sync(&one_page).await.is_err());
    assert_eq!(
        rows(&b, "SELECT id FROM routes WHERE id = 'r0000'").len(),
        1,
        "got page 1"
    );
    assert!(b.cursor().unwrap().is_paging());
    a.execute("DELETE FROM routes WHERE id = 'r0000'").unwrap();
    env.sync(&a).await;
    env.sync(&b).await;
    assert!(rows(&b, "SELECT id FROM routes WHERE id = 'r0000'").is_empty());
    assert_eq!(a.state_hash().unwrap(), b.state_hash().unwrap());
}

#[tokio::test]
async fn a_deleted_id_can_be_created_again() {
    let env = Env::start().await;
    let a = env.client("a");
    let b = env.client("b");
    a.execute("INSERT INTO routes(id, day) VALUES ('r1', 'mon')")
        .unwrap();
    env.sync(&a).await;
    // Offline: delete and re-create in two transactions before syncing.
    a.execute("DELETE FROM routes WHERE id = 'r1'").unwrap();
    a.execute("INSERT INTO routes(id, day) VALUES ('r1', 'tue')")
        .unwrap();
    env.sync(&a).await;
    env.sync(&b).await;
    assert_eq!(
        rows(&b, "SELECT day FROM routes"),
        vec![serde_json::json!({"day": "tue"})]
    );
    // Delete synced everywhere, then another device re-creates the id after seeing it.
    a.execute("DELETE FROM routes WHERE id = 'r1'").unwrap();
    env.sync(&a).await;
    env.sync(&b).await;
    assert!(rows(&b, "SELECT * FROM routes").is_empty());
    b.execute("INSERT INTO routes(id, day) VALUES ('r1', 'wed')")
        .unwrap();
    env.sync(&b).await;
    env.sync(&a).await;
    assert_eq!(
        rows(&a, "SELECT day FROM routes"),
        vec![serde_json::json!({"day": "wed"})]
    );
    assert_eq!(a.state_hash().unwrap(), b.state_hash().unwrap());
}

#[tokio::test]
async fn local_writes_queued_behind_a_multi_page_download_are_uploaded_in_the_same_sync() {
    let env = Env::start().await;
    let a = env.client("a");
    insert_routes(&a, 300);
    env.sync(&a).await;
    let opts = burrow_client::ClientOptions {
        page_bytes_max: 1_000,
        upload_ops_max: 2,
        ..Default::default()
    };
    let b = burrow_client::Client::open_with(env.db("b"), &schema(), None, opts).unwrap();
    for i in 0..5 {
        b.execute(&format!(
            "INSERT INTO shipments(id, pieces) VALUES ('b{i}', {i})"
        ))
        .unwrap();
    }
    let r = env.sync(&b).await;
    assert_eq!(r.ops_acked, 5);
    assert_eq!(
        b.status().unwrap().pending_ops,
        0,
        "nothing left behind after paging"
    );
    assert_eq!(rows(&b, "SELECT count(*) AS n FROM routes")[0]["n"], 300);
}

#[tokio::test]
async fn syncing_one_op_takes_one_request() {
    let env = Env::start().await;
    let a = env.client("a");
    env.sync(&a).await;
    a.execute("INSERT INTO shipments(id, status) VALUES ('s1', 'delivered')")
        .unwrap();
    let r = env.sync(&a).await;
    assert_eq!(
        (r.requests, r.ops_acked),
        (1, 1),
        "upload and download in one round trip"
    );
}

/// Forwards requests; before each one the "app" writes another row through its own connection.
struct WritesWhileSyncing {
    inner: burrow_client::HttpTransport,
    db: std::path::PathBuf,
    n: std::sync::atomic::AtomicUsize,
}

impl burrow_client::Transport for WritesWhileSyncing {
    async fn sync(
        &self,
        req: burrow_proto::v1::SyncRequest,
    ) -> Result<
        (burrow_proto::v1::SyncResponse, burrow_client::TrafficStats),
        burrow_client::TransportError,
    > {
        let n = self.n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let c = rusqlite::Connection::open(&self.db).unwrap();
        c.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
        c.execute("INSERT INTO routes(id) VALUES (?1)", [format!("live-{n}")])
            .unwrap();
        self.inner.sync(req).await
    }
}

#[tokio::test]
async fn a_sync_finishes_while_the_app_keeps_writing() {
    let env = Env::start().await;
    let opts = burrow_client::ClientOptions {
        upload_ops_max: 2,
        ..Default::default()
    };
    let a = burrow_client::Client::open_with(env.db("a"), &schema(), None, opts).unwrap();
    for i in 0..5 {
        a.execute(&format!("INSERT INTO shipments(id) VALUES ('s{i}')"))
            .unwrap();
    }
    let t = WritesWhileSyncing {
        inner: env.transport("ann"),
        db: env.db("a"),
        n: std::sync::atomic::AtomicUsize::new(0),
    };
    let r = a.sync(&t).await.unwrap();
    assert!(
        r.ops_acked >= 5,
        "everything queued at the start went up: {r:?}"
    );
    assert!(
        r.requests <= 6,
        "it did not chase the new writes forever: {r:?}"
    );
    assert!(a.status().unwrap().last_error.is_none());
}

/// A clock that moves one second every time it is read: a deadline then lets only a few
/// requests start.
#[derive(Debug)]
struct Ticking(std::sync::atomic::AtomicU64);

impl burrow_core::env::Clock for Ticking {
    fn now_ms(&self) -> u64 {
        self.0.fetch_add(1_000, std::sync::atomic::Ordering::SeqCst)
    }
}

#[tokio::test]
async fn sync_once_stops_at_the_deadline_keeps_what_it_did_and_says_what_is_left() {
    let env = Env::start().await;
    let clock = std::sync::Arc::new(Ticking(std::sync::atomic::AtomicU64::new(
        1_800_000_000_000,
    )));
    let a = burrow_client::Client::open_with(
        env.db("a"),
        &schema(),
        None,
        burrow_client::ClientOptions {
            clock: Some(clock.clone()),
            upload_ops_max: 100,
            ..Default::default()
        },
    )
    .unwrap();
    for i in 0..1_000 {
        a.execute(&format!(
            "INSERT INTO routes(id, day) VALUES ('r{i:04}', 'mon')"
        ))
        .unwrap();
    }
    let t = env.transport("ann");
    // Already past the deadline: nothing is attempted.
    let now = clock.0.load(std::sync::atomic::Ordering::SeqCst);
    let r = a.sync_once(&t, now).await.unwrap();
    assert_eq!(
        (r.requests, r.complete, r.ops_left),
        (0, false, 1_000),
        "{r:?}"
    );
    // A short window: a few requests of 100 ops, each applied; the rest is left.
    let now = clock.0.load(std::sync::atomic::Ordering::SeqCst);
    let r = a.sync_once(&t, now + 4_000).await.unwrap();
    assert!(!r.complete, "{r:?}");
    assert!(r.requests >= 1 && r.ops_acked >= 100, "{r:?}");
    assert_eq!(r.ops_left, 1_000 - r.ops_acked, "{r:?}");
    assert_eq!(a.status().unwrap().pending_ops, r.ops_left);
    // A long window finishes the job.
    let r = a.sync_once(&t, u64::MAX).await.unwrap();
    assert!(r.complete, "{r:?}");
    assert_eq!(r.ops_left, 0);
    let b = env.client("b");
    env.sync(&b).await;
    assert_eq!(
        rows(&b, "SELECT count(*) AS n FROM routes"),
        vec![serde_json::json!({"n": 1000})]
    );
}

#[tokio::test]
async fn a_refused_token_keeps_every_op_and_the_next_valid_one_sends_them() {
    let env = Env::start().await;
    let a = env.client("a");
    insert_routes(&a, 50);
    let expired =
        burrow_server::auth::mint(&env.secret, "ann", Default::default(), 1_000_000, 60).unwrap();
    let bad = burrow_client::HttpTransport::new(&env.server.url(), &expired).unwrap();
    for _ in 0..3 {
        let err = a.sync(&bad).await.unwrap_err();
        assert!(
            matches!(
                err,
                burrow_client::Error::Transport(burrow_client::TransportError::Unauthorized { .. })
            ),
            "{err}"
        );
        assert_eq!(a.status().unwrap().pending_ops, 50, "nothing dropped");
    }
    assert!(a.status().unwrap().last_error.is_some());
    let r = env.sync(&a).await;
    assert_eq!(r.ops_acked, 50);
    assert_eq!(a.status().unwrap().last_error, None);
}

/// A loopback "server" that accepts connections, reads each request and never answers: it
/// hangs up at once, or (`hold`) keeps the connection open in silence. Returns its URL and
/// how many connections it accepted.
async fn mute_server(hold: bool) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut sock, _)) = listener.accept().await {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut buf = vec![0u8; 1 << 16];
            let _ = sock.read(&mut buf).await;
            if hold {
                held.push(sock);
            }
        }
    });
    (format!("http://{addr}"), accepted)
}

/// The HTTP transport tells a connection that broke once the request was out (resumed at once)
/// from a server it cannot reach (the runner backs off), over real sockets.
#[tokio::test]
async fn the_http_transport_tells_a_broken_connection_from_an_unreachable_server() {
    let env = Env::start().await;
    let a = env.client("a");
    a.execute("INSERT INTO shipments(id, pieces) VALUES ('s1', 1)")
        .unwrap();
    // A listener that reads each request and hangs up without answering.
    let (url, accepted) = mute_server(false).await;
    let hangs_up = burrow_client::HttpTransport::new(&url, "t").unwrap();
    let e = a.sync(&hangs_up).await.unwrap_err();
    assert!(
        matches!(
            e,
            burrow_client::Error::Transport(burrow_client::TransportError::ConnectionLost(_))
        ),
        "{e}"
    );
    assert!(
        accepted.load(std::sync::atomic::Ordering::SeqCst)
            > burrow_client::client::RESUMES_MAX as usize,
        "every resume opened a connection again"
    );
    // Nothing listens on a port just released: the connection is refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let refused =
        burrow_client::HttpTransport::new(&format!("http://127.0.0.1:{port}"), "t").unwrap();
    let e = a.sync(&refused).await.unwrap_err();
    assert!(
        matches!(
            e,
            burrow_client::Error::Transport(burrow_client::TransportError::Network(_))
        ),
        "{e}"
    );
    assert_eq!(e.failure_kind(), burrow_client::FailureKind::Unreachable);
    assert_eq!(a.status().unwrap().pending_ops, 1, "the op stays queued");
}

#[tokio::test]
async fn a_server_that_never_answers_times_out_within_the_configured_limit() {
    let env = Env::start().await;
    let a = env.client("a");
    insert_routes(&a, 1);
    // Accepts, reads the request, and stays silent.
    let (url, _) = mute_server(true).await;
    let silent = burrow_client::HttpTransport::new(&url, "t")
        .unwrap()
        .with_timeouts(burrow_client::HttpTimeouts {
            connect: std::time::Duration::from_secs(5),
            request: std::time::Duration::from_millis(300),
        })
        .unwrap();
    let started = std::time::Instant::now();
    let e = a.sync(&silent).await.unwrap_err();
    assert!(
        matches!(
            e,
            burrow_client::Error::Transport(burrow_client::TransportError::Timeout(_))
        ),
        "{e}"
    );
    assert_eq!(e.failure_kind(), burrow_client::FailureKind::Timeout);
    assert!(e.is_retryable());
    // Not resumed at once: one timed-out exchange ends the attempt.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(a.status().unwrap().pending_ops, 1, "the op stays queued");
}
