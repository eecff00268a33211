//! What the workload did, as the audit checks it: counter increments per item, the markers
//! technicians and the manager put into shared notes, every delivery confirmation (for the
//! propagation latency), and photo bytes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// One delivery confirmation, identified by its signature.
#[derive(Debug, Clone)]
pub struct Confirmation {
    /// When the local write committed.
    pub at: Instant,
    /// The driver and the manager were both online at that moment.
    pub online: bool,
    /// How long until the manager's database showed it.
    pub visible_after: Option<Duration>,
}

/// The workload's record, shared by every device's thread.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Sum and number of the increments each item got, by item id.
    increments: Mutex<BTreeMap<String, (i64, u64)>>,
    /// Devices that incremented counters.
    counter_writers: Mutex<std::collections::BTreeSet<usize>>,
    /// `(report id, marker)` for every notes edit, and who made it.
    markers: Mutex<Vec<(String, String, usize)>>,
    /// Confirmations by signature.
    confirmations: Mutex<HashMap<String, Confirmation>>,
    /// Photo rows written.
    pub photos: AtomicU64,
    /// Their image bytes.
    pub photo_bytes: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Ledger {
    /// Device `who` added `by` to item `item`'s counter.
    pub fn incremented(&self, who: usize, item: &str, by: i64) {
        let mut all = lock(&self.increments);
        let e = all.entry(item.to_string()).or_default();
        e.0 += by;
        e.1 += 1;
        lock(&self.counter_writers).insert(who);
    }

    /// The increments per item (sum, count), and how many devices made them.
    pub fn increments(&self) -> (BTreeMap<String, (i64, u64)>, usize) {
        (
            lock(&self.increments).clone(),
            lock(&self.counter_writers).len(),
        )
    }

    /// Device `who` put `marker` into the notes of `report`.
    pub fn marked(&self, who: usize, report: &str, marker: String) {
        lock(&self.markers).push((report.to_string(), marker, who));
    }

    /// Every notes marker: `(report, marker, device)`.
    pub fn markers(&self) -> Vec<(String, String, usize)> {
        lock(&self.markers).clone()
    }

    /// A confirmation was written with `signature`.
    pub fn confirmed(&self, signature: String, c: Confirmation) {
        lock(&self.confirmations).insert(signature, c);
    }

    /// Marks the confirmations whose signatures the manager now shows as seen at `now`;
    /// returns how many were new.
    pub fn seen(&self, signatures: &[String], now: Instant) -> usize {
        let mut all = lock(&self.confirmations);
        let mut new = 0;
        for s in signatures {
            if let Some(c) = all.get_mut(s)
                && c.visible_after.is_none()
            {
                c.visible_after = Some(now.saturating_duration_since(c.at));
                new += 1;
            }
        }
        new
    }

    /// Every confirmation.
    pub fn confirmations(&self) -> Vec<Confirmation> {
        lock(&self.confirmations).values().cloned().collect()
    }

    /// Counts a photo of `bytes`.
    pub fn photo(&self, bytes: usize) {
        self.photos.fetch_add(1, Ordering::Relaxed);
        self.photo_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}
