//! The morning's data: the manager plans today's routes (one per driver) with their
//! shipments, the warehouse's items and the technicians' jobs; each lead technician opens
//! the report of its job. Also what each device must hold once it has synced it.

use super::fleet::{Member, Role, WAREHOUSE, ZONES};
use std::collections::BTreeMap;

/// Items per warehouse zone.
pub const ITEMS_PER_ZONE: i64 = 8;
/// Stock of every item at the start of the day.
pub const INITIAL_STOCK: i64 = 100;

/// Shipments on each route for a run of `run_secs` (drivers confirm about one every 1.4 s).
pub fn shipments_per_route(run_secs: u64) -> usize {
    (run_secs as usize * 4 / 5 + 4).max(6)
}

/// The id of shipment `k` of `route`.
pub fn shipment_id(route: &str, k: usize) -> String {
    format!("{route}-s{k:02}")
}

/// The items of the warehouse: `(id, zone)`.
pub fn items() -> Vec<(String, i64)> {
    (1..=ZONES)
        .flat_map(|zone| (1..=ITEMS_PER_ZONE).map(move |k| (format!("item-z{zone}-{k:02}"), zone)))
        .collect()
}

/// The manager's plan as one local transaction: routes of `today`, shipments, items, jobs.
pub fn manager_sql(members: &[Member], today: &str, per_route: usize) -> String {
    let mut sql = String::new();
    let technicians: Vec<&Member> = members
        .iter()
        .filter(|m| m.role == Role::Technician)
        .collect();
    for d in members.iter().filter(|m| m.role == Role::Driver) {
        let route = d.route_id();
        sql.push_str(&format!(
            "INSERT INTO routes(id, driver_id, day) VALUES ('{route}', '{}', '{today}');\n",
            d.name
        ));
        for k in 0..per_route {
            sql.push_str(&format!(
                "INSERT INTO shipments(id, route_id, status, address, recipient, weight_kg) \
                 VALUES ('{}', '{route}', 'planned', '{} Harbour Road', 'Customer {}', {:.1});\n",
                shipment_id(&route, k),
                10 + k,
                k + 1,
                1.0 + (k % 7) as f64 * 0.5
            ));
        }
    }
    for (id, zone) in items() {
        sql.push_str(&format!(
            "INSERT INTO items(id, sku, name, warehouse_id, zone, quantity) \
             VALUES ('{id}', 'SKU-{id}', 'Part {id}', '{WAREHOUSE}', {zone}, {INITIAL_STOCK});\n"
        ));
    }
    for (k, t) in technicians.iter().enumerate() {
        let (job, _) = t.job_ids();
        let assistant = match technicians.len() {
            1 => "NULL".to_string(),
            n => format!("'{}'", technicians[(k + 1) % n].name),
        };
        sql.push_str(&format!(
            "INSERT INTO jobs(id, technician_id, assistant_id, site, scheduled_day, status) \
             VALUES ('{job}', '{}', {assistant}, 'Site {}', '{today}', 'scheduled');\n",
            t.name,
            k + 1
        ));
    }
    sql
}

/// A lead technician opens the report of its job.
pub fn report_sql(tech: &Member) -> String {
    let (job, report) = tech.job_ids();
    format!(
        "INSERT INTO reports(id, job_id, technician_id, notes, finished, approval) \
         VALUES ('{report}', '{job}', '{}', 'Service report.', 0, 'draft')",
        tech.name
    )
}

/// What a device must hold once it has synced the plan: `(query returning n, n)`.
pub fn expected(m: &Member, members: &[Member], per_route: usize) -> Vec<(String, i64)> {
    let count = |table: &str| format!("SELECT count(*) AS n FROM {table}");
    let techs = members
        .iter()
        .filter(|x| x.role == Role::Technician)
        .count() as i64;
    let reports_seen = if techs > 1 { 2 } else { 1 };
    let routes = members.iter().filter(|x| x.role == Role::Driver).count() as i64;
    match m.role {
        Role::Driver => vec![(count("routes"), 1), (count("shipments"), per_route as i64)],
        Role::Warehouse => vec![(count("items"), m.zones().len() as i64 * ITEMS_PER_ZONE)],
        Role::Technician => vec![
            (count("jobs"), reports_seen),
            (count("reports"), reports_seen),
        ],
        Role::Manager => vec![
            (count("routes"), routes),
            (count("shipments"), routes * per_route as i64),
            (count("items"), ZONES * ITEMS_PER_ZONE),
            (count("reports"), techs),
        ],
    }
}

/// Every item at the start of the day, by id.
pub fn initial_stock() -> BTreeMap<String, i64> {
    items()
        .into_iter()
        .map(|(id, _)| (id, INITIAL_STOCK))
        .collect()
}
