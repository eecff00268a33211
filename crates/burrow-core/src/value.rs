//! Typed column values as they travel between devices and the server.

use crate::schema::ColumnType;

/// One field's value. The variant follows the column's declared [`ColumnType`]; `Null` is
/// allowed in every column except the primary key.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL `NULL`.
    Null,
    /// A 64-bit signed integer (`integer` columns).
    Integer(i64),
    /// A 64-bit float (`real` columns).
    Real(f64),
    /// UTF-8 text (`text` columns).
    Text(String),
    /// A boolean (`bool` columns; stored as 0/1 in SQLite).
    Bool(bool),
    /// Raw bytes (`blob` columns).
    Blob(Vec<u8>),
    /// A JSON document kept as its text (`json` columns).
    Json(String),
}

/// Why a value does not fit a column.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("expected a {expected} value, got {got}")]
pub struct TypeMismatch {
    /// The column's declared type.
    pub expected: ColumnType,
    /// A short name of what was supplied.
    pub got: &'static str,
}

impl Value {
    /// A short, stable name of the variant, used in error messages.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Integer(_) => "integer",
            Value::Real(_) => "real",
            Value::Text(_) => "text",
            Value::Bool(_) => "bool",
            Value::Blob(_) => "blob",
            Value::Json(_) => "json",
        }
    }

    /// Checks that this value may be stored in a column of type `ty`, converting the lossless
    /// cases (an integer into a `real` column, a 0/1 integer into a `bool` column).
    pub fn conform(self, ty: ColumnType) -> Result<Value, TypeMismatch> {
        let mismatch = |v: &Value| TypeMismatch {
            expected: ty,
            got: v.kind_name(),
        };
        match (ty, self) {
            (_, Value::Null) => Ok(Value::Null),
            // SQLite cannot store NaN (it becomes NULL) and JSON has no infinities: a replica
            // could never hold what the server would keep.
            (ColumnType::Real, Value::Real(f)) if !f.is_finite() => Err(TypeMismatch {
                expected: ty,
                got: "non-finite real",
            }),
            (ColumnType::Text, Value::Text(s)) => Ok(Value::Text(s)),
            (ColumnType::Integer, Value::Integer(i)) => Ok(Value::Integer(i)),
            (ColumnType::Real, Value::Real(f)) => Ok(Value::Real(f)),
            (ColumnType::Real, Value::Integer(i)) => Ok(Value::Real(i as f64)),
            (ColumnType::Bool, Value::Bool(b)) => Ok(Value::Bool(b)),
            (ColumnType::Bool, Value::Integer(i @ (0 | 1))) => Ok(Value::Bool(i == 1)),
            (ColumnType::Blob, Value::Blob(b)) => Ok(Value::Blob(b)),
            (ColumnType::Json, Value::Json(s)) => {
                if serde_json::from_str::<serde_json::Value>(&s).is_ok() {
                    Ok(Value::Json(s))
                } else {
                    Err(TypeMismatch {
                        expected: ty,
                        got: "invalid json",
                    })
                }
            }
            (ColumnType::Json, Value::Text(s)) => Value::Json(s).conform(ty),
            (_, other) => Err(mismatch(&other)),
        }
    }

    /// The value as a JSON value, for `query --json` style output. Blobs become lowercase hex.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Integer(i) => serde_json::Value::from(*i),
            Value::Real(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Value::Text(s) => serde_json::Value::String(s.clone()),
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Blob(b) => serde_json::Value::String(hex_lower(b)),
            Value::Json(s) => serde_json::from_str(s).unwrap_or(serde_json::Value::Null),
        }
    }

    /// An approximate encoded size in bytes, used to bound batches and pages.
    pub fn approx_size(&self) -> usize {
        match self {
            Value::Null | Value::Bool(_) => 1,
            Value::Integer(_) | Value::Real(_) => 8,
            Value::Text(s) | Value::Json(s) => s.len(),
            Value::Blob(b) => b.len(),
        }
    }
}

fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0xF) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conform_accepts_lossless_conversions_and_refuses_others() {
        assert_eq!(
            Value::Integer(3).conform(ColumnType::Real),
            Ok(Value::Real(3.0))
        );
        assert_eq!(
            Value::Integer(1).conform(ColumnType::Bool),
            Ok(Value::Bool(true))
        );
        assert!(Value::Integer(2).conform(ColumnType::Bool).is_err());
        assert!(
            Value::Text("x".into())
                .conform(ColumnType::Integer)
                .is_err()
        );
        assert!(Value::Text("{".into()).conform(ColumnType::Json).is_err());
        assert_eq!(Value::Null.conform(ColumnType::Blob), Ok(Value::Null));
        assert!(Value::Real(f64::NAN).conform(ColumnType::Real).is_err());
        assert!(
            Value::Real(f64::INFINITY)
                .conform(ColumnType::Real)
                .is_err()
        );
    }

    #[test]
    fn blobs_render_as_hex_in_json() {
        assert_eq!(
            Value::Blob(vec![0, 255]).to_json(),
            serde_json::json!("00ff")
        );
    }
}
