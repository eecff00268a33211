//! `burrow bench all`: every figure of the product brief's table, each benchmark run as its own
//! child process (`burrow bench <name> --json`, so memory figures and open-file limits are
//! per benchmark), then one summary table (figure, result, target, met / MISSED) and the JSON
//! of everything written to a file. A missed target is a measurement, not a failure: the exit
//! code is 0 unless a benchmark could not run.

use anyhow::{Context, Result};
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::Instant;

/// One benchmark run: its name and arguments.
struct Run {
    /// Key in the results file.
    key: &'static str,
    /// Arguments after `burrow bench`.
    args: Vec<String>,
}

/// Whether a figure must stay at or below its target, or reach it.
#[derive(Clone, Copy)]
enum Bound {
    AtMost,
    AtLeast,
}

/// One row of the summary.
struct Figure {
    /// What is measured.
    name: &'static str,
    /// The run it comes from.
    run: &'static str,
    /// The value, from that run's JSON.
    value: fn(&Value) -> Option<f64>,
    /// How the value is shown (unit).
    unit: Unit,
    bound: Bound,
    target: f64,
}

#[derive(Clone, Copy)]
enum Unit {
    Seconds,
    Millis,
    Ratio,
    Percent,
    Count,
    Bytes,
    MegaBytes,
    OpsPerSecond,
}

impl Unit {
    fn show(self, v: f64) -> String {
        match self {
            Unit::Seconds => format!("{v:.3} s"),
            Unit::Millis => format!("{v:.1} ms"),
            Unit::Ratio => format!("{v:.2}×"),
            Unit::Percent => format!("{:.2} %", v * 100.0),
            Unit::Count => format!("{v:.0}"),
            Unit::Bytes => format!("{v:.1} B"),
            Unit::MegaBytes => format!("{:.1} MB", v / 1e6),
            Unit::OpsPerSecond => format!("{v:.0} ops/s"),
        }
    }
}

fn f(v: &Value, pointer: &str) -> Option<f64> {
    v.pointer(pointer).and_then(Value::as_f64)
}

/// The entry of `v["results"]` whose `key` is `want`.
fn entry<'a>(v: &'a Value, key: &str, want: &Value) -> Option<&'a Value> {
    v.get("results")?
        .as_array()?
        .iter()
        .find(|r| r.get(key) == Some(want))
}

