//! Validation of uploaded ops against the schema the server serves.

use burrow_core::conflict::CONFLICTS_TABLE;
use burrow_core::resolve::crdt_kind;
use burrow_core::schema::ID_COLUMN;
use burrow_core::{Op, OpKind, Schema, Value};

/// Why an op is refused before it reaches the store; becomes a per-op `rejected` outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Stable machine code.
    pub code: &'static str,
    /// Human-readable reason.
    pub message: String,
}

impl Rejection {
    /// A rejection with `code` and `message`.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Rejection {
            code,
            message: message.into(),
        }
    }
}

/// Longest accepted primary key, in bytes.
pub const ROW_ID_BYTES_MAX: usize = 256;

/// Checks one op against `schema`, converting values to the column types. Returns the op
/// ready for the store or why it is refused.
pub fn validate_op(schema: &Schema, mut op: Op) -> Result<Op, Rejection> {
    if op.table == CONFLICTS_TABLE {
        return validate_resolution(op);
    }
    let Some(table) = schema.table(&op.table) else {
        return Err(Rejection::new(
            "unknown_table",
            format!("unknown table \"{}\"", op.table),
        ));
    };
    if op.row_id.is_empty() || op.row_id.len() > ROW_ID_BYTES_MAX {
        return Err(Rejection::new(
            "invalid_row_id",
            format!("row id must be 1..={ROW_ID_BYTES_MAX} bytes"),
        ));
    }
    if op.kind == OpKind::Delete && !op.fields.is_empty() {
        return Err(Rejection::new("invalid_op", "a delete carries no fields"));
    }
    let mut seen = std::collections::HashSet::new();
    for f in &mut op.fields {
        if f.column == ID_COLUMN {
            return Err(Rejection::new(
                "invalid_op",
                "the primary key cannot be set as a field",
            ));
        }
        let Some(col) = table.column(&f.column) else {
            return Err(Rejection::new(
                "unknown_column",
                format!("unknown column \"{}.{}\"", op.table, f.column),
            ));
        };
        if !seen.insert(f.column.clone()) {
            return Err(Rejection::new(
                "invalid_op",
                format!("column \"{}\" set twice", f.column),
            ));
        }
        if let Some(kind) = crdt_kind(&col.policy) {
            // CRDT columns carry loro update bytes, not the plain value.
            let ok = match &f.value {
                Value::Blob(b) => burrow_core::crdt::validate(kind, b).map_err(|e| e.to_string()),
                other => Err(format!("expected CRDT update bytes, got {other:?}")),
            };
            if let Err(e) = ok {
                return Err(Rejection::new(
                    "invalid_crdt_update",
                    format!(
                        "column \"{}.{}\" ({}): {e}",
                        op.table,
                        f.column,
                        col.policy.name()
                    ),
                ));
            }
            continue;
        }
        let value = std::mem::replace(&mut f.value, burrow_core::Value::Null);
        f.value = value.conform(col.ty).map_err(|e| {
            Rejection::new(
                "wrong_type",
                format!("column \"{}.{}\": {e}", op.table, f.column),
            )
        })?;
    }
    Ok(op)
}

/// A resolution of a manual conflict: an update of a `_burrow_conflicts` row that sets
/// `status = "resolved"` and, optionally, `resolution` (the chosen value as JSON). Nothing
/// else of a conflict record can be written by a device.
fn validate_resolution(mut op: Op) -> Result<Op, Rejection> {
    let bad = |m: &str| Err(Rejection::new("invalid_resolution", m.to_string()));
    if op.kind != OpKind::Update || op.row_id.is_empty() || op.row_id.len() > ROW_ID_BYTES_MAX {
        return bad("a resolution is an update of one conflict record");
    }
    let mut resolved = false;
    for f in &mut op.fields {
        match (f.column.as_str(), &f.value) {
            ("status", Value::Text(s)) if s == "resolved" => resolved = true,
            ("resolution", Value::Json(_) | Value::Null) => {}
            ("resolution", Value::Text(t)) => {
                if serde_json::from_str::<serde_json::Value>(t).is_err() {
                    return bad("resolution must be JSON");
                }
                f.value = Value::Json(t.clone());
            }
            _ => {
                return bad("a resolution sets only status = \"resolved\" and resolution");
            }
        }
    }
    if !resolved {
        return bad("a resolution must set status = \"resolved\"");
    }
    Ok(op)
}

/// Validates every op of an upload as `POST /v1/sync` does before the store sees it: each op
/// is decoded and checked against `schema`, a refused op carries its rejection. Takes the ops
/// out of `req.upload`; `now_ms` is recorded with the request. Never panics, whatever the
/// request holds (fuzzed by `fuzz/fuzz_targets/batch_validator.rs`).
pub fn validate_request(
    schema: &Schema,
    req: &mut burrow_proto::v1::SyncRequest,
    user_id: String,
    now_ms: u64,
) -> crate::store::IngestRequest {
    let claims = crate::auth::Claims {
        sub: user_id,
        exp: u64::MAX,
        iat: 0,
        extra: Default::default(),
    };
    let env = crate::store::ResolveEnv::new(schema.clone());
    crate::http::build_ingest(now_ms, &env, &claims, req)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burrow_core::{FieldValue, Hlc, Value};

    fn schema() -> Schema {
        Schema::from_toml_str("version = 1\n[tables.t.columns]\nn = \"integer\"\ns = \"text\"\n")
            .unwrap()
    }

    fn op(table: &str, fields: Vec<(&str, Value)>) -> Op {
        Op {
            client_seq: 1,
            tx: 1,
            table: table.into(),
            row_id: "r".into(),
            kind: OpKind::Update,
            fields: FieldValue::list(fields),
            hlc: Hlc(1),
            base_seq: 0,
        }
    }

    #[test]
    fn refuses_unknown_tables_columns_and_wrong_types() {
        let s = schema();
        assert_eq!(
            validate_op(&s, op("x", vec![])).unwrap_err().code,
            "unknown_table"
        );
        assert_eq!(
            validate_op(&s, op("t", vec![("zz", Value::Null)]))
                .unwrap_err()
                .code,
            "unknown_column"
        );
        assert_eq!(
            validate_op(&s, op("t", vec![("n", Value::Text("x".into()))]))
                .unwrap_err()
                .code,
            "wrong_type"
        );
        assert!(validate_op(&s, op("t", vec![("n", Value::Integer(3))])).is_ok());
    }
}
