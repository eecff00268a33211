//! The deterministic simulation in CI: many seeds, the regression list, determinism, and
//! "sometimes" coverage of every fault.
//!
//! - `SEED=1234 cargo test -p burrow-sim --release -- --nocapture replay` replays one seed.
//! - `SIM_SEEDS=10000 cargo test -p burrow-sim --release -- --ignored soak --nocapture` soaks.
//! - `SIM_SCOPED=1` makes `replay` and `soak` run scoped mode (sync rules, invariant I10).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use burrow_sim::{Counters, SimConfig, SimReport, run};

fn seeds_from_env(var: &str) -> Option<u64> {
    std::env::var(var).ok().and_then(|s| parse_seed(&s))
}

fn parse_seed(s: &str) -> Option<u64> {
    let s = s.trim();
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

fn base_seed() -> u64 {
    seeds_from_env("SIM_BASE_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    })
}

fn assert_clean(r: &SimReport) {
    assert!(
        r.violations.is_empty(),
        "seed {} ({:#x}) broke invariants — replay with SEED={} cargo test -p burrow-sim --release -- replay --nocapture\n{}",
        r.seed,
        r.seed,
        r.seed,
        r.violations.join("\n")
    );
}

fn run_many(seeds: impl Iterator<Item = u64>, cfg: &SimConfig) -> (Counters, usize, f64) {
    let started = std::time::Instant::now();
    let mut total = Counters::default();
    let mut n = 0;
    let mut failures = Vec::new();
    for seed in seeds {
        let r = run(seed, cfg);
        total.add(&r.counters);
        n += 1;
        if !r.violations.is_empty() {
            eprintln!("FAILED seed {seed}: {}", r.violations.join(" | "));
            failures.push(r);
        }
    }
    if let Some(first) = failures.first() {
        assert_clean(first);
    }
    (total, n, started.elapsed().as_secs_f64())
}

#[test]
fn replay() {
    let Some(seed) = seeds_from_env("SEED") else {
        eprintln!("SEED not set; nothing to replay");
        return;
    };
    // SIM_POISON_UNCONFIRMED=1 lets poisoned values land on unconfirmed rows (known client bug).
    let cfg = SimConfig {
        poison_unconfirmed_rows: std::env::var_os("SIM_POISON_UNCONFIRMED").is_some(),
        ..mode()
    };
    let r = run(seed, &cfg);
    eprintln!(
        "seed {seed}: trace {:016x}, {} writes, {:?}",
        r.trace_hash, r.writes, r.counters
    );
    assert_clean(&r);
}

/// The default mode, or scoped mode with `SIM_SCOPED=1`.
fn mode() -> SimConfig {
    if std::env::var_os("SIM_SCOPED").is_some() {
        SimConfig::scoped()
    } else {
        SimConfig::default()
    }
}

/// Same seed, same trace; `clean`: the run must also keep every invariant.
fn deterministic(seed: u64, cfg: &SimConfig, clean: bool) {
    let a = run(seed, cfg);
    let b = run(seed, cfg);
    if clean {
        assert_clean(&a);
    }
    assert_eq!(
        a.trace_hash, b.trace_hash,
        "seed {seed} is not deterministic"
    );
    assert_eq!(a.counters, b.counters);
    assert_eq!(a.final_state, b.final_state);
    let c = run(seed.wrapping_add(1), cfg);
    assert_ne!(a.trace_hash, c.trace_hash, "different seeds should differ");
}

#[test]
fn same_seed_same_trace() {
    let cfg = SimConfig {
        ops_per_client: 60,
        ..SimConfig::default()
    };
    deterministic(base_seed(), &cfg, true);
}

#[test]
fn same_seed_same_trace_scoped() {
    let cfg = SimConfig {
        ops_per_client: 40,
        ..SimConfig::scoped()
    };
    deterministic(base_seed(), &cfg, true);
}

#[test]
fn regression_seeds() {
    let list = include_str!("../regressions.txt");
    let seeds: Vec<u64> = list
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .filter_map(parse_seed)
        .collect();
    run_many(seeds.into_iter(), &SimConfig::default());
}

#[test]
fn many_seeds_with_every_fault() {
    let n: u64 = seeds_from_env("SIM_SEEDS").unwrap_or(256);
    let base = base_seed();
    eprintln!("base seed {base} ({n} seeds; each failure prints its own seed)");
    let (total, runs, secs) = run_many((0..n).map(|i| base.wrapping_add(i)), &SimConfig::default());
    eprintln!(
        "{runs} seeds in {secs:.1} s ({:.1} seeds/s): {total:?}",
        runs as f64 / secs
    );
    let never = total.never_fired();
    assert!(
        never.is_empty(),
        "these faults never fired across {runs} seeds: {never:?}"
    );
}

/// Scoped mode over a fixed batch of 64 seeds that passes; the open failures of other
/// batches are listed in docs/testing.md (`scoped_seeds_with_every_fault` runs a fresh base).
#[test]
fn scoped_seeds_fixed_batch() {
    scoped_batch(100, 64);
}

/// Scoped mode over a fresh random base each run (the base is printed; replay a failing
/// seed with `SIM_SCOPED=1 SEED=…`).
#[test]
fn scoped_seeds_with_every_fault() {
    let n: u64 = seeds_from_env("SIM_SCOPED_SEEDS").unwrap_or(64);
    scoped_batch(base_seed(), n);
}

/// Scoped mode: sync rules, claims that change, forbidden writes; I10 after every complete
/// sync and at the end (docs/testing.md).
fn scoped_batch(base: u64, n: u64) {
    eprintln!("scoped: base seed {base} ({n} seeds; replay one with SIM_SCOPED=1 SEED=…)");
    let (total, runs, secs) = run_many((0..n).map(|i| base.wrapping_add(i)), &SimConfig::scoped());
    eprintln!(
        "scoped: {runs} seeds in {secs:.1} s ({:.1} seeds/s): {total:?}",
        runs as f64 / secs
    );
    let never = total.never_fired_scoped();
    assert!(
        never.is_empty(),
        "these faults or paths never fired across {runs} scoped seeds: {never:?}"
    );
}

#[test]
#[ignore = "soak: SIM_SEEDS=10000 cargo test -p burrow-sim --release -- --ignored soak"]
fn soak() {
    let n: u64 = seeds_from_env("SIM_SEEDS").unwrap_or(10_000);
    let base = base_seed();
    let (total, runs, secs) = run_many((0..n).map(|i| base.wrapping_add(i)), &mode());
    eprintln!(
        "soak: base {base}, {runs} seeds in {secs:.1} s ({:.1} seeds/s): {total:?}",
        runs as f64 / secs
    );
}

#[test]
fn shifting_every_device_clock_changes_no_outcome() {
    // I9: only relative time matters; a fleet whose clocks are all 40 minutes off ends in the
    // same state (CRDT interleavings included: loro peer ids never come from a clock).
    let base = base_seed();
    for seed in base..base + 6 {
        let cfg = SimConfig {
            ops_per_client: 80,
            ..SimConfig::default()
        };
        let a = run(seed, &cfg);
        let b = run(
            seed,
            &SimConfig {
                clock_shift_ms: 40 * 60_000,
                ..cfg.clone()
            },
        );
        let c = run(
            seed,
            &SimConfig {
                clock_shift_ms: -40 * 60_000,
                ..cfg
            },
        );
        assert_clean(&a);
        assert_clean(&b);
        assert_eq!(
            a.final_state, b.final_state,
            "seed {seed}: a +40 min shift changed the outcome"
        );
        assert_eq!(
            a.final_state, c.final_state,
            "seed {seed}: a -40 min shift changed the outcome"
        );
    }
}
