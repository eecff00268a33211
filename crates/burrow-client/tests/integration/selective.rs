//! Selective sync and write permissions end to end, with the delivery example's schema and
//! rules (`examples/delivery/`): real server, real HTTP, real SQLite files.

use burrow_client::{Client, HttpTransport};
use burrow_core::Schema;
use burrow_core::rules::SyncRules;
use burrow_server::{RunningServer, ServerConfig};
use std::collections::BTreeMap;
use std::sync::Arc;

const SCHEMA: &str = include_str!("../../../../examples/delivery/schema.toml");
const RULES: &str = include_str!("../../../../examples/delivery/burrow.toml");

struct Delivery {
    dir: tempfile::TempDir,
    server: RunningServer,
    schema: Schema,
    rules: Arc<SyncRules>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

impl Delivery {
    async fn start() -> Delivery {
        let dir = tempfile::tempdir().unwrap();
        let schema = Schema::from_toml_str(SCHEMA).unwrap();
        let rules = Arc::new(SyncRules::parse(RULES, &schema).unwrap());
        let mut config = ServerConfig::new(dir.path().join("server"), schema.clone());
        config.secret = Some(b"delivery-secret".to_vec());
        config.rules = Some(rules.clone());
        let server = burrow_server::spawn(config, "127.0.0.1:0").await.unwrap();
        Delivery {
            dir,
            server,
            schema,
            rules,
        }
    }

    fn today(&self) -> String {
        self.rules.today(now_ms())
    }

    fn device(&self, name: &str) -> Client {
        Client::open(self.dir.path().join(format!("{name}.db")), &self.schema).unwrap()
    }

    fn transport(&self, user: &str, claims: &[(&str, serde_json::Value)]) -> HttpTransport {
        let extra: BTreeMap<String, serde_json::Value> = claims
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let token =
            burrow_server::auth::mint(b"delivery-secret", user, extra, now_ms() / 1000, 3600)
                .unwrap();
        HttpTransport::new(&self.server.url(), &token).unwrap()
    }

    fn driver(&self, user: &str) -> HttpTransport {
        self.transport(user, &[("role", serde_json::json!("driver"))])
    }

