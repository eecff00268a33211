//! Tests of the whole rules module: the config format, every error class, the delivery
//! example, bucket/grant agreement against a direct predicate oracle, and robustness.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

const EXAMPLE_SCHEMA: &str = include_str!("../../../../examples/delivery/schema.toml");
const EXAMPLE_RULES: &str = include_str!("../../../../examples/delivery/burrow.toml");

/// 2026-11-26T12:00:00Z.
const NOON: u64 = 1_795_694_400_000;
const DAY_MS: u64 = 86_400_000;

fn schema() -> Schema {
    Schema::from_toml_str(EXAMPLE_SCHEMA).unwrap()
}

fn rules(text: &str) -> SyncRules {
    SyncRules::parse(text, &schema()).unwrap()
}

fn parse_err(text: &str) -> String {
    SyncRules::parse(text, &schema()).unwrap_err().to_string()
}

fn t(s: &str) -> Value {
    Value::Text(s.into())
}

fn row(pairs: &[(&str, Value)]) -> BTreeMap<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn getter(r: &BTreeMap<String, Value>) -> impl Fn(&str) -> Option<Value> + '_ {
    move |c: &str| r.get(c).cloned()
}

fn keys(rules: &SyncRules, table: &str, r: &BTreeMap<String, Value>) -> Vec<String> {
    rules
        .row_buckets(table, &getter(r))
        .into_iter()
        .map(|k| k.0)
        .collect()
}

fn ctx(claims: &ClaimSet) -> EvalContext<'_> {
    EvalContext {
        claims,
        now_ms: NOON,
    }
}

fn driver(sub: &str) -> ClaimSet {
    ClaimSet::new().with("sub", sub).with("role", "driver")
}

/// Routes r1 (u1, today), r2 (u2, today), r0 (u1, yesterday); their job/manual links.
fn delivery_data() -> MemoryLookup {
    MemoryLookup::new()
        .with_row(
            "routes",
            &[
                ("id", t("r1")),
                ("driver_id", t("u1")),
                ("day", t("2026-11-26")),
            ],
        )
        .with_row(
            "routes",
            &[
                ("id", t("r2")),
                ("driver_id", t("u2")),
                ("day", t("2026-11-26")),
            ],
        )
        .with_row(
            "routes",
            &[
                ("id", t("r0")),
                ("driver_id", t("u1")),
                ("day", t("2026-11-25")),
            ],
        )
        .with_row("jobs", &[("id", t("j1")), ("technician_id", t("tech1"))])
        .with_row("jobs", &[("id", t("j2")), ("technician_id", t("tech2"))])
        .with_row(
            "job_manuals",
            &[("id", t("l1")), ("job_id", t("j1")), ("manual_id", t("m1"))],
        )
        .with_row(
            "job_manuals",
            &[("id", t("l2")), ("job_id", t("j1")), ("manual_id", t("m2"))],
        )
        .with_row(
            "job_manuals",
            &[("id", t("l3")), ("job_id", t("j2")), ("manual_id", t("m3"))],
        )
}

// ---- the example files ---------------------------------------------------------------------

#[test]
fn the_example_files_parse() {
    let r = rules(EXAMPLE_RULES);
    assert!(!r.is_empty() && r.has_streams() && r.has_permissions());
    assert_eq!(r.tz_offset_minutes(), 60);
    let jm = r.stream("job_manuals").unwrap();
    assert!(jm.is_parameterised());
    assert_eq!(jm.params().get("job_id"), Some(&ColumnType::Text));
    assert_eq!(jm.table(), "manuals");
    assert_eq!(
        r.stream("todays_routes")
            .unwrap()
            .bucket_columns()
            .collect::<Vec<_>>(),
        ["driver_id", "day"]
    );
    assert!(r.streams().any(|s| s.name() == "all_order_lines"));
    assert_eq!(
        r.lookup_tables().iter().collect::<Vec<_>>(),
        ["customers", "job_manuals", "jobs", "orders", "routes"]
    );
    let idx = r.lookup_indexes();
    assert!(idx.contains(&("routes".into(), vec!["day".into(), "driver_id".into()])));
    assert!(idx.contains(&(
        "orders".into(),
        vec!["sales_rep_id".into(), "status".into()]
    )));
    assert!(idx.contains(&("orders".into(), vec!["sales_rep_id".into()])));
}

