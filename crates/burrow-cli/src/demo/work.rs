//! What each device does during the run, one thread per device, every choice drawn from the
//! seed: drivers confirm deliveries (critical) and take a photo each (bulk); scanners
//! increment shared stock counters; technicians add to shared report notes (a text CRDT)
//! and submit their report; the manager edits notes too and plays the story (loading pass,
//! route reassignment, approval).

use super::device::Device;
use super::dice::Dice;
use super::fleet::Role;
use super::ledger::{Confirmation, Ledger};
use super::story::{Snapshot, Story, VICTIM_CONFIRMS_BEFORE};
use burrow_client::Client;
use burrow_core::env::{Clock, SystemClock};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Everything a device's thread needs.
pub struct Ctx {
    /// The fleet.
    pub devices: Arc<Vec<Device>>,
    /// This device's index.
    pub me: usize,
    /// The manager's index.
    pub manager: usize,
    /// What the audit checks.
    pub ledger: Arc<Ledger>,
    /// The scripted events.
    pub story: Arc<Story>,
    /// Start of the run.
    pub t0: Instant,
    /// Length of the run.
    pub run: Duration,
    /// The run's seed.
    pub seed: u64,
}

/// Notes phrases technicians and the manager add.
const PHRASES: [&str; 8] = [
    "replaced the filter",
    "pressure ok",
    "customer asks for a callback",
    "valve sticks, ordered a spare",
    "checked the wiring",
    "photos taken",
    "tested twice",
    "needs a second visit",
];

impl Ctx {
    fn me(&self) -> &Device {
        &self.devices[self.me]
    }

    /// Time into the run, while it lasts.
    fn running(&self) -> Option<Duration> {
        let e = self.t0.elapsed();
        (e < self.run).then_some(e)
    }

    /// Sleeps `d`, or until `wake` (an offset into the run) if sooner, never past the run.
    fn nap(&self, d: Duration, wake: Option<Duration>) {
        let mut until = self.t0.elapsed() + d;
        if let Some(w) = wake.filter(|w| *w > self.t0.elapsed()) {
            until = until.min(w);
        }
        let until = until.min(self.run);
        std::thread::sleep(until.saturating_sub(self.t0.elapsed()));
    }

    fn dice(&self, purpose: u64) -> Dice {
        Dice::new(self.seed, 0x1000 * purpose + self.me as u64)
    }
}

/// The `id` column of a local query's rows.
fn ids(client: &Client, sql: &str) -> Vec<String> {
    client
        .query_json(sql)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|r| r.get("id").and_then(|v| v.as_str()).map(str::to_string))
        .collect()
}

/// The `n` column of a local count query (0 when it cannot be read).
pub fn count(client: &Client, sql: &str) -> i64 {
    client
        .query_json(sql)
        .ok()
        .and_then(|rows| {
            rows.first()
                .and_then(|r| r.get("n"))
                .and_then(|v| v.as_i64())
        })
        .unwrap_or(0)
}

/// Runs device `ctx.me`'s part until the run ends.
pub fn run(ctx: &Ctx) {
    match ctx.me().member.role {
        Role::Driver => driver(ctx),
        Role::Warehouse => scanner(ctx),
        Role::Technician => technician(ctx),
        Role::Manager => manager(ctx),
    }
}

fn driver(ctx: &Ctx) {
    let me = ctx.me();
    let mut dice = ctx.dice(1);
    let victim = ctx.story.victim == ctx.me;
    let forced_at = ctx.story.reassign_at.saturating_sub(VICTIM_CONFIRMS_BEFORE);
    let mut forced = !victim;
    let mut k = 0;
    while let Some(elapsed) = ctx.running() {
        let open = if !forced && elapsed >= forced_at {
            // In the tunnel, just before the office gives the route away: a pending edit.
            forced = true;
            ids(
                &me.client,
                &format!(
                    "SELECT id FROM shipments WHERE route_id = '{}' AND status IS NOT 'delivered' ORDER BY id",
                    ctx.story.route
                ),
            )
        } else {
            ids(
                &me.client,
                "SELECT id FROM shipments WHERE status IS NOT 'delivered' ORDER BY id",
            )
        };
        if let Some(shipment) = dice.pick(&open) {
            k += 1;
            confirm(ctx, shipment, k, &mut dice);
        }
        let wake = (!forced).then_some(forced_at);
        ctx.nap(
            dice.between(Duration::from_millis(800), Duration::from_millis(2000)),
            wake,
        );
    }
}

