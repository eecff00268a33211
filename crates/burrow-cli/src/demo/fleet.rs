//! Who is in the fleet: each device's role, user and token claims, and how `--devices` is
//! split between the roles.

use burrow_client::Network;
use serde::Serialize;
use std::collections::BTreeMap;

/// What a device's user does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Confirms deliveries on today's route, with a photo each.
    Driver,
    /// Counts stock: increments shared item counters.
    Warehouse,
    /// Edits service reports (shared notes) and submits them for approval.
    Technician,
    /// The dispatcher in the office: plans the day, approves, reassigns a route.
    Manager,
}

impl Role {
    /// Every role, in display order.
    pub const ALL: [Role; 4] = [
        Role::Driver,
        Role::Warehouse,
        Role::Technician,
        Role::Manager,
    ];

    /// The role's name in the report.
    pub fn label(self) -> &'static str {
        match self {
            Role::Driver => "driver",
            Role::Warehouse => "warehouse",
            Role::Technician => "technician",
            Role::Manager => "manager",
        }
    }

    /// The group's name in the progress display.
    pub fn group(self) -> &'static str {
        match self {
            Role::Driver => "drivers",
            Role::Warehouse => "warehouse",
            Role::Technician => "technicians",
            Role::Manager => "manager",
        }
    }

    /// The connection the app reports while it has one: phones in the field are on
    /// cellular (metered: photos wait for Wi-Fi), the warehouse and the office on Wi-Fi.
    pub fn usual_network(self) -> Network {
        match self {
            Role::Driver | Role::Technician => Network::Metered,
            Role::Warehouse | Role::Manager => Network::Unmetered,
        }
    }
}

/// The warehouse every scanner works in.
pub const WAREHOUSE: &str = "w1";
/// Zones of the warehouse; each scanner holds two neighbouring ones, so items are shared.
pub const ZONES: i64 = 3;

/// One device and its user.
#[derive(Debug, Clone)]
pub struct Member {
    /// The user id (`sub`), also the device's name.
    pub name: String,
    /// What the user does.
    pub role: Role,
    /// Position within its role (0-based).
    pub index: usize,
}

impl Member {
    /// The token claims besides `sub`, as the example's sync rules expect them.
    pub fn claims(&self) -> BTreeMap<String, serde_json::Value> {
        let mut c = BTreeMap::new();
        let role = match self.role {
            Role::Driver => "driver",
            Role::Warehouse => "warehouse",
            Role::Technician => "technician",
            Role::Manager => "dispatcher",
        };
        c.insert("role".into(), serde_json::json!(role));
        if self.role == Role::Warehouse {
            c.insert("warehouse".into(), serde_json::json!(WAREHOUSE));
            let zones: Vec<String> = self.zones().iter().map(i64::to_string).collect();
            c.insert("zones".into(), serde_json::json!(zones));
        }
        c
    }

    /// The warehouse zones a scanner works in (empty for other roles).
    pub fn zones(&self) -> Vec<i64> {
        if self.role != Role::Warehouse {
            return Vec::new();
        }
        let first = self.index as i64 % ZONES;
        vec![1 + first, 1 + (first + 1) % ZONES]
    }

    /// The id of a driver's route of today.
    pub fn route_id(&self) -> String {
        format!("r-{}", self.name)
    }

    /// The id of a technician's job, and of its report.
    pub fn job_ids(&self) -> (String, String) {
        (format!("j-{}", self.name), format!("rep-{}", self.name))
    }
}

/// How many devices of each role `devices` (at least 5) makes: one manager, and the rest in
/// the brief's proportion of 12 drivers to 4 warehouse scanners to 3 technicians (at least
/// two drivers, one scanner and one technician).
pub fn composition(devices: usize) -> BTreeMap<Role, usize> {
    let rest = devices.saturating_sub(1).max(4);
    let share = |parts: usize| ((rest * parts) as f64 / 19.0).round() as usize;
    let technicians = share(3).max(1);
    let warehouse = share(4).max(1);
    let drivers = rest.saturating_sub(technicians + warehouse).max(2);
    BTreeMap::from([
        (Role::Driver, drivers),
        (Role::Warehouse, warehouse),
        (Role::Technician, technicians),
        (Role::Manager, 1),
    ])
}

/// The members of a fleet of `devices`, drivers first and the manager last.
pub fn members(devices: usize) -> Vec<Member> {
    let mut out = Vec::new();
    for (role, n) in composition(devices) {
        let width = n.to_string().len().max(2);
        for index in 0..n {
            let name = match role {
                Role::Manager => "manager".to_string(),
                Role::Driver => format!("driver-{:0width$}", index + 1),
                Role::Warehouse => format!("scanner-{:0width$}", index + 1),
                Role::Technician => format!("tech-{:0width$}", index + 1),
            };
            out.push(Member { name, role, index });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_fleet_is_the_issues() {
        let c = composition(20);
        assert_eq!(c[&Role::Driver], 12);
        assert_eq!(c[&Role::Warehouse], 4);
        assert_eq!(c[&Role::Technician], 3);
        assert_eq!(c[&Role::Manager], 1);
        for n in 5..200 {
            let c = composition(n);
            assert_eq!(c.values().sum::<usize>(), n, "{n}: {c:?}");
            assert!(c[&Role::Driver] >= 2 && c[&Role::Technician] >= 1);
        }
        let m = members(20);
        assert_eq!(m.last().map(|m| m.role), Some(Role::Manager));
        assert_eq!(m[0].name, "driver-01");
        assert_eq!(m[12].zones(), vec![1, 2]);
        assert_eq!(m[14].zones(), vec![3, 1]);
    }
}