/// The runs of `bench all`: full sizes, or tiny ones (`--tiny`, a smoke test of the plumbing).
fn runs(tiny: bool) -> Vec<Run> {
    let plan: [(&'static str, &str); 12] = if tiny {
        [
            ("initial_sync_100k", "initial-sync --rows 300 --reps 1"),
            (
                "initial_sync_1m",
                "initial-sync --rows 500 --seed store --reps 1",
            ),
            ("capture", "capture --rows 300 --updates 10 --reps 1"),
            ("push", "push --edits 20 --reps 1"),
            ("delta", "delta --rows 300 --changes 100 --reps 1"),
            ("policies", "policies --batch 5 --rows 10 --ops 40 --reps 1"),
            ("live", "live --clients 3 --samples 5 --reps 1"),
            (
                "edge",
                "edge --ops 10 --bulk 2 --bulk-bytes 64 --profile edge:latency=5ms,jitter=1ms \
                 --reps 1",
            ),
            (
                "scope",
                "scope --drivers 10 --rows-per-driver 5 --edge-rows 10 \
                 --profile edge:latency=5ms,jitter=1ms --reps 1",
            ),
            ("ingest", "ingest --devices 2 --ops 200 --batch 20 --reps 1"),
            ("memory", "memory --connections 20"),
            ("hostile", "demo --devices 5 --duration 5 --network hostile"),
        ]
    } else {
        [
            ("initial_sync_100k", "initial-sync --rows 100000 --reps 3"),
            ("initial_sync_1m", "initial-sync --rows 1000000 --reps 3"),
            ("capture", "capture --rows 100000 --updates 1000 --reps 5"),
            ("push", "push --edits 10000 --reps 3"),
            ("delta", "delta --rows 100000 --changes 10000 --reps 3"),
            ("policies", "policies --reps 1"),
            ("live", "live --clients 1000 --samples 200 --reps 3"),
            ("edge", "edge --reps 1"),
            ("scope", "scope --reps 3"),
            (
                "ingest",
                "ingest --devices 8 --ops 40000 --batch 100 --reps 5",
            ),
            ("memory", "memory --connections 10000"),
            ("hostile", "demo --network hostile"),
        ]
    };
    plan.into_iter()
        .map(|(key, args)| Run {
            key,
            args: args.split_whitespace().map(str::to_string).collect(),
        })
        .collect()
}

/// The brief's figures and where each comes from.
fn figures() -> Vec<Figure> {
    use Bound::{AtLeast, AtMost};
    vec![
        Figure {
            name: "initial sync, 100k rows: wall",
            run: "initial_sync_100k",
            value: |v| f(v, "/wall_seconds_median"),
            unit: Unit::Seconds,
            bound: AtMost,
            target: 1.5,
        },
        Figure {
            name: "initial sync, 100k rows: wire / raw JSON",
            run: "initial_sync_100k",
            value: |v| f(v, "/wire_to_json_ratio"),
            unit: Unit::Ratio,
            bound: AtMost,
            target: 0.15,
        },
        Figure {
            name: "initial sync, 1M rows: wall",
            run: "initial_sync_1m",
            value: |v| f(v, "/wall_seconds_median"),
            unit: Unit::Seconds,
            bound: AtMost,
            target: 15.0,
        },
        Figure {
            name: "initial sync, 1M rows: app read p99 (every 5 ms)",
            run: "initial_sync_1m",
            value: |v| f(v, "/app_read_p99_ms"),
            unit: Unit::Millis,
            bound: AtMost,
            // "App reads never blocked": within one 60 Hz frame.
            target: 16.0,
        },
        Figure {
            name: "initial sync, 1M rows: client peak RSS",
            run: "initial_sync_1m",
            value: |v| f(v, "/client_peak_rss_bytes"),
            unit: Unit::MegaBytes,
            bound: AtMost,
            target: 200e6,
        },
        Figure {
            name: "capture: 100k inserts in one tx vs plain SQLite",
            run: "capture",
            value: |v| f(v, "/insert_ratio_median"),
            unit: Unit::Ratio,
            bound: AtMost,
            target: crate::bench_capture::INSERT_TARGET,
        },
        Figure {
            name: "capture: single-row update txs vs plain SQLite",
            run: "capture",
            value: |v| f(v, "/update_ratio_median"),
            unit: Unit::Ratio,
            bound: AtMost,
            target: crate::bench_capture::UPDATE_TARGET,
        },
        Figure {
            name: "push 10k offline edits",
            run: "push",
            value: |v| f(v, "/wall_seconds_median"),
            unit: Unit::Seconds,
            bound: AtMost,
            target: 0.5,
        },
        Figure {
            name: "delta pull, 10k changes",
            run: "delta",
            value: |v| f(v, "/wall_seconds_median"),
            unit: Unit::Seconds,
            bound: AtMost,
            target: crate::bench_delta::TARGET_SECONDS,
        },
        Figure {
            name: "bytes per small update op (lww, batch of 100)",
            run: "policies",
            value: |v| {
                entry(v, "policy", &json!("lww (field set)"))?
                    .get("bytes_per_op_median")?
                    .as_f64()
            },
            unit: Unit::Bytes,
            bound: AtMost,
            target: 60.0,
        },
        Figure {
            name: "EDGE: 1,000 queued ops acked",
            run: "edge",
            value: |v| f(v, "/drain_seconds_median"),
            unit: Unit::Seconds,
            bound: AtMost,
            target: 5.0,
        },
        Figure {
            name: "EDGE: critical op behind bulk, acked",
            run: "edge",
            value: |v| f(v, "/queued_critical_ack_seconds_median"),
            unit: Unit::Seconds,
            bound: AtMost,
            target: 2.0,
        },
        Figure {
            name: "EDGE: driver's day (2,000 rows) initial sync",
            run: "scope",
            value: |v| f(v, "/edge/initial_sync_seconds_median"),
            unit: Unit::Seconds,
            bound: AtMost,
            target: 10.0,
        },
        Figure {
            name: "selective sync: 1M / 100k database ratio",
            run: "scope",
            value: |v| f(v, "/large_to_small_ratio"),
            unit: Unit::Ratio,
            bound: AtMost,
            target: 1.5,
        },
        Figure {
            name: "live push A → B, p50 (largest client count)",
            run: "live",
            value: |v| last_result(v)?.get("p50_ms_median")?.as_f64(),
            unit: Unit::Millis,
            bound: AtMost,
            target: 10.0,
        },
        Figure {
            name: "live push A → B, p99 (largest client count)",
            run: "live",
            value: |v| last_result(v)?.get("p99_ms_median")?.as_f64(),
            unit: Unit::Millis,
            bound: AtMost,
            target: 50.0,
        },
        Figure {
            name: "server RSS, 10,000 live connections",
            run: "memory",
            value: |v| f(v, "/projected_rss_at_10000_bytes"),
            unit: Unit::MegaBytes,
            bound: AtMost,
            target: crate::bench_memory::TARGET_RSS_BYTES,
        },
        Figure {
            name: "server ingest (HTTP, SQLite store)",
            run: "ingest",
            value: |v| f(v, "/ops_per_second_median"),
            unit: Unit::OpsPerSecond,
            bound: AtLeast,
            target: crate::bench_ingest::TARGET_OPS_PER_SECOND,
        },
        Figure {
            name: "sync success, hostile network (demo fleet)",
            run: "hostile",
            value: |v| f(v, "/sync_success_rate"),
            unit: Unit::Percent,
            bound: AtLeast,
            target: 0.999,
        },
        Figure {
            name: "lost writes, hostile network (demo fleet)",
            run: "hostile",
            value: |v| f(v, "/lost_writes"),
            unit: Unit::Count,
            bound: AtMost,
            target: 0.0,
        },
    ]
}

fn last_result(v: &Value) -> Option<&Value> {
    v.get("results")?.as_array()?.last()
}

/// `/proc/loadavg`'s first three fields, or "unknown".
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

fn target_text(fig: &Figure) -> String {
    let op = match fig.bound {
        Bound::AtMost => "≤",
        Bound::AtLeast => "≥",
    };
    format!("{op} {}", fig.unit.show(fig.target))
}

/// Runs every benchmark, prints the summary and writes `out`.
pub fn run(out: &Path, tiny: bool, json: bool) -> Result<ExitCode> {
    let exe = std::env::current_exe()?;
    let started = Instant::now();
    let load_start = load_average();
    let mut benches = serde_json::Map::new();
    let mut failed = Vec::new();
    let plan = runs(tiny);
    for (i, r) in plan.iter().enumerate() {
        let load = load_average();
        eprintln!(
            "[{}/{}] burrow bench {} (load average {load})",
            i + 1,
            plan.len(),
            r.args.join(" ")
        );
        let t = Instant::now();
        // `demo` runs as `burrow demo`, every other entry as `burrow bench <name>`.
        let is_demo = r.args.first().is_some_and(|a| a == "demo");
        let mut cmd = Command::new(&exe);
        if !is_demo {
            cmd.arg("bench");
        }
        let output = cmd
            .args(&r.args)
            .arg("--json")
            .output()
            .with_context(|| format!("starting `burrow {}`", r.args.join(" ")))?;
        let secs = t.elapsed().as_secs_f64();
        // The demo exits 3 when a promise fails: still a measurement.
        let measured = output.status.success()
            || (is_demo && output.status.code() == Some(i32::from(crate::EXIT_CHECK_FAILED)));
        let parsed = if measured {
            serde_json::from_slice::<Value>(&output.stdout)
                .map_err(|e| format!("unreadable JSON: {e}"))
        } else {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
            Err(format!(
                "{}: {}",
                output.status,
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            ))
        };
        let entry = match parsed {
            Ok(v) => {
                eprintln!("      done in {secs:.1} s");
                json!({"command": format!("burrow bench {}", r.args.join(" ")),
                       "seconds": secs, "load_average_before": load, "result": v})
            }
            Err(e) => {
                eprintln!("      FAILED after {secs:.1} s: {e}");
                failed.push(r.key);
                json!({"command": format!("burrow bench {}", r.args.join(" ")),
                       "seconds": secs, "load_average_before": load, "error": e})
            }
        };
        benches.insert(r.key.to_string(), entry);
    }
    let mut summary = Vec::new();
    let mut misses = 0;
    for fig in figures() {
        let value = benches
            .get(fig.run)
            .and_then(|b| b.get("result"))
            .and_then(fig.value);
        let status = match value {
            None => "NOT MEASURED",
            Some(v) if v.is_nan() => "NOT MEASURED",
            Some(v) => {
                let ok = match fig.bound {
                    Bound::AtMost => v <= fig.target,
                    Bound::AtLeast => v >= fig.target,
                };
                if ok {
                    "met"
                } else {
                    misses += 1;
                    "MISSED"
                }
            }
        };
        summary.push(json!({
            "figure": fig.name,
            "value": value,
            "result": value.map(|v| fig.unit.show(v)),
            "target": target_text(&fig),
            "status": status,
            "from": benches.get(fig.run).and_then(|b| b.get("command")),
        }));
    }
    let total = started.elapsed().as_secs_f64();
    let doc = json!({
        "bench": "all",
        "tiny": tiny,
        "cores": std::thread::available_parallelism().map(usize::from).unwrap_or(0),
        "load_average_start": load_start,
        "load_average_end": load_average(),
        "total_seconds": total,
        "summary": summary,
        "also_measured_by": [
            "sync success rate under packet loss: also the chaos test \
             (`cargo test -p burrow-proxy --release --test chaos`) and the netns chaos script"
        ],
        "benches": benches,
    });
    std::fs::write(out, serde_json::to_string_pretty(&doc)?)
        .with_context(|| format!("writing {}", out.display()))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!("{:<50} {:>16} {:>14}  status", "figure", "result", "target");
        for s in &summary {
            println!(
                "{:<50} {:>16} {:>14}  {}",
                s["figure"].as_str().unwrap_or(""),
                s["result"].as_str().unwrap_or("—"),
                s["target"].as_str().unwrap_or(""),
                s["status"].as_str().unwrap_or("")
            );
        }
        println!(
            "{} figures, {misses} missed; {total:.0} s in all; load average {} at the start, {} \
             at the end ({} cores). Everything: {}",
            summary.len(),
            load_start,
            load_average(),
            std::thread::available_parallelism()
                .map(usize::from)
                .unwrap_or(0),
            out.display()
        );
    }
    if failed.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("benchmarks that could not run: {}", failed.join(", "));
        Ok(ExitCode::FAILURE)
    }
}
