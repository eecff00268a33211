//! Invariant I10 (authorization) on the store, as a property: random data, random users and
//! random sequences of writes, reassignments, pulls (in small pages) and forbidden writes.
//! After every complete pull a user's copy equals exactly what the rules grant them — no
//! row outside their grants, none missing, same values — and a write outside their
//! permissions is refused with no effect.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use burrow_core::{ClaimSet, Cursor, OpKind, OutcomeKind, Value};
use burrow_server::store::{PullRequest, ScopePosition, ScopeRequest, ServerStore};
use proptest::prelude::*;
use std::collections::BTreeMap;

mod common;

use common::RulesStore;

const SCHEMA: &str = r#"
version = 1
[tables.routes.columns]
id = "text"
driver_id = "text"
[tables.shipments.columns]
id = "text"
route_id = { type = "text", references = "routes" }
status = "text"
note = "text"
"#;

const RULES: &str = r#"
[streams.my_routes]
table = "routes"
when = "auth.role = 'driver'"
where = "driver_id = auth.sub"

[streams.my_shipments]
table = "shipments"
when = "auth.role = 'driver'"
where = "route_id IN (SELECT id FROM routes WHERE driver_id = auth.sub) AND status != 'archived'"

[streams.everything_routes]
table = "routes"
when = "auth.role = 'admin'"

[streams.everything_shipments]
table = "shipments"
when = "auth.role = 'admin'"

[[permissions]]
table = "*"
actions = ["insert", "update", "delete"]
when = "auth.role = 'admin'"

[[permissions]]
table = "shipments"
actions = ["update"]
columns = ["note"]
when = "auth.role = 'driver' AND route_id IN (SELECT id FROM routes WHERE driver_id = auth.sub)"
"#;

const DRIVERS: [&str; 3] = ["u0", "u1", "u2"];

#[derive(Debug, Clone)]
enum Step {
    /// The admin creates or reassigns route `r` to driver `d`.
    AssignRoute { r: u8, d: u8 },
    /// The admin puts shipment `s` on route `r` with a status.
    PutShipment { s: u8, r: u8, archived: bool },
    /// The admin deletes shipment `s`.
    DeleteShipment { s: u8 },
    /// Driver `d` pulls to the head in pages of about `page` bytes and at most `rows` rows.
    Pull { d: u8, page: u16, rows: u8 },
    /// Driver `d` pulls one page of at most `rows` rows (a scope change may stop half-way).
    PullPage { d: u8, rows: u8 },
    /// Driver `d` writes the note of shipment `s` (allowed only on their routes).
    DriverNote { d: u8, s: u8, n: u8 },
    /// Driver `d` tries to move shipment `s` to route `r` (never allowed).
    DriverMove { d: u8, s: u8, r: u8 },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0u8..4, 0u8..3).prop_map(|(r, d)| Step::AssignRoute { r, d }),
        (0u8..8, 0u8..4, any::<bool>()).prop_map(|(s, r, archived)| Step::PutShipment {
            s,
            r,
            archived: archived && s % 3 == 0
        }),
        (0u8..8).prop_map(|s| Step::DeleteShipment { s }),
        (0u8..3, 40u16..600, 1u8..6).prop_map(|(d, page, rows)| Step::Pull { d, page, rows }),
        (0u8..3, 1u8..4).prop_map(|(d, rows)| Step::PullPage { d, rows }),
        (0u8..3, 0u8..8, any::<u8>()).prop_map(|(d, s, n)| Step::DriverNote { d, s, n }),
        (0u8..3, 0u8..8, 0u8..4).prop_map(|(d, s, r)| Step::DriverMove { d, s, r }),
    ]
}

/// The server's truth, kept independently of the store.
#[derive(Default, Clone, Debug)]
struct Truth {
    routes: BTreeMap<String, String>, // id -> driver
    shipments: BTreeMap<String, (String, String, Option<String>)>, // id -> (route, status, note)
}

impl Truth {
    /// What driver `d` may see: rows by table and id, with their values.
    fn grant(&self, d: &str) -> BTreeMap<(String, String), BTreeMap<String, Value>> {
        let mut out = BTreeMap::new();
        for (id, driver) in &self.routes {
            if driver == d {
                out.insert(
                    ("routes".to_string(), id.clone()),
                    BTreeMap::from([("driver_id".to_string(), Value::Text(driver.clone()))]),
                );
            }
        }
        for (id, (route, status, note)) in &self.shipments {
            if self.routes.get(route).is_some_and(|x| x == d) && status != "archived" {
                let mut f = BTreeMap::from([
                    ("route_id".to_string(), Value::Text(route.clone())),
                    ("status".to_string(), Value::Text(status.clone())),
                ]);
                if let Some(n) = note {
                    f.insert("note".to_string(), Value::Text(n.clone()));
                }
                out.insert(("shipments".to_string(), id.clone()), f);
            }
        }
        out
    }
}

