//! Bearer tokens: JWTs with `sub` (the user), `exp`, and any custom claims.
//!
//! A [`Verifier`] (built from [`AuthConfig`](crate::config::AuthConfig) by
//! [`Verifier::from_config`]) checks them:
//! - **HS256** with the server's shared secret: development tokens (`burrow token`, [`mint`]).
//!   Accepted when no JWKS is configured, or when `allow_hs256` is set.
//! - **RS256 and ES256** (P-256) with the public keys of a JWKS file, chosen by the token's
//!   `kid`. A token without `kid` (or a JWKS key without `kid`) is usable only when the JWKS
//!   holds exactly one key.
//!
//! The algorithm comes from the key, never from the token: an HS256 token is only ever
//! checked with the HS256 secret, an RS256/ES256 token only with a JWKS key that declares (by
//! `alg`, or by its key type when `alg` is absent) that same algorithm. `alg: none` and every
//! other algorithm are refused. Keys named by the token itself (`jku`, `jwk`, `x5u`, `x5c`) are
//! ignored, and a token with `crit` header parameters is refused.
//!
//! Claims: `exp` and `sub` are required; `exp` and, when present, `nbf` are checked with
//! `leeway_secs`; `aud` and `iss` are checked when an audience or issuer is configured (and
//! then required).

use crate::config::{AuthConfig, ServerConfig};
use crate::error::ServerError;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The claims Burrow reads from a token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Issued at, seconds since the Unix epoch.
    #[serde(default)]
    pub iat: u64,
    /// Any other claim (`role`, `region`, `aud`, `iss`, `nbf`, …), used by sync rules.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// Why a token was refused; every variant maps to HTTP 401 with [`AuthError::code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer …` header, or an empty token.
    #[error("missing bearer token")]
    Missing,
    /// `exp` is in the past (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("token not valid yet (nbf is in the future)")]
    NotYetValid,
    /// An audience is configured and the token's `aud` is missing or does not name it.
    #[error("token audience (aud) is missing or not this server's audience")]
    WrongAudience,
    /// An issuer is configured and the token's `iss` is missing or another one.
    #[error("token issuer (iss) is missing or not the expected issuer")]
    WrongIssuer,
    /// The signature does not verify with the key the token's header selects, or no key
    /// matches the token's `kid`.
    #[error("bad token signature: {0}")]
    BadSignature(String),
    /// The token's algorithm is not accepted here (`none`, an unsupported one, HS256 when
    /// HS256 is off, or not the algorithm its key declares).
    #[error("token algorithm refused: {0}")]
    AlgorithmRefused(String),
    /// Anything else: not a bearer scheme, a malformed token, a missing `sub`/`exp`.
    #[error("invalid token: {0}")]
    Invalid(String),
}

impl AuthError {
    /// Stable machine code for the error body.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "token_missing",
            AuthError::Expired => "token_expired",
            AuthError::NotYetValid => "token_not_yet_valid",
            AuthError::WrongAudience => "token_wrong_audience",
            AuthError::WrongIssuer => "token_wrong_issuer",
            AuthError::BadSignature(_) => "token_bad_signature",
            AuthError::AlgorithmRefused(_) => "token_algorithm_refused",
            AuthError::Invalid(_) => "token_invalid",
        }
    }
}

/// A JWKS file could not be used; the server does not start.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// The file could not be read.
    #[error("JWKS file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a JWKS document (`{"keys": [...]}`).
    #[error("JWKS file {path}: not a JWKS document: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// One key is malformed or contradicts itself (e.g. `alg: RS256` on an EC key).
    #[error("JWKS file {path}: key {key}: {message}")]
    Key {
        /// The file.
        path: String,
        /// The key's `kid`, or its position (`#0`, `#1`, …).
        key: String,
        /// What is wrong.
        message: String,
    },
    /// Two keys share a `kid`.
    #[error("JWKS file {path}: two keys have kid \"{kid}\"")]
    DuplicateKid {
        /// The file.
        path: String,
        /// The shared key id.
        kid: String,
    },
    /// No key is an RS256 or ES256 signature key.
    #[error("JWKS file {path}: no RS256 or ES256 (P-256) signature key")]
    NoUsableKey {
        /// The file.
        path: String,
    },
}

