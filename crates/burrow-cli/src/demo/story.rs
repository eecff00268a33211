//! The day's scripted events and what the audit needs to know about them: the manager's
//! loading pass, the route reassigned halfway through (while its driver is in a tunnel with a
//! confirmation pending), and the approval of the service reports.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// When things happen, as offsets from the start of the run, and who is involved.
#[derive(Debug)]
pub struct Story {
    /// The manager marks every shipment still `planned` on its screen as `loaded`.
    pub load_at: Duration,
    /// The manager gives the victim's route to the heir.
    pub reassign_at: Duration,
    /// The manager approves every service report.
    pub approve_at: Duration,
    /// Index (in the fleet) of the driver who loses a route.
    pub victim: usize,
    /// Index (in the fleet) of the driver who gets it.
    pub heir: usize,
    /// The route.
    pub route: String,
    /// The route's shipments.
    pub shipments: Vec<String>,
    /// The manager's op that reassigned the route (its outbox seq; 0 = not yet written).
    reassign_seq: AtomicU64,
    /// What the victim's device held at that moment.
    snapshot: Mutex<Option<Snapshot>>,
}

/// The victim's device when the route was reassigned.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Seconds into the run.
    pub at_secs: f64,
    /// The route's shipments on the victim's device.
    pub rows_held: u64,
    /// The victim's ops on those shipments still in its outbox (their seqs).
    pub pending_seqs: Vec<u64>,
}

/// Before and around the reassignment the victim is in a tunnel its app knows about: it
/// starts this long before…
pub const VICTIM_OFFLINE_BEFORE: Duration = Duration::from_millis(2500);
/// …and lasts at least this long after (and until the reassignment is on the server).
pub const VICTIM_OFFLINE_AFTER: Duration = Duration::from_millis(1500);
/// The victim confirms a delivery on the doomed route this long before the reassignment.
pub const VICTIM_CONFIRMS_BEFORE: Duration = Duration::from_millis(1000);

impl Story {
    /// The story of a run of `run` between `victim` and `heir` (fleet indexes).
    pub fn new(
        run: Duration,
        victim: usize,
        heir: usize,
        route: String,
        shipments: Vec<String>,
    ) -> Story {
        Story {
            load_at: run.mul_f64(0.3),
            reassign_at: run.mul_f64(0.5),
            approve_at: run.mul_f64(0.6),
            victim,
            heir,
            route,
            shipments,
            reassign_seq: AtomicU64::new(0),
            snapshot: Mutex::new(None),
        }
    }

    /// The victim's tunnel: the window other network trouble must stay clear of.
    pub fn victim_window(&self) -> (Duration, Duration) {
        (
            self.reassign_at.saturating_sub(VICTIM_OFFLINE_BEFORE),
            self.reassign_at + VICTIM_OFFLINE_AFTER,
        )
    }

    /// Records the reassignment: the manager's op and the victim's device at that moment.
    pub fn reassigned(&self, seq: u64, snapshot: Snapshot) {
        *self.snapshot.lock().unwrap_or_else(|p| p.into_inner()) = Some(snapshot);
        self.reassign_seq.store(seq, Ordering::SeqCst);
    }

    /// The manager's op that reassigned the route, once written.
    pub fn reassign_seq(&self) -> Option<u64> {
        Some(self.reassign_seq.load(Ordering::SeqCst)).filter(|s| *s > 0)
    }

    /// The victim's device at the reassignment, once it happened.
    pub fn snapshot(&self) -> Option<Snapshot> {
        self.snapshot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
