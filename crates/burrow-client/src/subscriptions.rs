//! Subscriptions to parameterised streams (selective sync, docs/sync-rules.md): the app asks
//! for `job_manuals(job_id = 42)`; every sync sends the list; the server grants what its
//! rules allow and refuses the rest with a reason, kept here for the app to show. Rows that
//! leave the scope (unsubscribed, reassigned) are evicted by the download.

use crate::client::Client;
use crate::error::{Error, Result};
use burrow_core::Value;
use burrow_proto::v1;
use rusqlite::{Transaction, params};
use serde::Serialize;
use std::collections::BTreeMap;

/// One subscription and what the server said about it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SubscriptionStatus {
    /// The stream's name.
    pub stream: String,
    /// Its parameters.
    pub params: serde_json::Map<String, serde_json::Value>,
    /// `pending` (not yet sent), `active` (the server serves it) or `refused`.
    pub status: String,
    /// Why it was refused (`code`), if it was.
    pub code: Option<String>,
    /// Why it was refused, in words.
    pub reason: Option<String>,
}

/// The canonical text of a parameter set (keys sorted), the subscription's identity.
fn params_key(params: &serde_json::Map<String, serde_json::Value>) -> Result<String> {
    let sorted: BTreeMap<&String, &serde_json::Value> = params.iter().collect();
    for (k, v) in &sorted {
        if !matches!(
            v,
            serde_json::Value::String(_)
                | serde_json::Value::Number(_)
                | serde_json::Value::Bool(_)
        ) {
            return Err(Error::Invalid(format!(
                "subscription parameter {k} must be a string, number or boolean, not {v}"
            )));
        }
    }
    serde_json::to_string(&sorted).map_err(|e| Error::Invalid(e.to_string()))
}

fn value_to_wire(v: &serde_json::Value) -> v1::Value {
    let value = match v {
        serde_json::Value::String(s) => Value::Text(s.clone()),
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Real(n.as_f64().unwrap_or(0.0)),
        },
        _ => Value::Null,
    };
    burrow_proto::convert::value_into_wire(value)
}

impl Client {
    /// Subscribes to a parameterised stream of the server's sync rules, e.g.
    /// `subscribe("job_manuals", json!({"job_id": 42}))`. Takes effect at the next sync: the
    /// stream's rows arrive without a full resync, or the subscription is marked `refused`
    /// with the server's reason ([`Client::subscriptions`]). Subscribing twice is harmless.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let schema = burrow_core::Schema::from_toml_str("version = 1\n[tables.manuals.columns]\ntitle = \"text\"\n")?;
    /// # let client = burrow_client::Client::open(dir.path().join("app.db"), &schema)?;
    /// let params = serde_json::json!({"job_id": "j42"});
    /// client.subscribe("job_manuals", params.as_object().cloned().unwrap_or_default())?;
    /// assert_eq!(client.subscriptions()?[0].status, "pending");
    /// # Ok(()) }
    /// ```
    pub fn subscribe(
        &self,
        stream: &str,
        params: serde_json::Map<String, serde_json::Value>,
    ) -> Result<()> {
        if stream.is_empty() {
            return Err(Error::Invalid("a stream name is required".into()));
        }
        let key = params_key(&params)?;
        self.with_connection(|c| {
            c.execute(
                "INSERT OR IGNORE INTO _burrow_subscriptions(stream, params) VALUES (?1, ?2)",
                params![stream, key],
            )?;
            Ok(())
        })
    }

    /// Drops a subscription; the next sync removes its rows from this device (unless another
    /// stream still grants them). Returns whether it existed.
    pub fn unsubscribe(
        &self,
        stream: &str,
        params: serde_json::Map<String, serde_json::Value>,
    ) -> Result<bool> {
        let key = params_key(&params)?;
        self.with_connection(|c| {
            Ok(c.execute(
                "DELETE FROM _burrow_subscriptions WHERE stream = ?1 AND params = ?2",
                params![stream, key],
            )? > 0)
        })
    }

    /// Every subscription with the server's verdict.
    pub fn subscriptions(&self) -> Result<Vec<SubscriptionStatus>> {
        self.with_connection(|c| {
            let mut stmt = c.prepare(
                "SELECT stream, params, status, code, reason FROM _burrow_subscriptions ORDER BY stream, params",
            )?;
            let mut rows = stmt.query([])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                let params: String = r.get(1)?;
                out.push(SubscriptionStatus {
                    stream: r.get(0)?,
                    params: serde_json::from_str(&params)
                        .map_err(|e| Error::Corrupt(format!("subscription parameters: {e}")))?,
                    status: r.get(2)?,
                    code: r.get(3)?,
                    reason: r.get(4)?,
                });
            }
            Ok(out)
        })
    }

    /// The subscriptions as a request carries them (unreadable rows are skipped).
    pub(crate) fn wire_subscriptions(&self) -> Vec<v1::Subscription> {
        self.subscriptions()
            .unwrap_or_default()
            .into_iter()
            .map(|s| v1::Subscription {
                stream: s.stream,
                params: s
                    .params
                    .iter()
                    .map(|(k, v)| (k.clone(), value_to_wire(v)))
                    .collect(),
            })
            .collect()
    }
}

/// The identity of a wire subscription: `(stream, canonical params)`.
fn wire_key(sub: &v1::Subscription) -> Result<(String, String)> {
    let params: serde_json::Map<String, serde_json::Value> = sub
        .params
        .iter()
        .map(|(k, v)| {
            let value = burrow_proto::convert::value_from_wire(Some(v.clone())).to_json();
            (k.clone(), value)
        })
        .collect();
    Ok((sub.stream.clone(), params_key(&params)?))
}

/// Records the server's verdicts with a page: of the subscriptions `sent`, the refused ones
/// get their reason and the others are active (ones added meanwhile stay pending).
pub(crate) fn record_verdicts(
    tx: &Transaction<'_>,
    sent: &[v1::Subscription],
    refused: &[v1::SubscriptionError],
) -> Result<()> {
    let refused: Vec<((String, String), &v1::SubscriptionError)> = refused
        .iter()
        .filter_map(|e| e.subscription.as_ref().map(|s| (s, e)))
        .map(|(s, e)| wire_key(s).map(|k| (k, e)))
        .collect::<Result<_>>()?;
    for sub in sent {
        let key = wire_key(sub)?;
        match refused.iter().find(|(k, _)| *k == key) {
            Some((_, e)) => tx.execute(
                "UPDATE _burrow_subscriptions SET status = 'refused', code = ?3, reason = ?4
                 WHERE stream = ?1 AND params = ?2",
                params![key.0, key.1, e.code, e.message],
            )?,
            None => tx.execute(
                "UPDATE _burrow_subscriptions SET status = 'active', code = NULL, reason = NULL
                 WHERE stream = ?1 AND params = ?2",
                params![key.0, key.1],
            )?,
        };
    }
    Ok(())
}
