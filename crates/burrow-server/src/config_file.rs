//! The `[auth]` and `[limits]` sections of the server's config file (`burrow.toml`,
//! `burrow serve --config FILE`). Other top-level keys and tables (`[rules]`, `[streams.*]`,
//! `[[permissions]]`, …) belong to other readers and are ignored here; an unknown key *inside*
//! `[auth]` or `[limits]` is an error naming it.
//!
//! ```toml
//! [auth]
//! jwks_file = "keys/jwks.json"   # relative to the config file's directory
//! audience = "burrow"
//! issuer = "https://id.example.com/"
//! allow_hs256 = false
//! leeway_secs = 30
//!
//! [limits]
//! body_bytes_max = 16777216
//! requests_per_second_per_user = 50
//! request_burst_per_user = 100
//! ```
//!
//! Every key is optional; an absent key keeps the value already in the [`ServerConfig`]
//! (the defaults, see [`AuthConfig`] and [`Limits`]).

use crate::config::{AuthConfig, Limits, ServerConfig};
use crate::error::ServerError;
use std::path::{Path, PathBuf};

/// The config file cannot be used; every variant names the file part at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// The file could not be read.
    #[error("config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// The text is not TOML.
    #[error("config file is not valid TOML: {0}")]
    Toml(String),
    /// `auth` or `limits` is not a table.
    #[error("[{section}] must be a table")]
    NotATable {
        /// `auth` or `limits`.
        section: &'static str,
    },
    /// A key inside `[auth]` or `[limits]` that does not exist.
    #[error("unknown key {key} in [{section}] (known keys: {known})")]
    UnknownKey {
        /// `auth` or `limits`.
        section: &'static str,
        /// The key as written.
        key: String,
        /// The section's keys, comma-separated.
        known: String,
    },
    /// A key whose value has the wrong type or range.
    #[error("{key}: {message}")]
    BadValue {
        /// `section.key`, e.g. `limits.body_bytes_max`.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// `[auth]` as written: each key that is set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuthSection {
    /// `jwks_file`, resolved against the config file's directory.
    pub jwks_file: Option<PathBuf>,
    /// `audience`: the expected `aud`.
    pub audience: Option<String>,
    /// `issuer`: the expected `iss`.
    pub issuer: Option<String>,
    /// `allow_hs256`: accept HS256 development tokens next to the JWKS.
    pub allow_hs256: Option<bool>,
    /// `leeway_secs`: clock skew tolerated on `exp`/`nbf`.
    pub leeway_secs: Option<u64>,
}

/// `[limits]` as written: each key that is set, named like its [`Limits`] field.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LimitsSection {
    /// [`Limits::body_bytes_max`].
    pub body_bytes_max: Option<usize>,
    /// [`Limits::decoded_bytes_max`].
    pub decoded_bytes_max: Option<usize>,
    /// [`Limits::ops_per_request_max`].
    pub ops_per_request_max: Option<usize>,
    /// [`Limits::page_bytes_max`].
    pub page_bytes_max: Option<usize>,
    /// [`Limits::page_rows_max`].
    pub page_rows_max: Option<usize>,
    /// [`Limits::live_connections_per_user_max`].
    pub live_connections_per_user_max: Option<usize>,
    /// [`Limits::requests_per_second_per_user`].
    pub requests_per_second_per_user: Option<f64>,
    /// [`Limits::request_burst_per_user`].
    pub request_burst_per_user: Option<u32>,
}

/// The server's part of a config file: `[auth]` and `[limits]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfigFile {
    /// `[auth]`.
    pub auth: AuthSection,
    /// `[limits]`.
    pub limits: LimitsSection,
}

const AUTH_KEYS: [&str; 5] = [
    "jwks_file",
    "audience",
    "issuer",
    "allow_hs256",
    "leeway_secs",
];

const LIMITS_KEYS: [&str; 8] = [
    "body_bytes_max",
    "decoded_bytes_max",
    "ops_per_request_max",
    "page_bytes_max",
    "page_rows_max",
    "live_connections_per_user_max",
    "requests_per_second_per_user",
    "request_burst_per_user",
];