    fn dispatcher(&self) -> HttpTransport {
        self.transport("disp", &[("role", serde_json::json!("dispatcher"))])
    }
}

fn ids(c: &Client, table: &str) -> Vec<String> {
    c.query_json(&format!("SELECT id FROM {table} ORDER BY id"))
        .unwrap()
        .into_iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_driver_holds_todays_route_only_and_may_confirm_but_not_edit_addresses() {
    let env = Delivery::start().await;
    let today = env.today();
    let office = env.device("office");
    office
        .execute(&format!(
            "INSERT INTO routes(id, driver_id, day) VALUES
               ('r1', 'ann', '{today}'), ('r2', 'bob', '{today}'), ('r3', 'ann', '2020-01-01');
             INSERT INTO shipments(id, route_id, status, address) VALUES
               ('s1', 'r1', 'planned', 'Main St 1'), ('s2', 'r1', 'planned', 'Main St 2'),
               ('s3', 'r2', 'planned', 'Elm St 3'), ('s4', 'r3', 'planned', 'Old Rd 4');"
        ))
        .unwrap();
    office.sync(&env.dispatcher()).await.unwrap();
    assert_eq!(ids(&office, "shipments"), ["s1", "s2", "s3", "s4"]);

    let ann = env.device("ann");
    ann.sync(&env.driver("ann")).await.unwrap();
    assert_eq!(
        ids(&ann, "routes"),
        ["r1"],
        "today's route, not yesterday's or bob's"
    );
    assert_eq!(ids(&ann, "shipments"), ["s1", "s2"]);
    let bob = env.device("bob");
    bob.sync(&env.driver("bob")).await.unwrap();
    assert_eq!(ids(&bob, "routes"), ["r2"]);
    assert_eq!(ids(&bob, "shipments"), ["s3"]);

    // Ann confirms s1 (allowed) and, in another transaction, edits its address (not allowed).
    ann.execute(
        "UPDATE shipments SET status = 'delivered', signature = 'A. Smith' WHERE id = 's1'",
    )
    .unwrap();
    ann.execute("UPDATE shipments SET address = 'Hacked 9' WHERE id = 's1'")
        .unwrap();
    // And she tries to create a route for herself.
    ann.execute(&format!(
        "INSERT INTO routes(id, driver_id, day) VALUES ('r9', 'ann', '{today}')"
    ))
    .unwrap();
    let report = ann.sync(&env.driver("ann")).await.unwrap();
    assert_eq!(report.ops_rejected, 2, "{report:?}");
    let rejected = ann.rejected_ops().unwrap();
    assert_eq!(rejected.len(), 2);
    for r in &rejected {
        assert_eq!(r.code, "permission_denied", "{r:?}");
        assert!(!r.message.is_empty());
    }
    // The forbidden writes had no effect on the server, and the device shows the server's row.
    office.sync(&env.dispatcher()).await.unwrap();
    let s1 = office
        .query_json("SELECT status, signature, address FROM shipments WHERE id = 's1'")
        .unwrap();
    assert_eq!(
        s1,
        vec![serde_json::json!({"status": "delivered", "signature": "A. Smith", "address": "Main St 1"})
            .as_object()
            .unwrap()
            .clone()]
    );
    assert_eq!(ids(&office, "routes"), ["r1", "r2", "r3"]);
    assert_eq!(
        ann.query_json("SELECT address FROM shipments WHERE id = 's1'")
            .unwrap()[0]["address"],
        "Main St 1"
    );
    assert_eq!(ids(&ann, "routes"), ["r1"]);
}

#[tokio::test]
async fn a_reassigned_route_leaves_the_old_drivers_device_and_reaches_the_new_one() {
    let env = Delivery::start().await;
    let today = env.today();
    let office = env.device("office");
    office
        .execute(&format!(
            "INSERT INTO routes(id, driver_id, day) VALUES ('r1', 'ann', '{today}'), ('r2', 'bob', '{today}');
             INSERT INTO shipments(id, route_id, status, address) VALUES
               ('s1', 'r1', 'planned', 'Main St 1'), ('s2', 'r1', 'planned', 'Main St 2'),
               ('s3', 'r2', 'planned', 'Elm St 3');"
        ))
        .unwrap();
    office.sync(&env.dispatcher()).await.unwrap();
    let ann = env.device("ann");
    let bob = env.device("bob");
    ann.sync(&env.driver("ann")).await.unwrap();
    bob.sync(&env.driver("bob")).await.unwrap();
    assert_eq!(ids(&ann, "shipments"), ["s1", "s2"]);
    let bob_cursor = bob.cursor().unwrap().since;
    assert!(bob_cursor > 0);

    // Offline, ann marks s1 loaded. Meanwhile the office gives r1 to bob.
    ann.execute("UPDATE shipments SET status = 'loaded' WHERE id = 's1'")
        .unwrap();
    office
        .execute("UPDATE routes SET driver_id = 'bob' WHERE id = 'r1'")
        .unwrap();
    office.sync(&env.dispatcher()).await.unwrap();

    // Ann's pending edit is no longer hers to make: it comes back rejected, visibly; the
    // route and its shipments leave her device in the same transaction as the cursor.
    let report = ann.sync(&env.driver("ann")).await.unwrap();
    assert_eq!(report.ops_rejected, 1, "{report:?}");
    let rejected = ann.rejected_ops().unwrap();
    assert_eq!(rejected[0].code, "permission_denied");
    assert!(ids(&ann, "routes").is_empty());
    assert!(ids(&ann, "shipments").is_empty());
    assert_eq!(ann.status().unwrap().pending_ops, 0);

    // Bob gets r1 and its shipments without starting over.
    let report = bob.sync(&env.driver("bob")).await.unwrap();
    assert_eq!(ids(&bob, "routes"), ["r1", "r2"]);
    assert_eq!(ids(&bob, "shipments"), ["s1", "s2", "s3"]);
    assert!(
        report.changes_received <= 4,
        "only the new route's rows travel (r1, s1, s2): {report:?}"
    );
    assert_eq!(
        bob.query_json("SELECT status, address FROM shipments WHERE id = 's1'")
            .unwrap()[0]["address"],
        "Main St 1"
    );
    // Bob may confirm it now.
    bob.execute("UPDATE shipments SET status = 'delivered' WHERE id = 's2'")
        .unwrap();
    let report = bob.sync(&env.driver("bob")).await.unwrap();
    assert_eq!(report.ops_rejected, 0);
    assert_eq!(report.ops_acked, 1);
}

#[tokio::test]
async fn a_pending_edit_the_user_may_still_make_is_uploaded_after_its_row_leaves_scope() {
    let env = Delivery::start().await;
    let office = env.device("office");
    office
        .execute("INSERT INTO jobs(id, technician_id, status) VALUES ('j1', 'tom', 'scheduled');")
        .unwrap();
    office.sync(&env.dispatcher()).await.unwrap();
    let tom = env.device("tom");
    let tech = env.transport("tom", &[("role", serde_json::json!("technician"))]);
    tom.sync(&tech).await.unwrap();
    assert_eq!(ids(&tom, "jobs"), ["j1"]);
    // Tom writes a report (his own), then the job is closed by the office (it leaves his
    // scope: `status != 'done'`); his report still goes up.
    tom.execute("INSERT INTO reports(id, job_id, technician_id, notes) VALUES ('rep1', 'j1', 'tom', 'fixed the pump')")
        .unwrap();
    office
        .execute("UPDATE jobs SET status = 'done' WHERE id = 'j1'")
        .unwrap();
    office.sync(&env.dispatcher()).await.unwrap();
    let report = tom.sync(&tech).await.unwrap();
    assert_eq!(report.ops_rejected, 0, "{:?}", tom.rejected_ops().unwrap());
    assert!(
        ids(&tom, "jobs").is_empty(),
        "the closed job left the device"
    );
    assert_eq!(ids(&tom, "reports"), ["rep1"]);
    office.sync(&env.dispatcher()).await.unwrap();
    assert_eq!(ids(&office, "reports"), ["rep1"]);
}

#[tokio::test]
async fn live_pokes_reach_only_the_users_whose_scope_the_commit_touches() {
    let env = Delivery::start().await;
    let today = env.today();
    let office = env.device("office");
    office
        .execute(&format!(
            "INSERT INTO routes(id, driver_id, day) VALUES ('r1', 'ann', '{today}'), ('r2', 'bob', '{today}');
             INSERT INTO shipments(id, route_id, status, address) VALUES
               ('s1', 'r1', 'planned', 'Main St 1'), ('s3', 'r2', 'planned', 'Elm St 3');"
        ))
        .unwrap();
    office.sync(&env.dispatcher()).await.unwrap();
    let (ann, bob) = (env.device("ann"), env.device("bob"));
    let (ann_t, bob_t) = (env.driver("ann"), env.driver("bob"));
    ann.sync(&ann_t).await.unwrap();
    bob.sync(&bob_t).await.unwrap();
    let ann_end = burrow_client::Transport::live_endpoint(&ann_t).unwrap();
    let bob_end = burrow_client::Transport::live_endpoint(&bob_t).unwrap();
    let mut ann_live = burrow_client::live::LiveSubscriber::connect_to(&ann_end)
        .await
        .unwrap();
    let mut bob_live = burrow_client::live::LiveSubscriber::connect_to(&bob_end)
        .await
        .unwrap();
    let head = ann_live.next_head().await.unwrap().unwrap();
    assert_eq!(bob_live.next_head().await.unwrap(), Some(head));

    // A change on ann's route: ann is poked, bob is not.
    office
        .execute("UPDATE shipments SET address = 'Main St 1a' WHERE id = 's1'")
        .unwrap();
    office.sync(&env.dispatcher()).await.unwrap();
    let poke = tokio::time::timeout(std::time::Duration::from_secs(5), ann_live.next_head())
        .await
        .expect("ann is poked")
        .unwrap()
        .unwrap();
    assert!(poke > head);
    let quiet =
        tokio::time::timeout(std::time::Duration::from_millis(400), bob_live.next_head()).await;
    assert!(quiet.is_err(), "bob was poked for ann's route: {quiet:?}");

    // A change on bob's route pokes bob.
    office
        .execute("UPDATE shipments SET address = 'Elm St 3a' WHERE id = 's3'")
        .unwrap();
    office.sync(&env.dispatcher()).await.unwrap();
    let poke_b = tokio::time::timeout(std::time::Duration::from_secs(5), bob_live.next_head())
        .await
        .expect("bob is poked")
        .unwrap()
        .unwrap();
    assert!(poke_b > poke);
    // And a pull brings it.
    bob.sync(&bob_t).await.unwrap();
    assert_eq!(
        bob.query_json("SELECT address FROM shipments WHERE id = 's3'")
            .unwrap()[0]["address"],
        "Elm St 3a"
    );
}

#[tokio::test]
async fn warehouse_workers_hold_their_zones_and_their_counts_add_up() {
    let env = Delivery::start().await;
    let office = env.device("office");
    office
        .execute(
            "INSERT INTO items(id, sku, warehouse_id, zone, quantity) VALUES
               ('i1', 'A-1', 'w1', 1, 10), ('i2', 'A-2', 'w1', 4, 10),
               ('i3', 'A-3', 'w1', 7, 10), ('i4', 'A-4', 'w2', 1, 10);",
        )
        .unwrap();
    office.sync(&env.dispatcher()).await.unwrap();
    let worker = |user: &str| {
        env.transport(
            user,
            &[
                ("role", serde_json::json!("warehouse")),
                ("warehouse", serde_json::json!("w1")),
                ("zones", serde_json::json!(["1", "4"])),
            ],
        )
    };
    let (wa, wb) = (env.device("wa"), env.device("wb"));
    let (ta, tb) = (worker("wa"), worker("wb"));
    wa.sync(&ta).await.unwrap();
    wb.sync(&tb).await.unwrap();
    assert_eq!(
        ids(&wa, "items"),
        ["i1", "i2"],
        "warehouse w1, zones 1 and 4 only"
    );
    // Both count i1 offline: +3 and +2 add up; the name is not theirs to change.
    wa.execute("UPDATE items SET quantity = quantity + 3 WHERE id = 'i1'")
        .unwrap();
    wb.execute("UPDATE items SET quantity = quantity + 2 WHERE id = 'i1'")
        .unwrap();
    wb.execute("UPDATE items SET name = 'renamed' WHERE id = 'i2'")
        .unwrap();
    wa.sync(&ta).await.unwrap();
    let report = wb.sync(&tb).await.unwrap();
    assert_eq!(report.ops_rejected, 1);
    wa.sync(&ta).await.unwrap();
    for d in [&wa, &wb] {
        assert_eq!(
            d.query_json("SELECT quantity, name FROM items WHERE id IN ('i1', 'i2') ORDER BY id")
                .unwrap(),
            vec![
                serde_json::json!({"quantity": 15, "name": null})
                    .as_object()
                    .unwrap()
                    .clone(),
                serde_json::json!({"quantity": 10, "name": null})
                    .as_object()
                    .unwrap()
                    .clone(),
            ]
        );
    }
}

#[tokio::test]
async fn a_technician_subscribes_to_the_manuals_of_their_jobs_only() {
    let env = Delivery::start().await;
    let office = env.device("office");
    office
        .execute(
            "INSERT INTO jobs(id, technician_id, status) VALUES ('j1', 'tom', 'scheduled'), ('j2', 'tina', 'scheduled');
             INSERT INTO manuals(id, title, body) VALUES ('m1', 'Pump', 'long text'), ('m2', 'Boiler', 'long text'), ('m3', 'Lift', 'long text');
             INSERT INTO job_manuals(id, job_id, manual_id) VALUES ('jm1', 'j1', 'm1'), ('jm2', 'j1', 'm2'), ('jm3', 'j2', 'm3');",
        )
        .unwrap();
    office.sync(&env.dispatcher()).await.unwrap();
    let tom = env.device("tom");
    let t = env.transport("tom", &[("role", serde_json::json!("technician"))]);
    tom.sync(&t).await.unwrap();
    assert_eq!(ids(&tom, "jobs"), ["j1"]);
    assert_eq!(ids(&tom, "job_manuals"), ["jm1", "jm2"]);
    assert!(
        ids(&tom, "manuals").is_empty(),
        "manuals only by subscription"
    );

    let params = |job: &str| {
        serde_json::json!({ "job_id": job })
            .as_object()
            .unwrap()
            .clone()
    };
    tom.subscribe("job_manuals", params("j1")).unwrap();
    tom.subscribe("job_manuals", params("j2")).unwrap(); // tina's job: refused
    tom.sync(&t).await.unwrap();
    assert_eq!(ids(&tom, "manuals"), ["m1", "m2"]);
    let subs = tom.subscriptions().unwrap();
    assert_eq!(subs.len(), 2);
    assert_eq!(subs[0].status, "active");
    assert_eq!(subs[1].status, "refused");
    assert_eq!(subs[1].code.as_deref(), Some("subscription_denied"));
    assert!(subs[1].reason.as_deref().is_some_and(|r| !r.is_empty()));

    // Unsubscribing removes the manuals again.
    assert!(tom.unsubscribe("job_manuals", params("j1")).unwrap());
    tom.sync(&t).await.unwrap();
    assert!(ids(&tom, "manuals").is_empty());
    assert_eq!(ids(&tom, "jobs"), ["j1"]);
}

#[tokio::test]
async fn a_sales_rep_holds_the_catalog_their_prices_and_customers_and_orders_for_their_customers_only()
 {
    let env = Delivery::start().await;
    let office = env.device("office");
    office
        .execute(
            "INSERT INTO catalog(id, sku, name) VALUES ('p1', 'S-1', 'Screw'), ('p2', 'N-1', 'Nut');
             INSERT INTO prices(id, product_id, price_list, unit_price) VALUES
               ('pr1', 'p1', 'retail', 1.5), ('pr2', 'p1', 'wholesale', 1.0), ('pr3', 'p2', 'export', 0.5);
             INSERT INTO customers(id, name, sales_rep_id) VALUES ('c1', 'Acme', 'sam'), ('c2', 'Globex', 'sue');",
        )
        .unwrap();
    office.sync(&env.dispatcher()).await.unwrap();
    let sam = env.device("sam");
    let t = env.transport(
        "sam",
        &[
            ("role", serde_json::json!("sales")),
            ("price_lists", serde_json::json!(["retail", "wholesale"])),
        ],
    );
    sam.sync(&t).await.unwrap();
    assert_eq!(ids(&sam, "catalog"), ["p1", "p2"]);
    assert_eq!(ids(&sam, "prices"), ["pr1", "pr2"]);
    assert_eq!(ids(&sam, "customers"), ["c1"]);
    // On the train: an order for his customer (allowed) and one for sue's (refused).
    sam.execute(
        "INSERT INTO orders(id, customer_id, sales_rep_id, status, created_at) VALUES ('o1', 'c1', 'sam', 'draft', 1)",
    )
    .unwrap();
    sam.execute(
        "INSERT INTO orders(id, customer_id, sales_rep_id, status, created_at) VALUES ('o2', 'c2', 'sam', 'draft', 2)",
    )
    .unwrap();
    let report = sam.sync(&t).await.unwrap();
    assert_eq!(report.ops_rejected, 1, "{:?}", sam.rejected_ops().unwrap());
    assert_eq!(sam.rejected_ops().unwrap()[0].row_id, "o2");
    assert_eq!(ids(&sam, "orders"), ["o1"]);
    office.sync(&env.dispatcher()).await.unwrap();
    assert_eq!(ids(&office, "orders"), ["o1"]);
}

#[tokio::test]
async fn a_write_the_user_may_make_but_not_read_leaves_the_device_once_acknowledged() {
    let env = Delivery::start().await;
    let ann = env.device("ann");
    let t = env.driver("ann");
    // Scans are write-only for drivers: they may insert their own, never read them back.
    ann.execute(
        "INSERT INTO scans(id, code, scanned_by, scanned_at) VALUES ('sc1', 'X-1', 'ann', 1)",
    )
    .unwrap();
    assert_eq!(ids(&ann, "scans"), ["sc1"], "shown at once, offline");
    let report = ann.sync(&t).await.unwrap();
    assert_eq!(report.ops_acked, 1, "{report:?}");
    assert!(
        ids(&ann, "scans").is_empty(),
        "acknowledged, outside the grants: gone"
    );
    assert_eq!(ann.status().unwrap().pending_ops, 0);
    let office = env.device("office");
    office.sync(&env.dispatcher()).await.unwrap();
    assert_eq!(ids(&office, "scans"), ["sc1"], "the office has it");
}
