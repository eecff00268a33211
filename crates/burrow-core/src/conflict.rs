//! Conflict records: the conflict log as devices and operators see it. The server keeps each
//! record as a row of the reserved table [`CONFLICTS_TABLE`], so records sync like any row
//! (to the devices involved) and a resolution is an op like any other.

use crate::op::FieldValue;
use crate::value::Value;
use serde::{Deserialize, Serialize};

/// The reserved table of conflict records, on the server (as rows) and on devices.
pub const CONFLICTS_TABLE: &str = "_burrow_conflicts";

/// Column name of a conflict that concerns a whole row (a delete against an update).
pub const WHOLE_ROW: &str = "*";

/// Where a conflict stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConflictStatus {
    /// Resolved by the column's policy; logged so nothing is lost.
    Auto,
    /// A `manual` conflict waiting for a person; the row shows a provisional winner.
    Open,
    /// A `manual` conflict a person resolved.
    Resolved,
}

impl ConflictStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ConflictStatus::Auto => "auto",
            ConflictStatus::Open => "open",
            ConflictStatus::Resolved => "resolved",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<ConflictStatus> {
        Some(match s {
            "auto" => ConflictStatus::Auto,
            "open" => ConflictStatus::Open,
            "resolved" => ConflictStatus::Resolved,
            _ => return None,
        })
    }
}

/// One competing version of a field (or row) in a conflict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConflictVersion {
    /// The value as JSON (a row: an object of its fields; a delete: `null`).
    pub value: serde_json::Value,
    /// This version is a delete of the row.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// The device that wrote it, when known.
    pub client: Option<String>,
    /// The user that wrote it, when known.
    pub user: Option<String>,
    /// When it was written: the write's HLC wall time, corrected to server time (ms).
    pub time_ms: u64,
    /// The server sequence that applied it (0: it never applied).
    pub seq: u64,
    /// This version is the one the row holds (for an open conflict: provisionally).
    pub won: bool,
}

/// One conflict log entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConflictEntry {
    /// Stable id (`c<N>`).
    pub id: String,
    /// Table of the row.
    pub table: String,
    /// Primary key of the row.
    pub row_id: String,
    /// The column, or [`WHOLE_ROW`].
    pub column: String,
    /// What decided: the policy (`lww`, `min`, `prefer`, `custom:NAME`, `manual`, …),
    /// `deleted` or `update_wins`.
    pub reason: String,
    /// Where it stands.
    pub status: ConflictStatus,
    /// The competing versions; exactly one has `won` unless a custom resolver merged them.
    pub versions: Vec<ConflictVersion>,
    /// The merged value a custom resolver stored instead of any version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged: Option<serde_json::Value>,
    /// For a resolved manual conflict: the value chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<serde_json::Value>,
    /// For a resolved manual conflict: the device that resolved it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_by: Option<String>,
    /// Server time the record was written (ms).
    pub at_ms: u64,
    /// Server sequence of the record's latest change.
    pub seq: u64,
}

impl ConflictEntry {
    /// The version the row holds (provisionally, while open), if one does.
    pub fn winner(&self) -> Option<&ConflictVersion> {
        self.versions.iter().find(|v| v.won)
    }

    /// The versions the row does not hold.
    pub fn losers(&self) -> impl Iterator<Item = &ConflictVersion> {
        self.versions.iter().filter(|v| !v.won)
    }

    /// The record as the fields of its row in [`CONFLICTS_TABLE`].
    pub fn to_fields(&self) -> Vec<FieldValue> {
        let json = |v: &serde_json::Value| Value::Json(v.to_string());
        let opt = |v: &Option<serde_json::Value>| v.as_ref().map_or(Value::Null, json);
        let versions = serde_json::to_value(&self.versions).unwrap_or_default();
        FieldValue::list([
            ("tbl", Value::Text(self.table.clone())),
            ("row_id", Value::Text(self.row_id.clone())),
            ("col", Value::Text(self.column.clone())),
            ("reason", Value::Text(self.reason.clone())),
            ("status", Value::Text(self.status.as_str().into())),
            ("versions", json(&versions)),
            ("merged", opt(&self.merged)),
            ("resolution", opt(&self.resolution)),
            (
                "resolved_by",
                self.resolved_by.clone().map_or(Value::Null, Value::Text),
            ),
            ("at_ms", Value::Integer(self.at_ms as i64)),
        ])
    }

    /// The record from the fields of its row; `None` when a field is missing or malformed.
    pub fn from_fields<'a>(
        id: &str,
        seq: u64,
        fields: impl IntoIterator<Item = (&'a str, &'a Value)>,
    ) -> Option<ConflictEntry> {
        let mut e = ConflictEntry {
            id: id.to_string(),
            table: String::new(),
            row_id: String::new(),
            column: String::new(),
            reason: String::new(),
            status: ConflictStatus::Auto,
            versions: vec![],
            merged: None,
            resolution: None,
            resolved_by: None,
            at_ms: 0,
            seq,
        };
        let json = |v: &Value| match v {
            Value::Json(s) | Value::Text(s) => serde_json::from_str(s).ok(),
            _ => None,
        };
        let text = |v: &Value| match v {
            Value::Text(s) => Some(s.clone()),
            _ => None,
        };
        for (name, v) in fields {
            match name {
                "tbl" => e.table = text(v)?,
                "row_id" => e.row_id = text(v)?,
                "col" => e.column = text(v)?,
                "reason" => e.reason = text(v)?,
                "status" => e.status = ConflictStatus::parse(&text(v)?)?,
                "versions" => e.versions = serde_json::from_value(json(v)?).ok()?,
                "merged" => e.merged = json(v),
                "resolution" => e.resolution = json(v),
                "resolved_by" => e.resolved_by = text(v),
                "at_ms" => {
                    e.at_ms = match v {
                        Value::Integer(i) => *i as u64,
                        _ => 0,
                    }
                }
                _ => {}
            }
        }
        (!e.table.is_empty()).then_some(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_row_fields() {
        let e = ConflictEntry {
            id: "c7".into(),
            table: "items".into(),
            row_id: "r1".into(),
            column: "note".into(),
            reason: "manual".into(),
            status: ConflictStatus::Open,
            versions: vec![
                ConflictVersion {
                    value: serde_json::json!("a"),
                    deleted: false,
                    client: Some("dev-a".into()),
                    user: Some("ann".into()),
                    time_ms: 5,
                    seq: 3,
                    won: true,
                },
                ConflictVersion {
                    value: serde_json::Value::Null,
                    deleted: true,
                    client: None,
                    user: None,
                    time_ms: 4,
                    seq: 0,
                    won: false,
                },
            ],
            merged: None,
            resolution: Some(serde_json::json!("b")),
            resolved_by: Some("dev-b".into()),
            at_ms: 99,
            seq: 12,
        };
        let fields = e.to_fields();
        let back = ConflictEntry::from_fields(
            "c7",
            12,
            fields.iter().map(|f| (f.column.as_str(), &f.value)),
        )
        .unwrap();
        assert_eq!(back, e);
    }
}