impl ConfigFile {
    /// Reads and parses the file at `path`; `jwks_file` is resolved against its directory.
    pub fn load(path: &Path) -> Result<ConfigFile, ConfigFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
            path: path.display().to_string(),
            source,
        })?;
        ConfigFile::parse(&text, path.parent().unwrap_or(Path::new("")))
    }

    /// Parses the text of a config file whose directory is `base_dir` (relative paths in it
    /// are resolved against that directory).
    pub fn parse(text: &str, base_dir: &Path) -> Result<ConfigFile, ConfigFileError> {
        let doc: toml::Table =
            toml::from_str(text).map_err(|e| ConfigFileError::Toml(e.to_string()))?;
        let mut out = ConfigFile::default();
        if let Some(auth) = section(&doc, "auth", &AUTH_KEYS)? {
            let a = &mut out.auth;
            for (key, value) in auth {
                let k = Key::new("auth", key);
                match key.as_str() {
                    "jwks_file" => {
                        let p = PathBuf::from(k.non_empty_string(value)?);
                        a.jwks_file = Some(if p.is_absolute() { p } else { base_dir.join(p) });
                    }
                    "audience" => a.audience = Some(k.non_empty_string(value)?),
                    "issuer" => a.issuer = Some(k.non_empty_string(value)?),
                    "allow_hs256" => a.allow_hs256 = Some(k.boolean(value)?),
                    "leeway_secs" => a.leeway_secs = Some(k.count(value)?),
                    _ => {}
                }
            }
        }
        if let Some(limits) = section(&doc, "limits", &LIMITS_KEYS)? {
            let l = &mut out.limits;
            for (key, value) in limits {
                let k = Key::new("limits", key);
                match key.as_str() {
                    "body_bytes_max" => l.body_bytes_max = Some(k.count(value)?),
                    "decoded_bytes_max" => l.decoded_bytes_max = Some(k.count(value)?),
                    "ops_per_request_max" => l.ops_per_request_max = Some(k.count(value)?),
                    "page_bytes_max" => l.page_bytes_max = Some(k.count(value)?),
                    "page_rows_max" => l.page_rows_max = Some(k.count(value)?),
                    "live_connections_per_user_max" => {
                        l.live_connections_per_user_max = Some(k.count(value)?);
                    }
                    "requests_per_second_per_user" => {
                        l.requests_per_second_per_user = Some(k.rate(value)?);
                    }
                    "request_burst_per_user" => l.request_burst_per_user = Some(k.count(value)?),
                    _ => {}
                }
            }
        }
        Ok(out)
    }

    /// Writes every key that is set into `config`, then checks the resulting limits (a zero
    /// size, for instance, is refused here, naming its key).
    pub fn apply(&self, config: &mut ServerConfig) -> Result<(), ConfigFileError> {
        let a = &self.auth;
        let auth: &mut AuthConfig = &mut config.auth;
        if let Some(v) = &a.jwks_file {
            auth.jwks_file = Some(v.clone());
        }
        if let Some(v) = &a.audience {
            auth.audience = Some(v.clone());
        }
        if let Some(v) = &a.issuer {
            auth.issuer = Some(v.clone());
        }
        if let Some(v) = a.allow_hs256 {
            auth.allow_hs256 = v;
        }
        if let Some(v) = a.leeway_secs {
            auth.leeway_secs = v;
        }
        let l = &self.limits;
        let limits: &mut Limits = &mut config.limits;
        let sizes = [
            (l.body_bytes_max, &mut limits.body_bytes_max),
            (l.decoded_bytes_max, &mut limits.decoded_bytes_max),
            (l.ops_per_request_max, &mut limits.ops_per_request_max),
            (l.page_bytes_max, &mut limits.page_bytes_max),
            (l.page_rows_max, &mut limits.page_rows_max),
            (
                l.live_connections_per_user_max,
                &mut limits.live_connections_per_user_max,
            ),
        ];
        for (set, field) in sizes {
            if let Some(v) = set {
                *field = v;
            }
        }
        if let Some(v) = l.requests_per_second_per_user {
            limits.requests_per_second_per_user = v;
        }
        if let Some(v) = l.request_burst_per_user {
            limits.request_burst_per_user = v;
        }
        limits.check().map_err(|e| match e {
            ServerError::InvalidLimit { name, message } => ConfigFileError::BadValue {
                key: format!("limits.{name}"),
                message,
            },
            other => ConfigFileError::BadValue {
                key: "limits".into(),
                message: other.to_string(),
            },
        })
    }
}

