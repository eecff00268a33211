//! Sync attempts, read from each runner's event stream, and the success rate with the chaos
//! test's definition: an attempt succeeded when it completed, or when it failed and the next
//! attempt completed. Attempts that a tunnel cut (the link was down when the attempt started
//! or ended, or went down in between) cannot complete by construction: they are counted
//! apart, not in the rate.

use super::link::Link;
use burrow_client::{FailureKind, SyncEvent, SyncState};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;

/// One sync attempt of a runner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// It completed.
    pub ok: bool,
    /// The link was up from start to end (no tunnel touched it).
    pub link_up: bool,
    /// Why it failed, classified.
    pub error: Option<String>,
}

/// What one device's runner reported.
#[derive(Debug, Default)]
pub struct AttemptLog {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    attempts: Vec<Attempt>,
    /// Events missed because the reader fell behind.
    lagged: u64,
    /// Ops the server acknowledged, per the runner's reports.
    ops_acked: u64,
    /// Ops the server refused.
    ops_rejected: u64,
    /// Sync frames sent and received by completed syncs (compressed, without HTTP).
    frame_bytes: u64,
    /// Exchanges completed syncs sent again at once after the connection broke.
    reconnects: u64,
}

impl AttemptLog {
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Every attempt so far, in order.
    pub fn attempts(&self) -> Vec<Attempt> {
        self.with(|i| i.attempts.clone())
    }

    /// Attempts so far, and how many failed.
    pub fn counts(&self) -> (u64, u64) {
        self.with(|i| {
            let failed = i.attempts.iter().filter(|a| !a.ok).count() as u64;
            (i.attempts.len() as u64, failed)
        })
    }

    /// Bytes of the sync frames of completed syncs (compressed protobuf, without HTTP).
    pub fn frame_bytes(&self) -> u64 {
        self.with(|i| i.frame_bytes)
    }

    /// Exchanges this device's completed syncs sent again at once after the connection broke
    /// mid-request (each would otherwise have failed the attempt).
    pub fn reconnects(&self) -> u64 {
        self.with(|i| i.reconnects)
    }

    /// Events missed because the reader fell behind (should stay 0).
    pub fn lagged(&self) -> u64 {
        self.with(|i| i.lagged)
    }
}

/// The link state when an attempt started.
#[derive(Debug, Clone, Copy)]
struct Start {
    up: bool,
    cuts: u64,
}

impl Start {
    fn now(link: &Link) -> Start {
        Start {
            up: link.online(),
            cuts: link.cuts(),
        }
    }
}

/// Reads `events` into `log` until `stop` fires (then drains what is queued).
pub async fn watch(
    mut events: Receiver<SyncEvent>,
    link: Arc<Link>,
    log: Arc<AttemptLog>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let mut started: Option<Start> = None;
    let mut last_end = Start::now(&link);
    loop {
        let event = tokio::select! {
            e = events.recv() => e,
            _ = &mut stop => break,
        };
        match event {
            Ok(e) => on_event(e, &link, &log, &mut started, &mut last_end),
            Err(RecvError::Lagged(n)) => log.with(|i| i.lagged += n),
            Err(RecvError::Closed) => return,
        }
    }
    while let Ok(e) = events.try_recv() {
        on_event(e, &link, &log, &mut started, &mut last_end);
    }
}

fn on_event(
    e: SyncEvent,
    link: &Link,
    log: &AttemptLog,
    started: &mut Option<Start>,
    last_end: &mut Start,
) {
    let result = match e {
        SyncEvent::State {
            state: SyncState::Syncing,
            ..
        } => {
            *started = Some(Start::now(link));
            return;
        }
        // Any other state: an attempt that never ran (the app went offline) is dropped.
        SyncEvent::State { .. } => {
            *started = None;
            return;
        }
        SyncEvent::Synced { report } => {
            log.with(|i| {
                i.ops_acked += report.ops_acked;
                i.ops_rejected += report.ops_rejected;
                i.frame_bytes += report.bytes_up + report.bytes_down;
                i.reconnects += report.resumed;
            });
            None
        }
        SyncEvent::Failed {
            kind, status, code, ..
        } => Some(classify(kind, status, code.as_deref())),
        SyncEvent::Written { .. } | SyncEvent::Poked { .. } => return,
    };
    // Back-to-back attempts (no state change in between) start where the last one ended.
    let start = started.take().unwrap_or(*last_end);
    let end = Start::now(link);
    let attempt = Attempt {
        ok: result.is_none(),
        link_up: start.up && end.up && start.cuts == end.cuts,
        error: result,
    };
    log.with(|i| i.attempts.push(attempt));
    *last_end = end;
}