/// A device's copy and cursor.
#[derive(Default, Clone, Debug)]
struct Device {
    rows: BTreeMap<(String, String), BTreeMap<String, Value>>,
    cursor: Cursor,
    position: ScopePosition,
    seq: u64,
}

struct World {
    base: RulesStore,
}

impl World {
    fn new() -> World {
        World {
            base: RulesStore::new(SCHEMA, RULES),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn write(
        &mut self,
        user: &str,
        role: &str,
        seq: u64,
        table: &str,
        row: &str,
        kind: OpKind,
        fields: Vec<(&str, Value)>,
    ) -> OutcomeKind {
        self.base
            .write_one((user, role, seq), (table, row, kind, 0), fields)
            .await
    }

    async fn pull_all(&self, d: &str, dev: &mut Device, page: usize, rows: usize) {
        for _ in 0..10_000 {
            if !self.pull_page(d, dev, page, rows).await {
                return;
            }
        }
        panic!("the pull never reached the head");
    }

    /// Pulls one page into the device; `true` when there is more.
    async fn pull_page(&self, d: &str, dev: &mut Device, page: usize, rows: usize) -> bool {
        {
            let page = self
                .base
                .store
                .pull(PullRequest {
                    cursor: dev.cursor,
                    page_bytes_max: page,
                    page_rows_max: rows,
                    exclude_replica: None,
                    audience: 0,
                    scope: Some(ScopeRequest {
                        rules: self.base.rules.clone(),
                        schema: self.base.env.schema.clone(),
                        claims: ClaimSet::new().with("sub", d).with("role", "driver"),
                        subscriptions: vec![],
                        now_ms: self.base.clock,
                        written: vec![],
                        position: dev.position,
                    }),
                })
                .await
                .unwrap();
            assert!(
                page.changes.len() <= rows,
                "a page of {} changes, limit {rows}",
                page.changes.len()
            );
            for c in page.changes {
                let key = (c.table.clone(), c.row_id.clone());
                if c.evicted || c.deleted {
                    dev.rows.remove(&key);
                } else {
                    let row = dev.rows.entry(key).or_default();
                    for f in c.fields {
                        if f.value == Value::Null {
                            row.remove(&f.column);
                        } else {
                            row.insert(f.column, f.value);
                        }
                    }
                }
            }
            dev.cursor = page.cursor;
            dev.position = page.position;
            page.more
        }
    }
}

fn run(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut w = World::new();
        let mut truth = Truth::default();
        let mut devices: Vec<Device> = vec![Device::default(); DRIVERS.len()];
        let mut admin_seq = 0;
        for st in steps {
            match st {
                Step::AssignRoute { r, d } => {
                    admin_seq += 1;
                    let id = format!("r{r}");
                    let kind = if truth.routes.contains_key(&id) { OpKind::Update } else { OpKind::Insert };
                    let o = w
                        .write("boss", "admin", admin_seq, "routes", &id, kind, vec![("driver_id", Value::Text(DRIVERS[d as usize].into()))])
                        .await;
                    prop_assert!(!matches!(o, OutcomeKind::Rejected { .. }), "{o:?}");
                    truth.routes.insert(id, DRIVERS[d as usize].into());
                }
                Step::PutShipment { s, r, archived } => {
                    admin_seq += 1;
                    let id = format!("s{s}");
                    let status = if archived { "archived" } else { "open" };
                    let kind = if truth.shipments.contains_key(&id) { OpKind::Update } else { OpKind::Insert };
                    let o = w
                        .write("boss", "admin", admin_seq, "shipments", &id, kind, vec![
                            ("route_id", Value::Text(format!("r{r}"))),
                            ("status", Value::Text(status.into())),
                        ])
                        .await;
                    prop_assert!(!matches!(o, OutcomeKind::Rejected { .. }), "{o:?}");
                    let note = truth.shipments.get(&id).and_then(|x| x.2.clone());
                    truth.shipments.insert(id, (format!("r{r}"), status.into(), note));
                }
                Step::DeleteShipment { s } => {
                    let id = format!("s{s}");
                    if truth.shipments.remove(&id).is_some() {
                        admin_seq += 1;
                        let o = w.write("boss", "admin", admin_seq, "shipments", &id, OpKind::Delete, vec![]).await;
                        prop_assert!(!matches!(o, OutcomeKind::Rejected { .. }), "{o:?}");
                    }
                }
                Step::Pull { d, page, rows } => {
                    let dev = &mut devices[d as usize];
                    w.pull_all(DRIVERS[d as usize], dev, page as usize, rows as usize).await;
                    let expected = truth.grant(DRIVERS[d as usize]);
                    prop_assert_eq!(&dev.rows, &expected, "driver {} after a pull", DRIVERS[d as usize]);
                }
                Step::PullPage { d, rows } => {
                    let dev = &mut devices[d as usize];
                    w.pull_page(DRIVERS[d as usize], dev, 10_000, rows as usize).await;
                }
                Step::DriverNote { d, s, n } => {
                    let id = format!("s{s}");
                    let Some((route, status, _)) = truth.shipments.get(&id).cloned() else { continue };
                    let dev = &mut devices[d as usize];
                    dev.seq += 1;
                    let seq = dev.seq;
                    let user = DRIVERS[d as usize];
                    let o = w
                        .write(user, "driver", seq, "shipments", &id, OpKind::Update, vec![("note", Value::Text(format!("n{n}")))])
                        .await;
                    let allowed = truth.routes.get(&route).is_some_and(|x| x == user);
                    if allowed {
                        prop_assert!(!matches!(o, OutcomeKind::Rejected { .. }), "{o:?}");
                        truth.shipments.insert(id, (route, status, Some(format!("n{n}"))));
                    } else {
                        prop_assert!(matches!(&o, OutcomeKind::Rejected { code, .. } if code == "permission_denied"), "{o:?}");
                    }
                }
                Step::DriverMove { d, s, r } => {
                    let id = format!("s{s}");
                    if !truth.shipments.contains_key(&id) {
                        continue;
                    }
                    let dev = &mut devices[d as usize];
                    dev.seq += 1;
                    let seq = dev.seq;
                    let o = w
                        .write(DRIVERS[d as usize], "driver", seq, "shipments", &id, OpKind::Update, vec![("route_id", Value::Text(format!("r{r}")))])
                        .await;
                    prop_assert!(matches!(&o, OutcomeKind::Rejected { code, .. } if code == "permission_denied"), "{o:?}");
                }
            }
        }
        // Finally every driver pulls and holds exactly their grant.
        for (i, dev) in devices.iter_mut().enumerate() {
            w.pull_all(DRIVERS[i], dev, 200, 3).await;
            prop_assert_eq!(&dev.rows, &truth.grant(DRIVERS[i]));
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn a_pull_returns_exactly_the_users_grant_and_forbidden_writes_have_no_effect(
        steps in proptest::collection::vec(step(), 1..60)
    ) {
        run(steps)?;
    }
}

/// A row moving into a bucket the device already holds arrives whole (not only the fields
/// changed since the device's cursor).
#[test]
fn a_row_entering_a_held_bucket_arrives_with_every_field() {
    run(vec![
        Step::AssignRoute { r: 0, d: 0 },
        Step::AssignRoute { r: 1, d: 1 },
        Step::PutShipment {
            s: 1,
            r: 1,
            archived: false,
        },
        Step::DriverNote { d: 1, s: 1, n: 7 },
        Step::Pull {
            d: 0,
            page: 500,
            rows: 100,
        },
        Step::PutShipment {
            s: 1,
            r: 0,
            archived: false,
        },
        Step::Pull {
            d: 0,
            page: 500,
            rows: 100,
        },
    ])
    .unwrap();
}

/// A row that left a bucket after the device's cursor, when the device then loses that
/// bucket, is evicted too (the device still holds it).
#[test]
fn a_row_that_left_a_lost_bucket_after_the_cursor_is_evicted() {
    run(vec![
        Step::AssignRoute { r: 0, d: 0 },
        Step::AssignRoute { r: 1, d: 1 },
        Step::PutShipment {
            s: 1,
            r: 0,
            archived: false,
        },
        Step::Pull {
            d: 0,
            page: 500,
            rows: 100,
        },
        // s1 moves to u1's route: a removal in bucket r0, after u0's cursor …
        Step::PutShipment {
            s: 1,
            r: 1,
            archived: false,
        },
        // … and before u0 pulls again, r0 itself goes to u1.
        Step::AssignRoute { r: 0, d: 1 },
        Step::Pull {
            d: 0,
            page: 500,
            rows: 100,
        },
    ])
    .unwrap();
}
