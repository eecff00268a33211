//! `burrow serve` and `burrow token`.

use crate::duration::parse_secs;
use anyhow::{Context, Result};
use burrow_core::Schema;
use burrow_server::{AuthConfig, ConfigFile, ServerConfig, config::load_or_create_secret};
use clap::Args;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Arguments of `burrow serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Directory for the database and the generated secret.
    #[arg(long)]
    data: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:4000", env = "BURROW_LISTEN_ADDR")]
    listen: String,
    /// The schema file (TOML).
    #[arg(long)]
    schema: PathBuf,
    /// HS256 secret; by default one is generated into DATA/secret on first start.
    #[arg(long, env = "BURROW_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// Config file (TOML): its [auth] and [limits] sections (docs/security.md).
    #[arg(long, value_name = "FILE", env = "BURROW_CONFIG")]
    config: Option<PathBuf>,
}

/// Arguments of `burrow token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The server's data directory (holds the secret).
    #[arg(long)]
    data: Option<PathBuf>,
    /// The user id (`sub` claim).
    #[arg(long)]
    user: String,
    /// Extra claims, `key=value` (repeatable).
    #[arg(long = "claim", value_name = "KEY=VALUE")]
    claims: Vec<String>,
    /// Lifetime, e.g. 30m, 1h, 7d.
    #[arg(long, default_value = "1h")]
    ttl: String,
    /// HS256 secret instead of the one in DATA/secret.
    #[arg(long, env = "BURROW_SECRET", hide_env_values = true)]
    secret: Option<String>,
}

/// Runs the server until Ctrl-C / SIGTERM.
pub fn serve(args: ServeArgs) -> Result<ExitCode> {
    let schema = Schema::from_file(&args.schema)?;
    let mut config = ServerConfig::new(args.data.clone(), schema);
    config.secret = args.secret.map(String::into_bytes);
    if let Some(path) = &args.config {
        let context = || format!("config file {}", path.display());
        let text = std::fs::read_to_string(path).with_context(context)?;
        let file = ConfigFile::parse(&text, path.parent().unwrap_or(Path::new("")))
            .with_context(context)?;
        file.apply(&mut config).with_context(context)?;
        // A bad rule stops the server with a message naming the rule and the position.
        let rules =
            burrow_core::rules::SyncRules::parse(&text, &config.schema).with_context(context)?;
        if rules.has_streams() && !rules.has_permissions() {
            eprintln!(
                "warning: {} has sync rules but no [[permissions]]: every user may write every row",
                path.display()
            );
        }
        if !rules.is_empty() {
            config.rules = Some(std::sync::Arc::new(rules));
        }
    }
    let auth = describe_auth(&config.auth);
    crate::runtime()?.block_on(async move {
        let server = burrow_server::spawn(config, &args.listen).await?;
        eprintln!(
            "burrow server listening on {} (data in {}; tokens: {auth})",
            server.url(),
            args.data.display()
        );
        shutdown_signal().await;
        eprintln!("shutting down");
        server.shutdown().await;
        Ok(ExitCode::SUCCESS)
    })
}

/// Which tokens the server accepts, for the start-up line.
fn describe_auth(auth: &AuthConfig) -> String {
    let mut out = match &auth.jwks_file {
        Some(path) if auth.allow_hs256 => {
            format!("RS256/ES256 from {} and HS256 dev tokens", path.display())
        }
        Some(path) => format!("RS256/ES256 from {}", path.display()),
        None => "HS256 dev tokens".to_string(),
    };
    if let Some(aud) = &auth.audience {
        out.push_str(&format!(", aud {aud}"));
    }
    if let Some(iss) = &auth.issuer {
        out.push_str(&format!(", iss {iss}"));
    }
    out
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Prints a token.
pub fn token(args: TokenArgs) -> Result<ExitCode> {
    let secret = match (args.secret, &args.data) {
        (Some(s), _) => s.into_bytes(),
        (None, Some(dir)) => load_or_create_secret(dir)?,
        (None, None) => anyhow::bail!("pass --data DIR (the server's data directory) or --secret"),
    };
    let mut extra = BTreeMap::new();
    for c in &args.claims {
        let (k, v) = c
            .split_once('=')
            .with_context(|| format!("claim {c:?} is not KEY=VALUE"))?;
        if matches!(k, "sub" | "exp" | "iat") {
            anyhow::bail!("claim {k} is set by burrow token itself");
        }
        extra.insert(k.to_string(), serde_json::Value::String(v.to_string()));
    }
    let ttl = parse_secs(&args.ttl).map_err(anyhow::Error::msg)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    println!(
        "{}",
        burrow_server::auth::mint(&secret, &args.user, extra, now, ttl)?
    );
    Ok(ExitCode::SUCCESS)
}
