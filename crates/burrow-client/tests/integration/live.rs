//! Live push (`GET /v1/live`): pokes reach subscribed devices, authentication, the per-user
//! connection limit and shutdown.

use crate::harness::*;
use burrow_client::live::{LiveError, LiveSubscriber};
use burrow_server::{ServerConfig, ServerStore};
use std::time::{Duration, Instant};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, header};

/// The head B's subscriber reports, with when it arrived.
type Poke = (u64, Instant);

/// Reads `sub` on a task, forwarding every head with its arrival time.
fn forward(mut sub: LiveSubscriber) -> tokio::sync::mpsc::UnboundedReceiver<Poke> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Some(h)) = sub.next_head().await {
            if tx.send((h, Instant::now())).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits (at most `within`) for a poke with a head of at least `target`.
async fn poke_at_least(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Poke>,
    target: u64,
    within: Duration,
) -> Poke {
    timeout(within, async {
        loop {
            let (h, at) = rx.recv().await.expect("subscriber ended");
            if h >= target {
                return (h, at);
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no poke with head >= {target} within {within:?}"))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::test]
async fn a_commit_pokes_other_devices_at_once() {
    let env = Env::start().await;
    let a = env.client("a");
    let b = env.client("b");
    let sub = LiveSubscriber::connect(&env.server.url(), &env.token("ann"))
        .await
        .unwrap();
    let mut pokes = forward(sub);
    let (first, _) = poke_at_least(&mut pokes, 0, Duration::from_secs(2)).await;
    assert_eq!(first, 0, "an empty server's head");

    let mut latencies = Vec::new();
    let mut sync_times = Vec::new();
    for round in 0..20 {
        let t0 = Instant::now();
        a.execute(&format!(
            "INSERT INTO routes(id, day) VALUES ('r{round:02}', 'mon')"
        ))
        .unwrap();
        env.sync(&a).await;
        sync_times.push(t0.elapsed());
        let head = env.server.store().head_seq().await.unwrap();
        let (got, at) = poke_at_least(&mut pokes, head, Duration::from_secs(2)).await;
        assert!(got >= head);
        latencies.push(at.duration_since(t0));
        // B pulls on the poke and sees the row.
        env.sync(&b).await;
        let n = rows(&b, "SELECT count(*) AS n FROM routes");
        assert_eq!(n, vec![serde_json::json!({ "n": round + 1 })]);
    }
    latencies.sort();
    sync_times.sort();
    eprintln!(
        "live push latency (write+sync on A -> poke on B) over {} rounds: p50 {:?}, p99 {:?}, max {:?}",
        latencies.len(),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        latencies[latencies.len() - 1],
    );
    eprintln!(
        "  (for comparison, A's write+sync alone: p50 {:?}, p99 {:?}; the poke is sent before A's response)",
        percentile(&sync_times, 0.50),
        percentile(&sync_times, 0.99),
    );
    assert_eq!(a.state_hash().unwrap(), b.state_hash().unwrap());
}

#[tokio::test]
async fn a_bad_or_missing_token_is_unauthorized() {
    let env = Env::start().await;
    let url = env.server.url();
    for token in ["not-a-jwt", "", "a.b.c"] {
        match LiveSubscriber::connect(&url, token).await {
            Err(LiveError::Unauthorized { code, message }) => {
                assert!(
                    !code.is_empty(),
                    "the server's code for {token:?}: {message}"
                );
                assert!(!LiveError::Unauthorized { code, message }.is_retryable());
            }
            other => panic!("token {token:?}: expected Unauthorized, got {other:?}"),
        }
    }
    // No Authorization header at all, and no subprotocol.
    let ws = url.replace("http://", "ws://") + "/v1/live";
    match tokio_tungstenite::connect_async(ws.as_str()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 401);
        }
        other => panic!("expected 401, got {:?}", other.map(|(_, r)| r.status())),
    }
    // A plain GET with a good token is told to upgrade.
    let resp = reqwest::Client::new()
        .get(format!("{url}/v1/live"))
        .bearer_auth(env.token("ann"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 426);
    let body: serde_json::Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    assert_eq!(body["code"], "websocket_required");
}

#[tokio::test]
async fn the_token_may_come_as_a_subprotocol() {
    let env = Env::start().await;
    let ws = env.server.url().replace("http://", "ws://") + "/v1/live";
    let proto = format!("bearer.{}", env.token("ann"));
    let mut req = ws.as_str().into_client_request().unwrap();
    req.headers_mut().insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_str(&format!("burrow.v1, {proto}")).unwrap(),
    );
    let (mut stream, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(
        resp.headers()
            .get(header::SEC_WEBSOCKET_PROTOCOL)
            .and_then(|v| v.to_str().ok()),
        Some(proto.as_str()),
        "the chosen protocol is echoed"
    );
    use futures_util::StreamExt;
    let first = timeout(Duration::from_secs(2), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.into_text().unwrap().as_str(), r#"{"head_seq":0}"#);

    let mut req = ws.as_str().into_client_request().unwrap();
    req.headers_mut().insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static("bearer.forged"),
    );
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 401);
        }
        other => panic!("expected 401, got {:?}", other.map(|(_, r)| r.status())),
    }
}

#[tokio::test]
async fn the_first_message_carries_the_current_head() {
    let env = Env::start().await;
    let a = env.client("a");
    insert_routes(&a, 7);
    env.sync(&a).await;
    let head = env.server.store().head_seq().await.unwrap();
    assert!(head >= 7);
    let mut sub = LiveSubscriber::connect(&env.server.url(), &env.token("bob"))
        .await
        .unwrap();
    let first = timeout(Duration::from_secs(2), sub.next_head())
        .await
        .unwrap();
    assert_eq!(first, Ok(Some(head)));
    sub.close().await;

    // A restarted server learns the head from its store, not from a commit.
    let Env {
        dir,
        server,
        secret,
    } = env;
    server.shutdown().await;
    let mut config = ServerConfig::new(dir.path().join("server"), schema());
    config.secret = Some(secret.clone());
    let server = burrow_server::spawn(config, "127.0.0.1:0").await.unwrap();
    let env = Env {
        dir,
        server,
        secret,
    };
    let mut sub = LiveSubscriber::connect(&env.server.url(), &env.token("bob"))
        .await
        .unwrap();
    let first = timeout(Duration::from_secs(2), sub.next_head())
        .await
        .unwrap();
    assert_eq!(first, Ok(Some(head)));
}

#[tokio::test]
async fn connections_per_user_are_limited() {
    let env = Env::start_with(|c| c.limits.live_connections_per_user_max = 2).await;
    let url = env.server.url();
    let token = env.token("ann");
    let s1 = LiveSubscriber::connect(&url, &token).await.unwrap();
    let s2 = LiveSubscriber::connect(&url, &token).await.unwrap();
    let err = LiveSubscriber::connect(&url, &token).await.unwrap_err();
    match &err {
        LiveError::Refused {
            status,
            code,
            message,
        } => {
            assert_eq!(*status, 429);
            assert_eq!(code, "too_many_live_connections");
            assert!(
                message.contains("live_connections_per_user_max = 2"),
                "{message}"
            );
        }
        other => panic!("expected a 429, got {other:?}"),
    }
    assert!(err.to_string().contains("live_connections_per_user_max"));
    assert!(err.is_retryable());
    // Another user has slots of their own.
    let _bob = LiveSubscriber::connect(&url, &env.token("bob"))
        .await
        .unwrap();

    // A dropped connection gives its slot back (once the server notices), a closed one too.
    drop(s1);
    let reconnect = |what: &'static str| {
        let (url, token) = (url.clone(), token.clone());
        async move {
            let deadline = Instant::now() + Duration::from_secs(2);
            loop {
                match LiveSubscriber::connect(&url, &token).await {
                    Ok(s) => return s,
                    Err(LiveError::Refused { status: 429, .. }) if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(e) => panic!("no slot after {what}: {e}"),
                }
            }
        }
    };
    let s3 = reconnect("a drop").await;
    s2.close().await;
    let _s4 = reconnect("a close").await;
    assert!(matches!(
        LiveSubscriber::connect(&url, &token).await,
        Err(LiveError::Refused { status: 429, .. })
    ));
    drop(s3);
}

#[tokio::test]
async fn server_shutdown_ends_the_subscription() {
    let env = Env::start().await;
    let mut sub = LiveSubscriber::connect(&env.server.url(), &env.token("ann"))
        .await
        .unwrap();
    assert_eq!(sub.next_head().await, Ok(Some(0)));
    let Env { server, dir, .. } = env;
    let t0 = Instant::now();
    timeout(Duration::from_secs(5), server.shutdown())
        .await
        .expect("shutdown waits for no live connection");
    let end = timeout(Duration::from_secs(5), sub.next_head())
        .await
        .expect("next_head must not hang after shutdown");
    eprintln!("after shutdown: {end:?} in {:?}", t0.elapsed());
    assert!(
        matches!(end, Ok(None) | Err(LiveError::Unavailable(_))),
        "{end:?}"
    );
    assert_eq!(sub.next_head().await.unwrap_or(None), None);
    drop(dir);
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable_and_a_foreign_scheme_unsupported() {
    // A port nobody listens on (bound then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = LiveSubscriber::connect(&format!("http://127.0.0.1:{port}"), "t")
        .await
        .unwrap_err();
    assert!(matches!(err, LiveError::Unavailable(_)), "{err:?}");
    assert!(err.is_retryable());
    let err = LiveSubscriber::connect("ftp://example.invalid", "t")
        .await
        .unwrap_err();
    assert!(matches!(err, LiveError::Unsupported(_)), "{err:?}");
    assert!(!err.is_retryable());
}

/// Slow (about 70 s): pings keep an idle subscription open past both sides' silence limits,
/// and a client that never reads (so never answers pings) loses its connection and slot.
#[tokio::test]
#[ignore = "slow: waits past the keepalive timeouts"]
async fn keepalive_holds_idle_connections_and_drops_deaf_ones() {
    let env = Env::start_with(|c| c.limits.live_connections_per_user_max = 1).await;
    let url = env.server.url();
    let sub = LiveSubscriber::connect(&url, &env.token("ann"))
        .await
        .unwrap();
    let mut pokes = forward(sub);
    poke_at_least(&mut pokes, 0, Duration::from_secs(2)).await;
    // Connected, never read.
    let _deaf = LiveSubscriber::connect(&url, &env.token("bob"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(70)).await;
    let a = env.client("a");
    insert_routes(&a, 1);
    env.sync(&a).await;
    poke_at_least(&mut pokes, 1, Duration::from_secs(2)).await;
    LiveSubscriber::connect(&url, &env.token("bob"))
        .await
        .expect("the deaf connection was dropped and its slot freed");
}
