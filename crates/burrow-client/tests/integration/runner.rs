//! The background runner: syncs on writes, backs off after failures, waits offline and in
//! `auth_required` with the queue intact, and publishes events.

use crate::harness::*;
use burrow_client::{
    Client, FailureKind, HttpTransport, Network, NetworkState, RunOptions, SyncEvent, SyncState,
    Transport, TransportError,
};
use burrow_server::store::ServerStore;
use std::sync::Arc;
use std::time::Duration;

fn fast() -> RunOptions {
    RunOptions {
        poll_interval_ms: 60_000,
        backoff: burrow_core::backoff::BackoffConfig {
            base_ms: 50,
            factor: 2,
            cap_ms: 400,
            retry_after_cap_ms: 1_000,
        },
        token_provider: None,
        live: true,
    }
}

#[tokio::test]
async fn a_write_is_synced_by_the_runner_without_being_asked() {
    let env = Env::start().await;
    let a = Arc::new(env.client("a"));
    let mut events = a.events();
    let (stop, handle) = spawn_runner(a.clone(), env.transport("ann"), fast());
    until(&mut events, |e| matches!(e, SyncEvent::Synced { .. })).await; // the first round
    a.execute("INSERT INTO routes(id, day) VALUES ('r1', 'mon')")
        .unwrap();
    until(&mut events, |e| matches!(e, SyncEvent::Written { ops: 1 })).await;
    until(
        &mut events,
        |e| matches!(e, SyncEvent::Synced { report } if report.ops_acked == 1),
    )
    .await;
    assert_eq!(a.status().unwrap().pending_ops, 0);
    assert_eq!(a.status().unwrap().state, SyncState::Idle);
    drop(stop);
    handle.await.unwrap();
}

#[tokio::test]
async fn an_unreachable_server_means_backing_off_with_a_next_retry_time_and_no_loss() {
    let env = Env::start().await;
    let a = Arc::new(env.client("a"));
    insert_routes(&a, 10);
    // Nothing listens on this port.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let transport = HttpTransport::new(&url, &env.token("ann")).unwrap();
    let mut events = a.events();
    let (stop, handle) = spawn_runner(a.clone(), transport, fast());
    let e = until(&mut events, |e| {
        matches!(
            e,
            SyncEvent::State {
                state: SyncState::BackingOff,
                ..
            }
        )
    })
    .await;
    let SyncEvent::State {
        next_retry_at_ms: Some(at),
        ..
    } = e
    else {
        panic!("no retry time: {e:?}")
    };
    assert!(at > 0);
    // It keeps retrying (never gives up): several failures follow.
    for _ in 0..3 {
        until(&mut events, |e| {
            matches!(
                e,
                SyncEvent::Failed {
                    retryable: true,
                    kind: FailureKind::Unreachable,
                    status: None,
                    ..
                }
            )
        })
        .await;
    }
    let st = a.status().unwrap();
    assert_eq!(st.pending_ops, 10);
    assert!(st.last_error.is_some());
    drop(stop);
    handle.await.unwrap();
}

