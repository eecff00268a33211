//! The HTTP surface: `POST /v1/sync`, `GET /v1/live` (see [`crate::live`]), `GET /v1/conflicts`
//! and `GET /healthz`. Errors are JSON bodies `{"code": "...", "message": "..."}` with a status
//! that says what happened.

use crate::auth::{self, AuthError, Verifier};
use crate::config::{Limits, ServerConfig};
use crate::error::{ServerError, StoreError};
use crate::store::{
    IngestOp, IngestRequest, IngestTx, PullRequest, ResolveEnv, ScopePosition, ScopeRequest,
    ServerStore,
};
use crate::validate::{Rejection, validate_op};
use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use burrow_core::env::{Clock, SystemClock};
use burrow_core::{ClaimSet, Cursor, Hlc, OutcomeKind, Schema};
use burrow_proto::convert::{op_from_wire, row_change_into_wire};
use burrow_proto::{CONTENT_TYPE, PROTOCOL_VERSION, decode_frame, encode_frame, v1};
use prost::Message;
use std::sync::Arc;

/// Shared state of the HTTP handlers.
#[derive(Debug)]
pub struct AppState<S: ServerStore> {
    clock: Arc<dyn Clock>,
    env: ResolveEnv,
    verifier: Verifier,
    pub(crate) limits: Limits,
    /// Per-user token buckets ([`Limits::requests_per_second_per_user`]).
    rate: crate::rate::RateLimiter,
    store: Arc<S>,
    /// The committed head for `GET /v1/live` subscribers, and their count per user.
    pub(crate) live: crate::live::LiveHub,
}

impl<S: ServerStore> AppState<S> {
    /// State for `config` over `store`; builds the token verifier (resolving the signing
    /// secret when HS256 is accepted, loading the JWKS file) and checks the limits.
    pub fn new(config: ServerConfig, store: Arc<S>) -> Result<Self, ServerError> {
        Self::with_clock(config, store, Arc::new(SystemClock))
    }

    /// State whose notion of time comes from `clock` (the simulator's virtual time).
    pub fn with_clock(
        config: ServerConfig,
        store: Arc<S>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ServerError> {
        config.check_resolvers()?;
        config.limits.check()?;
        let verifier = Verifier::from_config(&config)?;
        let rate = crate::rate::RateLimiter::new(
            config.limits.requests_per_second_per_user,
            config.limits.request_burst_per_user,
        );
        Ok(AppState {
            clock,
            env: ResolveEnv {
                schema: Arc::new(config.schema),
                custom: Arc::new(config.resolvers),
                rules: config.rules.filter(|r| !r.is_empty()),
            },
            verifier,
            limits: config.limits,
            rate,
            store,
            live: crate::live::LiveHub::new(),
        })
    }

    /// The store behind this state.
    pub fn store(&self) -> &Arc<S> {
        &self.store
    }
}

/// An error answer: status plus stable code and message; for a limit, the limit's name and
/// value (`"limit": {"name": ..., "value": ...}` in the body), and for 429 a `Retry-After`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Boxed: keeps `Result<_, ApiError>` small.
    limit: Option<Box<(&'static str, serde_json::Value)>>,
    retry_after_secs: Option<u64>,
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable error code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The limit this error reports, by name, with its configured value.
    pub fn limit(&self) -> Option<(&'static str, &serde_json::Value)> {
        self.limit.as_deref().map(|(n, v)| (*n, v))
    }

    /// Seconds to wait before retrying (sent as `Retry-After`).
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after_secs
    }

    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            limit: None,
            retry_after_secs: None,
        }
    }

    /// Names the limit (a [`Limits`] field) this error reports, and its value.
    pub(crate) fn with_limit(
        mut self,
        name: &'static str,
        value: impl Into<serde_json::Value>,
    ) -> Self {
        self.limit = Some(Box::new((name, value.into())));
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({ "code": self.code, "message": self.message });
        if let Some((name, value)) = self.limit.map(|l| *l) {
            body["limit"] = serde_json::json!({ "name": name, "value": value });
        }
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response();
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        }
        response
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, e.code(), e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::ClientBound { .. } => {
                ApiError::new(StatusCode::FORBIDDEN, "client_id_bound", e.to_string())
            }
            other => {
                tracing::error!(error = %other, "store failure");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "storage_error",
                    other.to_string(),
                )
            }
        }
    }
}

