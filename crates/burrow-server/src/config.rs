//! Server configuration: data directory, schema, token verification and request limits.

use crate::error::ServerError;
use crate::resolver::{CustomResolver, CustomResolvers};
use burrow_core::Schema;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Request limits; each error names the limit it hit (`docs/security.md`).
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Largest accepted (compressed) request body.
    pub body_bytes_max: usize,
    /// Largest accepted decompressed request.
    pub decoded_bytes_max: usize,
    /// Most ops in one request.
    pub ops_per_request_max: usize,
    /// Largest changes page (uncompressed estimate) the server returns.
    pub page_bytes_max: usize,
    /// Most rows one changes page reads.
    pub page_rows_max: usize,
    /// Most simultaneous `GET /v1/live` connections per user (token `sub`).
    pub live_connections_per_user_max: usize,
    /// Sustained authenticated requests per second per user (token `sub`), a token bucket
    /// refilled at this rate; 0 turns the rate limit off.
    pub requests_per_second_per_user: f64,
    /// The bucket's size: how many requests a user may send at once after being idle.
    pub request_burst_per_user: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            body_bytes_max: 16 << 20,
            decoded_bytes_max: 64 << 20,
            ops_per_request_max: 50_000,
            page_bytes_max: 8 << 20,
            page_rows_max: 50_000,
            live_connections_per_user_max: 16,
            requests_per_second_per_user: 50.0,
            request_burst_per_user: 100,
        }
    }
}

impl Limits {
    /// Fails on a value the server cannot work with, naming the limit: a zero size or count
    /// (every request or page would fail), a negative or non-finite rate, a zero burst with
    /// a rate limit on.
    pub fn check(&self) -> Result<(), ServerError> {
        let positive = [
            ("body_bytes_max", self.body_bytes_max),
            ("decoded_bytes_max", self.decoded_bytes_max),
            ("ops_per_request_max", self.ops_per_request_max),
            ("page_bytes_max", self.page_bytes_max),
            ("page_rows_max", self.page_rows_max),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(ServerError::InvalidLimit {
                    name,
                    message: "must be at least 1".into(),
                });
            }
        }
        let rate = self.requests_per_second_per_user;
        if !rate.is_finite() || rate < 0.0 {
            return Err(ServerError::InvalidLimit {
                name: "requests_per_second_per_user",
                message: format!("{rate} is not a rate (0 turns the limit off)"),
            });
        }
        if rate > 0.0 && self.request_burst_per_user == 0 {
            return Err(ServerError::InvalidLimit {
                name: "request_burst_per_user",
                message: "must be at least 1 while requests_per_second_per_user is set".into(),
            });
        }
        Ok(())
    }
}

/// How bearer tokens are verified (`[auth]` in the config file; `docs/security.md`).
#[derive(Debug, Clone, PartialEq)]
pub struct AuthConfig {
    /// A JWKS file with the RS256/ES256 public keys of the identity provider. Without one,
    /// only HS256 development tokens (the server secret) are accepted.
    pub jwks_file: Option<PathBuf>,
    /// The expected `aud`: when set, a token must carry it.
    pub audience: Option<String>,
    /// The expected `iss`: when set, a token must carry it.
    pub issuer: Option<String>,
    /// Also accept HS256 development tokens while a JWKS is configured.
    pub allow_hs256: bool,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            jwks_file: None,
            audience: None,
            issuer: None,
            allow_hs256: false,
            leeway_secs: 30,
        }
    }
}

/// Everything the server needs to run.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Directory holding the database and the generated secret.
    pub data_dir: PathBuf,
    /// The schema the server serves.
    pub schema: Schema,
    /// HS256 signing secret; `None` = read or create `DATA_DIR/secret` (only when HS256
    /// tokens are accepted, see [`crate::auth::hs256_accepted`]).
    pub secret: Option<Vec<u8>>,
    /// Token verification.
    pub auth: AuthConfig,
    /// Request limits.
    pub limits: Limits,
    /// Resolvers for `custom:NAME` columns, by name.
    pub resolvers: CustomResolvers,
    /// Sync rules and write permissions (`[streams.*]`, `[[permissions]]` of `burrow.toml`,
    /// docs/sync-rules.md); `None`: every user reads and writes everything.
    pub rules: Option<Arc<burrow_core::rules::SyncRules>>,
}

impl ServerConfig {
    /// A configuration with default limits and a secret kept in `data_dir`.
    pub fn new(data_dir: PathBuf, schema: Schema) -> Self {
        ServerConfig {
            data_dir,
            schema,
            secret: None,
            auth: AuthConfig::default(),
            limits: Limits::default(),
            resolvers: CustomResolvers::new(),
            rules: None,
        }
    }

