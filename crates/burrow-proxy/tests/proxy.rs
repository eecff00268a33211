//! The proxy's faults, each on its own, against a local echo or blob server.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use burrow_proxy::{Profile, ProxyHandle, spawn};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A server that echoes what it reads.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// A server that sends `n` bytes to whoever connects, then closes.
async fn blob_server(n: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = s.write_all(&vec![7u8; n]).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

async fn round_trip(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
    s.write_all(msg).await?;
    let mut buf = vec![0u8; msg.len()];
    s.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn connect(p: &ProxyHandle) -> TcpStream {
    TcpStream::connect(p.local_addr()).await.unwrap()
}

#[tokio::test]
async fn latency_delays_each_direction() {
    let up = echo_server().await;
    let profile = Profile::custom().with_latency(Duration::from_millis(100), Duration::ZERO);
    let proxy = spawn("127.0.0.1:0", up, profile, 1).await.unwrap();
    let mut s = connect(&proxy).await;
    let t0 = Instant::now();
    assert_eq!(round_trip(&mut s, b"hello").await.unwrap(), b"hello");
    let rtt = t0.elapsed();
    assert!(rtt >= Duration::from_millis(200), "round trip {rtt:?}");
    assert!(rtt < Duration::from_millis(1500), "round trip {rtt:?}");
    let st = proxy.stats();
    assert_eq!((st.connections, st.bytes_up, st.bytes_down), (1, 5, 5));
}

#[tokio::test]
async fn bandwidth_cap_limits_throughput_and_keeps_bytes_in_order() {
    let n = 100_000;
    let up = blob_server(n).await;
    let profile = Profile::custom().with_bandwidth(Some(100_000), None);
    let proxy = spawn("127.0.0.1:0", up, profile, 2).await.unwrap();
    let mut s = connect(&proxy).await;
    let t0 = Instant::now();
    let mut got = Vec::new();
    s.read_to_end(&mut got).await.unwrap();
    let took = t0.elapsed();
    assert_eq!(got.len(), n);
    assert!(got.iter().all(|b| *b == 7));
    // 100 kB at 100 kB/s, minus the 10 kB burst allowance.
    assert!(took >= Duration::from_millis(850), "took {took:?}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert_eq!(proxy.stats().bytes_down, n as u64);
}

#[tokio::test]
async fn jitter_never_reorders_bytes() {
    let up = echo_server().await;
    let profile =
        Profile::custom().with_latency(Duration::from_millis(5), Duration::from_millis(5));
    let proxy = spawn("127.0.0.1:0", up, profile, 3).await.unwrap();
    let mut s = connect(&proxy).await;
    let msg: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let (mut r, mut w) = s.split();
    let send = async {
        for c in msg.chunks(1000) {
            w.write_all(c).await.unwrap();
        }
    };
    let mut back = vec![0u8; msg.len()];
    let recv = r.read_exact(&mut back);
    let (_, got) = tokio::join!(send, recv);
    got.unwrap();
    assert!(back == msg, "bytes came back reordered or changed");
}

#[tokio::test]
async fn partition_cuts_connections_and_refuses_new_ones_until_healed() {
    let up = echo_server().await;
    let proxy = spawn("127.0.0.1:0", up, Profile::none(), 4).await.unwrap();
    let mut s = connect(&proxy).await;
    assert_eq!(round_trip(&mut s, b"a").await.unwrap(), b"a");
    proxy.set_online(false);
    assert!(!proxy.is_online());
    // The open connection is reset.
    let mut buf = [0u8; 1];
    let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap();
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    // A new one is accepted and reset at once.
    let mut s2 = connect(&proxy).await;
    let r = tokio::time::timeout(Duration::from_secs(5), round_trip(&mut s2, b"b"))
        .await
        .unwrap();
    assert!(r.is_err(), "{r:?}");
    proxy.set_online(true);
    let mut s3 = connect(&proxy).await;
    assert_eq!(round_trip(&mut s3, b"c").await.unwrap(), b"c");
    let st = proxy.stats();
    assert_eq!(st.outages, 1);
    assert_eq!(st.cut, 1);
    assert_eq!(st.refused, 1);
}

#[tokio::test]
async fn drops_close_both_sides() {
    let up = echo_server().await;
    let profile = Profile::custom().with_drops(0.99);
    let proxy = spawn("127.0.0.1:0", up, profile, 5).await.unwrap();
    let mut s = connect(&proxy).await;
    let mut buf = [0u8; 1];
    let r = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf))
        .await
        .unwrap();
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    assert_eq!(proxy.stats().drops, 1);
    // Switching the faults off keeps new connections alive.
    proxy.set_profile(Profile::none());
    let mut s = connect(&proxy).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(round_trip(&mut s, b"x").await.unwrap(), b"x");
    assert_eq!(proxy.stats().drops, 1);
}

#[tokio::test]
async fn stalls_hold_traffic_back() {
    let up = echo_server().await;
    let profile =
        Profile::custom().with_stalls(0.99, Duration::from_millis(300), Duration::from_millis(300));
    let proxy = spawn("127.0.0.1:0", up, profile, 6).await.unwrap();
    let mut s = connect(&proxy).await;
    let t0 = Instant::now();
    for _ in 0..40 {
        assert_eq!(round_trip(&mut s, b"ping").await.unwrap(), b"ping");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(proxy.stats().stalls >= 1, "{}", proxy.stats());
    assert!(t0.elapsed() >= Duration::from_millis(2300));
}

#[tokio::test]
async fn scheduled_outages_come_and_go() {
    let up = echo_server().await;
    let profile = Profile::custom().with_outages(
        Duration::from_millis(200),
        Duration::from_millis(200),
        Duration::from_millis(200),
    );
    let proxy = spawn("127.0.0.1:0", up, profile, 7).await.unwrap();
    let t0 = Instant::now();
    let mut saw_down = false;
    while t0.elapsed() < Duration::from_secs(3) {
        saw_down |= !proxy.is_online();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(saw_down);
    assert!(proxy.stats().outages >= 2, "{}", proxy.stats());
    // Healing overrides the schedule.
    proxy.set_online(true);
    let n = proxy.stats().outages;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(proxy.is_online());
    assert_eq!(proxy.stats().outages, n);
}

#[tokio::test]
async fn dropping_the_handle_stops_the_proxy() {
    let up = echo_server().await;
    let proxy = spawn("127.0.0.1:0", up, Profile::wifi(), 8).await.unwrap();
    let addr = proxy.local_addr();
    let mut s = connect(&proxy).await;
    assert_eq!(round_trip(&mut s, b"a").await.unwrap(), b"a");
    drop(proxy);
    let mut buf = [0u8; 1];
    let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap();
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn bad_listen_address_is_an_error() {
    let err = spawn(
        "256.0.0.1:0",
        "127.0.0.1:1".parse().unwrap(),
        Profile::none(),
        0,
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("256.0.0.1"), "{err}");
}