/// The router with every route of the protocol.
pub fn router<S: ServerStore>(state: Arc<AppState<S>>) -> Router {
    Router::new()
        .route("/v1/sync", post(sync::<S>))
        .route("/v1/live", get(crate::live::live::<S>))
        .route("/v1/conflicts", get(list_conflicts::<S>))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(state)
}

/// FNV-1a over the op's canonical encoding: identifies a retried payload.
fn payload_hash(op: &v1::Op) -> u64 {
    burrow_core::hash::fnv1a64(&op.encode_to_vec())
}

async fn read_body(body: Body, limit: usize) -> Result<bytes::Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request body exceeds the limit body_bytes_max = {limit} bytes"),
        )
        .with_limit("body_bytes_max", limit)
    })
}

/// How far a device clock is ahead of the server's (negative: behind), from the device time
/// the request carries; 0 when it carries none. See `docs/design/time.md`.
pub fn clock_offset_ms(device_time_ms: u64, server_now_ms: u64) -> i64 {
    if device_time_ms == 0 {
        return 0;
    }
    (device_time_ms as i128 - server_now_ms as i128).clamp(i64::MIN as i128, i64::MAX as i128)
        as i64
}

/// Moves a server-time HLC into a device's clock frame (the inverse of the correction), so a
/// device that observes it does not jump to server time.
fn to_device_frame(hlc: Hlc, offset_ms: i64) -> Hlc {
    let ms = (hlc.ms() as i128 + offset_ms as i128).clamp(0, (u64::MAX >> 16) as i128) as u64;
    Hlc((ms << 16) | u64::from(hlc.counter()))
}

/// Turns a decoded request's upload into an ingest request: each op is decoded and validated
/// against the served schema (a refused op carries its rejection).
pub(crate) fn build_ingest(
    now_ms: u64,
    env: &ResolveEnv,
    claims: &auth::Claims,
    req: &mut v1::SyncRequest,
) -> IngestRequest {
    let schema: &Schema = &env.schema;
    let user_id = claims.sub.clone();
    let version_ok = req.schema_version <= schema.version;
    let txs = std::mem::take(&mut req.upload)
        .into_iter()
        .map(|ltx| IngestTx {
            tx_id: ltx.tx_id,
            more_parts: ltx.more_parts,
            ops: ltx
                .ops
                .into_iter()
                .map(|wire| {
                    let client_seq = wire.client_seq;
                    let payload_hash = payload_hash(&wire);
                    let op = op_from_wire(wire, ltx.tx_id)
                        .map_err(|e| Rejection::new("invalid_op", e.to_string()))
                        .and_then(|op| validate_op(schema, op))
                        .map_err(|r| {
                            // A newer app may write what this server's schema does not have yet.
                            if !version_ok && matches!(r.code, "unknown_table" | "unknown_column") {
                                Rejection::new(
                                    "schema_version_unsupported",
                                    format!(
                                        "{} (client schema version {}, server serves {})",
                                        r.message, req.schema_version, schema.version
                                    ),
                                )
                            } else {
                                r
                            }
                        });
                    IngestOp {
                        client_seq,
                        payload_hash,
                        op,
                    }
                })
                .collect(),
        })
        .collect();
    let claim_set = claim_set(claims);
    IngestRequest {
        user_id,
        client_id: req.client_id.clone(),
        txs,
        now_ms,
        claims: claim_set,
        clock_offset_ms: clock_offset_ms(req.device_time_ms, now_ms),
        env: env.clone(),
    }
}