/// The table `name` of `doc`, if present, after checking its keys against `known`.
fn section<'a>(
    doc: &'a toml::Table,
    name: &'static str,
    known: &[&str],
) -> Result<Option<&'a toml::Table>, ConfigFileError> {
    let Some(value) = doc.get(name) else {
        return Ok(None);
    };
    let table = value
        .as_table()
        .ok_or(ConfigFileError::NotATable { section: name })?;
    if let Some(key) = table.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(ConfigFileError::UnknownKey {
            section: name,
            key: key.clone(),
            known: known.join(", "),
        });
    }
    Ok(Some(table))
}

/// A key being read, for error messages.
struct Key {
    name: String,
}

impl Key {
    fn new(section: &str, key: &str) -> Key {
        Key {
            name: format!("{section}.{key}"),
        }
    }

    fn bad(&self, message: impl Into<String>) -> ConfigFileError {
        ConfigFileError::BadValue {
            key: self.name.clone(),
            message: message.into(),
        }
    }

    fn non_empty_string(&self, v: &toml::Value) -> Result<String, ConfigFileError> {
        match v.as_str() {
            Some("") => Err(self.bad("must not be empty")),
            Some(s) => Ok(s.to_string()),
            None => Err(self.bad(format!("expected a string, found {}", v.type_str()))),
        }
    }

    fn boolean(&self, v: &toml::Value) -> Result<bool, ConfigFileError> {
        v.as_bool()
            .ok_or_else(|| self.bad(format!("expected true or false, found {}", v.type_str())))
    }

    /// A non-negative integer that fits `T`.
    fn count<T: TryFrom<i64>>(&self, v: &toml::Value) -> Result<T, ConfigFileError> {
        let n = v.as_integer().ok_or_else(|| {
            self.bad(format!(
                "expected a non-negative integer, found {}",
                v.type_str()
            ))
        })?;
        if n < 0 {
            return Err(self.bad(format!("{n} is negative")));
        }
        T::try_from(n).map_err(|_| self.bad(format!("{n} is too large")))
    }

