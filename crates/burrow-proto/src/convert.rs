//! Conversions between the wire messages and `burrow-core` domain types.

use crate::v1;
use burrow_core::op::ChangedField;
use burrow_core::{FieldValue, Hlc, Op, OpKind, RowChange, Value};

/// Why a wire message does not map onto a domain value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// An op has no or an unknown kind.
    #[error("op {client_seq}: unknown op kind {kind}")]
    UnknownOpKind {
        /// The op's sequence.
        client_seq: u64,
        /// The raw kind number.
        kind: i32,
    },
}

/// Domain value → wire value.
pub fn value_to_wire(v: &Value) -> v1::Value {
    value_into_wire(v.clone())
}

/// Wire value → domain value (`None` and an unset value are NULL).
pub fn value_from_wire(v: Option<v1::Value>) -> Value {
    use v1::value::Kind;
    match v.and_then(|v| v.kind) {
        None => Value::Null,
        Some(Kind::Integer(i)) => Value::Integer(i),
        Some(Kind::Real(f)) => Value::Real(f),
        Some(Kind::Text(s)) => Value::Text(s),
        Some(Kind::Boolean(b)) => Value::Bool(b),
        Some(Kind::Blob(b)) => Value::Blob(b),
        Some(Kind::Json(s)) => Value::Json(s),
    }
}

/// Domain op kind → wire enum number.
pub fn op_kind_to_wire(k: OpKind) -> i32 {
    match k {
        OpKind::Insert => v1::OpKind::Insert as i32,
        OpKind::Update => v1::OpKind::Update as i32,
        OpKind::Delete => v1::OpKind::Delete as i32,
    }
}

/// Domain op → wire op.
pub fn op_to_wire(op: &Op) -> v1::Op {
    v1::Op {
        client_seq: op.client_seq,
        table: op.table.clone(),
        row_id: op.row_id.clone(),
        kind: op_kind_to_wire(op.kind),
        fields: op
            .fields
            .iter()
            .map(|f| v1::Field {
                column: f.column.clone(),
                value: Some(value_to_wire(&f.value)),
                seq: 0,
            })
            .collect(),
        hlc: op.hlc.0,
        base_seq: op.base_seq,
    }
}

/// Wire op → domain op of local transaction `tx`.
pub fn op_from_wire(op: v1::Op, tx: u64) -> Result<Op, ConvertError> {
    let kind = match v1::OpKind::try_from(op.kind) {
        Ok(v1::OpKind::Insert) => OpKind::Insert,
        Ok(v1::OpKind::Update) => OpKind::Update,
        Ok(v1::OpKind::Delete) => OpKind::Delete,
        _ => {
            return Err(ConvertError::UnknownOpKind {
                client_seq: op.client_seq,
                kind: op.kind,
            });
        }
    };
    Ok(Op {
        client_seq: op.client_seq,
        tx,
        table: op.table,
        row_id: op.row_id,
        kind,
        fields: op
            .fields
            .into_iter()
            .map(|f| FieldValue {
                column: f.column,
                value: value_from_wire(f.value),
            })
            .collect(),
        hlc: Hlc(op.hlc),
        base_seq: op.base_seq,
    })
}

/// Domain row change → wire row change, consuming it (no copies of values); field
/// sequences equal to the row's are sent as 0.
pub fn row_change_into_wire(c: RowChange) -> v1::RowChange {
    let seq = c.seq;
    v1::RowChange {
        table: c.table,
        row_id: c.row_id,
        seq,
        deleted: c.deleted,
        fields: c
            .fields
            .into_iter()
            .map(|f| v1::Field {
                column: f.column,
                value: Some(value_into_wire(f.value)),
                seq: if f.seq == seq { 0 } else { f.seq },
            })
            .collect(),
        hlc: c.hlc.0,
        evicted: c.evicted,
    }
}

/// Domain value → wire value, consuming it.
pub fn value_into_wire(v: Value) -> v1::Value {
    use v1::value::Kind;
    let kind = match v {
        Value::Null => None,
        Value::Integer(i) => Some(Kind::Integer(i)),
        Value::Real(f) => Some(Kind::Real(f)),
        Value::Text(s) => Some(Kind::Text(s)),
        Value::Bool(b) => Some(Kind::Boolean(b)),
        Value::Blob(b) => Some(Kind::Blob(b)),
        Value::Json(s) => Some(Kind::Json(s)),
    };
    v1::Value { kind }
}