/// A token's claims as rules see them: every claim, plus `sub`.
fn claim_set(claims: &auth::Claims) -> ClaimSet {
    ClaimSet::from_json(&claims.extra).with("sub", &claims.sub)
}

/// A wire subscription as the rules see it.
fn subscription_from_wire(s: &v1::Subscription) -> burrow_core::rules::Subscription {
    burrow_core::rules::Subscription {
        stream: s.stream.clone(),
        params: s
            .params
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    burrow_proto::convert::value_from_wire(Some(v.clone())),
                )
            })
            .collect(),
    }
}

fn outcome_to_wire(client_seq: u64, o: OutcomeKind) -> v1::OpOutcome {
    match o {
        OutcomeKind::Applied => v1::OpOutcome {
            client_seq,
            kind: v1::OutcomeKind::Applied as i32,
            ..Default::default()
        },
        OutcomeKind::Conflict { lost, reason } => v1::OpOutcome {
            client_seq,
            kind: v1::OutcomeKind::Conflict as i32,
            code: if lost.is_empty() {
                "conflict_won"
            } else {
                "conflict_lost"
            }
            .into(),
            message: reason,
            lost_columns: lost,
            seq: 0,
        },
        OutcomeKind::Staged => v1::OpOutcome {
            client_seq,
            kind: v1::OutcomeKind::Staged as i32,
            ..Default::default()
        },
        OutcomeKind::Rejected { code, message } => v1::OpOutcome {
            client_seq,
            kind: v1::OutcomeKind::Rejected as i32,
            code,
            message,
            lost_columns: vec![],
            seq: 0,
        },
    }
}

async fn sync<S: ServerStore>(
    State(state): State<Arc<AppState<S>>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let claims = authenticate_headers(&state, &headers)?;
    let raw = read_body(body, state.limits.body_bytes_max).await?;
    let body = process_sync(&state, &claims, &raw).await?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response())
}

/// [`authenticate`] with the request's `Authorization` header, then [`admit`] (the per-user
/// rate limit).
fn authenticate_headers<S: ServerStore>(
    state: &AppState<S>,
    headers: &HeaderMap,
) -> Result<auth::Claims, ApiError> {
    let claims = authenticate(
        state,
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    )?;
    admit(state, &claims)?;
    Ok(claims)
}

/// Checks the `Authorization` header value and returns the token's claims.
pub fn authenticate<S: ServerStore>(
    state: &AppState<S>,
    authorization: Option<&str>,
) -> Result<auth::Claims, ApiError> {
    let token = auth::bearer(authorization)?;
    Ok(state.verifier.verify(token)?)
}

/// Takes one request from the user's rate bucket: `429 rate_limited` with `Retry-After`
/// when it is empty. Called by the HTTP routes after authentication.
pub(crate) fn admit<S: ServerStore>(
    state: &AppState<S>,
    claims: &auth::Claims,
) -> Result<(), ApiError> {
    state
        .rate
        .check(&claims.sub, tokio::time::Instant::now())
        .map_err(|wait| {
            let rate = state.limits.requests_per_second_per_user;
            let burst = state.limits.request_burst_per_user;
            let secs = crate::rate::retry_after_secs(wait);
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "this user exceeded the limit requests_per_second_per_user = {rate} \
                     (request_burst_per_user = {burst}); retry after {secs} s"
                ),
            )
            .with_limit("requests_per_second_per_user", rate);
            e.retry_after_secs = Some(secs);
            e
        })
}

