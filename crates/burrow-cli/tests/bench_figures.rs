//! `burrow bench capture | delta | ingest | memory | all` at tiny sizes, so a broken benchmark
//! is caught by the test suite (the figures themselves are measured by hand, see
//! BENCHMARKS.md).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use common::{burrow, stdout};

fn bench_json(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["bench"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--reps", "1", "--json"]);
    serde_json::from_str(&stdout(&burrow(&all))).unwrap()
}

fn positive(v: &serde_json::Value, pointer: &str) -> f64 {
    let x = v
        .pointer(pointer)
        .and_then(serde_json::Value::as_f64)
        .unwrap_or_else(|| panic!("no number at {pointer}: {v}"));
    assert!(x > 0.0 && x.is_finite(), "{pointer} = {x}");
    x
}

#[test]
fn bench_capture_runs_small() {
    let v = bench_json(&["capture", "--rows", "500", "--updates", "20"]);
    assert_eq!(v["bench"], "capture");
    assert_eq!(v["rows"], 500);
    for k in [
        "/insert_ratio_median",
        "/update_ratio_median",
        "/plain_insert_seconds_median",
        "/burrow_insert_seconds_median",
        "/plain_update_ms_median",
        "/burrow_update_ms_median",
        "/triggers_only/insert_ratio_median",
        "/triggers_only/update_ratio_median",
    ] {
        positive(&v, k);
    }
    assert_eq!(v["insert_ratio_target"], 1.5);
    assert_eq!(v["update_ratio_target"], 1.3);
}

#[test]
fn bench_delta_runs_small() {
    let v = bench_json(&["delta", "--rows", "400", "--changes", "150"]);
    assert_eq!(v["changes"], 150);
    let wall = positive(&v, "/wall_seconds_median");
    assert!(wall < 10.0, "{wall}");
    positive(&v, "/bytes_down");
    // Each change costs a few bytes at least: the row id alone is 36 characters.
    assert!(positive(&v, "/bytes_per_change") > 5.0, "{v}");
}

#[test]
fn bench_delta_refuses_more_changes_than_rows() {
    let o = burrow(&["bench", "delta", "--rows", "10", "--changes", "20"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--rows"));
}

#[test]
fn bench_ingest_runs_small() {
    let v = bench_json(&["ingest", "--devices", "3", "--ops", "300", "--batch", "25"]);
    assert_eq!(v["mode"], "http");
    assert_eq!(v["ops"], 300);
    // 100 ops per device in requests of 25.
    assert_eq!(v["requests"], 12);
    positive(&v, "/ops_per_second_median");
    positive(&v, "/store_ops_per_second_median");
}

#[test]
fn bench_memory_runs_small() {
    let v = bench_json(&["memory", "--connections", "50"]);
    assert_eq!(v["connections"], 50);
    let before = positive(&v, "/rss_before_bytes");
    let after = positive(&v, "/rss_bytes");
    assert!(after >= before, "{v}");
    positive(&v, "/projected_rss_at_10000_bytes");
    assert!(v["met"].is_boolean());
}

#[test]
fn bench_memory_refuses_beyond_the_open_file_limit() {
    // More connections than any soft limit this test runs under allows.
    let o = burrow(&["bench", "memory", "--connections", "100000000"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("ulimit -n"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn bench_all_tiny_writes_every_figure() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("results.json");
    let table = stdout(&burrow(&[
        "bench",
        "all",
        "--tiny",
        "--out",
        out.to_str().unwrap(),
    ]));
    assert!(table.contains("figure"), "{table}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let summary = v["summary"].as_array().unwrap();
    assert!(summary.len() >= 15, "{v}");
    for s in summary {
        let status = s["status"].as_str().unwrap();
        assert!(status == "met" || status == "MISSED", "not measured: {s}");
        let value = s["value"].as_f64().unwrap();
        if s["figure"].as_str().unwrap().starts_with("lost writes") {
            assert_eq!(value, 0.0, "{s}");
        } else {
            assert!(value > 0.0, "{s}");
        }
    }
    // The 1M-row run seeds the server's store directly (the client path would take minutes).
    assert_eq!(v["benches"]["initial_sync_1m"]["result"]["seed"], "store");
    assert_eq!(
        v["benches"]["initial_sync_100k"]["result"]["seed"],
        "client"
    );
    for k in [
        "initial_sync_100k",
        "capture",
        "delta",
        "ingest",
        "memory",
        "live",
        "edge",
        "scope",
    ] {
        assert!(v["benches"][k]["result"].is_object(), "{k}: {v}");
    }
}
