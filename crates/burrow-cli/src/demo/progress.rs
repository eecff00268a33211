//! The live progress display on stderr: with a terminal, indicatif lines (the phase with a
//! bar over the run, then one line per role group: devices online, in a tunnel, told
//! offline, on EDGE, and their pending ops); without one, a plain line every few seconds;
//! under `--json`, nothing.

use super::device::Device;
use super::fleet::Role;
use burrow_server::{ServerStore, SqliteServerStore};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::Duration;

/// One role group at one moment.
#[derive(Debug, Clone, Default)]
pub struct Group {
    /// Its name.
    pub name: &'static str,
    /// Devices in it.
    pub total: usize,
    /// Devices that can reach the server.
    pub online: usize,
    /// Devices whose link is cut.
    pub tunnel: usize,
    /// Devices whose app reports no network.
    pub told_offline: usize,
    /// Devices on a slower stretch (EDGE, or weak signal).
    pub slowed: usize,
    /// Ops in their outboxes.
    pub pending: u64,
}

/// The fleet at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Per role group.
    pub groups: Vec<Group>,
    /// Entries in the server's conflict log.
    pub conflicts: u64,
    /// Sync attempts so far, and how many failed.
    pub attempts: (u64, u64),
}

/// Reads the fleet's state (each client's status, the server's conflict log).
pub async fn snapshot(devices: &[Device], store: &SqliteServerStore) -> Snapshot {
    let mut groups = Vec::new();
    for role in Role::ALL {
        let mut g = Group {
            name: role.group(),
            ..Group::default()
        };
        for d in devices.iter().filter(|d| d.member.role == role) {
            g.total += 1;
            g.online += usize::from(d.link.online());
            g.tunnel += usize::from(d.link.in_tunnel());
            g.told_offline += usize::from(d.link.app_offline());
            g.slowed += usize::from(d.link.slow());
            g.pending += d.pending().unwrap_or(0);
        }
        if g.total > 0 {
            groups.push(g);
        }
    }
    let conflicts = store
        .conflicts(1_000_000)
        .await
        .map_or(0, |l| l.len() as u64);
    let attempts = devices.iter().fold((0, 0), |acc, d| {
        let (n, failed) = d.attempts.counts();
        (acc.0 + n, acc.1 + failed)
    });
    Snapshot {
        groups,
        conflicts,
        attempts,
    }
}

fn group_line(g: &Group) -> String {
    format!(
        "{:<11} {:>3}/{:<3} online  {:>2} in a tunnel ({} told offline)  {:>2} slowed  {:>5} ops pending",
        g.name, g.online, g.total, g.tunnel, g.told_offline, g.slowed, g.pending
    )
}

#[derive(Clone)]
enum Kind {
    Quiet,
    Plain,
    Bars {
        multi: MultiProgress,
        main: ProgressBar,
        lines: Vec<ProgressBar>,
        footer: ProgressBar,
    },
}

/// Where progress goes.
#[derive(Clone)]
pub struct Progress {
    kind: Kind,
}

impl Progress {
    /// Nothing under `--json`; bars when stderr is a terminal; plain lines otherwise.
    pub fn new(json: bool, groups: usize) -> Progress {
        let kind = if json {
            Kind::Quiet
        } else if std::io::stderr().is_terminal() {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{prefix:<8} [{bar:32.cyan/blue}] {pos:>3}/{len} s  {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            let main = multi.add(ProgressBar::new(1).with_style(style));
            let plain = ProgressStyle::with_template("  {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar());
            let lines = (0..groups)
                .map(|_| multi.add(ProgressBar::new(1).with_style(plain.clone())))
                .collect();
            let footer = multi.add(ProgressBar::new(1).with_style(plain));
            Kind::Bars {
                multi,
                main,
                lines,
                footer,
            }
        } else {
            Kind::Plain
        };
        Progress { kind }
    }

    /// How often the display wants a new snapshot.
    pub fn interval(&self) -> Duration {
        match self.kind {
            Kind::Plain => Duration::from_secs(3),
            _ => Duration::from_millis(250),
        }
    }

    /// Shows `s` during `phase`, `elapsed` seconds into a phase of `len` seconds.
    pub fn show(&self, phase: &str, elapsed: Duration, len: Duration, s: &Snapshot) {
        let footer = format!(
            "conflicts logged {:>4}  sync attempts {} ({} failed)",
            s.conflicts, s.attempts.0, s.attempts.1
        );
        match &self.kind {
            Kind::Quiet => {}
            Kind::Plain => {
                let groups: Vec<String> = s
                    .groups
                    .iter()
                    .map(|g| {
                        format!(
                            "{} {}/{} online, {} pending",
                            g.name, g.online, g.total, g.pending
                        )
                    })
                    .collect();
                eprintln!(
                    "[{:>5.1} s] {phase:<6} {} | {footer}",
                    elapsed.as_secs_f64(),
                    groups.join(" | ")
                );
            }
            Kind::Bars {
                main,
                lines,
                footer: f,
                ..
            } => {
                main.set_prefix(phase.to_string());
                main.set_length(len.as_secs().max(1));
                main.set_position(elapsed.as_secs().min(len.as_secs()));
                for (bar, g) in lines.iter().zip(&s.groups) {
                    bar.set_message(group_line(g));
                }
                f.set_message(footer);
            }
        }
    }

    /// A line about what is happening (above the bars, or on its own line).
    pub fn note(&self, line: &str) {
        match &self.kind {
            Kind::Quiet => {}
            Kind::Plain => eprintln!("{line}"),
            Kind::Bars { multi, .. } => {
                if multi.println(line).is_err() {
                    eprintln!("{line}");
                }
            }
        }
    }

    /// Removes the bars.
    pub fn finish(&self) {
        if let Kind::Bars {
            main,
            lines,
            footer,
            ..
        } = &self.kind
        {
            for b in lines.iter().chain([main, footer]) {
                b.finish_and_clear();
            }
        }
    }
}
