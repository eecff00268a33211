//! Network policy: what the app says about the connection decides what sync may send.
//!
//! - `Offline`: no attempt at all ([`crate::Error::Offline`]).
//! - `Metered` (cellular): only the lanes in [`NetworkPolicy::metered_lanes`] upload (default:
//!   `critical`), and downloads come in small pages ([`NetworkPolicy::metered_page_bytes_max`]);
//!   `bulk` waits for an unmetered network.
//! - `Unmetered` (Wi-Fi): everything.
//! - `low_battery` additionally restricts uploads to [`NetworkPolicy::low_battery_lanes`].
//!
//! A lane filter applies to a transaction's lane after inheritance (see [`crate::lanes`]): a
//! bulk transaction that a critical one depends on goes with it.

use burrow_core::Priority;
use serde::Serialize;

/// The kind of connection the app reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Network {
    /// No connection: nothing is attempted.
    Offline,
    /// A connection the user pays per byte for (cellular).
    Metered,
    /// Wi-Fi or wired.
    #[default]
    Unmetered,
}

impl Network {
    /// Parses `offline`, `metered` or `unmetered`.
    pub fn parse(s: &str) -> Option<Network> {
        Some(match s {
            "offline" => Network::Offline,
            "metered" => Network::Metered,
            "unmetered" => Network::Unmetered,
            _ => return None,
        })
    }
}

/// What the app last reported about the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct NetworkState {
    /// The connection.
    pub network: Network,
    /// The battery is low: defer what can wait.
    pub low_battery: bool,
}

/// Which lanes may upload, and how large download pages may be, per network state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkPolicy {
    /// Lanes that upload on a metered network.
    pub metered_lanes: Vec<Priority>,
    /// Lanes that upload while the battery is low (intersected with the network's).
    pub low_battery_lanes: Vec<Priority>,
    /// Largest download page on a metered network (uncompressed estimate).
    pub metered_page_bytes_max: u32,
}

impl Default for NetworkPolicy {
    fn default() -> Self {
        NetworkPolicy {
            metered_lanes: vec![Priority::Critical],
            low_battery_lanes: vec![Priority::Critical, Priority::Normal],
            metered_page_bytes_max: 256 << 10,
        }
    }
}

const ALL_LANES: [Priority; 3] = [Priority::Critical, Priority::Normal, Priority::Bulk];

impl NetworkPolicy {
    /// The lanes that may upload in `state`; `None` when nothing may be attempted (offline).
    pub fn allowed_lanes(&self, state: NetworkState) -> Option<Vec<Priority>> {
        let by_network: Vec<Priority> = match state.network {
            Network::Offline => return None,
            Network::Metered => self.metered_lanes.clone(),
            Network::Unmetered => ALL_LANES.to_vec(),
        };
        Some(
            by_network
                .into_iter()
                .filter(|l| !state.low_battery || self.low_battery_lanes.contains(l))
                .collect(),
        )
    }

    /// The download page limit in `state`, given the client's own limit.
    pub fn page_bytes_max(&self, state: NetworkState, own: u32) -> u32 {
        match state.network {
            Network::Metered => own.min(self.metered_page_bytes_max),
            _ => own,
        }
    }
}

/// Every lane: what an unrestricted upload may send.
pub fn all_lanes() -> &'static [Priority] {
    &ALL_LANES
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_issue() {
        let p = NetworkPolicy::default();
        let state = |network, low_battery| NetworkState {
            network,
            low_battery,
        };
        assert_eq!(p.allowed_lanes(state(Network::Offline, false)), None);
        assert_eq!(
            p.allowed_lanes(state(Network::Metered, false)),
            Some(vec![Priority::Critical])
        );
        assert_eq!(
            p.allowed_lanes(state(Network::Unmetered, false)),
            Some(ALL_LANES.to_vec())
        );
        assert_eq!(
            p.allowed_lanes(state(Network::Unmetered, true)),
            Some(vec![Priority::Critical, Priority::Normal])
        );
        assert_eq!(
            p.page_bytes_max(state(Network::Metered, false), 8 << 20),
            256 << 10
        );
        assert_eq!(
            p.page_bytes_max(state(Network::Unmetered, false), 8 << 20),
            8 << 20
        );
        assert_eq!(Network::parse("metered"), Some(Network::Metered));
        assert_eq!(Network::parse("wifi"), None);
    }
}
