//! How sync requests reach the server: the [`Transport`] trait and its HTTP implementation.
//! The simulator substitutes its own transport; the sync logic never opens sockets itself.

use crate::error::FailureKind;
use burrow_proto::{CONTENT_TYPE, decode_frame, encode_frame, v1};
use std::future::Future;

/// Why a request did not produce a response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// The server could not be reached (connection refused, host unreachable, DNS, TLS).
    #[error("network error: {0}")]
    Network(String),
    /// The server did not answer in time. Not resumed at once: sending again would wait as
    /// long; the runner backs off instead.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The connection broke after the request went out (reset, closed mid-response): the
    /// server may or may not have processed it. Every exchange is idempotent (op ids, cursor),
    /// so [`crate::Client::sync`] sends it again at once, within the same attempt
    /// ([`crate::client::RESUMES_MAX`] times in a row at most) rather than backing off.
    #[error("connection lost: {0}")]
    ConnectionLost(String),
    /// The server refused the token (HTTP 401).
    #[error("authentication failed ({code}): {message}")]
    Unauthorized {
        /// Stable error code from the server.
        code: String,
        /// Server's message.
        message: String,
    },
    /// Any other error status from the server.
    #[error("server answered {status} ({code}): {message}")]
    Status {
        /// HTTP status.
        status: u16,
        /// Stable error code from the server.
        code: String,
        /// Server's message.
        message: String,
        /// The server's `Retry-After` (429, 503), in ms, when it sent one.
        retry_after_ms: Option<u64>,
    },
    /// The response body could not be decoded.
    #[error("undecodable response: {0}")]
    Decode(String),
    /// The transport cannot be set up as asked (an unreadable root certificate, a TLS stack
    /// that refuses its configuration): fix the configuration; retrying will not help.
    #[error("invalid transport configuration: {0}")]
    InvalidConfig(String),
}

impl TransportError {
    /// How long the server asked the client to wait before retrying, if it did.
    pub fn retry_after_ms(&self) -> Option<u64> {
        match self {
            TransportError::Status { retry_after_ms, .. } => *retry_after_ms,
            _ => None,
        }
    }

    /// Whether the same request may succeed later.
    pub fn is_retryable(&self) -> bool {
        match self {
            TransportError::Network(_)
            | TransportError::Timeout(_)
            | TransportError::ConnectionLost(_)
            | TransportError::Decode(_) => true,
            TransportError::Status { status, .. } => *status >= 500 || *status == 429,
            TransportError::Unauthorized { .. } | TransportError::InvalidConfig(_) => false,
        }
    }

    /// The kind of failure this is.
    pub fn failure_kind(&self) -> FailureKind {
        match self {
            TransportError::Network(_) => FailureKind::Unreachable,
            TransportError::Timeout(_) => FailureKind::Timeout,
            TransportError::ConnectionLost(_) => FailureKind::ConnectionLost,
            TransportError::Unauthorized { .. } => FailureKind::Unauthorized,
            TransportError::Status { status: 429, .. } => FailureKind::RateLimited,
            TransportError::Status { status, .. } if *status >= 500 => FailureKind::ServerError,
            TransportError::Status { .. } => FailureKind::Refused,
            TransportError::Decode(_) => FailureKind::BadResponse,
            TransportError::InvalidConfig(_) => FailureKind::Configuration,
        }
    }

    /// The HTTP status and the server's stable error code, when the server answered with an
    /// error.
    pub fn server_status(&self) -> Option<(u16, &str)> {
        match self {
            TransportError::Status { status, code, .. } => Some((*status, code)),
            TransportError::Unauthorized { code, .. } => Some((401, code)),
            _ => None,
        }
    }
}

/// Carries one sync exchange to the server.
pub trait Transport: Send + Sync {
    /// Sends `req` and returns the server's response.
    fn sync(
        &self,
        req: v1::SyncRequest,
    ) -> impl Future<Output = Result<(v1::SyncResponse, TrafficStats), TransportError>> + Send;

    /// Replaces the credentials the following requests carry (after a refresh); transports
    /// without credentials ignore it.
    fn set_token(&self, _token: &str) {}

    /// Where live push is served (for [`crate::live::LiveSubscriber::connect_to`]); `None`
    /// when this transport has none (the runner then polls).
    fn live_endpoint(&self) -> Option<LiveEndpoint> {
        None
    }
}

