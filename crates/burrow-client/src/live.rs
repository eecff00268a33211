//! Live push: a WebSocket to `GET /v1/live` on which the server says when its committed head
//! grows, so the device can pull at once instead of waiting for its next poll.
//!
//! [`LiveSubscriber`] only reports heads; pulling (and the fallback to polling when the
//! socket is unavailable) is the caller's job.

use crate::transport::with_causes;
use futures_util::StreamExt;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, header};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long opening the WebSocket (TCP connect and upgrade) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// With no message or ping from the server for this long, the connection counts as dead. The
/// server pings every 20 s.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long closing waits for the other side's half of the handshake.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Largest message accepted from the server (a poke is a few dozen bytes).
const SERVER_MESSAGE_BYTES_MAX: usize = 64 << 10;

/// Why a live subscription could not be opened or has ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LiveError {
    /// The server refused the token (HTTP 401 on upgrade). Reconnecting with the same token
    /// will not help.
    #[error("authentication failed ({code}): {message}")]
    Unauthorized {
        /// Stable error code from the server.
        code: String,
        /// Server's message.
        message: String,
    },
    /// The server could not be reached, the connection broke or went silent. Poll meanwhile
    /// and reconnect with backoff.
    #[error("live push unavailable: {0}")]
    Unavailable(String),
    /// The server answered the upgrade with another error status (e.g. 429
    /// `too_many_live_connections`, 5xx, or no WebSocket support). Poll meanwhile and
    /// reconnect with backoff.
    #[error("server refused live push: {status} ({code}): {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Stable error code from the server (empty when the body was not readable).
        code: String,
        /// Server's message.
        message: String,
    },
    /// Live push cannot work with this base URL or configuration (not http(s), an unusable
    /// TLS configuration). Reconnecting will not help; poll instead.
    #[error("live push unsupported: {0}")]
    Unsupported(String),
    /// The server sent something that is not a poke. The connection should be dropped.
    #[error("live push protocol error: {0}")]
    Protocol(String),
}

impl LiveError {
    /// Whether connecting again later (with backoff) may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            LiveError::Unavailable(_) | LiveError::Refused { .. } | LiveError::Protocol(_) => true,
            LiveError::Unauthorized { .. } | LiveError::Unsupported(_) => false,
        }
    }
}

/// The WebSocket URL of `{base_url}/v1/live` (`http` → `ws`, `https` → `wss`).
fn live_url(base_url: &str) -> Result<String, LiveError> {
    let base = base_url.trim_end_matches('/');
    let (scheme, rest) = if let Some(rest) = base.strip_prefix("http://") {
        ("ws", rest)
    } else if let Some(rest) = base.strip_prefix("ws://") {
        ("ws", rest)
    } else if let Some(rest) = base.strip_prefix("https://") {
        ("wss", rest)
    } else if let Some(rest) = base.strip_prefix("wss://") {
        ("wss", rest)
    } else {
        return Err(LiveError::Unsupported(format!(
            "{base_url}: expected an http:// or https:// base URL"
        )));
    };
    Ok(format!("{scheme}://{rest}/v1/live"))
}

/// The `{"code", "message"}` of a JSON error body, when there is one.
fn error_body(body: Option<&[u8]>) -> (String, String) {
    #[derive(serde::Deserialize)]
    struct Body {
        code: String,
        message: String,
    }
    match body.and_then(|b| serde_json::from_slice::<Body>(b).ok()) {
        Some(b) => (b.code, b.message),
        None => (String::new(), String::new()),
    }
}

/// Maps a failed upgrade.
fn connect_error(e: WsError) -> LiveError {
    match e {
        WsError::Http(resp) => {
            let status = resp.status().as_u16();
            let (code, message) = error_body(resp.body().as_deref());
            let message = if message.is_empty() {
                resp.status()
                    .canonical_reason()
                    .unwrap_or("no message")
                    .to_string()
            } else {
                message
            };
            if status == 401 {
                LiveError::Unauthorized { code, message }
            } else {
                LiveError::Refused {
                    status,
                    code,
                    message,
                }
            }
        }
        WsError::Url(e) => LiveError::Unsupported(e.to_string()),
        other => LiveError::Unavailable(with_causes(&other)),
    }
}

/// Maps an error on an open connection.
fn stream_error(e: WsError) -> LiveError {
    match e {
        WsError::Capacity(_) | WsError::Utf8(_) => LiveError::Protocol(e.to_string()),
        other => LiveError::Unavailable(with_causes(&other)),
    }
}

/// The head a poke carries.
fn parse_poke(text: &str) -> Result<u64, LiveError> {
    #[derive(serde::Deserialize)]
    struct Poke {
        head_seq: u64,
    }
    serde_json::from_str::<Poke>(text)
        .map(|p| p.head_seq)
        .map_err(|e| LiveError::Protocol(format!("undecodable poke: {e}")))
}

/// A live-push subscription: yields the server's head sequence whenever it grows.
///
/// The first [`LiveSubscriber::next_head`] returns the head at connection time. Dropping the
/// subscriber drops the connection; [`LiveSubscriber::close`] closes it politely.
pub struct LiveSubscriber {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    last_seen: Instant,
    closed: bool,
}