    /// A finite, non-negative number (integer or float).
    fn rate(&self, v: &toml::Value) -> Result<f64, ConfigFileError> {
        let r = match v {
            toml::Value::Integer(i) => *i as f64,
            toml::Value::Float(f) => *f,
            other => {
                return Err(self.bad(format!("expected a number, found {}", other.type_str())));
            }
        };
        if !r.is_finite() || r < 0.0 {
            return Err(self.bad(format!("{r} is not a rate (0 turns the limit off)")));
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ServerConfig {
        let schema = burrow_core::Schema::from_toml_str(
            "version = 1\n[tables.notes.columns]\nbody = \"text\"\n",
        )
        .unwrap();
        ServerConfig::new("/tmp/unused".into(), schema)
    }

    #[test]
    fn every_key_is_read_and_applied() {
        let text = r#"
            version = 1
            [rules]
            anything = "goes"
            [streams.mine]
            query = "SELECT 1"
            [[permissions]]
            table = "notes"

            [auth]
            jwks_file = "keys/jwks.json"
            audience = "burrow"
            issuer = "https://id.example.com/"
            allow_hs256 = true
            leeway_secs = 5

            [limits]
            body_bytes_max = 1000
            decoded_bytes_max = 2000
            ops_per_request_max = 30
            page_bytes_max = 4000
            page_rows_max = 50
            live_connections_per_user_max = 0
            requests_per_second_per_user = 2.5
            request_burst_per_user = 7
        "#;
        let file = ConfigFile::parse(text, Path::new("/etc/burrow")).unwrap();
        assert_eq!(
            file.auth.jwks_file.as_deref(),
            Some(Path::new("/etc/burrow/keys/jwks.json"))
        );
        let mut c = config();
        file.apply(&mut c).unwrap();
        assert_eq!(
            c.auth,
            AuthConfig {
                jwks_file: Some("/etc/burrow/keys/jwks.json".into()),
                audience: Some("burrow".into()),
                issuer: Some("https://id.example.com/".into()),
                allow_hs256: true,
                leeway_secs: 5,
            }
        );
        assert_eq!(
            c.limits,
            Limits {
                body_bytes_max: 1000,
                decoded_bytes_max: 2000,
                ops_per_request_max: 30,
                page_bytes_max: 4000,
                page_rows_max: 50,
                live_connections_per_user_max: 0,
                requests_per_second_per_user: 2.5,
                request_burst_per_user: 7,
            }
        );
    }

    #[test]
    fn absent_sections_and_keys_keep_the_defaults() {
        let file = ConfigFile::parse("[limits]\npage_rows_max = 10\n", Path::new(".")).unwrap();
        let mut c = config();
        file.apply(&mut c).unwrap();
        assert_eq!(c.auth, AuthConfig::default());
        assert_eq!(
            c.limits,
            Limits {
                page_rows_max: 10,
                ..Limits::default()
            }
        );
        let empty = ConfigFile::parse("", Path::new(".")).unwrap();
        assert_eq!(empty, ConfigFile::default());
        // An integer rate and an absolute JWKS path.
        let file = ConfigFile::parse(
            "[auth]\njwks_file = \"/k.json\"\n[limits]\nrequests_per_second_per_user = 3\n",
            Path::new("/etc"),
        )
        .unwrap();
        assert_eq!(file.auth.jwks_file.as_deref(), Some(Path::new("/k.json")));
        assert_eq!(file.limits.requests_per_second_per_user, Some(3.0));
    }

    fn error(text: &str) -> String {
        match ConfigFile::parse(text, Path::new(".")) {
            Ok(file) => file.apply(&mut config()).unwrap_err().to_string(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn errors_name_the_key() {
        let e = error("[auth]\naudiance = \"x\"\n");
        assert!(e.contains("audiance") && e.contains("[auth]"), "{e}");
        let e = error("[limits]\nbody_bytes = 5\n");
        assert!(e.contains("body_bytes") && e.contains("[limits]"), "{e}");
        let e = error("[limits]\nbody_bytes_max = -1\n");
        assert!(e.contains("limits.body_bytes_max"), "{e}");
        let e = error("[limits]\nbody_bytes_max = \"16MiB\"\n");
        assert!(e.contains("limits.body_bytes_max"), "{e}");
        let e = error("[limits]\nrequest_burst_per_user = 5000000000\n");
        assert!(e.contains("limits.request_burst_per_user"), "{e}");
        let e = error("[limits]\nrequests_per_second_per_user = -2\n");
        assert!(e.contains("limits.requests_per_second_per_user"), "{e}");
        let e = error("[limits]\npage_rows_max = 0\n");
        assert!(e.contains("limits.page_rows_max"), "{e}");
        let e = error("[auth]\nallow_hs256 = \"yes\"\n");
        assert!(e.contains("auth.allow_hs256"), "{e}");
        let e = error("[auth]\naudience = \"\"\n");
        assert!(e.contains("auth.audience"), "{e}");
        let e = error("auth = 3\n");
        assert!(e.contains("[auth]"), "{e}");
        let e = error("[auth\n");
        assert!(e.contains("TOML"), "{e}");
    }

    #[test]
    fn load_resolves_against_the_file_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("burrow.toml");
        std::fs::write(&path, "[auth]\njwks_file = \"jwks.json\"\n").unwrap();
        let file = ConfigFile::load(&path).unwrap();
        assert_eq!(file.auth.jwks_file, Some(dir.path().join("jwks.json")));
        assert!(matches!(
            ConfigFile::load(&dir.path().join("missing.toml")),
            Err(ConfigFileError::Read { .. })
        ));
    }
}