/// One sync exchange without the HTTP framing: decode, ingest, pull, encode. The router calls
/// it for `POST /v1/sync`; the simulator calls it directly.
pub async fn process_sync<S: ServerStore>(
    state: &AppState<S>,
    claims: &auth::Claims,
    raw: &[u8],
) -> Result<Vec<u8>, ApiError> {
    let mut req: v1::SyncRequest =
        decode_frame(raw, state.limits.decoded_bytes_max).map_err(|e| match e {
            burrow_proto::FrameError::TooLarge { limit } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("decompressed request exceeds decoded_bytes_max = {limit} bytes"),
            )
            .with_limit("decoded_bytes_max", limit),
            other => ApiError::new(StatusCode::BAD_REQUEST, "malformed_body", other.to_string()),
        })?;
    if req.protocol_version != PROTOCOL_VERSION {
        return Err(ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "protocol_version_unsupported",
            format!(
                "protocol version {} is not served; this server speaks {PROTOCOL_VERSION}",
                req.protocol_version
            ),
        ));
    }
    if req.client_id.is_empty() || req.client_id.len() > 128 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_client_id",
            "client_id must be 1..=128 bytes",
        ));
    }
    if req.schema_version == 0 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_schema_version",
            "schema_version is required",
        ));
    }
    let op_count: usize = req.upload.iter().map(|t| t.ops.len()).sum();
    if op_count > state.limits.ops_per_request_max {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_ops",
            format!(
                "{op_count} ops exceed the limit ops_per_request_max = {}",
                state.limits.ops_per_request_max
            ),
        )
        .with_limit("ops_per_request_max", state.limits.ops_per_request_max));
    }
    let mut outcomes = Vec::new();
    let mut ack_seq = 0;
    if op_count == 0 {
        // Uploads bind the client id inside the ingest transaction; a download-only request
        // must not read under another user's client id either.
        let owner = state.store.client_owner(&req.client_id).await?;
        if owner.is_some_and(|o| o != claims.sub) {
            return Err(StoreError::ClientBound {
                client_id: req.client_id.clone(),
            }
            .into());
        }
    }
    // Rows this request's ops wrote: under sync rules, one the writer may not read leaves
    // its device with the answer.
    let mut written: Vec<(String, String)> = Vec::new();
    if op_count > 0 {
        let ingest = build_ingest(state.clock.now_ms(), &state.env, claims, &mut req);
        let rows: std::collections::HashMap<u64, (String, String)> = ingest
            .txs
            .iter()
            .flat_map(|t| t.ops.iter())
            .filter_map(|o| {
                o.op.as_ref()
                    .ok()
                    .map(|op| (o.client_seq, (op.table.clone(), op.row_id.clone())))
            })
            .collect();
        let result = state.store.ingest(ingest).await?;
        written = result
            .outcomes
            .iter()
            .filter(|(_, o, _)| matches!(o, OutcomeKind::Applied | OutcomeKind::Conflict { .. }))
            .filter_map(|(s, _, _)| rows.get(s).cloned())
            .filter(|(t, _)| t != burrow_core::conflict::CONFLICTS_TABLE)
            .collect();
        state
            .live
            .publish_commit(result.head_seq, result.touched.clone());
        ack_seq = result.head_seq;
        outcomes = result
            .outcomes
            .into_iter()
            .map(|(s, o, seq)| v1::OpOutcome {
                seq,
                ..outcome_to_wire(s, o)
            })
            .collect();
    }
    let now_ms = state.clock.now_ms();
    let offset = clock_offset_ms(req.device_time_ms, now_ms);
    let replica = burrow_core::resolve::replica_tag(&req.client_id);
    let mut resp = v1::SyncResponse {
        outcomes,
        ack_seq,
        server_time_ms: now_ms,
        ..Default::default()
    };
    if req.download {
        let cursor = req
            .cursor
            .map(|c| Cursor {
                since: c.since,
                after: c.after.max(c.since),
            })
            .unwrap_or_default();
        let page_bytes_max = match req.page_bytes_max as usize {
            0 => state.limits.page_bytes_max,
            n => n.min(state.limits.page_bytes_max),
        };
        let page = state
            .store
            .pull(PullRequest {
                exclude_replica: (!req.include_own_changes).then_some(replica),
                audience: replica,
                cursor,
                page_bytes_max,
                page_rows_max: state.limits.page_rows_max,
                scope: state.env.rules.as_ref().map(|rules| ScopeRequest {
                    rules: rules.clone(),
                    schema: state.env.schema.clone(),
                    claims: claim_set(claims),
                    subscriptions: req
                        .subscriptions
                        .iter()
                        .map(subscription_from_wire)
                        .collect(),
                    now_ms,
                    written: std::mem::take(&mut written),
                    position: req
                        .cursor
                        .map(|c| ScopePosition {
                            scope: c.scope,
                            catchup_after: c.catchup_after,
                            catchup_target: c.catchup_target,
                        })
                        .unwrap_or_default(),
                }),
            })
            .await?;
        if let Some(grants) = &page.grants {
            state
                .live
                .record_grants(&claims.sub, &req.client_id, grants.clone());
        }
        resp.subscription_errors = page
            .refused
            .iter()
            .filter_map(|(sub, denied)| {
                let wire = req
                    .subscriptions
                    .iter()
                    .find(|w| w.stream == sub.stream && subscription_from_wire(w) == *sub)?;
                Some(v1::SubscriptionError {
                    subscription: Some(wire.clone()),
                    code: denied.code.to_string(),
                    message: denied.reason.clone(),
                })
            })
            .collect();
        resp.changes = page
            .changes
            .into_iter()
            .map(|mut c| {
                c.hlc = to_device_frame(c.hlc, offset);
                row_change_into_wire(c)
            })
            .collect();
        resp.cursor = Some(v1::Cursor {
            since: page.cursor.since,
            after: page.cursor.after,
            scope: page.position.scope,
            catchup_after: page.position.catchup_after,
            catchup_target: page.position.catchup_target,
        });
        resp.more = page.more;
        resp.head_seq = page.head_seq;
    } else {
        resp.head_seq = state.store.head_seq().await?;
    }
    let body = encode_frame(&resp).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "encode_failed",
            e.to_string(),
        )
    })?;
    Ok(body)
}