#[tokio::test]
async fn a_refused_token_waits_in_auth_required_until_a_new_one_then_resumes() {
    let env = Env::start().await;
    let a = Arc::new(env.client("a"));
    insert_routes(&a, 20);
    let expired =
        burrow_server::auth::mint(&env.secret, "ann", Default::default(), 1_000_000, 60).unwrap();
    let transport = HttpTransport::new(&env.server.url(), &expired).unwrap();
    let mut events = a.events();
    let (stop, handle) = spawn_runner(a.clone(), transport.clone(), fast());
    let failed = until(&mut events, |e| matches!(e, SyncEvent::Failed { .. })).await;
    // The event says what happened in typed fields: no app parses the message.
    assert!(
        matches!(
            &failed,
            SyncEvent::Failed {
                kind: FailureKind::Unauthorized,
                status: Some(401),
                code: Some(code),
                retryable: false,
                ..
            } if code == "token_expired"
        ),
        "{failed:?}"
    );
    until(&mut events, |e| {
        matches!(
            e,
            SyncEvent::State {
                state: SyncState::AuthRequired,
                ..
            }
        )
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let st = a.status().unwrap();
    assert_eq!(st.state, SyncState::AuthRequired);
    assert_eq!(st.pending_ops, 20, "the queue is intact");
    // The app signs the user in again.
    transport.set_token(&env.token("ann"));
    a.retry_now();
    until(
        &mut events,
        |e| matches!(e, SyncEvent::Synced { report } if report.ops_acked == 20),
    )
    .await;
    assert_eq!(a.status().unwrap().pending_ops, 0);
    drop(stop);
    handle.await.unwrap();
}

#[tokio::test]
async fn a_token_provider_is_asked_for_a_fresh_token_on_401() {
    let env = Env::start().await;
    let a = Arc::new(env.client("a"));
    insert_routes(&a, 5);
    let expired =
        burrow_server::auth::mint(&env.secret, "ann", Default::default(), 1_000_000, 60).unwrap();
    let fresh = env.token("ann");
    let mut options = fast();
    options.token_provider = Some(Arc::new(move || Some(fresh.clone())));
    let transport = HttpTransport::new(&env.server.url(), &expired).unwrap();
    let mut events = a.events();
    let (stop, handle) = spawn_runner(a.clone(), transport, options);
    until(
        &mut events,
        |e| matches!(e, SyncEvent::Synced { report } if report.ops_acked == 5),
    )
    .await;
    drop(stop);
    handle.await.unwrap();
}

#[tokio::test]
async fn offline_attempts_nothing_and_the_network_coming_back_syncs_at_once() {
    let env = Env::start().await;
    let a = Arc::new(env.client("a"));
    a.set_network(NetworkState {
        network: Network::Offline,
        low_battery: false,
    });
    insert_routes(&a, 3);
    let mut events = a.events();
    let (stop, handle) = spawn_runner(a.clone(), env.transport("ann"), fast());
    until(&mut events, |e| {
        matches!(
            e,
            SyncEvent::State {
                state: SyncState::Offline,
                ..
            }
        )
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(a.status().unwrap().pending_ops, 3);
    assert_eq!(
        a.status().unwrap().last_sync_at,
        None,
        "no attempt while offline"
    );
    a.set_network(NetworkState::default());
    until(
        &mut events,
        |e| matches!(e, SyncEvent::Synced { report } if report.ops_acked == 3),
    )
    .await;
    drop(stop);
    handle.await.unwrap();
}

/// Live push end to end through the runner: B learns of A's write from a poke, long before
/// its poll interval (60 s here).
#[tokio::test]
async fn a_running_device_pulls_at_once_when_the_server_pokes() {
    let env = Env::start().await;
    let a = env.client("a");
    let b = Arc::new(env.client("b"));
    let mut events = b.events();
    let (stop, handle) = spawn_runner(b.clone(), env.transport("bob"), fast());
    until(&mut events, |e| matches!(e, SyncEvent::Synced { .. })).await;
    // Let the subscription settle (its first poke carries the current head).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    a.execute("INSERT INTO routes(id, day) VALUES ('r-live', 'mon')")
        .unwrap();
    env.sync(&a).await;
    until(&mut events, |e| matches!(e, SyncEvent::Poked { .. })).await;
    until(
        &mut events,
        |e| matches!(e, SyncEvent::Synced { report } if report.changes_received >= 1),
    )
    .await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(
        rows(&b, "SELECT id FROM routes"),
        vec![serde_json::json!({"id": "r-live"})]
    );
    eprintln!("write on A → row on B through live push: {took:?}");
    drop(stop);
    handle.await.unwrap();
}

/// The real server's sync handler called in-process (no sockets), so the test can run on
/// tokio's paused clock: an hour passes in milliseconds.
struct InProcess {
    state: Arc<burrow_server::http::AppState<burrow_server::store::SqliteServerStore>>,
    token: std::sync::Mutex<String>,
    attempts: std::sync::atomic::AtomicUsize,
}

impl Transport for InProcess {
    async fn sync(
        &self,
        req: burrow_proto::v1::SyncRequest,
    ) -> Result<(burrow_proto::v1::SyncResponse, burrow_client::TrafficStats), TransportError> {
        self.attempts
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let header = format!("Bearer {}", self.token.lock().unwrap());
        let claims =
            burrow_server::http::authenticate(&self.state, Some(&header)).map_err(|e| {
                TransportError::Unauthorized {
                    code: e.code().into(),
                    message: e.message().into(),
                }
            })?;
        let body = burrow_proto::encode_frame(&req).unwrap();
        let answer = burrow_server::http::process_sync(&self.state, &claims, &body)
            .await
            .map_err(|e| TransportError::Status {
                status: e.status().as_u16(),
                code: e.code().into(),
                message: e.message().into(),
                retry_after_ms: None,
            })?;
        let resp = burrow_proto::decode_frame(&answer, 1 << 28).unwrap();
        Ok((resp, burrow_client::TrafficStats::default()))
    }

    fn set_token(&self, token: &str) {
        *self.token.lock().unwrap() = token.to_string();
    }
}

/// Device time that follows tokio's (paused) clock.
#[derive(Debug)]
struct TokioClock {
    base_ms: u64,
    start: tokio::time::Instant,
}

impl burrow_core::env::Clock for TokioClock {
    fn now_ms(&self) -> u64 {
        self.base_ms + self.start.elapsed().as_millis() as u64
    }
}

#[tokio::test(start_paused = true)]
async fn a_401_for_an_hour_of_simulated_time_keeps_every_op_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let secret = b"hour-test-secret".to_vec();
    let mut config = burrow_server::ServerConfig::new(dir.path().join("server"), schema());
    config.secret = Some(secret.clone());
    std::fs::create_dir_all(dir.path().join("server")).unwrap();
    let store = burrow_server::store::SqliteServerStore::open(&dir.path().join("server/burrow.db"))
        .unwrap();
    let state = Arc::new(burrow_server::http::AppState::new(config, Arc::new(store)).unwrap());
    let expired =
        burrow_server::auth::mint(&secret, "ann", Default::default(), 1_000_000, 60).unwrap();
    let transport = Arc::new(InProcess {
        state: state.clone(),
        token: std::sync::Mutex::new(expired),
        attempts: Default::default(),
    });
    let clock = Arc::new(TokioClock {
        base_ms: 1_790_000_000_000,
        start: tokio::time::Instant::now(),
    });
    let options = burrow_client::ClientOptions {
        clock: Some(clock),
        ..Default::default()
    };
    let a = Arc::new(Client::open_with(dir.path().join("a.db"), &schema(), None, options).unwrap());
    insert_routes(&a, 1);
    let mut events = a.events();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let runner = {
        let (a, transport) = (a.clone(), transport.clone());
        tokio::spawn(async move {
            a.run(&*transport, &fast(), async {
                let _ = stop_rx.await;
            })
            .await
            .unwrap();
        })
    };
    until(&mut events, |e| {
        matches!(
            e,
            SyncEvent::State {
                state: SyncState::AuthRequired,
                ..
            }
        )
    })
    .await;
    let attempts_before = transport.attempts.load(std::sync::atomic::Ordering::SeqCst);

    // An hour of field work: a write a minute, no valid token.
    let started = tokio::time::Instant::now();
    for i in 1..=60 {
        a.execute(&format!(
            "INSERT INTO routes(id, day) VALUES ('h{i:02}', 'mon')"
        ))
        .unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
        let st = a.status().unwrap();
        assert_eq!(st.state, SyncState::AuthRequired, "after {i} min");
        assert_eq!(st.pending_ops, 1 + i, "every op is kept after {i} min");
        assert_eq!(st.rejected_ops, 0);
    }
    assert!(started.elapsed() >= Duration::from_secs(3600));
    // No attempt hammered the server with the refused token meanwhile.
    assert_eq!(
        transport.attempts.load(std::sync::atomic::Ordering::SeqCst),
        attempts_before
    );

    // The user signs in again: everything goes.
    let fresh = burrow_server::auth::mint(
        &secret,
        "ann",
        Default::default(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
        3600,
    )
    .unwrap();
    transport.set_token(&fresh);
    a.retry_now();
    until(
        &mut events,
        |e| matches!(e, SyncEvent::Synced { report } if report.ops_left == 0),
    )
    .await;
    until(&mut events, |e| {
        matches!(
            e,
            SyncEvent::State {
                state: SyncState::Idle,
                ..
            }
        )
    })
    .await;
    assert_eq!(a.status().unwrap().pending_ops, 0);
    let head = state.store().head_seq().await.unwrap();
    assert_eq!(head, 61, "all 61 writes reached the server");
    drop(stop_tx);
    runner.await.unwrap();
}
