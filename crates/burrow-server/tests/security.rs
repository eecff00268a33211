//! Token verification, client-id binding and request limits, through real HTTP on loopback.
//! Keys: `tests/fixtures/` (test-only, see its README).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use burrow_proto::{decode_frame, encode_frame, v1};
use burrow_server::{RunningServer, ServerConfig};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DEV_SECRET: &[u8] = b"dev-secret-for-tests";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn read_fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

struct Server {
    _dir: tempfile::TempDir,
    server: RunningServer,
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.url())
    }
}

async fn start(tweak: impl FnOnce(&mut ServerConfig)) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let schema = burrow_core::Schema::from_toml_str(
        "version = 1\n[tables.notes.columns]\nbody = \"text\"\n",
    )
    .unwrap();
    let mut config = ServerConfig::new(dir.path().join("server"), schema);
    config.secret = Some(DEV_SECRET.to_vec());
    tweak(&mut config);
    let server = burrow_server::spawn(config, "127.0.0.1:0").await.unwrap();
    Server { _dir: dir, server }
}

fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: serde_json::Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

fn hs256(claims: serde_json::Value) -> String {
    sign(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(DEV_SECRET),
        claims,
    )
}

fn rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(&read_fixture("rsa_private.pem")).unwrap()
}

fn ec_key() -> EncodingKey {
    EncodingKey::from_ec_pem(&read_fixture("ec_private.pem")).unwrap()
}

/// Claims valid for ten minutes.
fn claims(sub: &str) -> serde_json::Value {
    serde_json::json!({ "sub": sub, "exp": now() + 600, "iat": now() })
}

fn with(mut claims: serde_json::Value, key: &str, value: serde_json::Value) -> serde_json::Value {
    claims[key] = value;
    claims
}

fn op(client_seq: u64) -> v1::Op {
    v1::Op {
        client_seq,
        table: "notes".into(),
        row_id: format!("n{client_seq}"),
        kind: v1::OpKind::Insert as i32,
        fields: vec![v1::Field {
            column: "body".into(),
            value: Some(v1::Value {
                kind: Some(v1::value::Kind::Text(format!("note {client_seq}"))),
            }),
            ..Default::default()
        }],
        hlc: 1 << 16,
        ..Default::default()
    }
}

/// A framed sync request from `client_id` uploading `ops` ops (one local transaction) and
/// asking for a page from `cursor`.
fn request(client_id: &str, ops: u64, cursor: (u64, u64)) -> Vec<u8> {
    let upload = if ops == 0 {
        vec![]
    } else {
        vec![v1::LocalTx {
            tx_id: 1,
            ops: (1..=ops).map(op).collect(),
            ..Default::default()
        }]
    };
    encode_frame(&v1::SyncRequest {
        protocol_version: 1,
        schema_version: 1,
        client_id: client_id.into(),
        upload,
        // The proto grows fields (sync rules): keep the rest at their defaults.
        #[allow(clippy::needless_update)]
        cursor: Some(v1::Cursor {
            since: cursor.0,
            after: cursor.1,
            ..Default::default()
        }),
        download: true,
        ..Default::default()
    })
    .unwrap()
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }

    fn code(&self) -> String {
        self.json()["code"].as_str().unwrap().to_string()
    }

    fn response(&self) -> v1::SyncResponse {
        assert_eq!(self.status, 200, "{}", String::from_utf8_lossy(&self.body));
        decode_frame(&self.body, 64 << 20).unwrap()
    }
}

async fn post(s: &Server, token: Option<&str>, body: Vec<u8>) -> Answer {
    let mut req = reqwest::Client::new().post(s.url("/v1/sync")).body(body);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = req.send().await.unwrap();
    Answer {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: resp.bytes().await.unwrap().to_vec(),
    }
}

/// Posts a download-only request with `token` and expects `401 code`.
async fn refused(s: &Server, token: &str, code: &str) {
    let a = post(s, Some(token), request("c-refused", 0, (0, 0))).await;
    assert_eq!((a.status, a.code().as_str()), (401, code), "{}", a.json());
}

async fn accepted(s: &Server, token: &str) {
    let a = post(s, Some(token), request("c-accepted", 0, (0, 0))).await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
}