/// A delivery: status and signature (critical lane), then a photo and a scan (bulk).
fn confirm(ctx: &Ctx, shipment: &str, k: usize, dice: &mut Dice) {
    let me = ctx.me();
    let name = &me.member.name;
    let signature = format!("{name} #{k}");
    let online = me.link.online() && ctx.devices[ctx.manager].link.online();
    let sql = format!(
        "UPDATE shipments SET status = 'delivered', signature = '{signature}' WHERE id = '{shipment}'"
    );
    if me.exec(&sql).is_some_and(|r| r.ops_captured > 0) {
        ctx.ledger.confirmed(
            signature,
            Confirmation {
                at: Instant::now(),
                online,
                visible_after: None,
            },
        );
    }
    let size = 2048 + dice.below(4096) as usize;
    let image = dice.bytes(size);
    let at = SystemClock.now_ms() as i64;
    let photo = me.write(|c| {
        c.write(|tx| {
            tx.execute(
                "INSERT INTO photos(id, shipment_id, taken_by, taken_at, image) VALUES (?1, ?2, ?3, ?4, ?5)",
                rusqlite::params![format!("photo-{name}-{k:03}"), shipment, name, at, image],
            )?;
            tx.execute(
                "INSERT INTO scans(id, shipment_id, code, scanned_by, scanned_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                rusqlite::params![format!("scan-{name}-{k:03}"), shipment, format!("PKG-{shipment}"), name, at],
            )
        })
        .map(|(_, r)| r)
    });
    if photo.is_some() {
        ctx.ledger.photo(size);
    }
}

fn scanner(ctx: &Ctx) {
    let me = ctx.me();
    let mut dice = ctx.dice(2);
    let items = ids(&me.client, "SELECT id FROM items ORDER BY id");
    while ctx.running().is_some() {
        if let Some(item) = dice.pick(&items) {
            let by = 1 + dice.below(3) as i64;
            let sql = format!("UPDATE items SET quantity = quantity + {by} WHERE id = '{item}'");
            if me.exec(&sql).is_some_and(|r| r.ops_captured == 1) {
                ctx.ledger.incremented(ctx.me, item, by);
            }
        }
        ctx.nap(
            dice.between(Duration::from_millis(150), Duration::from_millis(400)),
            None,
        );
    }
}

/// Appends a marked phrase to a report's notes; records the marker.
fn add_note(ctx: &Ctx, report: &str, k: usize, dice: &mut Dice) {
    let me = ctx.me();
    let marker = format!("[{}#{k}]", me.member.name);
    let phrase = dice.pick(&PHRASES).copied().unwrap_or("ok");
    let sql =
        format!("UPDATE reports SET notes = notes || ' {marker} {phrase}.' WHERE id = '{report}'");
    if me.exec(&sql).is_some_and(|r| r.ops_captured > 0) {
        ctx.ledger.marked(ctx.me, report, marker);
    }
}

