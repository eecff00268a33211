//! Propagation latency: from a driver's confirmation (the local commit) to the moment the
//! manager's database shows it, watched through a read-only connection of its own to the
//! manager's SQLite file. Samples where the driver or the manager was offline at the write
//! are reported apart ("offline to visible").

use super::ledger::{Confirmation, Ledger};
use anyhow::Result;
use serde::Serialize;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// How often the manager's database is read.
const EVERY: Duration = Duration::from_millis(20);

/// A running watcher; [`Watcher::stop`] ends it.
pub struct Watcher {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Watcher {
    /// Watches `db` (the manager's file) for the signatures of `ledger`'s confirmations.
    pub fn start(db: &Path, ledger: Arc<Ledger>) -> Result<Watcher> {
        let conn = rusqlite::Connection::open_with_flags(
            db,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                if let Ok(signatures) = signatures(&conn) {
                    ledger.seen(&signatures, Instant::now());
                }
                std::thread::sleep(EVERY);
            }
        });
        Ok(Watcher { stop, thread })
    }

    /// Stops watching.
    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.thread.join();
    }
}

fn signatures(conn: &rusqlite::Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt =
        conn.prepare_cached("SELECT signature FROM shipments WHERE signature IS NOT NULL")?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    rows.collect()
}

/// Latency quantiles of a set of samples, in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 99th percentile (nearest rank).
    pub p99: f64,
    /// Largest.
    pub max: f64,
    /// Number of samples.
    pub samples: u64,
}

impl Latency {
    fn of(mut ms: Vec<f64>) -> Latency {
        ms.sort_by(f64::total_cmp);
        let q = |p: f64| -> f64 {
            if ms.is_empty() {
                return 0.0;
            }
            let rank = (p * ms.len() as f64).ceil() as usize;
            ms[rank.clamp(1, ms.len()) - 1]
        };
        Latency {
            p50: q(0.5),
            p99: q(0.99),
            max: ms.last().copied().unwrap_or(0.0),
            samples: ms.len() as u64,
        }
    }
}

/// What the watcher measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Propagation {
    /// Driver and manager online at the write.
    pub online: Latency,
    /// The driver (or the manager) was offline at the write.
    pub offline_to_visible: Latency,
    /// Confirmations the manager never saw (refused by the server, e.g. on a reassigned
    /// route).
    pub never_visible: u64,
}

/// Splits the confirmations into the two latency sets.
pub fn summarize(confirmations: &[Confirmation]) -> Propagation {
    let (mut online, mut offline, mut never) = (Vec::new(), Vec::new(), 0);
    for c in confirmations {
        match c.visible_after {
            Some(d) if c.online => online.push(d.as_secs_f64() * 1000.0),
            Some(d) => offline.push(d.as_secs_f64() * 1000.0),
            None => never += 1,
        }
    }
    Propagation {
        online: Latency::of(online),
        offline_to_visible: Latency::of(offline),
        never_visible: never,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let l = Latency::of((1..=100).map(f64::from).collect());
        assert_eq!((l.p50, l.p99, l.max, l.samples), (50.0, 99.0, 100.0, 100));
        assert_eq!(Latency::of(vec![]).samples, 0);
        assert_eq!(Latency::of(vec![7.0]).p99, 7.0);
    }
}
