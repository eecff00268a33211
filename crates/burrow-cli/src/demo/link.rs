//! One device's connection as the demo controls it: the fault proxy in front of the server
//! (link up or cut, its profile) and what the app tells the client about the network.

use burrow_client::{Client, Network, NetworkState};
use burrow_proxy::{Profile, ProxyHandle};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// A device's link: its proxy and the network state its app reports.
#[derive(Debug)]
pub struct Link {
    proxy: Arc<ProxyHandle>,
    client: Arc<Client>,
    usual: Network,
    app_offline: AtomicBool,
    /// Times the link went down, so an attempt can tell whether an outage hit it.
    cuts: AtomicU64,
    /// An EDGE stretch is in force.
    slow: AtomicBool,
}

/// The network state an app reports for `network`.
fn state(network: Network) -> NetworkState {
    NetworkState {
        network,
        low_battery: false,
    }
}

impl Link {
    /// A link that is up, with the app reporting `usual`.
    pub fn new(proxy: Arc<ProxyHandle>, client: Arc<Client>, usual: Network) -> Link {
        client.set_network(state(usual));
        Link {
            proxy,
            client,
            usual,
            app_offline: AtomicBool::new(false),
            cuts: AtomicU64::new(0),
            slow: AtomicBool::new(false),
        }
    }

    /// The device can reach the server: the link is up and the app does not think it is
    /// offline.
    pub fn online(&self) -> bool {
        self.proxy.is_online() && !self.app_offline.load(Ordering::SeqCst)
    }

    /// The link is cut (a tunnel), whether or not the app knows.
    pub fn in_tunnel(&self) -> bool {
        !self.proxy.is_online()
    }

    /// The app told the client it is offline.
    pub fn app_offline(&self) -> bool {
        self.app_offline.load(Ordering::SeqCst)
    }

    /// An EDGE stretch is in force.
    pub fn slow(&self) -> bool {
        self.slow.load(Ordering::SeqCst)
    }

    /// How many times the link has gone down so far.
    pub fn cuts(&self) -> u64 {
        self.cuts.load(Ordering::SeqCst)
    }

    /// A tunnel: every connection is cut and new ones are refused.
    pub fn cut(&self) {
        self.cuts.fetch_add(1, Ordering::SeqCst);
        self.proxy.set_online(false);
    }

    /// The app notices it has no network and tells the client (no attempts until it is back).
    pub fn tell_offline(&self) {
        self.app_offline.store(true, Ordering::SeqCst);
        self.client.set_network(state(Network::Offline));
    }

    /// Out of the tunnel: the link is up again, and an app that knew it was offline says so.
    pub fn restore(&self) {
        self.proxy.set_online(true);
        if self.app_offline.swap(false, Ordering::SeqCst) {
            self.client.set_network(state(self.usual));
        }
    }

    /// Changes the link's profile (an EDGE stretch, or back to the base profile).
    pub fn set_profile(&self, profile: Profile, slow: bool) {
        self.slow.store(slow, Ordering::SeqCst);
        self.proxy.set_profile(profile);
    }

    /// The end of the day: the link is up with `healed` (no faults), the app is on Wi-Fi
    /// (bulk may go), and the client retries at once.
    pub fn heal(&self, healed: Profile) {
        self.set_profile(healed, false);
        self.proxy.set_online(true);
        self.app_offline.store(false, Ordering::SeqCst);
        self.client.set_network(state(Network::Unmetered));
        self.client.retry_now();
    }
}
