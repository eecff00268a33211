//! `https://` servers: sync requests and live push (`wss://`) through a TLS terminator in
//! front of the real server (as a load balancer would be), with the server's certificate
//! issued by a private CA the app adds (`tests/fixtures/tls`, test-only keys valid until
//! 2126). Without that CA, both refuse the server.

use crate::harness::*;
use burrow_client::live::{LiveError, LiveSubscriber};
use burrow_client::{ExtraRoots, HttpTransport, RunOptions, SyncEvent, Transport, TransportError};
use burrow_server::ServerStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;
use std::time::Duration;

const CA: &[u8] = include_bytes!("../fixtures/tls/ca.pem");
const CERT: &[u8] = include_bytes!("../fixtures/tls/server.pem");
const KEY: &[u8] = include_bytes!("../fixtures/tls/server.key");

/// Terminates TLS on a loopback port and forwards each connection to `upstream`
/// (`host:port`); returns the `https://` base URL.
async fn tls_terminator(upstream: String) -> String {
    let certs = CertificateDer::pem_slice_iter(CERT)
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(KEY).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let (acceptor, upstream) = (acceptor.clone(), upstream.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(sock).await else {
                    return;
                };
                let Ok(mut up) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
            });
        }
    });
    format!("https://127.0.0.1:{port}")
}

async fn https_env() -> (Env, String) {
    let env = Env::start().await;
    let upstream = env.server.url().trim_start_matches("http://").to_string();
    let url = tls_terminator(upstream).await;
    (env, url)
}

#[tokio::test]
async fn an_https_server_behind_a_private_ca_syncs_and_pushes_live() {
    let (env, url) = https_env().await;
    let roots = ExtraRoots::from_pem(CA).unwrap();
    let tls_for = |user: &str| {
        HttpTransport::with_extra_roots(&url, &env.token(user), roots.clone()).unwrap()
    };
    // Sync requests over TLS.
    let a = env.client("a");
    a.execute("INSERT INTO routes(id, day) VALUES ('r1', 'mon')")
        .unwrap();
    let r = a.sync(&tls_for("ann")).await.unwrap();
    assert_eq!(r.ops_acked, 1);
    // Live push over wss://, with the transport's roots.
    let endpoint = tls_for("ann").live_endpoint().unwrap();
    let mut sub = LiveSubscriber::connect_to(&endpoint).await.unwrap();
    let head = env.server.store().head_seq().await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), sub.next_head())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first, Some(head), "the first poke carries the head");
    // A running device on the https URL is poked and pulls at once (its poll is a minute).
    let b = Arc::new(env.client("b"));
    let mut events = b.events();
    let options = RunOptions {
        poll_interval_ms: 60_000,
        live: true,
        ..RunOptions::default()
    };
    let (stop_tx, runner) = spawn_runner(b.clone(), tls_for("bob"), options);
    // The first sync, then the subscription's first poke (the current head).
    until(&mut events, |e| matches!(e, SyncEvent::Synced { .. })).await;
    until(&mut events, |e| matches!(e, SyncEvent::Poked { .. })).await;
    a.execute("INSERT INTO routes(id, day) VALUES ('r2', 'tue')")
        .unwrap();
    a.sync(&tls_for("ann")).await.unwrap();
    let head = env.server.store().head_seq().await.unwrap();
    until(
        &mut events,
        |e| matches!(e, SyncEvent::Poked { head_seq } if *head_seq >= head),
    )
    .await;
    until(
        &mut events,
        |e| matches!(e, SyncEvent::Synced { report } if report.changes_received >= 1),
    )
    .await;
    assert_eq!(
        rows(&b, "SELECT id FROM routes ORDER BY id"),
        vec![
            serde_json::json!({"id": "r1"}),
            serde_json::json!({"id": "r2"})
        ]
    );
    drop(stop_tx);
    runner.await.unwrap();
}

#[tokio::test]
async fn without_the_private_ca_the_server_is_refused_and_nothing_is_lost() {
    let (env, url) = https_env().await;
    let a = env.client("a");
    a.execute("INSERT INTO routes(id, day) VALUES ('r1', 'mon')")
        .unwrap();
    let untrusting = HttpTransport::new(&url, &env.token("ann")).unwrap();
    let e = a.sync(&untrusting).await.unwrap_err();
    assert!(
        matches!(
            &e,
            burrow_client::Error::Transport(TransportError::Network(m)) if m.contains("certificate")
        ),
        "{e}"
    );
    assert_eq!(a.status().unwrap().pending_ops, 1, "the op stays queued");
    let e = LiveSubscriber::connect(&url, &env.token("ann"))
        .await
        .unwrap_err();
    assert!(matches!(e, LiveError::Unavailable(_)), "{e:?}");
    // A bundle that is not a certificate is a configuration error, named as such.
    let e = ExtraRoots::from_pem(b"garbage").unwrap_err();
    assert!(matches!(e, TransportError::InvalidConfig(_)), "{e}");
    assert!(!e.is_retryable());
}