/// Signs an HS256 token for `user` valid for `ttl_secs` from `now_secs`, with extra claims.
pub fn mint(
    secret: &[u8],
    user: &str,
    extra: BTreeMap<String, serde_json::Value>,
    now_secs: u64,
    ttl_secs: u64,
) -> Result<String, AuthError> {
    let claims = Claims {
        sub: user.to_string(),
        exp: now_secs + ttl_secs,
        iat: now_secs,
        extra,
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| AuthError::Invalid(e.to_string()))
}

/// Whether `auth` accepts HS256 development tokens: when no JWKS is configured, or when
/// `allow_hs256` is set.
pub fn hs256_accepted(auth: &AuthConfig) -> bool {
    auth.allow_hs256 || auth.jwks_file.is_none()
}

/// One verification key of the JWKS.
#[derive(Debug)]
struct JwksKey {
    kid: Option<String>,
    /// The one algorithm this key verifies.
    alg: Algorithm,
    key: DecodingKey,
}

/// Verifies bearer tokens as configured; see the [module docs](self).
#[derive(Debug)]
pub struct Verifier {
    hs256: Option<DecodingKey>,
    keys: Vec<JwksKey>,
    audience: Option<String>,
    issuer: Option<String>,
    leeway_secs: u64,
}

/// The header fields the verifier looks at before choosing a key.
#[derive(Debug, Deserialize)]
struct RawHeader {
    alg: Option<String>,
    kid: Option<String>,
    crit: Option<serde_json::Value>,
}

/// Longest header segment looked at (base64url text).
const HEADER_SEGMENT_MAX: usize = 8 << 10;

impl Verifier {
    /// A development verifier: HS256 with `secret` only, default leeway, no audience or
    /// issuer check.
    pub fn hs256(secret: &[u8]) -> Verifier {
        Verifier {
            hs256: Some(DecodingKey::from_secret(secret)),
            keys: Vec::new(),
            audience: None,
            issuer: None,
            leeway_secs: AuthConfig::default().leeway_secs,
        }
    }

    /// A verifier for `auth`: loads its JWKS file, if any; `hs256_secret` is used only when
    /// HS256 is accepted ([`hs256_accepted`]).
    pub fn new(auth: &AuthConfig, hs256_secret: Option<&[u8]>) -> Result<Verifier, JwksError> {
        let keys = match &auth.jwks_file {
            Some(path) => load_jwks(path)?,
            None => Vec::new(),
        };
        Ok(Verifier {
            hs256: hs256_secret
                .filter(|_| hs256_accepted(auth))
                .map(DecodingKey::from_secret),
            keys,
            audience: auth.audience.clone(),
            issuer: auth.issuer.clone(),
            leeway_secs: auth.leeway_secs,
        })
    }

    /// The verifier `config` asks for. Resolves (reads or creates) the HS256 secret only when
    /// HS256 is accepted.
    pub fn from_config(config: &ServerConfig) -> Result<Verifier, ServerError> {
        let secret = if hs256_accepted(&config.auth) {
            Some(config.resolve_secret()?)
        } else {
            None
        };
        Ok(Verifier::new(&config.auth, secret.as_deref())?)
    }

    /// Whether HS256 development tokens are accepted.
    pub fn accepts_hs256(&self) -> bool {
        self.hs256.is_some()
    }

    /// How many JWKS keys are loaded.
    pub fn jwks_keys(&self) -> usize {
        self.keys.len()
    }