/// Where and how to open the live-push WebSocket: the server's base URL (`http://` → `ws://`,
/// `https://` → `wss://`), the bearer token and the roots TLS trusts.
#[derive(Debug, Clone)]
pub struct LiveEndpoint {
    /// The server's base URL.
    pub base_url: String,
    /// The bearer token.
    pub token: String,
    /// Roots trusted besides the system's (for `wss://`).
    pub roots: crate::tls::ExtraRoots,
}

/// Bytes moved by one exchange (compressed, as on the wire, excluding HTTP headers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrafficStats {
    /// Request body bytes.
    pub bytes_up: u64,
    /// Response body bytes.
    pub bytes_down: u64,
}

/// An error with its chain of causes, so a refused connection, a reset and a timeout can be
/// told apart in `last_error`.
pub(crate) fn with_causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// A failed request as the sync loop needs to see it: the server could not be reached —
/// `Network`; it took too long (sending again at once would wait as long) — `Timeout`; or the
/// connection broke once the request was on its way — `ConnectionLost`, which the sync
/// resumes at once.
fn broken(e: &reqwest::Error) -> TransportError {
    if e.is_timeout() {
        TransportError::Timeout(with_causes(e))
    } else if e.is_connect() {
        TransportError::Network(with_causes(e))
    } else {
        TransportError::ConnectionLost(with_causes(e))
    }
}

/// How long an exchange may take before it fails with [`TransportError::Timeout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpTimeouts {
    /// Establishing the connection (TCP and TLS). Default 10 s.
    pub connect: std::time::Duration,
    /// The whole exchange, connection included. Default 120 s: an initial sync page over
    /// EDGE takes seconds, not minutes.
    pub request: std::time::Duration,
}

impl Default for HttpTimeouts {
    fn default() -> Self {
        HttpTimeouts {
            connect: std::time::Duration::from_secs(10),
            request: std::time::Duration::from_secs(120),
        }
    }
}

/// The HTTP client of a transport: the system's roots plus `roots`, and `timeouts`.
fn http_client(
    roots: &crate::tls::ExtraRoots,
    timeouts: HttpTimeouts,
) -> Result<reqwest::Client, TransportError> {
    let extra = roots
        .ders()
        .iter()
        .map(|der| reqwest::Certificate::from_der(der))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TransportError::InvalidConfig(with_causes(&e)))?;
    reqwest::Client::builder()
        .connect_timeout(timeouts.connect)
        .timeout(timeouts.request)
        .tls_certs_merge(extra)
        .build()
        .map_err(|e| TransportError::InvalidConfig(with_causes(&e)))
}

/// Largest response the client accepts after decompression.
pub const RESPONSE_DECODED_BYTES_MAX: usize = 256 << 20;

/// `POST {base_url}/v1/sync` with a bearer token.
/// Clones share the token: [`HttpTransport::set_token`] on one is seen by all.
#[derive(Debug, Clone)]
pub struct HttpTransport {
    http: reqwest::Client,
    base_url: String,
    token: std::sync::Arc<std::sync::RwLock<String>>,
    roots: crate::tls::ExtraRoots,
}

impl HttpTransport {
    /// A transport to `base_url` (e.g. `http://127.0.0.1:4000`, or `https://…` verified
    /// against the system's roots) authenticating with `token`.
    pub fn new(base_url: &str, token: &str) -> Result<Self, TransportError> {
        Self::with_extra_roots(base_url, token, crate::tls::ExtraRoots::default())
    }

    /// [`HttpTransport::new`] trusting `roots` besides the system's roots, for sync requests
    /// and live push alike (a server behind a private CA).
    pub fn with_extra_roots(
        base_url: &str,
        token: &str,
        roots: crate::tls::ExtraRoots,
    ) -> Result<Self, TransportError> {
        let http = http_client(&roots, HttpTimeouts::default())?;
        Ok(HttpTransport {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
            token: std::sync::Arc::new(std::sync::RwLock::new(token.to_string())),
            roots,
        })
    }