impl std::fmt::Debug for LiveSubscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveSubscriber")
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl LiveSubscriber {
    /// Connects to `{base_url}/v1/live` (http→ws, https→wss verified against the system's
    /// roots) with the bearer token.
    pub async fn connect(base_url: &str, token: &str) -> Result<LiveSubscriber, LiveError> {
        Self::connect_to(&crate::transport::LiveEndpoint {
            base_url: base_url.to_string(),
            token: token.to_string(),
            roots: crate::tls::ExtraRoots::default(),
        })
        .await
    }

    /// Connects to the live push of `endpoint` (what [`crate::Transport::live_endpoint`]
    /// gives: for `wss://`, the transport's extra roots are trusted too).
    pub async fn connect_to(
        endpoint: &crate::transport::LiveEndpoint,
    ) -> Result<LiveSubscriber, LiveError> {
        let (base_url, token) = (endpoint.base_url.as_str(), endpoint.token.as_str());
        let url = live_url(base_url)?;
        let connector = if url.starts_with("wss://") {
            let config = endpoint.roots.client_config().map_err(|e| {
                LiveError::Unsupported(format!("{base_url}: TLS configuration: {e}"))
            })?;
            Some(tokio_tungstenite::Connector::Rustls(config))
        } else {
            None
        };
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| LiveError::Unsupported(format!("{base_url}: {e}")))?;
        let auth = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            LiveError::Unauthorized {
                code: "invalid_token".into(),
                message: "the token contains characters a header cannot carry".into(),
            }
        })?;
        request.headers_mut().insert(header::AUTHORIZATION, auth);
        let config = WebSocketConfig::default()
            .read_buffer_size(4 << 10)
            .write_buffer_size(0)
            .max_message_size(Some(SERVER_MESSAGE_BYTES_MAX))
            .max_frame_size(Some(SERVER_MESSAGE_BYTES_MAX));
        let connecting = tokio_tungstenite::connect_async_tls_with_config(
            request,
            Some(config),
            true,
            connector,
        );
        let (ws, _response) = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| {
                LiveError::Unavailable(format!(
                    "no WebSocket to {url} within {} s",
                    CONNECT_TIMEOUT.as_secs()
                ))
            })?
            .map_err(connect_error)?;
        Ok(LiveSubscriber {
            ws,
            last_seen: Instant::now(),
            closed: false,
        })
    }

    /// Waits for the next poke; `Ok(None)` when the server closed the connection (after that,
    /// always `Ok(None)`). Fails with [`LiveError::Unavailable`] when the connection breaks
    /// or nothing (not even a ping) arrives for [`IDLE_TIMEOUT`].
    ///
    /// Cancel-safe: it may be raced in `tokio::select!` without losing a poke. Keep calling it
    /// while subscribed: reading is what answers the server's pings.
    pub async fn next_head(&mut self) -> Result<Option<u64>, LiveError> {
        if self.closed {
            return Ok(None);
        }
        loop {
            let deadline = self.last_seen + IDLE_TIMEOUT;
            let msg = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => {
                    self.closed = true;
                    return Err(LiveError::Unavailable(format!(
                        "the server was silent for {} s",
                        IDLE_TIMEOUT.as_secs()
                    )));
                }
                Ok(None) => {
                    self.closed = true;
                    return Ok(None);
                }
                Ok(Some(Err(e))) => {
                    self.closed = true;
                    return Err(stream_error(e));
                }
                Ok(Some(Ok(msg))) => msg,
            };
            self.last_seen = Instant::now();
            match msg {
                Message::Text(text) => return parse_poke(text.as_str()).map(Some),
                Message::Binary(_) => {
                    return Err(LiveError::Protocol("unexpected binary message".into()));
                }
                Message::Close(_) => {
                    // Reading on sends tungstenite's answer to the close frame.
                    let _ = tokio::time::timeout(CLOSE_GRACE, self.ws.next()).await;
                    self.closed = true;
                    return Ok(None);
                }
                // Pings are answered by tungstenite on the next read.
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
    }

    /// Closes the connection politely (the server frees the slot at once).
    pub async fn close(mut self) {
        if self.closed {
            return;
        }
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            if self.ws.close(None).await.is_ok() {
                while let Some(Ok(_)) = self.ws.next().await {}
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_map_to_websocket() {
        assert_eq!(
            live_url("http://127.0.0.1:4000/").unwrap(),
            "ws://127.0.0.1:4000/v1/live"
        );
        assert_eq!(live_url("http://h/base").unwrap(), "ws://h/base/v1/live");
        assert_eq!(live_url("https://h/").unwrap(), "wss://h/v1/live");
        assert_eq!(live_url("wss://h:8443").unwrap(), "wss://h:8443/v1/live");
        assert!(matches!(
            live_url("ftp://h"),
            Err(LiveError::Unsupported(_))
        ));
    }

    #[test]
    fn pokes_parse() {
        assert_eq!(parse_poke(r#"{"head_seq": 42}"#).unwrap(), 42);
        assert_eq!(parse_poke(r#"{"head_seq": 1, "later": true}"#).unwrap(), 1);
        assert!(matches!(parse_poke("{}"), Err(LiveError::Protocol(_))));
        assert!(matches!(
            parse_poke(r#"{"head_seq": -1}"#),
            Err(LiveError::Protocol(_))
        ));
    }

    #[test]
    fn error_bodies_are_read_when_present() {
        let body = br#"{"code":"x","message":"y"}"#;
        assert_eq!(error_body(Some(body)), ("x".into(), "y".into()));
        assert_eq!(error_body(Some(b"{\"co")), (String::new(), String::new()));
        assert_eq!(error_body(None), (String::new(), String::new()));
    }
}