    /// Checks a token and returns its claims.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let header = raw_header(token)?;
        if header.crit.is_some() {
            return Err(AuthError::Invalid(
                "critical header parameters (crit) are not supported".into(),
            ));
        }
        let alg = header
            .alg
            .ok_or_else(|| AuthError::Invalid("the token header has no alg".into()))?;
        let (key, algorithm) = match alg.as_str() {
            "HS256" => match &self.hs256 {
                Some(k) => (k, Algorithm::HS256),
                None => {
                    return Err(AuthError::AlgorithmRefused(
                        "HS256 development tokens are not accepted when a JWKS is configured \
                         (set [auth] allow_hs256 = true to accept them)"
                            .into(),
                    ));
                }
            },
            "RS256" | "ES256" => {
                let algorithm = if alg == "RS256" {
                    Algorithm::RS256
                } else {
                    Algorithm::ES256
                };
                if self.keys.is_empty() {
                    return Err(AuthError::AlgorithmRefused(format!(
                        "{alg} needs a JWKS ([auth] jwks_file); this server accepts HS256 only"
                    )));
                }
                let k = self.key_for(header.kid.as_deref())?;
                if k.alg != algorithm {
                    return Err(AuthError::AlgorithmRefused(format!(
                        "the token is signed with {alg} but its key is a {:?} key",
                        k.alg
                    )));
                }
                (&k.key, algorithm)
            }
            other if other.eq_ignore_ascii_case("none") => {
                return Err(AuthError::AlgorithmRefused(
                    "unsigned tokens (alg none) are refused".into(),
                ));
            }
            other => {
                let shown = if other.len() <= 16 && other.chars().all(|c| c.is_ascii_alphanumeric())
                {
                    other
                } else {
                    "(unprintable)"
                };
                return Err(AuthError::AlgorithmRefused(format!(
                    "algorithm {shown} is not accepted (accepted: {})",
                    self.accepted_algorithms()
                )));
            }
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = self.leeway_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        match &self.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &self.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                ErrorKind::InvalidAudience => AuthError::WrongAudience,
                ErrorKind::MissingRequiredClaim(c) if c == "aud" => AuthError::WrongAudience,
                ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
                ErrorKind::MissingRequiredClaim(c) if c == "iss" => AuthError::WrongIssuer,
                ErrorKind::InvalidSignature
                | ErrorKind::InvalidEcdsaKey
                | ErrorKind::InvalidRsaKey(_)
                | ErrorKind::InvalidKeyFormat => AuthError::BadSignature(
                    "the signature does not verify with the selected key".into(),
                ),
                ErrorKind::InvalidAlgorithm
                | ErrorKind::MissingAlgorithm
                | ErrorKind::UnsupportedAlgorithm
                | ErrorKind::InvalidAlgorithmName => AuthError::AlgorithmRefused(e.to_string()),
                _ => AuthError::Invalid(e.to_string()),
            })
    }

    fn accepted_algorithms(&self) -> String {
        let mut out: Vec<&str> = Vec::new();
        if self.hs256.is_some() {
            out.push("HS256");
        }
        for (alg, name) in [(Algorithm::RS256, "RS256"), (Algorithm::ES256, "ES256")] {
            if self.keys.iter().any(|k| k.alg == alg) {
                out.push(name);
            }
        }
        out.join(", ")
    }

    /// The JWKS key a token with header `kid` selects.
    fn key_for(&self, kid: Option<&str>) -> Result<&JwksKey, AuthError> {
        let only = match self.keys.as_slice() {
            [one] => Some(one),
            _ => None,
        };
        match kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid))
                .or(only.filter(|k| k.kid.is_none()))
                .ok_or_else(|| {
                    AuthError::BadSignature("the token's kid names no key of the JWKS".into())
                }),
            None => only.ok_or_else(|| {
                AuthError::Invalid(format!(
                    "the token has no kid and the JWKS holds {} keys",
                    self.keys.len()
                ))
            }),
        }
    }
}

/// Decodes the (unverified) header of a compact JWS.
fn raw_header(token: &str) -> Result<RawHeader, AuthError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Invalid(
            "not a JWT (expected three dot-separated parts)".into(),
        ));
    };
    if header.len() > HEADER_SEGMENT_MAX {
        return Err(AuthError::Invalid("the token header is too long".into()));
    }
    let bytes = base64url_decode(header)
        .ok_or_else(|| AuthError::Invalid("the token header is not base64url".into()))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| AuthError::Invalid(format!("the token header is not a JSON object: {e}")))
}

/// Unpadded base64url (RFC 4648 §5), as JWS uses; trailing bits are ignored.
fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Reads the JWKS at `path`: every RS256 and ES256 (P-256) signature key. Keys for other
/// uses (`use: enc`) or other algorithms are skipped with a warning.
fn load_jwks(path: &Path) -> Result<Vec<JwksKey>, JwksError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| JwksError::Read {
        path: shown.clone(),
        source,
    })?;
    parse_jwks(&text, &shown)
}