#[test]
fn driver_reads_todays_route_and_its_shipments() {
    let r = rules(EXAMPLE_RULES);
    let claims = driver("u1");
    let mut data = delivery_data();
    let grants = r.grants(&ctx(&claims), &[], &mut data).unwrap();
    let g: Vec<&str> = grants.iter().map(|k| k.0.as_str()).collect();
    assert_eq!(
        g,
        [
            r#"route_shipments["r1"]"#,
            r#"todays_routes["u1","2026-11-26"]"#
        ]
    );

    let today_route = row(&[
        ("id", t("r1")),
        ("driver_id", t("u1")),
        ("day", t("2026-11-26")),
    ]);
    let route_keys = keys(&r, "routes", &today_route);
    assert_eq!(
        route_keys,
        [r#"todays_routes["u1","2026-11-26"]"#, "all_routes[]"]
    );
    let mine = row(&[
        ("id", t("s1")),
        ("route_id", t("r1")),
        ("status", t("loaded")),
    ]);
    let other = row(&[("id", t("s2")), ("route_id", t("r2"))]);
    let old = row(&[("id", t("s0")), ("route_id", t("r0"))]);
    let visible = |rw: &BTreeMap<String, Value>, table: &str| {
        r.row_buckets(table, &getter(rw))
            .iter()
            .any(|k| grants.contains(k))
    };
    assert!(visible(&mine, "shipments"));
    assert!(visible(&today_route, "routes"));
    assert!(!visible(&other, "shipments"));
    assert!(!visible(&old, "shipments"));

    // Tomorrow the same driver sees no route (no route for that day in the data).
    let tomorrow = EvalContext {
        claims: &claims,
        now_ms: NOON + DAY_MS,
    };
    let g = r.grants(&tomorrow, &[], &mut data).unwrap();
    assert_eq!(
        g.iter().map(|k| k.0.as_str()).collect::<Vec<_>>(),
        [r#"todays_routes["u1","2026-11-27"]"#]
    );
}

#[test]
fn dispatcher_reads_everything() {
    let r = rules(EXAMPLE_RULES);
    let claims = ClaimSet::new().with("sub", "d").with("role", "dispatcher");
    let g = r.grants(&ctx(&claims), &[], &mut delivery_data()).unwrap();
    assert!(g.contains(&BucketKey("all_shipments[]".into())));
    assert!(g.contains(&BucketKey("catalog[]".into())));
    assert_eq!(g.len(), 13, "{g:?}");
}

#[test]
fn warehouse_zones_are_numeric_claims() {
    let r = rules(EXAMPLE_RULES);
    let claims = ClaimSet::new()
        .with("role", "warehouse")
        .with("warehouse", "w1")
        .with("zones", "1")
        .with("zones", "4.0")
        .with("zones", "x");
    let g = r
        .grants(&ctx(&claims), &[], &mut MemoryLookup::new())
        .unwrap();
    assert_eq!(
        g.iter().map(|k| k.0.as_str()).collect::<Vec<_>>(),
        [r#"warehouse_items["w1",1]"#, r#"warehouse_items["w1",4]"#]
    );
    let item = row(&[
        ("id", t("i")),
        ("warehouse_id", t("w1")),
        ("zone", Value::Integer(4)),
    ]);
    assert!(
        r.row_buckets("items", &getter(&item))
            .iter()
            .any(|k| g.contains(k))
    );
    let item = row(&[
        ("id", t("i")),
        ("warehouse_id", t("w1")),
        ("zone", Value::Integer(2)),
    ]);
    assert!(
        !r.row_buckets("items", &getter(&item))
            .iter()
            .any(|k| g.contains(k))
    );
}

#[test]
fn technician_subscribes_to_the_manuals_of_own_jobs() {
    let r = rules(EXAMPLE_RULES);
    let claims = ClaimSet::new()
        .with("sub", "tech1")
        .with("role", "technician");
    let c = ctx(&claims);
    let mut data = delivery_data();
    let sub = |job: Value| Subscription {
        stream: "job_manuals".into(),
        params: [("job_id".to_string(), job)].into(),
    };
    assert_eq!(r.check_subscription(&c, &sub(t("j1")), &mut data), Ok(()));
    let denied = r
        .check_subscription(&c, &sub(t("j2")), &mut data)
        .unwrap_err();
    assert_eq!(denied.code, "subscription_denied");
    let bad = r
        .check_subscription(&c, &sub(Value::Integer(1)), &mut data)
        .unwrap_err();
    assert_eq!(bad.code, "invalid_params");
    let none = Subscription {
        stream: "job_manuals".into(),
        params: BTreeMap::new(),
    };
    assert_eq!(
        r.check_subscription(&c, &none, &mut data).unwrap_err().code,
        "invalid_params"
    );
    let extra = Subscription {
        stream: "job_manuals".into(),
        params: [("job_id".to_string(), t("j1")), ("x".to_string(), t("y"))].into(),
    };
    assert_eq!(
        r.check_subscription(&c, &extra, &mut data)
            .unwrap_err()
            .code,
        "invalid_params"
    );
    let auto = Subscription {
        stream: "my_jobs".into(),
        params: BTreeMap::new(),
    };
    assert_eq!(
        r.check_subscription(&c, &auto, &mut data).unwrap_err().code,
        "not_parameterised"
    );
    let unknown = Subscription {
        stream: "nope".into(),
        params: BTreeMap::new(),
    };
    assert_eq!(
        r.check_subscription(&c, &unknown, &mut data)
            .unwrap_err()
            .code,
        "unknown_stream"
    );

    let g = r
        .grants(&c, &[sub(t("j1")), sub(t("j2"))], &mut data)
        .unwrap();
    let manuals: Vec<&str> = g
        .iter()
        .filter(|k| k.stream() == "job_manuals")
        .map(|k| k.0.as_str())
        .collect();
    assert_eq!(manuals, [r#"job_manuals["m1"]"#, r#"job_manuals["m2"]"#]);
    let manual = row(&[("id", t("m2")), ("title", t("Boiler"))]);
    assert_eq!(
        keys(&r, "manuals", &manual),
        [r#"job_manuals["m2"]"#, "all_manuals[]"]
    );
}

#[test]
fn sales_rep_reads_own_price_lists_and_customers() {
    let r = rules(EXAMPLE_RULES);
    let claims = ClaimSet::new()
        .with("sub", "rep")
        .with("role", "sales")
        .with("price_lists", "retail")
        .with("price_lists", "nordic");
    let g = r
        .grants(&ctx(&claims), &[], &mut MemoryLookup::new())
        .unwrap();
    let g: Vec<&str> = g.iter().map(|k| k.0.as_str()).collect();
    assert_eq!(
        g,
        [
            "catalog[]",
            r#"my_customers["rep"]"#,
            r#"my_orders["rep"]"#,
            r#"my_prices["nordic"]"#,
            r#"my_prices["retail"]"#,
        ]
    );
}

// ---- write permissions ---------------------------------------------------------------------

fn shipment(route: &str) -> BTreeMap<String, Value> {
    row(&[
        ("id", t("s1")),
        ("route_id", t(route)),
        ("status", t("loaded")),
        ("address", t("Main St 1")),
    ])
}

fn write(
    r: &SyncRules,
    claims: &ClaimSet,
    table: &str,
    action: Action,
    columns: &[&str],
    old: Option<&BTreeMap<String, Value>>,
    new: Option<&BTreeMap<String, Value>>,
) -> Result<(), Denied> {
    let old_get = old.map(getter);
    let new_get = new.map(getter);
    r.check_write(
        &ctx(claims),
        table,
        action,
        columns,
        old_get
            .as_ref()
            .map(|f| f as &dyn Fn(&str) -> Option<Value>),
        new_get
            .as_ref()
            .map(|f| f as &dyn Fn(&str) -> Option<Value>),
        &mut delivery_data(),
    )
}

#[test]
fn driver_may_confirm_own_shipments_of_today_only() {
    let r = rules(EXAMPLE_RULES);
    let u1 = driver("u1");
    let old = shipment("r1");
    let mut new = old.clone();
    new.insert("status".into(), t("delivered"));
    new.insert("signature".into(), t("sig"));
    let upd = |cols: &[&str], old, new| write(&r, &u1, "shipments", Action::Update, cols, old, new);
    assert_eq!(
        upd(&["status", "signature"], Some(&old), Some(&new)),
        Ok(())
    );
    assert_eq!(upd(&["status"], Some(&old), Some(&new)), Ok(()));

    let e = upd(&["address"], Some(&old), Some(&new)).unwrap_err();
    assert_eq!(e.code, "permission_denied");
    assert!(e.reason.contains("shipments.address"), "{}", e.reason);
    assert!(
        e.reason
            .contains("permissions[0] does not cover column(s) address"),
        "{}",
        e.reason
    );
    assert!(
        e.reason
            .contains("permissions[7]: `when` does not hold for the stored row"),
        "{}",
        e.reason
    );

    // Another driver's shipment, and yesterday's route.
    let theirs = shipment("r2");
    assert!(upd(&["status"], Some(&theirs), Some(&theirs)).is_err());
    let stale = shipment("r0");
    assert!(upd(&["status"], Some(&stale), Some(&stale)).is_err());
    // Moving a shipment onto one's own route: the stored row must qualify too.
    let mut moved = theirs.clone();
    moved.insert("route_id".into(), t("r1"));
    assert!(upd(&["status"], Some(&theirs), Some(&moved)).is_err());
    // …and moving one's own shipment away is refused by the new row (and by `columns`).
    let mut away = old.clone();
    away.insert("route_id".into(), t("r2"));
    assert!(upd(&["status"], Some(&old), Some(&away)).is_err());

    let ins = write(
        &r,
        &u1,
        "shipments",
        Action::Insert,
        &["route_id", "status"],
        None,
        Some(&old),
    );
    assert!(
        ins.unwrap_err()
            .reason
            .contains("permissions[0] does not allow insert")
    );
    assert!(write(&r, &u1, "shipments", Action::Delete, &[], Some(&old), None).is_err());
    assert!(
        write(
            &r,
            &u1,
            "routes",
            Action::Update,
            &["day"],
            Some(&old),
            Some(&old)
        )
        .is_err()
    );
    // The other driver may not touch u1's shipment either.
    assert!(
        write(
            &r,
            &driver("u2"),
            "shipments",
            Action::Update,
            &["status"],
            Some(&old),
            Some(&new)
        )
        .is_err()
    );
}

#[test]
fn dispatcher_may_write_everything() {
    let r = rules(EXAMPLE_RULES);
    let d = ClaimSet::new().with("sub", "d").with("role", "dispatcher");
    let s = shipment("r2");
    for (action, old, new) in [
        (Action::Insert, None, Some(&s)),
        (Action::Update, Some(&s), Some(&s)),
        (Action::Delete, Some(&s), None),
    ] {
        assert_eq!(
            write(
                &r,
                &d,
                "shipments",
                action,
                &["address", "route_id"],
                old,
                new
            ),
            Ok(())
        );
        assert_eq!(
            write(&r, &d, "catalog", action, &["name"], old, new),
            Ok(())
        );
    }
}

#[test]
fn without_permissions_every_write_is_allowed() {
    let r = rules("[streams.s]\ntable = \"routes\"\n");
    assert!(!r.has_permissions());
    let nobody = ClaimSet::new();
    assert_eq!(
        write(&r, &nobody, "routes", Action::Delete, &[], None, None),
        Ok(())
    );
}

#[test]
fn writes_to_unlisted_tables_are_refused_when_permissions_exist() {
    let r = rules("[[permissions]]\ntable = \"routes\"\nactions = [\"insert\"]\n");
    let e = write(
        &r,
        &ClaimSet::new(),
        "scans",
        Action::Insert,
        &["code"],
        None,
        None,
    )
    .unwrap_err();
    assert_eq!(e.code, "permission_denied");
    assert!(
        e.reason.contains("no permission mentions table scans"),
        "{}",
        e.reason
    );
    assert_eq!(
        write(
            &r,
            &ClaimSet::new(),
            "routes",
            Action::Insert,
            &["day"],
            None,
            None
        ),
        Ok(())
    );
}

struct FailingLookup;

impl Lookup for FailingLookup {
    fn lookup(
        &mut self,
        _: &str,
        _: &str,
        _: &[(String, Value)],
    ) -> Result<Vec<Value>, LookupError> {
        Err(LookupError("disk on fire".into()))
    }
}

#[test]
fn lookup_failures_are_reported() {
    let r = rules(EXAMPLE_RULES);
    let u1 = driver("u1");
    let s = shipment("r1");
    let g = getter(&s);
    let e = r
        .check_write(
            &ctx(&u1),
            "shipments",
            Action::Update,
            &["status"],
            Some(&g),
            Some(&g),
            &mut FailingLookup,
        )
        .unwrap_err();
    assert_eq!(e.code, "lookup_failed");
    assert!(e.reason.contains("disk on fire"));
    assert!(r.grants(&ctx(&u1), &[], &mut FailingLookup).is_err());
    // A dispatcher never needs the lookup: AND stops at the role test.
    let d = ClaimSet::new().with("role", "dispatcher");
    assert!(r.grants(&ctx(&d), &[], &mut FailingLookup).is_ok());
    let tech = ClaimSet::new()
        .with("sub", "tech1")
        .with("role", "technician");
    let sub = Subscription {
        stream: "job_manuals".into(),
        params: [("job_id".to_string(), t("j1"))].into(),
    };
    assert_eq!(
        r.check_subscription(&ctx(&tech), &sub, &mut FailingLookup)
            .unwrap_err()
            .code,
        "lookup_failed"
    );
}

#[test]
fn identical_lookups_run_once_per_call() {
    let r = rules(EXAMPLE_RULES);
    let u1 = driver("u1");
    let mut data = delivery_data();
    let s = shipment("r1");
    let g = getter(&s);
    r.check_write(
        &ctx(&u1),
        "shipments",
        Action::Update,
        &["status"],
        Some(&g),
        Some(&g),
        &mut data,
    )
    .unwrap();
    assert_eq!(data.queries, 1, "old and new rows share one lookup");
    let mut data = delivery_data();
    r.grants(&ctx(&u1), &[], &mut data).unwrap();
    assert_eq!(data.queries, 1);
}

// ---- the language --------------------------------------------------------------------------

/// A small schema exercising every type.
const T_SCHEMA: &str = r#"
version = 1
[tables.t.columns]
a = "text"
n = "integer"
r = "real"
b = "bool"
j = "json"
[tables.l.columns]
k = "text"
n = "integer"
v = "text"
"#;

fn t_rules(text: &str) -> Result<SyncRules, RulesError> {
    SyncRules::parse(text, &Schema::from_toml_str(T_SCHEMA).unwrap())
}

/// Evaluates a condition directly on a row of t with claims (as a permission's `when`).
fn holds(cond: &str, r: &[(&str, Value)], claims: &ClaimSet) -> bool {
    let rules = t_rules(&format!(
        "[[permissions]]\ntable = \"t\"\nactions = [\"insert\"]\nwhen = {cond:?}\n"
    ))
    .unwrap();
    let rw = row(r);
    let g = getter(&rw);
    rules
        .check_write(
            &ctx(claims),
            "t",
            Action::Insert,
            &[],
            None,
            Some(&g),
            &mut MemoryLookup::new(),
        )
        .is_ok()
}

#[test]
fn null_follows_sql_three_valued_logic() {
    let none = ClaimSet::new();
    let n1 = [("n", Value::Integer(1))];
    let null = [("n", Value::Null)];
    assert!(holds("n = 1", &n1, &none));
    assert!(!holds("n = 1", &null, &none));
    assert!(!holds("n != 1", &null, &none));
    assert!(
        !holds("NOT (n = 1)", &null, &none),
        "NOT unknown is unknown"
    );
    assert!(holds("n = 1 OR a IS NULL", &null, &none));
    assert!(holds("n IS NULL", &null, &none));
    assert!(holds("n IS NULL", &[], &none), "a missing column is NULL");
    assert!(!holds("n IS NOT NULL", &null, &none));
    assert!(!holds("n IN (1, 2)", &null, &none));
    assert!(!holds("n NOT IN (1, 2)", &null, &none));
    assert!(holds("n NOT IN (2, 3)", &n1, &none));
    assert!(!holds("b", &[("b", Value::Null)], &none));
    assert!(!holds("NOT b", &[("b", Value::Null)], &none));
    assert!(holds("NOT b", &[("b", Value::Bool(false))], &none));
    assert!(
        holds("b", &[("b", Value::Integer(1))], &none),
        "0/1 read as bool"
    );
    assert!(
        !holds("n = 1", &[("n", t("1"))], &none),
        "ill-typed values read as NULL"
    );
}

#[test]
fn comparisons_and_types() {
    let none = ClaimSet::new();
    assert!(holds(
        "n < 2.5 AND r >= 1 AND r <= 1.0",
        &[("n", Value::Integer(2)), ("r", Value::Integer(1))],
        &none
    ));
    assert!(holds(
        "a > 'apple' AND a <> 'b'",
        &[("a", t("banana"))],
        &none
    ));
    assert!(holds(
        "b = true AND b > false",
        &[("b", Value::Bool(true))],
        &none
    ));
    assert!(holds("id = 'x''y'", &[("id", t("x'y"))], &none));
    assert!(holds("n = -3", &[("n", Value::Integer(-3))], &none));
    assert!(holds(
        "(a = 'x' OR a = 'y') AND NOT n IN (1)",
        &[("a", t("y")), ("n", Value::Integer(2))],
        &none
    ));
    assert!(holds("TRUE", &[], &none));
    assert!(!holds("false OR FALSE", &[], &none));
    assert!(holds("j IS NULL", &[], &none));
}

#[test]
fn claims_behave_as_sets() {
    let c = ClaimSet::new()
        .with("r", "a")
        .with("r", "b")
        .with("num", "2")
        .with("num", "x");
    assert!(holds("a = auth.r", &[("a", t("b"))], &c));
    assert!(holds("auth.r = 'a'", &[], &c));
    assert!(
        !holds("auth.r != 'a'", &[], &c),
        "!= holds when no value equals"
    );
    assert!(holds("auth.r != 'c'", &[], &c));
    assert!(holds("a IN auth.r", &[("a", t("a"))], &c));
    assert!(!holds("a NOT IN auth.r", &[("a", t("a"))], &c));
    assert!(
        holds("n = auth.num", &[("n", Value::Integer(2))], &c),
        "numeric with numbers"
    );
    assert!(holds("r = auth.num", &[("r", Value::Real(2.0))], &c));
    assert!(
        !holds("n = auth.r", &[("n", Value::Integer(2))], &c),
        "non-numeric never matches"
    );
    assert!(
        !holds("n != auth.r", &[("n", Value::Integer(2))], &c),
        "…either way"
    );
    assert!(!holds("a = auth.missing", &[("a", t("a"))], &c));
    assert!(!holds("a != auth.missing", &[("a", t("a"))], &c));
    assert!(holds(
        "auth.missing IS NULL AND auth.r IS NOT NULL",
        &[],
        &c
    ));
    assert!(!holds("a IN auth.missing", &[("a", t("a"))], &c));
    assert!(holds("a NOT IN auth.missing", &[("a", t("a"))], &c));
    assert!(holds("auth.num > 1", &[], &c));
}

#[test]
fn is_empty_and_ignored_sections() {
    let r = rules("[server]\nlisten = 1\n[limits]\nx = { y = 2 }\n[[auth]]\nk = 1\n");
    assert!(r.is_empty() && !r.has_streams() && !r.has_permissions());
    let r = rules("");
    assert!(r.is_empty());
    let r = rules("[rules]\n");
    assert!(!r.is_empty() && !r.has_streams());
    let r = rules("[rules]\ntimezone = \"-05:30\"\n");
    assert_eq!(r.tz_offset_minutes(), -330);
}

#[test]
fn config_errors_name_their_path() {
    let cases = [
        (
            "[rules]\ntz = \"UTC\"",
            "rules.tz: unknown key (expected timezone)",
        ),
        (
            "[rules]\ntimezone = \"Europe/Berlin\"",
            "rules.timezone: unsupported timezone \"Europe/Berlin\"",
        ),
        ("rules = 1", "rules: must be a table"),
        (
            "[streams.s]\ntabel = \"routes\"",
            "streams.s.tabel: unknown key",
        ),
        ("[streams.s]\nwhen = \"true\"", "streams.s: missing `table"),
        (
            "[streams.s]\ntable = \"nope\"",
            "streams.s.table: no table named \"nope\"",
        ),
        (
            "[streams.s]\ntable = 1",
            "streams.s.table: must be a string",
        ),
        (
            "[streams.s]\ntable = \"routes\"\nparams = { p = \"varchar\" }",
            "streams.s.params.p: unknown parameter type \"varchar\"",
        ),
        (
            "[streams.s]\ntable = \"routes\"\nparams = { p = \"json\" }",
            "unknown parameter type \"json\"",
        ),
        (
            "[streams.s]\ntable = \"routes\"\nparams = 3",
            "streams.s.params: must be a table",
        ),
        (
            "[streams.\"a-b\"]\ntable = \"routes\"",
            "streams.a-b: stream names",
        ),
        ("streams = 1", "streams: must be a table of streams"),
        (
            "[[permissions]]\ntable = \"routes\"",
            "permissions[0]: missing `actions`",
        ),
        (
            "[[permissions]]\nactions = [\"insert\"]",
            "permissions[0]: missing `table",
        ),
        (
            "[[permissions]]\ntable = \"routes\"\nactions = [\"upsert\"]",
            "permissions[0].actions: unknown action \"upsert\"",
        ),
        (
            "[[permissions]]\ntable = \"routes\"\nactions = []",
            "permissions[0].actions: lists no action",
        ),
        (
            "[[permissions]]\ntable = \"routes\"\nactions = \"insert\"",
            "permissions[0].actions: must be an array of strings",
        ),
        (
            "[[permissions]]\ntable = \"routes\"\nactions = [\"insert\"]\nwho = 1",
            "permissions[0].who: unknown key",
        ),
        (
            "[[permissions]]\ntable = \"routes\"\nactions = [\"insert\"]\ncolumns = [\"dy\"]",
            "permissions[0].columns: unknown column \"dy\" in table routes",
        ),
        (
            "[[permissions]]\ntable = \"*\"\nactions = [\"insert\"]\ncolumns = [\"day\"]",
            "cannot name columns",
        ),
        (
            "[[permissions]]\ntable = \"nope\"\nactions = [\"insert\"]",
            "permissions[0].table: no table named \"nope\"",
        ),
        ("permissions = 1", "permissions: must be an array of tables"),
        ("[streams", "not valid TOML"),
    ];
    for (text, want) in cases {
        let got = parse_err(text);
        assert!(got.contains(want), "{text:?}: {got}");
    }
    // The index counts [[permissions]] from 0.
    let two = "[[permissions]]\ntable = \"routes\"\nactions = [\"insert\"]\n[[permissions]]\ntable = \"routes\"\nactions = [\"x\"]";
    assert!(parse_err(two).starts_with("permissions[1].actions"));
}

fn stream_err(table: &str, key: &str, expr: &str, params: &str) -> String {
    let text = format!("[streams.s]\ntable = \"{table}\"\n{params}\n{key} = {expr:?}\n");
    let e = SyncRules::parse(&text, &schema()).unwrap_err();
    e.to_string()
}

#[test]
fn expression_errors_name_the_rule_and_position() {
    let sh = |e: &str| stream_err("shipments", "where", e, "");
    assert_eq!(
        stream_err(
            "shipments",
            "where",
            "route_id = auth.sub AND rout_id = 'x'",
            ""
        ),
        "streams.s.where at 1:25: unknown column \"rout_id\" in table shipments"
    );
    let cases: Vec<(String, &str)> = vec![
        (
            sh("route_id IN (SELECT id FROM rutes WHERE driver_id = auth.sub)"),
            "at 1:29: unknown table \"rutes\" in lookup",
        ),
        (
            sh("route_id IN (SELECT idd FROM routes WHERE driver_id = auth.sub)"),
            "at 1:21: unknown column \"idd\" in table routes",
        ),
        (
            sh("route_id IN (SELECT id FROM routes WHERE drv = auth.sub)"),
            "at 1:42: unknown column \"drv\" in table routes",
        ),
        (
            sh("route_id IN (SELECT id FROM routes WHERE driver_id = route_id)"),
            "not with a column (\"route_id\")",
        ),
        (
            sh("weight_kg = 'heavy'"),
            "at 1:1: cannot compare column \"weight_kg\" (real) with 'heavy' (text)",
        ),
        (
            sh("status = 1"),
            "cannot compare column \"status\" (text) with 1 (integer)",
        ),
        (
            sh("status = NULL"),
            "at 1:10: a comparison with NULL is never true; use IS NULL",
        ),
        (
            sh("status IN ('a', NULL)"),
            "at 1:17: NULL in an IN list never matches",
        ),
        (
            sh("status"),
            "at 1:1: expected a condition, found column \"status\" (text)",
        ),
        (
            sh("route_id IN (SELECT id FROM routes WHERE day = 3)"),
            "cannot compare column \"day\" (text) with 3 (integer)",
        ),
        (
            sh("weight_kg IN (SELECT id FROM routes WHERE day = today())"),
            "cannot compare column \"weight_kg\" (real) with column \"id\" (text)",
        ),
        (
            sh("param.p = route_id"),
            "streams.s.where at 1:1: unknown parameter \"p\" (the stream declares no `params`)",
        ),
        (
            sh("status = 'x' OR route_id = auth.sub"),
            "at 1:28: parameter terms",
        ),
        (sh("weight_kg < auth.max"), "at 1:13: parameter terms"),
        (sh("auth.role = 'driver'"), "belong in `when`"),
        (sh("NOT route_id = auth.sub"), "parameter terms"),
        (sh("route_id NOT IN auth.routes"), "parameter terms"),
        (sh("auth.a = auth.b"), "parameter terms"),
        (
            sh("status IN (SELECT id FROM routes WHERE day = today()) OR status = 'x'"),
            "at 1:11: parameter terms",
        ),
        (
            stream_err("shipments", "when", "status = 'x'", ""),
            "streams.s.when at 1:1: column \"status\" used where there is no row",
        ),
        (
            stream_err(
                "shipments",
                "when",
                "param.q = 'x'",
                "params = { p = \"text\" }",
            ),
            "unknown parameter \"q\" (the stream declares p)",
        ),
        (
            stream_err(
                "shipments",
                "when",
                "param.p = 1",
                "params = { p = \"text\" }",
            ),
            "cannot compare param.p (text) with 1 (integer)",
        ),
        (
            stream_err("shipments", "when", "auth.flag = true", ""),
            "cannot compare auth.flag (claim text) with true (bool)",
        ),
        (
            stream_err("shipments", "when", "auth.role = 'a' AND", ""),
            "streams.s.when at 1:20: expected a column",
        ),
        (
            stream_err(
                "shipments",
                "when",
                "auth.role = 'a'\n  AND (auth.x = 'b'",
                "",
            ),
            "streams.s.when at 2:20: expected ')', found end of expression",
        ),
    ];
    for (got, want) in cases {
        assert!(got.contains(want), "want {want:?}\n got {got}");
    }
    let p = "[[permissions]]\ntable = \"shipments\"\nactions = [\"update\"]\nwhen = \"status = param.x\"\n";
    assert_eq!(
        parse_err(&format!(
            "[[permissions]]\ntable = \"routes\"\nactions = [\"insert\"]\n{p}"
        )),
        "permissions[1].when at 1:10: param.x: permissions have no parameters (only streams declare `params`)"
    );
    let star = "[[permissions]]\ntable = \"*\"\nactions = [\"insert\"]\nwhen = \"id = auth.sub\"\n";
    assert!(parse_err(star).contains(
        "permissions[0].when at 1:1: column \"id\" used where the permission is for every table"
    ));
    let json = "[streams.s]\ntable = \"t\"\nwhere = \"j = 'x'\"";
    assert!(
        t_rules(json)
            .unwrap_err()
            .to_string()
            .contains("json values cannot be compared")
    );
}

#[test]
fn permission_when_may_mix_rows_and_parameters_freely() {
    // Unlike a stream's `where`, a permission's `when` is a plain predicate.
    let r = rules(
        "[[permissions]]\ntable = \"shipments\"\nactions = [\"update\"]\n\
         when = \"status = 'x' OR route_id = auth.sub OR weight_kg < auth.max\"\n",
    );
    let s = row(&[("route_id", t("u")), ("weight_kg", Value::Real(3.0))]);
    let c = ClaimSet::new().with("sub", "nobody").with("max", "10");
    assert_eq!(
        write(
            &r,
            &c,
            "shipments",
            Action::Update,
            &["status"],
            Some(&s),
            Some(&s)
        ),
        Ok(())
    );
    let c = ClaimSet::new().with("sub", "nobody").with("max", "1");
    assert!(
        write(
            &r,
            &c,
            "shipments",
            Action::Update,
            &["status"],
            Some(&s),
            Some(&s)
        )
        .is_err()
    );
}

#[test]
fn bucket_keys_keep_integers_and_text_apart() {
    let r = t_rules(
        "[streams.by_n]\ntable = \"t\"\nwhere = \"n = auth.n\"\n[streams.by_a]\ntable = \"t\"\nwhere = \"a = auth.n AND b\"\n[streams.by_r]\ntable = \"t\"\nwhere = \"auth.n = r\"\n",
    )
    .unwrap();
    let rw = row(&[
        ("n", Value::Integer(1)),
        ("a", t("1")),
        ("b", Value::Bool(true)),
        ("r", Value::Integer(1)),
    ]);
    assert_eq!(keys(&r, "t", &rw), ["by_n[1]", r#"by_a["1"]"#, "by_r[1.0]"]);
    let c = ClaimSet::new().with("n", "1");
    let g = r.grants(&ctx(&c), &[], &mut MemoryLookup::new()).unwrap();
    assert_eq!(
        g.iter().map(|k| k.0.as_str()).collect::<Vec<_>>(),
        ["by_a[\"1\"]", "by_n[1]", "by_r[1.0]"]
    );
    let no_b = row(&[("a", t("1")), ("b", Value::Bool(false))]);
    assert!(
        keys(&r, "t", &no_b).is_empty(),
        "row filter fails, NULL bucket columns"
    );
    assert!(r.row_buckets("nope", &|_| None).is_empty());
}

#[test]
fn parameterised_streams_type_their_params() {
    let r = t_rules(
        "[streams.p]\ntable = \"t\"\nparams = { n = \"integer\", x = \"real\", f = \"bool\" }\nwhere = \"n = param.n AND r = param.x AND b = param.f\"\n",
    )
    .unwrap();
    let c = ClaimSet::new();
    let sub = |n: Value, x: Value, f: Value| Subscription {
        stream: "p".into(),
        params: [
            ("n".to_string(), n),
            ("x".to_string(), x),
            ("f".to_string(), f),
        ]
        .into(),
    };
    let ok = sub(Value::Integer(3), Value::Integer(2), Value::Integer(1));
    assert_eq!(
        r.check_subscription(&ctx(&c), &ok, &mut MemoryLookup::new()),
        Ok(())
    );
    let g = r.grants(&ctx(&c), &[ok], &mut MemoryLookup::new()).unwrap();
    assert_eq!(
        g.into_iter().map(|k| k.0).collect::<Vec<_>>(),
        ["p[3,2.0,true]"]
    );
    for bad in [
        sub(t("3"), Value::Real(2.0), Value::Bool(true)),
        sub(Value::Real(3.5), Value::Real(2.0), Value::Bool(true)),
        sub(Value::Integer(3), Value::Real(f64::NAN), Value::Bool(true)),
        sub(Value::Integer(3), Value::Real(2.0), Value::Null),
    ] {
        assert_eq!(
            r.check_subscription(&ctx(&c), &bad, &mut MemoryLookup::new())
                .unwrap_err()
                .code,
            "invalid_params"
        );
        assert!(
            r.grants(&ctx(&c), &[bad], &mut MemoryLookup::new())
                .unwrap()
                .is_empty()
        );
    }
}

#[test]
fn today_across_offsets_and_date_boundaries() {
    assert_eq!(today(0, 0), "1970-01-01");
    assert_eq!(today(0, -1), "1969-12-31");
    assert_eq!(today(NOON, 0), "2026-11-26");
    // 23:30 UTC on 2026-11-26 is already the 27th in Berlin (+01:00) but not in New York.
    let late = NOON + 11 * 3_600_000 + 30 * 60_000;
    assert_eq!(today(late, 60), "2026-11-27");
    assert_eq!(today(late, 0), "2026-11-26");
    assert_eq!(today(late, -300), "2026-11-26");
    assert_eq!(today(late, 29), "2026-11-26");
    assert_eq!(today(late, 30), "2026-11-27");
    // 2024 is a leap year; 2100 is not.
    assert_eq!(today(1_709_164_800_000, 0), "2024-02-29");
    assert_eq!(today(1_709_251_199_999, 0), "2024-02-29");
    assert_eq!(today(1_709_251_200_000, 0), "2024-03-01");
    assert_eq!(today(4_107_542_400_000, 0), "2100-03-01");
    assert_eq!(today(4_107_542_399_999, 0), "2100-02-28");
    assert_eq!(today(951_782_400_000, 0), "2000-02-29");
    assert_eq!(today(1_767_225_599_999, 0), "2025-12-31");
    assert_eq!(today(1_767_225_599_999, 1), "2026-01-01");
    assert!(
        today(u64::MAX, i32::MAX).len() > 10,
        "no overflow at the extremes"
    );
    let r = rules("[rules]\ntimezone = \"+01:00\"\n");
    assert_eq!(r.today(late), "2026-11-27");
}

proptest! {
    #[test]
    fn today_matches_a_day_by_day_count(days in 0u64..200_000, ms in 0u64..DAY_MS) {
        // Walk the calendar forward from 1970 with a simple month table.
        let (mut y, mut m, mut d) = (1970u64, 1u64, 1u64);
        let leap = |y: u64| (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
        let mut rest = days;
        while rest > 0 {
            let ylen = if leap(y) { 366 } else { 365 };
            if m == 1 && d == 1 && rest >= ylen {
                y += 1;
                rest -= ylen;
                continue;
            }
            let mlen = match m { 2 if leap(y) => 29, 2 => 28, 4 | 6 | 9 | 11 => 30, _ => 31 };
            d += 1;
            if d > mlen { d = 1; m += 1; if m > 12 { m = 1; y += 1; } }
            rest -= 1;
        }
        prop_assert_eq!(today(days * DAY_MS + ms, 0), format!("{y:04}-{m:02}-{d:02}"));
    }
}

// ---- bucket/grant agreement ----------------------------------------------------------------

/// Streams over t with every kind of bucket term, row filter and `when`.
const ORACLE_RULES: &str = r#"
[rules]
timezone = "+05:30"

[streams.by_claim]
table = "t"
where = "a = auth.a AND n IN auth.ns"

[streams.by_real]
table = "t"
when = "auth.role = 'x' OR auth.role = 'y'"
where = "r = auth.num AND (b = true OR n > 2)"

[streams.by_lookup]
table = "t"
when = "NOT auth.a IS NULL"
where = "n IN (SELECT n FROM l WHERE k = auth.a) AND a IN (SELECT v FROM l WHERE k = 'fixed' AND n = 1) AND a != 'zz'"

[streams.by_param]
table = "t"
params = { p = "integer", q = "text" }
when = "param.q IN (SELECT v FROM l WHERE k = auth.a) OR param.q = 'open'"
where = "n = param.p AND a = param.q AND id = auth.sub"

[streams.by_day]
table = "t"
where = "a = today() AND (r IS NULL OR r < 2.5) AND NOT b"

[streams.everything]
table = "t"
when = "auth.role IN ('admin')"
where = "j IS NOT NULL OR n NOT IN (1, 2)"
"#;

fn small_text() -> impl Strategy<Value = Value> {
    prop_oneof![
        1 => Just(Value::Null),
        4 => Just(t("a")),
        1 => Just(t("b")),
        1 => Just(t("1")),
        1 => Just(t("zz")),
        2 => Just(t("open")),
        2 => Just(t("2026-11-26")),
        1 => Just(t("2026-11-27")),
    ]
}

fn small_int() -> impl Strategy<Value = Value> {
    prop_oneof![
        1 => Just(Value::Null),
        2 => Just(Value::Integer(1)),
        4 => (-1i64..4).prop_map(Value::Integer),
        1 => Just(t("1")),
    ]
}

fn small_real() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        (-1i64..4).prop_map(Value::Integer),
        (-2i64..8).prop_map(|h| Value::Real(h as f64 / 2.0)),
        Just(Value::Real(-0.0)),
        Just(Value::Real(0.0)),
        Just(Value::Real(f64::NAN)),
    ]
}

fn small_bool() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (0i64..3).prop_map(Value::Integer)
    ]
}

prop_compose! {
    fn t_row()(id in small_text(), a in small_text(), n in small_int(), r in small_real(),
               b in small_bool(), j in prop_oneof![Just(Value::Null), Just(Value::Json("1".into()))])
               -> BTreeMap<String, Value> {
        row(&[("id", id), ("a", a), ("n", n), ("r", r), ("b", b), ("j", j)])
    }
}

fn claim_values(pool: &'static [&'static str]) -> impl Strategy<Value = Vec<&'static str>> {
    prop::collection::vec(prop::sample::select(pool), 0..4)
}

prop_compose! {
    fn claims()(
        a in claim_values(&["a", "a", "b", "1", "zz", "2026-11-26", "fixed"]),
        ns in claim_values(&["1", "1.0", "1e0", "2", "-1", "0.5", "x", " 1", "NaN", "3"]),
        num in claim_values(&["1", "1.0", "0.5", "2", "-0.0", "0", "NaN", "x", "1.5", "-1"]),
        role in claim_values(&["x", "y", "admin", "z"]),
        sub in claim_values(&["a", "a", "b", "1"]),
    ) -> ClaimSet {
        let mut c = ClaimSet::new();
        for (k, vs) in [("a", a), ("ns", ns), ("num", num), ("role", role), ("sub", sub)] {
            for v in vs {
                c = c.with(k, v);
            }
        }
        c
    }
}

prop_compose! {
    fn l_rows()(rows in prop::collection::vec(
        (prop::sample::select(vec!["a", "a", "b", "fixed", "fixed", "1"]), small_int(), small_text()),
        0..16))
        -> MemoryLookup {
        rows.into_iter().fold(MemoryLookup::new(), |m, (k, n, v)| {
            m.with_row("l", &[("k", t(k)), ("n", n), ("v", v)])
        })
    }
}

/// For one case: per stream, whether the row is in a granted bucket; fails if that differs
/// from evaluating the stream's `when` and `where` directly on (row, claims, params, lookups).
fn agreement(
    rw: &BTreeMap<String, Value>,
    claims: &ClaimSet,
    data: &mut MemoryLookup,
    params: BTreeMap<String, Value>,
    day: u64,
) -> Result<Vec<(String, bool)>, String> {
    let schema = Schema::from_toml_str(T_SCHEMA).unwrap();
    let rules = SyncRules::parse(ORACLE_RULES, &schema).unwrap();
    let c = EvalContext {
        claims,
        now_ms: NOON - DAY_MS + day * DAY_MS,
    };
    let sub = Subscription {
        stream: "by_param".into(),
        params: params.clone(),
    };
    let subscribed = rules.check_subscription(&c, &sub, data).is_ok();
    let grants = rules.grants(&c, &[sub], data).unwrap();
    let row_keys = rules.row_buckets("t", &getter(rw));
    let mut out = Vec::new();
    for s in rules.streams() {
        let in_bucket = row_keys
            .iter()
            .any(|k| k.stream() == s.name() && grants.contains(k));
        let oracle = if s.is_parameterised() {
            subscribed
                && rules
                    .row_visible(s.name(), &c, Some(&params), &getter(rw), data)
                    .unwrap()
        } else {
            rules
                .row_visible(s.name(), &c, None, &getter(rw), data)
                .unwrap()
        };
        if in_bucket != oracle {
            return Err(format!(
                "stream {}: in a granted bucket {in_bucket}, predicate {oracle}; row {rw:?} \
                 claims {claims:?} grants {grants:?} row keys {row_keys:?}",
                s.name()
            ));
        }
        out.push((s.name().to_string(), in_bucket));
    }
    Ok(out)
}

prop_compose! {
    fn case()(rw in t_row(), claims in claims(), data in l_rows(), p in small_int(),
              q in small_text(), copy in any::<bool>(), day in 0u64..3)
              -> (BTreeMap<String, Value>, ClaimSet, MemoryLookup, BTreeMap<String, Value>, u64) {
        // Half the subscriptions name the row's own values, so that some match.
        let (p, q) = if copy { (rw["n"].clone(), rw["a"].clone()) } else { (p, q) };
        (rw, claims, data, [("p".to_string(), p), ("q".to_string(), q)].into(), day)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    /// A row is in a granted bucket of a stream iff the stream's `when` and `where`,
    /// evaluated directly on (row, claims, params, lookups), hold.
    #[test]
    fn buckets_agree_with_the_predicate((rw, claims, mut data, params, day) in case()) {
        if let Err(e) = agreement(&rw, &claims, &mut data, params, day) {
            prop_assert!(false, "{}", e);
        }
    }
}

/// The agreement property is only meaningful if every stream sees rows both in and out of
/// its buckets.
#[test]
fn the_agreement_cases_reach_every_stream() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut hits: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for _ in 0..3000 {
        let (rw, claims, mut data, params, day) = case().new_tree(&mut runner).unwrap().current();
        for (stream, visible) in agreement(&rw, &claims, &mut data, params, day).unwrap() {
            let e = hits.entry(stream).or_default();
            if visible { e.0 += 1 } else { e.1 += 1 }
        }
    }
    assert_eq!(hits.len(), 6);
    for (stream, (yes, no)) in hits {
        eprintln!("{stream}: {yes} visible, {no} not");
        assert!(yes >= 10 && no >= 10, "{stream}: {yes} visible, {no} not");
    }
}

// ---- robustness ----------------------------------------------------------------------------

fn token_soup() -> impl Strategy<Value = String> {
    let words = prop::sample::select(vec![
        "(",
        ")",
        "(",
        ")",
        ",",
        ".",
        "=",
        "!=",
        "<>",
        "<",
        "<=",
        ">",
        ">=",
        "-",
        "AND",
        "or",
        "NOT",
        "IN",
        "IS",
        "NULL",
        "true",
        "FALSE",
        "SELECT",
        "FROM",
        "WHERE",
        "auth.sub",
        "auth.",
        "param.p",
        "param",
        "today()",
        "today(",
        "id",
        "route_id",
        "status",
        "weight_kg",
        "routes",
        "driver_id",
        "'x'",
        "'",
        "''",
        "1",
        "2.5",
        "1e400",
        "9223372036854775808",
        "\"day\"",
        "\"",
        "\n",
        "é",
        ";",
    ]);
    prop::collection::vec(words, 0..40).prop_map(|w| w.join(" "))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn parse_never_panics_on_any_document(text in any::<String>()) {
        let _ = SyncRules::parse(&text, &schema());
    }

    #[test]
    fn parse_never_panics_on_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = SyncRules::parse(&String::from_utf8_lossy(&bytes), &schema());
    }

    #[test]
    fn parse_never_panics_on_any_expression(src in any::<String>(), soup in token_soup(), key in 0usize..4) {
        for e in [src, soup] {
            let text = match key {
                0 => format!("[streams.s]\ntable = \"shipments\"\nwhere = {e:?}\n"),
                1 => format!("[streams.s]\ntable = \"shipments\"\nparams = {{ p = \"text\" }}\nwhen = {e:?}\n"),
                2 => format!("[[permissions]]\ntable = \"shipments\"\nactions = [\"update\"]\nwhen = {e:?}\n"),
                _ => format!("[[permissions]]\ntable = \"*\"\nactions = [\"update\"]\nwhen = {e:?}\n"),
            };
            if let Ok(r) = SyncRules::parse(&text, &schema()) {
                // Whatever parses also evaluates without panicking.
                let claims = driver("u1");
                let s = shipment("r1");
                let g = getter(&s);
                let _ = r.grants(&ctx(&claims), &[], &mut delivery_data());
                let _ = r.row_buckets("shipments", &g);
                let _ = r.check_write(&ctx(&claims), "shipments", Action::Update, &["status"], Some(&g), Some(&g), &mut delivery_data());
            }
        }
    }
}

#[test]
fn deep_nesting_in_a_document_is_an_error() {
    let deep = format!("{}auth.sub = 'x'{}", "(".repeat(5000), ")".repeat(5000));
    let e = parse_err(&format!(
        "[streams.s]\ntable = \"routes\"\nwhen = {deep:?}\n"
    ));
    assert!(e.contains("nested too deeply"), "{e}");
}