    /// Registers the resolver for columns with policy `custom:NAME`.
    pub fn register_resolver(&mut self, name: &str, resolver: impl CustomResolver + 'static) {
        self.resolvers.insert(name.to_string(), Arc::new(resolver));
    }

    /// Fails when a `custom:NAME` column has no registered resolver.
    pub fn check_resolvers(&self) -> Result<(), ServerError> {
        match crate::resolver::missing_resolver(&self.schema, &self.resolvers) {
            Some((column, name)) => Err(ServerError::MissingResolver { column, name }),
            None => Ok(()),
        }
    }

    /// The signing secret: the configured one, or `DATA_DIR/secret`, created on first use.
    pub fn resolve_secret(&self) -> Result<Vec<u8>, ServerError> {
        if let Some(s) = &self.secret {
            return Ok(s.clone());
        }
        load_or_create_secret(&self.data_dir)
    }
}

/// Name of the file holding the generated HS256 secret.
pub const SECRET_FILE: &str = "secret";

/// Reads `dir/secret`, creating it (32 random bytes, hex, mode 0600) if absent.
pub fn load_or_create_secret(dir: &Path) -> Result<Vec<u8>, ServerError> {
    let io = |path: &Path, e: std::io::Error| ServerError::DataDir {
        path: path.display().to_string(),
        source: e,
    };
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let path = dir.join(SECRET_FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok(s.trim().as_bytes().to_vec()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let bytes: [u8; 32] = rand::random();
            let text = hex::encode(bytes);
            match publish_private(dir, &path, &text) {
                Ok(()) => Ok(text.into_bytes()),
                // Another process (a server starting, `burrow token`) created it first: theirs
                // is the secret, whole, because it was published only once written.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let s = std::fs::read_to_string(&path).map_err(|e| io(&path, e))?;
                    Ok(s.trim().as_bytes().to_vec())
                }
                Err(e) => Err(io(&path, e)),
            }
        }
        Err(e) => Err(io(&path, e)),
    }
}

/// Writes `text` to a private temporary file in `dir`, syncs it, then links it to `path`,
/// which fails with `AlreadyExists` if `path` exists: a reader never sees a half-written
/// secret, and of two racing creators exactly one wins.
fn publish_private(dir: &Path, path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = dir.join(format!(
        ".{SECRET_FILE}.{}.{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    let linked = write_private(&tmp, text).and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    linked?;
    if let Ok(d) = std::fs::File::open(dir) {
        // Make the new name durable; not every platform can sync a directory.
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_check_names_the_limit() {
        assert!(Limits::default().check().is_ok());
        let zero_rows = Limits {
            page_rows_max: 0,
            ..Limits::default()
        };
        assert!(
            zero_rows
                .check()
                .unwrap_err()
                .to_string()
                .contains("page_rows_max")
        );
        let nan = Limits {
            requests_per_second_per_user: f64::NAN,
            ..Limits::default()
        };
        assert!(
            nan.check()
                .unwrap_err()
                .to_string()
                .contains("requests_per_second_per_user")
        );
        let no_burst = Limits {
            request_burst_per_user: 0,
            ..Limits::default()
        };
        assert!(
            no_burst
                .check()
                .unwrap_err()
                .to_string()
                .contains("request_burst_per_user")
        );
        let off = Limits {
            requests_per_second_per_user: 0.0,
            request_burst_per_user: 0,
            ..Limits::default()
        };
        assert!(off.check().is_ok());
    }

    #[test]
    fn racing_creators_agree_on_one_secret() {
        for _ in 0..100 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().to_path_buf();
            let start = std::sync::Arc::new(std::sync::Barrier::new(8));
            let threads: Vec<_> = (0..8)
                .map(|_| {
                    let (p, start) = (path.clone(), start.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        load_or_create_secret(&p)
                    })
                })
                .collect();
            let secrets: Vec<Vec<u8>> = threads
                .into_iter()
                .map(|t| t.join().unwrap().unwrap())
                .collect();
            assert_eq!(secrets[0].len(), 64);
            assert!(secrets.iter().all(|s| s == &secrets[0]));
            assert_eq!(load_or_create_secret(&path).unwrap(), secrets[0]);
            let left: Vec<_> = std::fs::read_dir(&path).unwrap().collect();
            assert_eq!(left.len(), 1, "no temporary file left behind");
        }
    }

    #[test]
    fn secret_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create_secret(dir.path()).unwrap();
        let b = load_or_create_secret(dir.path()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 64);
    }
}