#[tokio::test]
async fn hs256_token_negatives_each_have_their_code() {
    let s = start(|c| {
        c.auth.audience = Some("burrow".into());
        c.auth.issuer = Some("https://id.test/".into());
    })
    .await;
    let good = with(
        with(claims("ann"), "aud", "burrow".into()),
        "iss",
        "https://id.test/".into(),
    );
    accepted(&s, &hs256(good.clone())).await;
    // An audience list naming this server is fine too.
    accepted(
        &s,
        &hs256(with(
            good.clone(),
            "aud",
            serde_json::json!(["x", "burrow"]),
        )),
    )
    .await;

    let a = post(&s, None, request("c1", 0, (0, 0))).await;
    assert_eq!((a.status, a.code().as_str()), (401, "token_missing"));
    let expired = with(good.clone(), "exp", (now() - 3600).into());
    refused(&s, &hs256(expired), "token_expired").await;
    let early = with(good.clone(), "nbf", (now() + 3600).into());
    refused(&s, &hs256(early), "token_not_yet_valid").await;
    let other_aud = with(good.clone(), "aud", "someone-else".into());
    refused(&s, &hs256(other_aud), "token_wrong_audience").await;
    let mut no_aud = good.clone();
    no_aud.as_object_mut().unwrap().remove("aud");
    refused(&s, &hs256(no_aud), "token_wrong_audience").await;
    let other_iss = with(good.clone(), "iss", "https://evil.test/".into());
    refused(&s, &hs256(other_iss), "token_wrong_issuer").await;
    let forged = sign(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(b"not-the-secret"),
        good.clone(),
    );
    refused(&s, &forged, "token_bad_signature").await;
    // alg none: header {"alg":"none","typ":"JWT"}, any payload, empty signature.
    let payload = hs256(good.clone()).split('.').nth(1).unwrap().to_string();
    let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
    refused(&s, &none, "token_algorithm_refused").await;
    // A correctly signed RS256 token, but this server has no JWKS.
    let rs = sign(Algorithm::RS256, Some("rsa-1"), &rsa_key(), good.clone());
    refused(&s, &rs, "token_algorithm_refused").await;
    refused(&s, "garbage", "token_invalid").await;
    let mut no_sub = good;
    no_sub.as_object_mut().unwrap().remove("sub");
    refused(&s, &hs256(no_sub), "token_invalid").await;
}

#[tokio::test]
async fn rs256_and_es256_tokens_verify_against_the_jwks() {
    let s = start(|c| {
        c.auth.jwks_file = Some(fixture("jwks.json"));
        c.auth.audience = Some("burrow".into());
    })
    .await;
    let good = with(claims("ann"), "aud", "burrow".into());
    accepted(
        &s,
        &sign(Algorithm::RS256, Some("rsa-1"), &rsa_key(), good.clone()),
    )
    .await;
    accepted(
        &s,
        &sign(Algorithm::ES256, Some("ec-1"), &ec_key(), good.clone()),
    )
    .await;

    // HS256 dev tokens are off while a JWKS is configured (allow_hs256 unset).
    refused(&s, &hs256(good.clone()), "token_algorithm_refused").await;
    // Algorithm confusion: HS256 "signed" with the RSA public key (PEM, then DER) as the
    // HMAC secret, naming the RSA key.
    let pem = read_fixture("rsa_public.pem");
    for secret in [pem.clone(), pem_to_der(&pem)] {
        let confused = sign(
            Algorithm::HS256,
            Some("rsa-1"),
            &EncodingKey::from_secret(&secret),
            good.clone(),
        );
        refused(&s, &confused, "token_algorithm_refused").await;
    }
    // An ES256 token naming the RSA key: the key's algorithm decides.
    let es_on_rsa = sign(Algorithm::ES256, Some("rsa-1"), &ec_key(), good.clone());
    refused(&s, &es_on_rsa, "token_algorithm_refused").await;
    // A signed token whose payload was swapped afterwards.
    let rs = sign(Algorithm::RS256, Some("rsa-1"), &rsa_key(), good.clone());
    let other = sign(
        Algorithm::RS256,
        Some("rsa-1"),
        &rsa_key(),
        with(good.clone(), "sub", "mallory".into()),
    );
    let parts: Vec<&str> = rs.split('.').collect();
    let swapped = format!(
        "{}.{}.{}",
        parts[0],
        other.split('.').nth(1).unwrap(),
        parts[2]
    );
    refused(&s, &swapped, "token_bad_signature").await;
    // A kid the JWKS does not hold.
    let unknown = sign(Algorithm::RS256, Some("rsa-2"), &rsa_key(), good.clone());
    refused(&s, &unknown, "token_bad_signature").await;
    // JWKS tokens get the same claim checks.
    let expired = with(good.clone(), "exp", (now() - 3600).into());
    refused(
        &s,
        &sign(Algorithm::ES256, Some("ec-1"), &ec_key(), expired),
        "token_expired",
    )
    .await;
    let wrong_aud = with(good, "aud", "other".into());
    refused(
        &s,
        &sign(Algorithm::RS256, Some("rsa-1"), &rsa_key(), wrong_aud),
        "token_wrong_audience",
    )
    .await;
}

