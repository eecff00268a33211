//! Conversions between Burrow values, SQLite values and the JSON the capture triggers write.

use burrow_core::{ColumnType, Value};
use rusqlite::types::{ToSqlOutput, Value as SqlValue, ValueRef};

/// A Burrow value as an SQLite parameter (bools as 0/1, JSON as text).
pub fn to_sql(v: &Value) -> ToSqlOutput<'_> {
    match v {
        Value::Null => ToSqlOutput::Owned(SqlValue::Null),
        Value::Integer(i) => ToSqlOutput::Owned(SqlValue::Integer(*i)),
        Value::Real(f) => ToSqlOutput::Owned(SqlValue::Real(*f)),
        Value::Bool(b) => ToSqlOutput::Owned(SqlValue::Integer(i64::from(*b))),
        Value::Text(s) | Value::Json(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        Value::Blob(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
    }
}

/// Wrapper so a `&Value` can be passed where rusqlite wants `ToSql`.
#[derive(Debug)]
pub struct SqlParam<'a>(pub &'a Value);

impl rusqlite::ToSql for SqlParam<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(to_sql(self.0))
    }
}

/// Decodes one value of the op JSON a trigger wrote, by the column's declared type.
pub fn from_trigger_json(ty: ColumnType, v: &serde_json::Value) -> Option<Value> {
    use serde_json::Value as J;
    Some(match (ty, v) {
        (_, J::Null) => Value::Null,
        (ColumnType::Text, J::String(s)) => Value::Text(s.clone()),
        (ColumnType::Json, J::String(s)) => Value::Json(s.clone()),
        // Captured by a trigger that embedded a JSON-subtyped value as JSON.
        (ColumnType::Json, other @ (J::Array(_) | J::Object(_) | J::Number(_) | J::Bool(_))) => {
            Value::Json(other.to_string())
        }
        (ColumnType::Integer, J::Number(n)) => Value::Integer(n.as_i64()?),
        (ColumnType::Real, J::Number(n)) => Value::Real(n.as_f64()?),
        (ColumnType::Bool, J::Number(n)) => Value::Bool(n.as_i64()? != 0),
        (ColumnType::Blob, J::String(s)) => Value::Blob(hex::decode(s).ok()?),
        _ => return None,
    })
}

/// Encodes a value the way a trigger would (for ops the library writes itself).
pub fn to_trigger_json(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Null => J::Null,
        Value::Integer(i) => J::from(*i),
        Value::Real(f) => serde_json::Number::from_f64(*f)
            .map(J::Number)
            .unwrap_or(J::Null),
        Value::Bool(b) => J::from(i64::from(*b)),
        Value::Text(s) | Value::Json(s) => J::String(s.clone()),
        Value::Blob(b) => J::String(hex::encode_upper(b)),
    }
}

/// Reads a stored SQLite value as a Burrow value of the column's type.
pub fn from_sql(ty: ColumnType, v: ValueRef<'_>) -> Value {
    match (ty, v) {
        (_, ValueRef::Null) => Value::Null,
        (ColumnType::Bool, ValueRef::Integer(i)) => Value::Bool(i != 0),
        (ColumnType::Real, ValueRef::Integer(i)) => Value::Real(i as f64),
        (_, ValueRef::Integer(i)) => Value::Integer(i),
        (_, ValueRef::Real(f)) => Value::Real(f),
        (ColumnType::Json, ValueRef::Text(t)) => Value::Json(String::from_utf8_lossy(t).into()),
        (_, ValueRef::Text(t)) => Value::Text(String::from_utf8_lossy(t).into()),
        (_, ValueRef::Blob(b)) => Value::Blob(b.to_vec()),
    }
}

/// Renders any SQLite value as JSON for query output (blobs as lowercase hex).
pub fn sql_to_json(v: ValueRef<'_>) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        ValueRef::Null => J::Null,
        ValueRef::Integer(i) => J::from(i),
        ValueRef::Real(f) => serde_json::Number::from_f64(f)
            .map(J::Number)
            .unwrap_or(J::Null),
        ValueRef::Text(t) => J::String(String::from_utf8_lossy(t).into()),
        ValueRef::Blob(b) => J::String(hex::encode(b)),
    }
}