/// A short class of a failed sync, from the event's typed fields: `connection_lost`,
/// `timeout`, `server 429 (rate_limited)`, …
pub fn classify(kind: FailureKind, status: Option<u16>, code: Option<&str>) -> String {
    match status {
        Some(status) => format!("server {status} ({})", code.unwrap_or("?")),
        None => kind.to_string(),
    }
}

/// The fleet's sync attempts, summed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncSummary {
    /// Every attempt the runners made.
    pub attempts: u64,
    /// Attempts with the link up from start to end: the ones the rate judges.
    pub judged: u64,
    /// Of those, completed.
    pub completed: u64,
    /// Failed, and the device's next judged attempt completed.
    pub resumed: u64,
    /// Failed, and the next judged attempt failed too (or there was none).
    pub not_resumed: u64,
    /// Attempts a tunnel cut (the link was down at their start or end): not judged.
    pub cut_by_tunnel: u64,
    /// `(completed + resumed) / judged`.
    pub success_rate: f64,
    /// Failures by class.
    pub errors: BTreeMap<String, u64>,
    /// Events the demo missed (its reader fell behind; should be 0).
    pub events_missed: u64,
    /// Exchanges that completed attempts sent again at once after the connection broke
    /// mid-request (`SyncReport.resumed`): drops cured inside an attempt.
    pub reconnects: u64,
}

/// Sums the attempts of every device (each list in order).
pub fn summarize(devices: &[Vec<Attempt>], events_missed: u64) -> SyncSummary {
    let mut s = SyncSummary {
        events_missed,
        ..SyncSummary::default()
    };
    for list in devices {
        s.attempts += list.len() as u64;
        for a in list.iter().filter(|a| !a.ok) {
            *s.errors
                .entry(a.error.clone().unwrap_or_default())
                .or_default() += 1;
        }
        let judged: Vec<&Attempt> = list.iter().filter(|a| a.link_up).collect();
        s.cut_by_tunnel += (list.len() - judged.len()) as u64;
        s.judged += judged.len() as u64;
        for (k, a) in judged.iter().enumerate() {
            if a.ok {
                s.completed += 1;
            } else if judged.get(k + 1).is_some_and(|n| n.ok) {
                s.resumed += 1;
            } else {
                s.not_resumed += 1;
            }
        }
    }
    s.success_rate = if s.judged == 0 {
        1.0
    } else {
        (s.completed + s.resumed) as f64 / s.judged as f64
    };
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(ok: bool, link_up: bool) -> Attempt {
        Attempt {
            ok,
            link_up,
            error: (!ok).then(|| "connection_lost".to_string()),
        }
    }

    #[test]
    fn the_chaos_definition_with_tunnels_apart() {
        let s = summarize(
            &[
                vec![
                    a(true, true),
                    a(false, true),
                    a(false, false),
                    a(true, true),
                ],
                vec![a(false, true), a(false, true), a(true, true)],
            ],
            0,
        );
        assert_eq!(s.attempts, 7);
        assert_eq!(s.cut_by_tunnel, 1);
        assert_eq!(s.judged, 6);
        assert_eq!(s.completed, 3);
        assert_eq!(s.resumed, 2);
        assert_eq!(s.not_resumed, 1);
        assert!((s.success_rate - 5.0 / 6.0).abs() < 1e-9);
        assert_eq!(s.errors["connection_lost"], 4);
        assert_eq!(summarize(&[], 0).success_rate, 1.0);
    }

    #[test]
    fn errors_are_classified_from_the_typed_event() {
        use burrow_client::{Error, TransportError};
        let class = |e: Error| match SyncEvent::failed(&e) {
            SyncEvent::Failed {
                kind, status, code, ..
            } => classify(kind, status, code.as_deref()),
            other => panic!("not a failure: {other:?}"),
        };
        assert_eq!(
            class(Error::Transport(TransportError::ConnectionLost(
                "connection reset by peer".into()
            ))),
            "connection_lost"
        );
        assert_eq!(
            class(Error::Transport(TransportError::Timeout(
                "operation timed out".into()
            ))),
            "timeout"
        );
        assert_eq!(
            class(Error::Transport(TransportError::Status {
                status: 429,
                code: "rate_limited".into(),
                message: "slow down".into(),
                retry_after_ms: Some(1_000),
            })),
            "server 429 (rate_limited)"
        );
    }
}