/// The DER body of a PEM file.
fn pem_to_der(pem: &[u8]) -> Vec<u8> {
    let text = String::from_utf8(pem.to_vec()).unwrap();
    let b64: String = text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let (mut out, mut acc, mut bits) = (Vec::new(), 0u32, 0u32);
    for c in b64.bytes().filter(|c| *c != b'=') {
        let v = alphabet.iter().position(|a| *a == c).unwrap() as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

#[tokio::test]
async fn allow_hs256_keeps_dev_tokens_next_to_the_jwks() {
    let s = start(|c| {
        c.auth.jwks_file = Some(fixture("jwks.json"));
        c.auth.allow_hs256 = true;
    })
    .await;
    accepted(&s, &hs256(claims("ann"))).await;
    accepted(
        &s,
        &sign(Algorithm::RS256, Some("rsa-1"), &rsa_key(), claims("ann")),
    )
    .await;
    // The confused token now reaches the HS256 check, which uses the dev secret only.
    let pem = read_fixture("rsa_public.pem");
    for secret in [pem.clone(), pem_to_der(&pem)] {
        let confused = sign(
            Algorithm::HS256,
            Some("rsa-1"),
            &EncodingKey::from_secret(&secret),
            claims("ann"),
        );
        refused(&s, &confused, "token_bad_signature").await;
    }
}

#[tokio::test]
async fn a_single_jwks_key_without_kid_verifies_tokens_without_kid() {
    let s = start(|c| c.auth.jwks_file = Some(fixture("jwks_single_no_kid.json"))).await;
    accepted(&s, &sign(Algorithm::ES256, None, &ec_key(), claims("ann"))).await;
    refused(
        &s,
        &sign(Algorithm::RS256, None, &rsa_key(), claims("ann")),
        "token_algorithm_refused",
    )
    .await;
}

#[tokio::test]
async fn an_unusable_jwks_file_stops_the_server_from_starting() {
    let dir = tempfile::tempdir().unwrap();
    let schema = burrow_core::Schema::from_toml_str(
        "version = 1\n[tables.notes.columns]\nbody = \"text\"\n",
    )
    .unwrap();
    let mut config = ServerConfig::new(dir.path().join("server"), schema);
    config.auth.jwks_file = Some(dir.path().join("missing.json"));
    let e = burrow_server::spawn(config.clone(), "127.0.0.1:0")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("missing.json"), "{e}");
    // Without HS256 no secret file is created.
    assert!(!dir.path().join("server/secret").exists());
}

#[tokio::test]
async fn another_user_cannot_replay_a_bound_client_id() {
    let s = start(|_| {}).await;
    let ann = hs256(claims("ann"));
    let bob = hs256(claims("bob-the-other"));
    let a = post(&s, Some(&ann), request("device-1", 1, (0, 0))).await;
    assert_eq!(a.response().outcomes.len(), 1);
    for ops in [1, 0] {
        let b = post(&s, Some(&bob), request("device-1", ops, (0, 0))).await;
        assert_eq!((b.status, b.code().as_str()), (403, "client_id_bound"));
        let message = b.json()["message"].as_str().unwrap().to_string();
        assert!(!message.contains("ann"), "{message}");
        assert!(
            !message.contains(std::str::from_utf8(DEV_SECRET).unwrap()),
            "{message}"
        );
        assert!(!message.contains(&bob), "{message}");
    }
    // The owner keeps using it; the other user's own device is fine.
    let a = post(&s, Some(&ann), request("device-1", 0, (0, 0))).await;
    assert_eq!(a.status, 200);
    let b = post(&s, Some(&bob), request("device-2", 1, (0, 0))).await;
    assert_eq!(b.status, 200);
}

fn assert_limit(a: &Answer, status: u16, code: &str, name: &str, value: serde_json::Value) {
    let body = a.json();
    assert_eq!(
        (a.status, body["code"].as_str().unwrap()),
        (status, code),
        "{body}"
    );
    assert_eq!(body["limit"]["name"], name, "{body}");
    assert_eq!(body["limit"]["value"], value, "{body}");
    assert!(body["message"].as_str().unwrap().contains(name), "{body}");
}

#[tokio::test]
async fn request_limits_answer_with_the_limit_named() {
    let s = start(|c| {
        c.limits.body_bytes_max = 1000;
        c.limits.ops_per_request_max = 2;
    })
    .await;
    let t = hs256(claims("ann"));
    let a = post(&s, Some(&t), vec![7u8; 5000]).await;
    assert_limit(&a, 413, "body_too_large", "body_bytes_max", 1000.into());
    let a = post(&s, Some(&t), request("c1", 3, (0, 0))).await;
    assert_limit(&a, 413, "too_many_ops", "ops_per_request_max", 2.into());
    let a = post(&s, Some(&t), request("c1", 2, (0, 0))).await;
    assert_eq!(a.response().outcomes.len(), 2);

    let s = start(|c| c.limits.decoded_bytes_max = 100).await;
    let a = post(&s, Some(&t), request("c1", 10, (0, 0))).await;
    assert_limit(&a, 413, "body_too_large", "decoded_bytes_max", 100.into());
}

#[tokio::test]
async fn pages_stop_at_page_rows_max() {
    let s = start(|c| c.limits.page_rows_max = 2).await;
    let t = hs256(claims("ann"));
    let a = post(&s, Some(&t), request("writer", 5, (0, 0))).await;
    assert_eq!(a.response().outcomes.len(), 5);
    let (mut cursor, mut seen, mut pages) = ((0, 0), 0, 0);
    loop {
        let r = post(&s, Some(&t), request("reader", 0, cursor))
            .await
            .response();
        assert!(r.changes.len() <= 2);
        seen += r.changes.len();
        pages += 1;
        let c = r.cursor.unwrap();
        cursor = (c.since, c.after);
        if !r.more {
            break;
        }
    }
    assert_eq!((seen, pages), (5, 3));
}

#[tokio::test]
async fn the_per_user_rate_limit_answers_429_with_retry_after() {
    // Two requests at once, then one every 100 s: a third request now must wait.
    let s = start(|c| {
        c.limits.requests_per_second_per_user = 0.01;
        c.limits.request_burst_per_user = 2;
    })
    .await;
    let ann = hs256(claims("ann"));
    for _ in 0..2 {
        accepted(&s, &ann).await;
    }
    let a = post(&s, Some(&ann), request("c1", 0, (0, 0))).await;
    assert_limit(
        &a,
        429,
        "rate_limited",
        "requests_per_second_per_user",
        0.01.into(),
    );
    let retry: u64 = a.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=100).contains(&retry), "Retry-After: {retry}");
    // The conflict log and the live endpoint count against the same bucket.
    let resp = reqwest::Client::new()
        .get(s.url("/v1/conflicts"))
        .bearer_auth(&ann)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    assert!(resp.headers().contains_key("retry-after"));
    let (status, _) = live_upgrade(&s, &ann).await;
    assert_eq!(status, 429);
    // Another user has a bucket of their own; a refused token is not rate limited (401).
    accepted(&s, &hs256(claims("bob"))).await;
    refused(&s, "garbage", "token_invalid").await;
}