/// Parses a JWKS document; `path` names it in errors.
fn parse_jwks(text: &str, path: &str) -> Result<Vec<JwksKey>, JwksError> {
    #[derive(Deserialize)]
    struct Document {
        keys: Vec<serde_json::Value>,
    }
    let doc: Document = serde_json::from_str(text).map_err(|e| JwksError::Parse {
        path: path.to_string(),
        message: e.to_string(),
    })?;
    let mut keys: Vec<JwksKey> = Vec::new();
    for (i, value) in doc.keys.into_iter().enumerate() {
        let named = value
            .get("kid")
            .and_then(|k| k.as_str())
            .map_or_else(|| format!("#{i}"), |k| format!("\"{k}\""));
        let key_error = |message: String| JwksError::Key {
            path: path.to_string(),
            key: named.clone(),
            message,
        };
        let jwk: Jwk = serde_json::from_value(value).map_err(|e| key_error(e.to_string()))?;
        if jwk
            .common
            .public_key_use
            .as_ref()
            .is_some_and(|u| *u != PublicKeyUse::Signature)
        {
            tracing::warn!(jwks = path, key = %named, "JWKS key skipped: not a signature key");
            continue;
        }
        let alg = match (&jwk.common.key_algorithm, &jwk.algorithm) {
            (Some(KeyAlgorithm::RS256) | None, AlgorithmParameters::RSA(_)) => Algorithm::RS256,
            (Some(KeyAlgorithm::ES256) | None, AlgorithmParameters::EllipticCurve(p))
                if p.curve == EllipticCurve::P256 =>
            {
                Algorithm::ES256
            }
            (Some(KeyAlgorithm::RS256), _) => {
                return Err(key_error("declares alg RS256 but is not an RSA key".into()));
            }
            (Some(KeyAlgorithm::ES256), _) => {
                return Err(key_error(
                    "declares alg ES256 but is not an EC P-256 key".into(),
                ));
            }
            _ => {
                tracing::warn!(
                    jwks = path,
                    key = %named,
                    "JWKS key skipped: only RS256 and ES256 (P-256) keys are supported"
                );
                continue;
            }
        };
        let key = DecodingKey::from_jwk(&jwk).map_err(|e| key_error(e.to_string()))?;
        let kid = jwk.common.key_id.clone();
        if let Some(kid) = &kid
            && keys.iter().any(|k| k.kid.as_ref() == Some(kid))
        {
            return Err(JwksError::DuplicateKid {
                path: path.to_string(),
                kid: kid.clone(),
            });
        }
        keys.push(JwksKey { kid, alg, key });
    }
    if keys.is_empty() {
        return Err(JwksError::NoUsableKey {
            path: path.to_string(),
        });
    }
    Ok(keys)
}

