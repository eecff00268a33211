//! `burrow serve --config FILE` ([auth] and [limits]) and `burrow token --claim`, through a
//! real server process and raw HTTP on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

mod common;

use common::{SCHEMA, Server, burrow, spawn_server, stdout};

/// `burrow serve` with `config` written to `dir/burrow.toml`; the server and its URL
/// address.
fn serve(dir: &Path, config: &str) -> (Server, String) {
    let schema = dir.join("schema.toml");
    std::fs::write(&schema, SCHEMA).unwrap();
    let config_path = dir.join("burrow.toml");
    std::fs::write(&config_path, config).unwrap();
    let (server, url) = spawn_server(&[
        "--data".as_ref(),
        dir.join("data").as_os_str(),
        "--schema".as_ref(),
        schema.as_os_str(),
        "--config".as_ref(),
        config_path.as_os_str(),
    ]);
    let listen = url.trim_start_matches("http://").to_string();
    (server, listen)
}

/// `burrow token` for `user` with `claims` (`key=value`), from the server's data directory.
fn token(dir: &Path, user: &str, claims: &[&str]) -> String {
    let data = dir.join("data");
    let mut args = vec!["token", "--data", data.to_str().unwrap(), "--user", user];
    for c in claims {
        args.extend(["--claim", c]);
    }
    stdout(&burrow(&args)).trim().to_string()
}

/// `POST /v1/sync` with `body`: the status and the JSON error body (Null on success).
fn post(addr: &str, token: &str, body: &[u8]) -> (u16, serde_json::Value) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!(
        "POST /v1/sync HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/x-burrow-sync\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).to_string();
    let status = text.split(' ').nth(1).unwrap().parse().unwrap();
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or_default())
}

#[test]
fn config_file_limits_and_audience_apply_to_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, addr) = serve(
        dir.path(),
        r#"
        [auth]
        audience = "burrow-test"

        [limits]
        body_bytes_max = 1000
        "#,
    );
    // `--claim` is repeatable and sets the audience this server wants.
    let good = token(dir.path(), "ann", &["aud=burrow-test", "role=driver"]);
    let (status, body) = post(&addr, &good, &[7u8; 4000]);
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["code"], "body_too_large");
    assert_eq!(body["limit"]["name"], "body_bytes_max");
    assert_eq!(body["limit"]["value"], 1000);
    // Within the limit the token is fine and the body is looked at (not a zstd frame).
    let (status, body) = post(&addr, &good, b"not a frame");
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("malformed_body"))
    );
    let no_aud = token(dir.path(), "ann", &["role=driver"]);
    let (status, body) = post(&addr, &no_aud, b"x");
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("token_wrong_audience"))
    );
}

#[test]
fn a_jwks_config_turns_hs256_dev_tokens_off() {
    let dir = tempfile::tempdir().unwrap();
    let jwks =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../burrow-server/tests/fixtures/jwks.json");
    std::fs::create_dir_all(dir.path().join("keys")).unwrap();
    std::fs::copy(jwks, dir.path().join("keys/jwks.json")).unwrap();
    // The path is relative to the config file's directory, not the working directory.
    let (_server, addr) = serve(dir.path(), "[auth]\njwks_file = \"keys/jwks.json\"\n");
    let dev = burrow(&[
        "token",
        "--secret",
        "whatever",
        "--user",
        "ann",
        "--claim",
        "role=driver",
    ]);
    let dev = stdout(&dev).trim().to_string();
    let (status, body) = post(&addr, &dev, b"x");
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("token_algorithm_refused")),
        "{body}"
    );
    // HS256 is off, so no dev secret was generated.
    assert!(!dir.path().join("data/secret").exists());
}

#[test]
fn bad_config_files_stop_serve_with_the_key_named() {
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("schema.toml");
    std::fs::write(&schema, SCHEMA).unwrap();
    for (text, needle) in [
        ("[limits]\nbody_bytes = 5\n", "body_bytes"),
        ("[auth]\nallow_hs256 = 1\n", "auth.allow_hs256"),
        ("[limits]\npage_rows_max = 0\n", "limits.page_rows_max"),
        ("[auth]\njwks_file = \"nowhere.json\"\n", "nowhere.json"),
    ] {
        let config = dir.path().join("burrow.toml");
        std::fs::write(&config, text).unwrap();
        let out = burrow(&[
            "serve",
            "--data",
            dir.path().join("data").to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--schema",
            schema.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ]);
        assert!(!out.status.success(), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{text}: {err}");
    }
}
