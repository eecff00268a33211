//! Per-device network scripts: tunnel outages (some the app notices and reports, some
//! silent), EDGE stretches, drawn from the seed, and the task that plays one against a
//! [`Link`].

use super::dice::Dice;
use super::fleet::Role;
use super::link::Link;
use burrow_proxy::Profile;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How long after a tunnel starts an app notices it has no network.
const NOTICE: Duration = Duration::from_millis(300);

/// What goes wrong during a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trouble {
    /// No link at all; `known`: the app notices and tells the client it is offline.
    Tunnel {
        /// The app reports `offline` (otherwise the network is silently dead).
        known: bool,
    },
    /// The link degrades to EDGE.
    Edge,
}

/// One scripted stretch of trouble, relative to the start of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// When it starts.
    pub from: Duration,
    /// When it ends.
    pub to: Duration,
    /// What happens.
    pub trouble: Trouble,
}

/// Tunnels and EDGE stretches per role for a run of `run`: drivers and technicians move
/// around (about one tunnel per 10–12 s and one EDGE stretch), scanners lose the hall's Wi-Fi
/// now and then, the office (manager) stays connected.
fn counts(role: Role, run: Duration) -> (u64, u64) {
    let secs = run.as_secs();
    match role {
        Role::Driver => ((secs / 10).clamp(1, 6), u64::from(secs >= 10)),
        Role::Technician => ((secs / 12).clamp(1, 5), u64::from(secs >= 10)),
        Role::Warehouse => ((secs / 15).clamp(1, 4), 0),
        Role::Manager => (0, 0),
    }
}

/// Draws a device's windows for a run of `run`, avoiding `avoid` (the story's own window).
/// `toggle` alternates known and silent tunnels across the whole fleet, so both occur.
pub fn plan(
    role: Role,
    run: Duration,
    dice: &mut Dice,
    toggle: &mut bool,
    avoid: Option<(Duration, Duration)>,
) -> Vec<Window> {
    let (tunnels, stretches) = counts(role, run);
    let mut kinds: Vec<Trouble> = Vec::new();
    for _ in 0..tunnels {
        *toggle = !*toggle;
        kinds.push(Trouble::Tunnel { known: *toggle });
    }
    kinds.extend((0..stretches).map(|_| Trouble::Edge));
    // Shuffle the order of the kinds, then give each an equal segment of the run.
    for i in (1..kinds.len()).rev() {
        let j = dice.below(i as u64 + 1) as usize;
        kinds.swap(i, j);
    }
    let (start, end) = (run.mul_f64(0.05), run.mul_f64(0.9));
    let segment = (end - start) / (kinds.len().max(1) as u32);
    let mut out = Vec::new();
    for (k, trouble) in kinds.into_iter().enumerate() {
        let seg_from = start + segment * k as u32;
        let room = segment.saturating_sub(Duration::from_millis(300));
        let (lo, hi) = match trouble {
            Trouble::Tunnel { .. } => (Duration::from_secs(2), Duration::from_secs(5)),
            Trouble::Edge => (Duration::from_secs(3), Duration::from_secs(8)),
        };
        let len = dice.between(lo.min(room), hi.min(room));
        if len < Duration::from_millis(500) {
            continue;
        }
        let from = seg_from + dice.between(Duration::ZERO, room - len);
        let w = Window {
            from,
            to: from + len,
            trouble,
        };
        let clashes = avoid.is_some_and(|(a, b)| w.from < b && a < w.to);
        if !clashes {
            out.push(w);
        }
    }
    out
}

/// Something a window's end may have to wait for (the story's reassignment reaching the
/// server), polled until it holds or `max` has passed.
pub struct Hold {
    /// Whether the wait is over.
    pub ready: Box<dyn Fn() -> bool + Send + Sync>,
    /// Longest wait past the window's planned end.
    pub max: Duration,
}

/// Plays `windows` against `link` from `t0`: cuts and restores the link, tells the app, and
/// switches to `stretch` and back to `base`. A window flagged in `holds` (by index) ends only
/// once its hold is ready.
pub async fn play(
    link: Arc<Link>,
    windows: Vec<(Window, Option<Hold>)>,
    t0: Instant,
    base: Profile,
    stretch: Profile,
) {
    for (w, hold) in windows {
        tokio::time::sleep_until(t0 + w.from).await;
        match w.trouble {
            Trouble::Tunnel { known } => {
                link.cut();
                if known && w.to - w.from > NOTICE {
                    tokio::time::sleep(NOTICE).await;
                    link.tell_offline();
                }
            }
            Trouble::Edge => link.set_profile(stretch.clone(), true),
        }
        tokio::time::sleep_until(t0 + w.to).await;
        if let Some(h) = hold {
            let deadline = Instant::now() + h.max;
            while !(h.ready)() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        match w.trouble {
            Trouble::Tunnel { .. } => link.restore(),
            Trouble::Edge => link.set_profile(base.clone(), false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_fit_the_run_do_not_overlap_and_avoid_the_story() {
        for seed in 0..50 {
            for secs in [5u64, 8, 30, 120] {
                let run = Duration::from_secs(secs);
                let mut dice = Dice::new(seed, 1);
                let mut toggle = false;
                let avoid = Some((run / 3, run / 2));
                let w = plan(Role::Driver, run, &mut dice, &mut toggle, avoid);
                for x in &w {
                    assert!(x.from < x.to && x.to <= run, "{x:?}");
                    assert!(!(x.from < run / 2 && run / 3 < x.to), "{x:?}");
                }
                for pair in w.windows(2) {
                    assert!(pair[0].to <= pair[1].from, "{pair:?}");
                }
            }
        }
        let mut toggle = false;
        let w = plan(
            Role::Driver,
            Duration::from_secs(60),
            &mut Dice::new(1, 1),
            &mut toggle,
            None,
        );
        let known = w
            .iter()
            .filter(|x| x.trouble == Trouble::Tunnel { known: true })
            .count();
        let silent = w
            .iter()
            .filter(|x| x.trouble == Trouble::Tunnel { known: false })
            .count();
        assert!(known > 0 && silent > 0, "{w:?}");
        assert!(
            plan(
                Role::Manager,
                Duration::from_secs(60),
                &mut Dice::new(1, 1),
                &mut toggle,
                None
            )
            .is_empty()
        );
    }
}