/// Extracts the token from an `Authorization` header value.
pub fn bearer(header: Option<&str>) -> Result<&str, AuthError> {
    let h = header.ok_or(AuthError::Missing)?;
    let token = h
        .strip_prefix("Bearer ")
        .or_else(|| h.strip_prefix("bearer "))
        .ok_or_else(|| AuthError::Invalid("authorization scheme must be Bearer".into()))?
        .trim();
    if token.is_empty() {
        Err(AuthError::Missing)
    } else {
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JWKS: &str = include_str!("../tests/fixtures/jwks.json");
    const RSA_PRIVATE: &[u8] = include_bytes!("../tests/fixtures/rsa_private.pem");
    const EC_PRIVATE: &[u8] = include_bytes!("../tests/fixtures/ec_private.pem");

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn jwks_verifier(text: &str) -> Verifier {
        Verifier {
            hs256: None,
            keys: parse_jwks(text, "test").unwrap(),
            audience: None,
            issuer: None,
            leeway_secs: 30,
        }
    }

    fn sign(
        alg: Algorithm,
        kid: Option<&str>,
        key: &EncodingKey,
        claims: serde_json::Value,
    ) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_string);
        jsonwebtoken::encode(&header, &claims, key).unwrap()
    }

    #[test]
    fn round_trip_and_rejections() {
        let mut extra = BTreeMap::new();
        extra.insert("role".to_string(), serde_json::json!("driver"));
        let t = mint(b"s3cret", "ann", extra, now(), 3600).unwrap();
        let c = Verifier::hs256(b"s3cret").verify(&t).unwrap();
        assert_eq!(c.sub, "ann");
        assert_eq!(c.extra["role"], "driver");
        assert!(matches!(
            Verifier::hs256(b"other").verify(&t),
            Err(AuthError::BadSignature(_))
        ));
        let old = mint(b"s3cret", "ann", BTreeMap::new(), now() - 7200, 60).unwrap();
        assert_eq!(
            Verifier::hs256(b"s3cret").verify(&old),
            Err(AuthError::Expired)
        );
        assert!(matches!(
            Verifier::hs256(b"s3cret").verify("not.a.token"),
            Err(AuthError::Invalid(_))
        ));
        assert!(matches!(
            Verifier::hs256(b"s3cret").verify("two.parts"),
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn alg_none_is_refused() {
        // header {"alg":"none","typ":"JWT"}, payload {"sub":"x","exp":9999999999}
        let t = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ4IiwiZXhwIjo5OTk5OTk5OTk5fQ.";
        assert!(matches!(
            Verifier::hs256(b"s3cret").verify(t),
            Err(AuthError::AlgorithmRefused(_))
        ));
        assert!(matches!(
            jwks_verifier(JWKS).verify(t),
            Err(AuthError::AlgorithmRefused(_))
        ));
    }

    #[test]
    fn crit_headers_are_refused() {
        // header {"alg":"HS256","crit":["exp"]}
        let t = "eyJhbGciOiJIUzI1NiIsImNyaXQiOlsiZXhwIl19.e30.sig";
        assert!(matches!(
            Verifier::hs256(b"s3cret").verify(t),
            Err(AuthError::Invalid(m)) if m.contains("crit")
        ));
    }

    #[test]
    fn jwks_keys_verify_only_their_own_algorithm() {
        let v = jwks_verifier(JWKS);
        assert_eq!(v.jwks_keys(), 2);
        assert!(!v.accepts_hs256());
        let claims = serde_json::json!({"sub": "ann", "exp": now() + 600});
        let rsa = EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap();
        let ec = EncodingKey::from_ec_pem(EC_PRIVATE).unwrap();
        let rs = sign(Algorithm::RS256, Some("rsa-1"), &rsa, claims.clone());
        assert_eq!(v.verify(&rs).unwrap().sub, "ann");
        let es = sign(Algorithm::ES256, Some("ec-1"), &ec, claims.clone());
        assert_eq!(v.verify(&es).unwrap().sub, "ann");
        // The RSA key with an ES256 token's kid: the key's algorithm decides.
        let es_wrong_kid = sign(Algorithm::ES256, Some("rsa-1"), &ec, claims.clone());
        assert!(matches!(
            v.verify(&es_wrong_kid),
            Err(AuthError::AlgorithmRefused(_))
        ));
        // RS384 is not accepted even with a matching RSA key.
        let rs384 = sign(Algorithm::RS384, Some("rsa-1"), &rsa, claims.clone());
        assert!(matches!(
            v.verify(&rs384),
            Err(AuthError::AlgorithmRefused(_))
        ));
        let unknown = sign(Algorithm::RS256, Some("nope"), &rsa, claims.clone());
        assert!(matches!(
            v.verify(&unknown),
            Err(AuthError::BadSignature(_))
        ));
        let no_kid = sign(Algorithm::RS256, None, &rsa, claims.clone());
        assert!(matches!(v.verify(&no_kid), Err(AuthError::Invalid(_))));
        // HS256 with the public key as the HMAC secret: refused before any key is used.
        let public = include_bytes!("../tests/fixtures/rsa_public.pem");
        let confused = sign(
            Algorithm::HS256,
            Some("rsa-1"),
            &EncodingKey::from_secret(public),
            claims,
        );
        assert!(matches!(
            v.verify(&confused),
            Err(AuthError::AlgorithmRefused(_))
        ));
    }

    #[test]
    fn a_single_key_without_kid_serves_any_token() {
        let v = jwks_verifier(include_str!("../tests/fixtures/jwks_single_no_kid.json"));
        let ec = EncodingKey::from_ec_pem(EC_PRIVATE).unwrap();
        let claims = serde_json::json!({"sub": "ann", "exp": now() + 600});
        for kid in [None, Some("whatever")] {
            let t = sign(Algorithm::ES256, kid, &ec, claims.clone());
            assert_eq!(v.verify(&t).unwrap().sub, "ann");
        }
        let rsa = EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap();
        let rs = sign(Algorithm::RS256, None, &rsa, claims);
        assert!(matches!(v.verify(&rs), Err(AuthError::AlgorithmRefused(_))));
    }

    #[test]
    fn bad_jwks_files_are_named_errors() {
        assert!(matches!(
            parse_jwks("{}", "f"),
            Err(JwksError::Parse { .. })
        ));
        assert!(matches!(
            parse_jwks(r#"{"keys": []}"#, "f"),
            Err(JwksError::NoUsableKey { .. })
        ));
        let doc: serde_json::Value = serde_json::from_str(JWKS).unwrap();
        let rsa = doc["keys"][0].clone();
        let ec = doc["keys"][1].clone();
        let dup = serde_json::json!({ "keys": [rsa.clone(), rsa.clone()] }).to_string();
        assert!(matches!(
            parse_jwks(&dup, "f"),
            Err(JwksError::DuplicateKid { kid, .. }) if kid == "rsa-1"
        ));
        let mut lying = ec.clone();
        lying["alg"] = "RS256".into();
        let e = parse_jwks(&serde_json::json!({ "keys": [lying] }).to_string(), "f").unwrap_err();
        assert!(e.to_string().contains("key \"ec-1\""), "{e}");
        // Encryption keys and other algorithms are skipped, not fatal.
        let mut enc = rsa.clone();
        enc["use"] = "enc".into();
        enc["kid"] = "enc-1".into();
        let mut ps = rsa.clone();
        ps["alg"] = "PS256".into();
        ps["kid"] = "ps-1".into();
        let mixed = serde_json::json!({ "keys": [enc, ps, ec] }).to_string();
        let keys = parse_jwks(&mixed, "f").unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].alg, Algorithm::ES256);
        let oct = serde_json::json!({ "keys": [{"kty": "oct", "k": "c2VjcmV0", "alg": "HS256"}] });
        assert!(matches!(
            parse_jwks(&oct.to_string(), "f"),
            Err(JwksError::NoUsableKey { .. })
        ));
    }

    #[test]
    fn hs256_is_off_with_a_jwks_unless_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, JWKS).unwrap();
        let mut auth = AuthConfig {
            jwks_file: Some(path),
            ..AuthConfig::default()
        };
        assert!(!hs256_accepted(&auth));
        let v = Verifier::new(&auth, Some(b"dev")).unwrap();
        let t = mint(b"dev", "ann", BTreeMap::new(), now(), 600).unwrap();
        assert!(matches!(v.verify(&t), Err(AuthError::AlgorithmRefused(_))));
        auth.allow_hs256 = true;
        let v = Verifier::new(&auth, Some(b"dev")).unwrap();
        assert_eq!(v.verify(&t).unwrap().sub, "ann");
        assert!(hs256_accepted(&AuthConfig::default()));
        auth.jwks_file = Some(dir.path().join("missing.json"));
        assert!(matches!(
            Verifier::new(&auth, None),
            Err(JwksError::Read { .. })
        ));
    }

    #[test]
    fn base64url_decodes_unpadded_text() {
        assert_eq!(base64url_decode("").unwrap(), b"");
        assert_eq!(base64url_decode("Zg").unwrap(), b"f");
        assert_eq!(base64url_decode("Zm9vYmFy").unwrap(), b"foobar");
        assert_eq!(base64url_decode("-_8").unwrap(), vec![0xfb, 0xff]);
        assert!(base64url_decode("a+b").is_none());
        assert!(base64url_decode("ab=").is_none());
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer(Some("Bearer abc")), Ok("abc"));
        assert_eq!(bearer(None), Err(AuthError::Missing));
        assert!(bearer(Some("Basic abc")).is_err());
    }
}
