//! Server configuration: data directory, schema, signing secret and request limits.

use crate::error::ServerError;
use crate::resolver::{CustomResolver, CustomResolvers};
use burrow_core::Schema;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Request limits; each error names the limit it hit.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest accepted (compressed) request body.
    pub body_bytes_max: usize,
    /// Largest accepted decompressed request.
    pub decoded_bytes_max: usize,
    /// Most ops in one request.
    pub ops_per_request_max: usize,
    /// Largest changes page (uncompressed estimate) the server returns.
    pub page_bytes_max: usize,
    /// Most simultaneous `GET /v1/live` connections per user (token `sub`).
    pub live_connections_per_user_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            body_bytes_max: 16 << 20,
            decoded_bytes_max: 64 << 20,
            ops_per_request_max: 50_000,
            page_bytes_max: 8 << 20,
            live_connections_per_user_max: 16,
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
    /// HS256 signing secret; `None` = read or create `DATA_DIR/secret`.
    pub secret: Option<Vec<u8>>,
    /// Request limits.
    pub limits: Limits,
    /// Resolvers for `custom:NAME` columns, by name.
    pub resolvers: CustomResolvers,
}

impl ServerConfig {
    /// A configuration with default limits and a secret kept in `data_dir`.
    pub fn new(data_dir: PathBuf, schema: Schema) -> Self {
        ServerConfig {
            data_dir,
            schema,
            secret: None,
            limits: Limits::default(),
            resolvers: CustomResolvers::new(),
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
            write_private(&path, &text).map_err(|e| io(&path, e))?;
            Ok(text.into_bytes())
        }
        Err(e) => Err(io(&path, e)),
    }
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
    std::fs::write(path, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create_secret(dir.path()).unwrap();
        let b = load_or_create_secret(dir.path()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 64);
    }
}
