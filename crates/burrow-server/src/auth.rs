//! Bearer tokens: HS256 JWTs with `sub` (the user), `exp`, and any custom claims.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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
    /// Any other claim (`role`, `region`, …), used by sync rules.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// Why a token was refused; every variant maps to HTTP 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer …` header.
    #[error("missing bearer token")]
    Missing,
    /// The token has expired.
    #[error("token expired")]
    Expired,
    /// Signature, algorithm or structure is wrong.
    #[error("invalid token: {0}")]
    Invalid(String),
}

impl AuthError {
    /// Stable machine code for the error body.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "token_missing",
            AuthError::Expired => "token_expired",
            AuthError::Invalid(_) => "token_invalid",
        }
    }
}

/// Signs a token for `user` valid for `ttl_secs` from `now_secs`, with extra claims.
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

/// Verifies a token's signature (HS256 only) and expiry.
pub fn verify(secret: &[u8], token: &str) -> Result<Claims, AuthError> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 30;
    validation.set_required_spec_claims(&["exp", "sub"]);
    jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(secret), &validation)
        .map(|d| d.claims)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
            _ => AuthError::Invalid(e.to_string()),
        })
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

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn round_trip_and_rejections() {
        let mut extra = BTreeMap::new();
        extra.insert("role".to_string(), serde_json::json!("driver"));
        let t = mint(b"s3cret", "ann", extra, now(), 3600).unwrap();
        let c = verify(b"s3cret", &t).unwrap();
        assert_eq!(c.sub, "ann");
        assert_eq!(c.extra["role"], "driver");
        assert!(matches!(verify(b"other", &t), Err(AuthError::Invalid(_))));
        let old = mint(b"s3cret", "ann", BTreeMap::new(), now() - 7200, 60).unwrap();
        assert_eq!(verify(b"s3cret", &old), Err(AuthError::Expired));
        assert!(verify(b"s3cret", "not.a.token").is_err());
    }

    #[test]
    fn alg_none_is_refused() {
        // header {"alg":"none","typ":"JWT"}, payload {"sub":"x","exp":9999999999}
        let t = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ4IiwiZXhwIjo5OTk5OTk5OTk5fQ.";
        assert!(verify(b"s3cret", t).is_err());
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer(Some("Bearer abc")), Ok("abc"));
        assert_eq!(bearer(None), Err(AuthError::Missing));
        assert!(bearer(Some("Basic abc")).is_err());
    }
}