    /// The same transport with other time limits (a background task with a short OS window
    /// wants an exchange to give up early; see [`HttpTimeouts`]).
    pub fn with_timeouts(self, timeouts: HttpTimeouts) -> Result<Self, TransportError> {
        Ok(HttpTransport {
            http: http_client(&self.roots, timeouts)?,
            ..self
        })
    }

    /// Replaces the bearer token (e.g. after the app refreshed an expired login); the next
    /// request uses it.
    pub fn set_token(&self, token: &str) {
        let mut t = self.token.write().unwrap_or_else(|p| p.into_inner());
        *t = token.to_string();
    }

    /// The server's base URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The current bearer token.
    pub fn token(&self) -> String {
        self.token.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Transport for HttpTransport {
    fn set_token(&self, token: &str) {
        HttpTransport::set_token(self, token);
    }

    fn live_endpoint(&self) -> Option<LiveEndpoint> {
        Some(LiveEndpoint {
            base_url: self.base_url.clone(),
            token: self.token(),
            roots: self.roots.clone(),
        })
    }

    async fn sync(
        &self,
        req: v1::SyncRequest,
    ) -> Result<(v1::SyncResponse, TrafficStats), TransportError> {
        let body = encode_frame(&req).map_err(|e| TransportError::Decode(e.to_string()))?;
        let bytes_up = body.len() as u64;
        let resp = self
            .http
            .post(format!("{}/v1/sync", self.base_url))
            .bearer_auth(self.token())
            .header("content-type", CONTENT_TYPE)
            .body(body)
            .send()
            .await
            .map_err(|e| broken(&e))?;
        let status = resp.status();
        let retry_after_ms = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                burrow_core::backoff::parse_retry_after(v, now)
            });
        let bytes = resp.bytes().await.map_err(|e| broken(&e))?;
        if !status.is_success() {
            let parsed: serde_json::Value =
                serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
            let code = parsed["code"].as_str().unwrap_or("http_error").to_string();
            let message = parsed["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).chars().take(200).collect());
            return Err(if status.as_u16() == 401 {
                TransportError::Unauthorized { code, message }
            } else {
                TransportError::Status {
                    status: status.as_u16(),
                    code,
                    message,
                    retry_after_ms,
                }
            });
        }
        let decoded = decode_frame(&bytes, RESPONSE_DECODED_BYTES_MAX)
            .map_err(|e| TransportError::Decode(e.to_string()))?;
        Ok((
            decoded,
            TrafficStats {
                bytes_up,
                bytes_down: bytes.len() as u64,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16, code: &str) -> TransportError {
        TransportError::Status {
            status,
            code: code.into(),
            message: String::new(),
            retry_after_ms: None,
        }
    }

    #[test]
    fn each_error_has_the_kind_an_app_reacts_to() {
        let cases = [
            (
                TransportError::Network("refused".into()),
                FailureKind::Unreachable,
            ),
            (TransportError::Timeout("slow".into()), FailureKind::Timeout),
            (
                TransportError::ConnectionLost("reset".into()),
                FailureKind::ConnectionLost,
            ),
            (status(429, "rate_limited"), FailureKind::RateLimited),
            (status(503, "unavailable"), FailureKind::ServerError),
            (status(413, "body_too_large"), FailureKind::Refused),
            (
                TransportError::Decode("junk".into()),
                FailureKind::BadResponse,
            ),
            (
                TransportError::InvalidConfig("pem".into()),
                FailureKind::Configuration,
            ),
        ];
        for (error, kind) in cases {
            assert_eq!(error.failure_kind(), kind, "{error}");
            // Retryable exactly when the kind is the network's, a busy server, or junk.
            let expect_retry = kind.is_network()
                || matches!(
                    kind,
                    FailureKind::RateLimited | FailureKind::ServerError | FailureKind::BadResponse
                );
            assert_eq!(error.is_retryable(), expect_retry, "{error}");
        }
        let unauthorized = TransportError::Unauthorized {
            code: "token_expired".into(),
            message: String::new(),
        };
        assert_eq!(unauthorized.failure_kind(), FailureKind::Unauthorized);
        assert_eq!(unauthorized.server_status(), Some((401, "token_expired")));
        assert_eq!(
            status(413, "too_many_ops").server_status(),
            Some((413, "too_many_ops"))
        );
        assert_eq!(TransportError::Timeout("x".into()).server_status(), None);
    }
}