/// Query parameters of `GET /v1/conflicts`.
#[derive(Debug, serde::Deserialize)]
pub struct ConflictQuery {
    /// Only records with this status (`auto`, `open`, `resolved`).
    pub status: Option<String>,
    /// Only records of this table.
    pub table: Option<String>,
    /// At most this many of the newest records (default 100, at most 10,000).
    pub limit: Option<usize>,
}

/// Roles whose tokens may read the whole conflict log.
pub const OPERATOR_ROLES: [&str; 2] = ["operator", "admin"];

/// `GET /v1/conflicts`: the conflict log for an operator (a token with `role = operator` or
/// `admin`), newest last, as JSON `{"conflicts": [...]}`.
async fn list_conflicts<S: ServerStore>(
    State(state): State<Arc<AppState<S>>>,
    headers: HeaderMap,
    query: Result<Query<ConflictQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let claims = authenticate_headers(&state, &headers)?;
    let Query(q) = query
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e.body_text()))?;
    let set = ClaimSet::from_json(&claims.extra);
    if !OPERATOR_ROLES.iter().any(|r| set.has("role", r)) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "operator_only",
            "the conflict log is for operators: the token needs role=operator or role=admin",
        ));
    }
    let status = match q.status.as_deref() {
        None => None,
        Some(s) => Some(
            burrow_core::conflict::ConflictStatus::parse(s).ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_query",
                    format!("unknown status \"{s}\" (expected auto, open or resolved)"),
                )
            })?,
        ),
    };
    let limit = q.limit.unwrap_or(100).min(10_000);
    // Filters apply after the newest `limit`; ask for more when filtering.
    let fetch = if status.is_some() || q.table.is_some() {
        10_000
    } else {
        limit
    };
    let mut entries = state.store.conflicts(fetch).await?;
    entries.retain(|e| {
        status.is_none_or(|s| e.status == s) && q.table.as_ref().is_none_or(|t| &e.table == t)
    });
    let skip = entries.len().saturating_sub(limit);
    let body = serde_json::json!({ "conflicts": &entries[skip..] });
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response())
}