/// Wire row change → domain row change.
pub fn row_change_from_wire(c: v1::RowChange) -> RowChange {
    let seq = c.seq;
    RowChange {
        table: c.table,
        row_id: c.row_id,
        seq,
        deleted: c.deleted,
        fields: c
            .fields
            .into_iter()
            .map(|f| ChangedField {
                column: f.column,
                value: value_from_wire(f.value),
                seq: if f.seq == 0 { seq } else { f.seq },
            })
            .collect(),
        hlc: Hlc(c.hlc),
        evicted: c.evicted,
    }
}

/// Encodes a server row's fields for storage (the tombstone flag, sequence and HLC are kept in
/// columns of their own by the stores).
pub fn stored_fields_to_bytes(row: &burrow_core::resolve::ServerRow) -> Vec<u8> {
    use prost::Message;
    v1::StoredRow {
        fields: row
            .fields
            .iter()
            .map(|(c, f)| v1::StoredField {
                column: c.clone(),
                value: Some(value_to_wire(&f.value)),
                seq: f.version.seq,
                hlc: f.version.hlc.0,
                replica: f.version.replica,
                rank: (f.rank != Value::Null).then(|| value_to_wire(&f.rank)),
            })
            .collect(),
    }
    .encode_to_vec()
}

/// Decodes what [`stored_fields_to_bytes`] wrote into a row with the given header.
pub fn server_row_from_parts(
    deleted: bool,
    seq: u64,
    hlc: u64,
    fields: &[u8],
) -> Result<burrow_core::resolve::ServerRow, prost::DecodeError> {
    use burrow_core::resolve::{FieldVersion, StoredField};
    use prost::Message;
    let stored = v1::StoredRow::decode(fields)?;
    Ok(burrow_core::resolve::ServerRow {
        deleted,
        seq,
        hlc: Hlc(hlc),
        replica: 0,
        fields: stored
            .fields
            .into_iter()
            .map(|f| {
                (
                    f.column,
                    StoredField {
                        value: value_from_wire(f.value),
                        version: FieldVersion {
                            seq: f.seq,
                            hlc: Hlc(f.hlc),
                            replica: f.replica,
                        },
                        rank: f.rank.map_or(Value::Null, |r| value_from_wire(Some(r))),
                    },
                )
            })
            .collect(),
    })
}

/// Encodes a single value for storage outside a row (conflict log, client shadow).
pub fn value_to_bytes(v: &Value) -> Vec<u8> {
    use prost::Message;
    value_to_wire(v).encode_to_vec()
}

/// Decodes what [`value_to_bytes`] wrote.
pub fn value_from_bytes(b: &[u8]) -> Result<Value, prost::DecodeError> {
    use prost::Message;
    Ok(value_from_wire(Some(v1::Value::decode(b)?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip() {
        for v in [
            Value::Null,
            Value::Integer(-5),
            Value::Real(1.5),
            Value::Text("x".into()),
            Value::Bool(true),
            Value::Blob(vec![1, 2]),
            Value::Json("[1]".into()),
        ] {
            assert_eq!(value_from_wire(Some(value_to_wire(&v))), v);
        }
    }

    #[test]
    fn row_change_round_trips_with_compact_field_seqs() {
        let c = RowChange {
            table: "t".into(),
            row_id: "r".into(),
            seq: 9,
            deleted: false,
            fields: vec![
                ChangedField {
                    column: "a".into(),
                    value: Value::Integer(1),
                    seq: 9,
                },
                ChangedField {
                    column: "b".into(),
                    value: Value::Null,
                    seq: 3,
                },
            ],
            hlc: Hlc(77),
            evicted: false,
        };
        let wire = row_change_into_wire(c.clone());
        assert_eq!(wire.fields[0].seq, 0);
        assert_eq!(row_change_from_wire(wire), c);
    }

    #[test]
    fn unknown_op_kind_is_an_error() {
        let op = v1::Op {
            kind: 42,
            ..Default::default()
        };
        assert!(op_from_wire(op, 1).is_err());
    }
}
