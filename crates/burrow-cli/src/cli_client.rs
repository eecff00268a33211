//! `burrow client …`: a scriptable client over a local database file.

use anyhow::{Context, Result};
use burrow_client::{Client, FailureKind, HttpTransport};
use burrow_core::Schema;
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The HTTP transport to `server` with `token` (required), trusting the `--ca-cert` bundle
/// besides the system's roots.
fn transport(server: &str, token: Option<&str>, ca_cert: Option<&Path>) -> Result<HttpTransport> {
    let token = token.context("--token (or BURROW_TOKEN) is required to reach the server")?;
    let Some(path) = ca_cert else {
        return Ok(HttpTransport::new(server, token)?);
    };
    let pem = std::fs::read(path).with_context(|| format!("--ca-cert {}", path.display()))?;
    let roots = burrow_client::ExtraRoots::from_pem(&pem)
        .with_context(|| format!("--ca-cert {}", path.display()))?;
    Ok(HttpTransport::with_extra_roots(server, token, roots)?)
}

/// Arguments shared by every `client` subcommand.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The client database file.
    #[arg(long, global = true)]
    db: Option<PathBuf>,
    /// Schema file; required when the database is new, applied as a migration otherwise.
    #[arg(long, global = true)]
    schema: Option<PathBuf>,
    /// Bearer token for the server.
    #[arg(long, global = true, env = "BURROW_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// PEM file of root certificates to trust besides the system's, for an https:// server
    /// behind a private CA (sync requests and live push alike).
    #[arg(long, global = true, env = "BURROW_CA_CERT")]
    ca_cert: Option<PathBuf>,
    #[command(subcommand)]
    command: ClientCommand,
}