/// Opens `GET /v1/live` as a raw WebSocket upgrade; returns the status and the stream (kept
/// open while the caller holds it) or, for an error, the body read so far.
async fn live_upgrade(s: &Server, token: &str) -> (u16, LiveConn) {
    let addr = s.server.local_addr();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET /v1/live HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Authorization: Bearer {token}\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "connection closed before the response head");
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head).to_string();
    let status: u16 = text.split(' ').nth(1).unwrap().parse().unwrap();
    (status, LiveConn { stream, head: text })
}

struct LiveConn {
    stream: tokio::net::TcpStream,
    head: String,
}

impl LiveConn {
    /// The JSON error body of a refused upgrade.
    async fn error_body(mut self) -> serde_json::Value {
        let start = self.head.find("\r\n\r\n").unwrap() + 4;
        let mut body = self.head.as_bytes()[start..].to_vec();
        let len: usize = self
            .head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap())
            })
            .unwrap();
        let mut buf = [0u8; 4096];
        while body.len() < len {
            let n = self.stream.read(&mut buf).await.unwrap();
            assert!(n > 0);
            body.extend_from_slice(&buf[..n]);
        }
        serde_json::from_slice(&body[..len]).unwrap()
    }
}

#[tokio::test]
async fn live_connections_per_user_are_capped_and_named() {
    let s = start(|c| c.limits.live_connections_per_user_max = 1).await;
    let ann = hs256(claims("ann"));
    let (status, first) = live_upgrade(&s, &ann).await;
    assert_eq!(status, 101, "{}", first.head);
    let (status, second) = live_upgrade(&s, &ann).await;
    assert_eq!(status, 429);
    let body = second.error_body().await;
    assert_eq!(body["code"], "too_many_live_connections");
    assert_eq!(body["limit"]["name"], "live_connections_per_user_max");
    assert_eq!(body["limit"]["value"], 1);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("live_connections_per_user_max = 1")
    );
    // Bob has slots of his own; a bad token is refused before any slot is taken.
    let (status, _bob) = live_upgrade(&s, &hs256(claims("bob"))).await;
    assert_eq!(status, 101);
    let (status, bad) = live_upgrade(&s, "garbage").await;
    assert_eq!(status, 401);
    assert_eq!(bad.error_body().await["code"], "token_invalid");
    // Closing the first connection gives the slot back.
    drop(first);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _conn) = live_upgrade(&s, &ann).await;
        if status == 101 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "slot never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
