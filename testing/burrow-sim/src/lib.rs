//! Deterministic simulation of Burrow: N real clients (real SQLite files, the real capture
//! triggers, outbox and sync driver) and the real server logic (store, ingest, resolution,
//! pull) exchange messages through a simulated network that a seeded nemesis breaks:
//! partitions both and one way, flaky links, lost responses, duplicated and delayed (replayed)
//! requests, server and client crash-restarts, and per-device clock offsets and jumps. After
//! healing and quiescing, the checker verifies invariants I1–I9 of the testing plan.
//!
//! One seed determines the whole run: the same seed gives the same trace hash.
//!
//! ```no_run
//! let report = burrow_sim::run(7, &burrow_sim::SimConfig::default());
//! assert!(report.violations.is_empty(), "seed 7: {:?}", report.violations);
//! ```

pub mod check;
pub mod net;
pub mod scope;
mod world;

pub use net::Counters;
pub use world::{SIM_SCHEMA, SimConfig, SimReport, run};
