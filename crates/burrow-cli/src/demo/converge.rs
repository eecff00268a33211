//! Convergence within scope: for each device, a fresh client of the same user (same token
//! and claims) syncs from scratch straight from the server once every outbox is empty; its
//! state hash is "the server's state within this device's scope". A device has converged
//! when its own state hash equals that one.

use super::device::Device;
use anyhow::{Context, Result};
use burrow_client::{Client, ClientOptions, HttpTransport};
use burrow_core::Schema;
use std::path::Path;
use std::time::Duration;

/// A device's reference copy.
pub struct Reference {
    /// The fresh client.
    pub client: Client,
    /// Its state hash.
    pub hash: String,
}

/// Opens and syncs a fresh client per device in `dir`, directly against `server_url`.
pub async fn references(
    devices: &[Device],
    server_url: &str,
    schema: &Schema,
    schema_text: &str,
    dir: &Path,
    seed: u64,
) -> Result<Vec<Reference>> {
    std::fs::create_dir_all(dir)?;
    let mut out = Vec::new();
    for d in devices {
        let name = &d.member.name;
        let options = ClientOptions {
            client_id: Some(format!("{name}-reference-{seed:x}")),
            ..ClientOptions::default()
        };
        let client = Client::open_with(
            dir.join(format!("{name}.db")),
            schema,
            Some(schema_text),
            options,
        )
        .with_context(|| format!("{name}: reference client"))?;
        let transport = HttpTransport::new(server_url, &d.token)?;
        let mut tries = 0;
        loop {
            tries += 1;
            match client.sync(&transport).await {
                Ok(_) => break,
                Err(e) if tries < 5 => {
                    tracing::debug!(device = %name, error = %e, "reference sync retried");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e).with_context(|| format!("{name}: reference sync")),
            }
        }
        let hash = client.state_hash()?;
        out.push(Reference { client, hash });
    }
    Ok(out)
}