fn technician(ctx: &Ctx) {
    let me = ctx.me();
    let mut dice = ctx.dice(3);
    let (job, own) = me.member.job_ids();
    let assisted = ids(
        &me.client,
        &format!("SELECT id FROM reports WHERE id != '{own}' ORDER BY id"),
    );
    me.exec(&format!(
        "UPDATE jobs SET status = 'in_progress' WHERE id = '{job}'"
    ));
    let mut k = 0;
    while ctx.running().is_some() {
        k += 1;
        let target = match dice.pick(&assisted) {
            Some(a) if dice.chance(40) => a.clone(),
            _ => own.clone(),
        };
        add_note(ctx, &target, k, &mut dice);
        if target == own && k.is_multiple_of(3) {
            me.exec(&format!(
                "UPDATE reports SET approval = 'submitted rev {k}' WHERE id = '{own}'"
            ));
        }
        ctx.nap(
            dice.between(Duration::from_millis(600), Duration::from_millis(1600)),
            None,
        );
    }
}

fn manager(ctx: &Ctx) {
    let me = ctx.me();
    let story = &ctx.story;
    let mut dice = ctx.dice(4);
    let reports = ids(&me.client, "SELECT id FROM reports ORDER BY id");
    let (mut loaded, mut reassigned, mut approved) = (false, false, false);
    let mut next_note = dice.between(Duration::from_secs(1), Duration::from_secs(3));
    let mut k = 0;
    while let Some(elapsed) = ctx.running() {
        if !loaded && elapsed >= story.load_at {
            loaded = true;
            me.exec("UPDATE shipments SET status = 'loaded' WHERE status = 'planned'");
        }
        if !reassigned && elapsed >= story.reassign_at {
            reassigned = true;
            reassign(ctx);
        }
        if !approved && elapsed >= story.approve_at {
            approved = true;
            me.exec("UPDATE reports SET approval = 'approved' WHERE approval IS NOT 'approved'");
        }
        if elapsed >= next_note {
            k += 1;
            if let Some(r) = dice.pick(&reports) {
                add_note(ctx, r, k, &mut dice);
            }
            next_note = elapsed + dice.between(Duration::from_secs(2), Duration::from_secs(4));
        }
        let due = [
            (!loaded).then_some(story.load_at),
            (!reassigned).then_some(story.reassign_at),
            (!approved).then_some(story.approve_at),
            Some(next_note),
        ]
        .into_iter()
        .flatten()
        .min();
        ctx.nap(Duration::from_millis(200), due);
    }
}

/// The manager gives the victim's route to the heir, noting what the victim's device holds
/// of it at that moment.
fn reassign(ctx: &Ctx) {
    let story = &ctx.story;
    let victim = &ctx.devices[story.victim];
    let heir = &ctx.devices[story.heir];
    let rows_held = count(
        &victim.client,
        &format!(
            "SELECT count(*) AS n FROM shipments WHERE route_id = '{}'",
            story.route
        ),
    )
    .max(0) as u64;
    let list = story
        .shipments
        .iter()
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let pending_seqs = victim
        .client
        .with_connection(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT seq FROM _burrow_outbox WHERE tbl = 'shipments' AND row_id IN ({list}) ORDER BY seq"
            ))?;
            let seqs = stmt
                .query_map([], |r| r.get::<_, i64>(0))?
                .collect::<rusqlite::Result<Vec<i64>>>()?;
            Ok(seqs.into_iter().map(|s| s as u64).collect())
        })
        .unwrap_or_default();
    let me = ctx.me();
    let sql = format!(
        "UPDATE routes SET driver_id = '{}' WHERE id = '{}'",
        heir.member.name, story.route
    );
    if me.exec(&sql).is_some_and(|r| r.ops_captured == 1) {
        let seq = me
            .client
            .with_connection(|c| {
                Ok(c.query_row(
                    "SELECT seq FROM sqlite_sequence WHERE name = '_burrow_outbox'",
                    [],
                    |r| r.get::<_, i64>(0),
                )?)
            })
            .unwrap_or(0)
            .max(0) as u64;
        story.reassigned(
            seq,
            Snapshot {
                at_secs: ctx.t0.elapsed().as_secs_f64(),
                rows_held,
                pending_seqs,
            },
        );
    }
}
