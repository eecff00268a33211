//! `burrow bench live` and `burrow bench edge` at tiny sizes, so a broken benchmark is caught
//! by the test suite (the figures themselves are measured by hand, see BENCHMARKS.md).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use common::{burrow, stdout};

#[test]
fn bench_live_runs_small() {
    let out = stdout(&burrow(&[
        "bench",
        "live",
        "--clients",
        "1,5",
        "--samples",
        "5",
        "--reps",
        "1",
        "--json",
    ]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    for r in results {
        let p50 = r["p50_ms_median"].as_f64().unwrap();
        let p99 = r["p99_ms_median"].as_f64().unwrap();
        assert!(p50 > 0.0 && p99 >= p50, "{r}");
    }
    // Every idle subscriber got a poke for each of the 5 + 5 (warm-up) writes at least once
    // (pokes coalesce, so only a lower bound holds): 4 subscribers.
    assert!(results[1]["fleet_pokes_median"].as_f64().unwrap() >= 4.0);
}

#[test]
fn bench_edge_runs_small() {
    let out = stdout(&burrow(&[
        "bench",
        "edge",
        "--ops",
        "20",
        "--bulk",
        "4",
        "--bulk-bytes",
        "256",
        "--profile",
        "edge:latency=5ms,jitter=1ms",
        "--reps",
        "1",
        "--json",
    ]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    for k in [
        "drain_seconds_median",
        "queued_critical_server_seconds_median",
        "queued_critical_ack_seconds_median",
        "inflight_critical_ack_seconds_median",
    ] {
        let s = v[k].as_f64().unwrap();
        assert!(s > 0.0 && s < 30.0, "{k} = {s}");
    }
    // The table form prints the targets.
    let table = stdout(&burrow(&[
        "bench",
        "edge",
        "--ops",
        "5",
        "--bulk",
        "2",
        "--bulk-bytes",
        "64",
        "--profile",
        "none",
        "--reps",
        "1",
    ]));
    assert!(table.contains("target ≤ 5 s"), "{table}");
    assert!(table.contains("target ≤ 2 s"), "{table}");
}