#[derive(Debug, Subcommand)]
enum ClientCommand {
    /// Run `;`-separated SQL statements in one local transaction (captured for sync).
    Exec {
        /// The SQL.
        sql: String,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        /// Upload lane of the captured ops (critical, normal or bulk) instead of each table's.
        #[arg(long)]
        priority: Option<String>,
    },
    /// Run a query and print its rows.
    Query {
        /// The SQL.
        sql: String,
        /// Print rows as a JSON array of objects.
        #[arg(long)]
        json: bool,
    },
    /// Upload everything pending and download to the server's head.
    Sync {
        /// Server base URL, e.g. http://127.0.0.1:4000.
        #[arg(long, env = "BURROW_URL")]
        server: String,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// The network: offline (attempt nothing), metered (critical lane only, small pages)
        /// or unmetered.
        #[arg(long, default_value = "unmetered")]
        network: String,
        /// The battery is low: defer the bulk lane.
        #[arg(long)]
        low_battery: bool,
        /// While syncing, run this query through the library every 5 ms, as an app would,
        /// and report its latency (`read_probe` in `--json`): how long app reads wait.
        #[arg(long, hide = true)]
        probe_read: Option<String>,
    },
    /// Crash-test writer: commits transactions into `scans` forever (see `workload.rs`).
    #[command(hide = true)]
    Workload(crate::workload::WorkloadArgs),
    /// Show the sync state.
    Status {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the conflict records this device is involved in (manual ones stay `open` until
    /// resolved).
    Conflicts {
        /// Print as a JSON array of records.
        #[arg(long)]
        json: bool,
        /// Only open (manual, unresolved) conflicts.
        #[arg(long)]
        open: bool,
    },
    /// Keep the client in sync until interrupted: syncs on writes, polls, backs off after
    /// failures, waits offline or for a new token; prints a line per sync.
    Run(crate::run_cmd::RunArgs),
    /// Like `run`, printing every event as a JSON line (`{"event": "state", …}`).
    Watch(crate::run_cmd::RunArgs),
    /// Subscribe to a parameterised stream of the server's sync rules, e.g.
    /// `subscribe job_manuals job_id=j42` (sent with the next sync).
    Subscribe {
        /// The stream's name.
        stream: String,
        /// Parameters as NAME=VALUE (a JSON number or boolean, else text).
        params: Vec<String>,
    },
    /// Drop a subscription (its rows leave the device at the next sync).
    Unsubscribe {
        /// The stream's name.
        stream: String,
        /// Parameters as NAME=VALUE, as subscribed.
        params: Vec<String>,
    },
    /// List the subscriptions with the server's verdict (`pending`, `active`, `refused`).
    Subscriptions {
        /// Print as a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// List the ops the server refused (quarantined: they block nothing).
    Rejected {
        /// Print as a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Queue a refused op (and the rest of its refused transaction) again, optionally edited.
    Retry {
        /// The op's sequence (`client_seq` in `rejected`).
        seq: u64,
        /// Replacement values: a JSON object of columns.
        #[arg(long)]
        data: Option<String>,
    },
    /// Drop a refused op for good.
    Discard {
        /// The op's sequence (`client_seq` in `rejected`).
        seq: u64,
    },
    /// Resolve an open manual conflict: keep one version, or store a merged value.
    #[command(group(clap::ArgGroup::new("choice").required(true).args(["pick", "value"])))]
    Resolve {
        /// The conflict id (see `conflicts`).
        id: String,
        /// Keep the version with this index (the `version` field of `conflicts --json`).
        #[arg(long)]
        pick: Option<usize>,
        /// Store this JSON value instead (a JSON object of columns for a whole-row conflict).
        #[arg(long)]
        value: Option<String>,
    },
}

fn open(args: &ClientArgs) -> Result<Client> {
    let db = args.db.as_ref().context("--db FILE is required")?;
    match &args.schema {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read schema file {}", path.display()))?;
            let schema = Schema::from_toml_str(&text)?;
            Ok(Client::open_with(
                db,
                &schema,
                Some(&text),
                Default::default(),
            )?)
        }
        None => Ok(Client::open_existing(db)?),
    }
}

/// Peak resident set size of this process in bytes (Linux), for reports.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn print_rows(rows: &[serde_json::Map<String, serde_json::Value>]) {
    for row in rows {
        let cells: Vec<String> = row
            .values()
            .map(|v| match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect();
        println!("{}", cells.join("\t"));
    }
}

/// Runs a `client` subcommand.
pub fn run(args: ClientArgs) -> Result<ExitCode> {
    let client = open(&args)?;
    match &args.command {
        ClientCommand::Run(r) => {
            let transport = transport(&r.server, args.token.as_deref(), args.ca_cert.as_deref())?;
            return crate::run_cmd::run(client, transport, r, false);
        }
        ClientCommand::Watch(r) => {
            let transport = transport(&r.server, args.token.as_deref(), args.ca_cert.as_deref())?;
            return crate::run_cmd::run(client, transport, r, true);
        }
        ClientCommand::Exec {
            sql,
            json,
            priority,
        } => {
            let r = match priority {
                None => client.execute(sql)?,
                Some(p) => {
                    let p = burrow_core::Priority::parse(p).with_context(|| {
                        format!("--priority {p:?}: expected critical, normal or bulk")
                    })?;
                    client.write_with_priority(p, |tx| tx.execute_batch(sql))?.1
                }
            };
            if *json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "{} rows changed, {} ops captured",
                    r.rows_changed, r.ops_captured
                );
            }
        }
        ClientCommand::Query { sql, json } => {
            let rows = client.query_json(sql)?;
            if *json {
                println!("{}", serde_json::to_string(&rows)?);
            } else {
                print_rows(&rows);
            }
        }
        ClientCommand::Workload(w) => {
            return crate::workload::run(&client, w, args.token.as_deref());
        }
        ClientCommand::Status { json } => {
            let s = client.status()?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                println!("client_id     {}", s.client_id);
                println!("pending_ops   {}", s.pending_ops);
                println!("cursor        {}", s.cursor);
                println!(
                    "last_sync_at  {}",
                    s.last_sync_at.as_deref().unwrap_or("never")
                );
                println!("rejected_ops  {}", s.rejected_ops);
                for r in &s.rejected {
                    println!(
                        "  #{} {} {}/{}: {} ({})",
                        r.client_seq, r.kind, r.table, r.row_id, r.message, r.code
                    );
                }
                println!("conflicts     {}", s.conflicts);
                println!("open_conflicts {}", s.open_conflicts);
                if let Some(e) = &s.last_error {
                    println!("last_error    {e}");
                }
                if let Some(r) = &s.recovery {
                    println!(
                        "recovery      rebuilt {} ({}): {} ops restored{}",
                        burrow_client::client::rfc3339_ms(r.at_ms),
                        r.reason,
                        r.ops_restored,
                        if r.awaiting_full_pull {
                            ", full pull pending"
                        } else {
                            ""
                        }
                    );
                }
            }
        }
        ClientCommand::Conflicts { json, open } => {
            let list: Vec<_> = client
                .conflicts()?
                .into_iter()
                .filter(|c| !open || c.status == burrow_core::conflict::ConflictStatus::Open)
                .collect();
            if *json {
                let with_index: Vec<serde_json::Value> = list
                    .iter()
                    .map(|c| {
                        let mut v = serde_json::to_value(c).unwrap_or_default();
                        if let Some(vs) = v["versions"].as_array_mut() {
                            for (i, x) in vs.iter_mut().enumerate() {
                                x["version"] = serde_json::json!(i);
                            }
                        }
                        v
                    })
                    .collect();
                println!("{}", serde_json::to_string(&with_index)?);
            } else {
                for c in &list {
                    println!(
                        "{} {} {}/{}.{} ({})",
                        c.id,
                        c.status.as_str(),
                        c.table,
                        c.row_id,
                        c.column,
                        c.reason
                    );
                    for (i, v) in c.versions.iter().enumerate() {
                        println!(
                            "  [{i}]{} {} by {} at {}",
                            if v.won { "*" } else { " " },
                            if v.deleted {
                                "<deleted>".to_string()
                            } else {
                                v.value.to_string()
                            },
                            v.client.as_deref().unwrap_or("?"),
                            burrow_client::client::rfc3339_ms(v.time_ms)
                        );
                    }
                }
            }
        }
        ClientCommand::Rejected { json } => {
            let ops = client.rejected_ops()?;
            if *json {
                println!("{}", serde_json::to_string(&ops)?);
            } else {
                for r in &ops {
                    println!(
                        "#{} {} {}/{}: {} ({}) {}",
                        r.client_seq,
                        r.kind,
                        r.table,
                        r.row_id,
                        r.message,
                        r.code,
                        r.data.as_ref().map(|d| d.to_string()).unwrap_or_default()
                    );
                }
            }
        }
        ClientCommand::Retry { seq, data } => {
            let data = match data {
                None => None,
                Some(text) => match serde_json::from_str::<serde_json::Value>(text)
                    .with_context(|| format!("--data {text:?} is not JSON"))?
                {
                    serde_json::Value::Object(obj) => Some(obj),
                    _ => anyhow::bail!("--data must be a JSON object of columns"),
                },
            };
            let new_seq = client.retry_rejected(*seq, data)?;
            println!("op {seq} queued again as op {new_seq} (sync to send it)");
        }
        ClientCommand::Subscribe { stream, params } => {
            client.subscribe(stream, parse_params(params)?)?;
            println!("subscribed to {stream} (sync to send it)");
        }
        ClientCommand::Unsubscribe { stream, params } => {
            if client.unsubscribe(stream, parse_params(params)?)? {
                println!("unsubscribed from {stream} (sync to remove its rows)");
            } else {
                anyhow::bail!("no such subscription to {stream}");
            }
        }
        ClientCommand::Subscriptions { json } => {
            let subs = client.subscriptions()?;
            if *json {
                println!("{}", serde_json::to_string(&subs)?);
            } else {
                for s in &subs {
                    let params = serde_json::Value::Object(s.params.clone());
                    match &s.reason {
                        Some(reason) => println!("{} {params} {}: {reason}", s.stream, s.status),
                        None => println!("{} {params} {}", s.stream, s.status),
                    }
                }
            }
        }
        ClientCommand::Discard { seq } => {
            client.discard_rejected(*seq)?;
            println!("op {seq} discarded");
        }
        ClientCommand::Resolve { id, pick, value } => {
            let resolution = match (pick, value) {
                (Some(i), _) => burrow_client::Resolution::Pick(*i),
                (None, Some(v)) => burrow_client::Resolution::Value(
                    serde_json::from_str(v)
                        .with_context(|| format!("--value {v:?} is not JSON"))?,
                ),
                (None, None) => anyhow::bail!("give --pick VERSION or --value JSON"),
            };
            let chosen = client.resolve(id, resolution)?;
            println!("resolved {id}: {chosen} (sync to send the resolution)");
        }
        ClientCommand::Sync {
            server,
            json,
            network,
            low_battery,
            probe_read,
        } => {
            let network = burrow_client::Network::parse(network).with_context(|| {
                format!("--network {network:?}: expected offline, metered or unmetered")
            })?;
            client.set_network(burrow_client::NetworkState {
                network,
                low_battery: *low_battery,
            });
            let transport = transport(server, args.token.as_deref(), args.ca_cert.as_deref())?;
            let runtime = crate::runtime()?;
            let (result, probe) = match probe_read {
                Some(sql) => {
                    let (r, p) =
                        probe_reads(&client, sql, || runtime.block_on(client.sync(&transport)));
                    (r, Some(p))
                }
                None => (runtime.block_on(client.sync(&transport)), None),
            };
            match result {
                Ok(r) => {
                    if *json {
                        let mut v = serde_json::to_value(&r)?;
                        v["peak_rss_bytes"] = serde_json::json!(peak_rss_bytes());
                        if let Some(p) = probe {
                            v["read_probe"] = p;
                        }
                        println!("{v}");
                    } else {
                        println!(
                            "synced: {} ops sent, {} acked, {} rejected, {} conflicts, {} changes received, cursor {}",
                            r.ops_sent,
                            r.ops_acked,
                            r.ops_rejected,
                            r.conflicts,
                            r.changes_received,
                            r.cursor
                        );
                    }
                }
                Err(e) => {
                    eprintln!("sync failed: {}", e.to_string().replace('\n', " "));
                    let kind = e.failure_kind();
                    return Ok(ExitCode::from(if kind == FailureKind::Unauthorized {
                        crate::EXIT_AUTH
                    } else if kind.is_network() {
                        crate::EXIT_UNAVAILABLE
                    } else {
                        1
                    }));
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `NAME=VALUE` pairs as subscription parameters: a JSON number or boolean, else text.
fn parse_params(pairs: &[String]) -> Result<serde_json::Map<String, serde_json::Value>> {
    let mut out = serde_json::Map::new();
    for p in pairs {
        let (k, v) = p
            .split_once('=')
            .with_context(|| format!("parameter {p:?} is not NAME=VALUE"))?;
        let value = match serde_json::from_str::<serde_json::Value>(v) {
            Ok(n @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => n,
            _ => serde_json::Value::String(v.to_string()),
        };
        out.insert(k.to_string(), value);
    }
    Ok(out)
}

/// Runs `work` while another thread reads `sql` through the library every 5 ms (as an app's
/// UI would); returns `work`'s result and the reads' latency summary (count, p50, p99, max
/// in ms, and the reads that failed).
fn probe_reads<T>(
    client: &burrow_client::Client,
    sql: &str,
    work: impl FnOnce() -> T,
) -> (T, serde_json::Value) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let (mut lat, mut failed) = (Vec::new(), 0u64);
            // At least one read, even when the work is over at once.
            loop {
                let t = std::time::Instant::now();
                if client.query_json(sql).is_err() {
                    failed += 1;
                }
                lat.push(t.elapsed().as_secs_f64() * 1e3);
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            (lat, failed)
        });
        let out = work();
        stop.store(true, Ordering::Relaxed);
        let (mut lat, failed) = reader.join().unwrap_or_default();
        lat.sort_by(f64::total_cmp);
        let at = |q: f64| -> f64 {
            if lat.is_empty() {
                return 0.0;
            }
            lat[((lat.len() - 1) as f64 * q).round() as usize]
        };
        let summary = serde_json::json!({
            "reads": lat.len(),
            "failed": failed,
            "p50_ms": at(0.5),
            "p99_ms": at(0.99),
            "max_ms": lat.last().copied().unwrap_or(0.0),
        });
        (out, summary)
    })
}
