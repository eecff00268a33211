//! The schema file: the synced tables, their typed columns, upload priority and the conflict
//! policy of every column. Client and server load the same TOML file.
//!
//! ```
//! use burrow_core::{Schema, ColumnType, Priority};
//! let schema = Schema::from_toml_str(r#"
//!     version = 1
//!     [tables.shipments]
//!     priority = "critical"
//!     [tables.shipments.columns]
//!     id = "text"
//!     status = { type = "text", policy = "lww" }
//!     weight_kg = "real"
//! "#).unwrap();
//! let t = schema.table("shipments").unwrap();
//! assert_eq!(t.priority, Priority::Critical);
//! assert_eq!(t.column("weight_kg").unwrap().ty, ColumnType::Real);
//! ```

use indexmap::IndexMap;
use std::fmt;

/// Errors found while loading a schema file or comparing two schema versions.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SchemaError {
    /// The file is not valid TOML.
    #[error("schema file is not valid TOML: {0}")]
    Toml(String),
    /// A key is missing, misspelt or of the wrong kind; the message names its path.
    #[error("schema: {path}: {message}")]
    Invalid {
        /// Dotted path of the offending key, e.g. `tables.shipments.columns.status`.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A new schema cannot replace the old one in place.
    #[error("incompatible schema change from version {from} to {to}: {reason}")]
    Incompatible {
        /// The version the database is at.
        from: u32,
        /// The version of the file being applied.
        to: u32,
        /// Which table/column change is not allowed.
        reason: String,
    },
}

/// Result alias for schema operations.
pub type Result<T> = std::result::Result<T, SchemaError>;

/// Declared type of a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ColumnType {
    /// UTF-8 text.
    Text,
    /// 64-bit signed integer.
    Integer,
    /// 64-bit float.
    Real,
    /// Boolean, stored as 0/1.
    Bool,
    /// Raw bytes.
    Blob,
    /// A JSON document stored as text.
    Json,
}

impl ColumnType {
    /// Parses the schema-file spelling.
    pub fn parse(s: &str) -> Option<ColumnType> {
        Some(match s {
            "text" => ColumnType::Text,
            "integer" => ColumnType::Integer,
            "real" => ColumnType::Real,
            "bool" => ColumnType::Bool,
            "blob" => ColumnType::Blob,
            "json" => ColumnType::Json,
            _ => return None,
        })
    }

    /// The schema-file spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ColumnType::Text => "text",
            ColumnType::Integer => "integer",
            ColumnType::Real => "real",
            ColumnType::Bool => "bool",
            ColumnType::Blob => "blob",
            ColumnType::Json => "json",
        }
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Upload lane of a table's ops: higher lanes drain first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// Large, deferrable data (photos, logs).
    Bulk = 0,
    /// Everything else.
    Normal = 1,
    /// Must reach the office first (delivery confirmations).
    Critical = 2,
}

impl Priority {
    /// Parses the schema-file spelling.
    pub fn parse(s: &str) -> Option<Priority> {
        Some(match s {
            "critical" => Priority::Critical,
            "normal" => Priority::Normal,
            "bulk" => Priority::Bulk,
            _ => return None,
        })
    }

    /// The schema-file spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Critical => "critical",
            Priority::Normal => "normal",
            Priority::Bulk => "bulk",
        }
    }

    /// The lane from its stored number; unknown numbers map to `Normal`.
    pub fn from_i64(n: i64) -> Priority {
        match n {
            0 => Priority::Bulk,
            2 => Priority::Critical,
            _ => Priority::Normal,
        }
    }
}

/// How concurrent writes to one field are resolved (see `docs/schema-file.md#policies`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Policy {
    /// Field-level merge; the same field changed concurrently falls back to LWW.
    Merge,
    /// Last-write-wins by hybrid logical clock, deterministic tie-break on the replica.
    Lww,
    /// Concurrent increments add up.
    Counter,
    /// CRDT text.
    Text,
    /// CRDT list over a JSON array.
    List,
    /// A write by a user whose token has `claim == value` wins.
    Prefer {
        /// Token claim to test.
        claim: String,
        /// Value the claim must have.
        value: String,
    },
    /// The write whose row has the larger value of `column` wins.
    MaxBy {
        /// The column compared.
        column: String,
    },
    /// The value furthest along `order` wins.
    Order {
        /// Allowed values, earliest first.
        order: Vec<String>,
    },
    /// The smaller number wins.
    Min,
    /// The larger number wins.
    Max,
    /// Keep every version; the user decides.
    Manual,
    /// A server-side resolver registered under this name.
    Custom(String),
}

impl Policy {
    /// The schema-file name of the policy.
    pub fn name(&self) -> String {
        match self {
            Policy::Merge => "merge".into(),
            Policy::Lww => "lww".into(),
            Policy::Counter => "counter".into(),
            Policy::Text => "text".into(),
            Policy::List => "list".into(),
            Policy::Prefer { .. } => "prefer".into(),
            Policy::MaxBy { .. } => "max_by".into(),
            Policy::Order { .. } => "order".into(),
            Policy::Min => "min".into(),
            Policy::Max => "max".into(),
            Policy::Manual => "manual".into(),
            Policy::Custom(name) => format!("custom:{name}"),
        }
    }

    /// How the field's values travel and are stored: a plain value, an increment, or CRDT
    /// bytes. A migration may not move a column between representations.
    pub fn representation(&self) -> Representation {
        match self {
            Policy::Counter => Representation::Increment,
            Policy::Text | Policy::List => Representation::Crdt,
            _ => Representation::Plain,
        }
    }

    /// Whether the value is merged from every writer rather than chosen among them (counters
    /// and CRDTs): such a field has no single author, and concurrent writes never conflict.
    pub fn is_merged(&self) -> bool {
        self.representation() != Representation::Plain
    }
}

/// How a field's value is carried in ops and stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Representation {
    /// The value itself (every policy but `counter`, `text` and `list`).
    Plain,
    /// Ops carry the increment (new minus old); the server adds it up.
    Increment,
    /// Ops and stored values are CRDT (loro) bytes; the app sees the materialized value.
    Crdt,
}

/// What happens when a delete and an update of the same row are concurrent
/// (`on_delete_conflict` of a table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeleteConflict {
    /// The delete wins; the update's values go to the conflict log (default).
    #[default]
    DeleteWins,
    /// The update wins: the row stays (or comes back with all its fields); the delete is
    /// logged.
    UpdateWins,
    /// The delete wins provisionally and a manual conflict keeps both versions for the user.
    Manual,
}

impl DeleteConflict {
    /// The schema-file name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeleteConflict::DeleteWins => "delete_wins",
            DeleteConflict::UpdateWins => "update_wins",
            DeleteConflict::Manual => "manual",
        }
    }

    /// Parses the schema-file name.
    pub fn parse(s: &str) -> Option<DeleteConflict> {
        Some(match s {
            "delete_wins" => DeleteConflict::DeleteWins,
            "update_wins" => DeleteConflict::UpdateWins,
            "manual" => DeleteConflict::Manual,
            _ => return None,
        })
    }
}

/// One typed column of a synced table.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// Column name (an SQL identifier).
    pub name: String,
    /// Declared type.
    pub ty: ColumnType,
    /// Conflict policy for this field.
    pub policy: Policy,
    /// Table this column refers to by id, if declared (orders uploads; see the queue issue).
    pub references: Option<String>,
}

/// One synced table. Every table has a text primary key `id`.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// Table name (an SQL identifier).
    pub name: String,
    /// Upload lane of this table's ops.
    pub priority: Priority,
    /// Columns other than `id`, in file order.
    pub columns: Vec<Column>,
    /// How a delete concurrent with an update is resolved.
    pub on_delete_conflict: DeleteConflict,
}

impl Table {
    /// The column named `name` (not `id`).
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// A parsed, validated schema file.
#[derive(Debug, Clone, PartialEq)]
pub struct Schema {
    /// Monotone version number; bump it whenever the file changes.
    pub version: u32,
    /// Tables in file order.
    pub tables: IndexMap<String, Table>,
}

/// The name of every table's primary key column.
pub const ID_COLUMN: &str = "id";

fn invalid(path: impl Into<String>, message: impl Into<String>) -> SchemaError {
    SchemaError::Invalid {
        path: path.into(),
        message: message.into(),
    }
}

/// Whether `name` is usable as a table or column name.
pub fn is_valid_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 64
        && !name.to_ascii_lowercase().starts_with("_burrow")
        && !name.to_ascii_lowercase().starts_with("sqlite_")
}

fn parse_policy(path: &str, spec: &toml::Table, name: &str) -> Result<Policy> {
    let str_key = |key: &str| -> Result<String> {
        match spec.get(key) {
            Some(toml::Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(invalid(format!("{path}.{key}"), "must be a string")),
            None => Err(invalid(
                path,
                format!("policy \"{name}\" needs the key `{key}`"),
            )),
        }
    };
    Ok(match name {
        "merge" => Policy::Merge,
        "lww" => Policy::Lww,
        "counter" => Policy::Counter,
        "text" => Policy::Text,
        "list" => Policy::List,
        "min" => Policy::Min,
        "max" => Policy::Max,
        "manual" => Policy::Manual,
        "prefer" => Policy::Prefer {
            claim: str_key("claim")?,
            value: str_key("value")?,
        },
        "max_by" => Policy::MaxBy {
            column: str_key("column")?,
        },
        "order" => match spec.get("order") {
            Some(toml::Value::Array(items)) => {
                let mut order = Vec::new();
                for item in items {
                    match item {
                        toml::Value::String(s) => order.push(s.clone()),
                        _ => return Err(invalid(format!("{path}.order"), "must list strings")),
                    }
                }
                Policy::Order { order }
            }
            _ => {
                return Err(invalid(
                    path,
                    "policy \"order\" needs `order = [\"a\", \"b\", …]`",
                ));
            }
        },
        other => match other.strip_prefix("custom:") {
            Some(n) if is_valid_identifier(n) => Policy::Custom(n.to_string()),
            _ => {
                return Err(invalid(
                    path,
                    format!(
                        "unknown policy \"{other}\" (expected merge, lww, counter, text, list, \
                         prefer, max_by, order, min, max, manual or custom:NAME)"
                    ),
                ));
            }
        },
    })
}

fn parse_column(
    table: &str,
    name: &str,
    spec: &toml::Value,
    default_policy: &Policy,
) -> Result<Option<Column>> {
    let path = format!("tables.{table}.columns.{name}");
    if !is_valid_identifier(name) {
        return Err(invalid(
            &path,
            "column names are letters, digits and _, not starting with a digit or _burrow",
        ));
    }
    let (ty_name, table_spec) = match spec {
        toml::Value::String(s) => (s.clone(), None),
        toml::Value::Table(t) => match t.get("type") {
            Some(toml::Value::String(s)) => (s.clone(), Some(t)),
            _ => return Err(invalid(&path, "needs `type = \"text\"` (or another type)")),
        },
        _ => {
            return Err(invalid(
                &path,
                "must be a type string or a table with `type`",
            ));
        }
    };
    let ty = ColumnType::parse(&ty_name).ok_or_else(|| {
        invalid(
            &path,
            format!(
                "unknown type \"{ty_name}\" (expected text, integer, real, bool, blob or json)"
            ),
        )
    })?;
    if name == ID_COLUMN {
        if ty != ColumnType::Text {
            return Err(invalid(&path, "the primary key `id` must be of type text"));
        }
        if let Some(k) = table_spec.and_then(|t| t.keys().find(|k| k.as_str() != "type")) {
            return Err(invalid(&path, format!("the primary key takes no `{k}`")));
        }
        return Ok(None);
    }
    let mut policy = default_policy.clone();
    let mut references = None;
    if let Some(t) = table_spec {
        for key in t.keys() {
            if !matches!(
                key.as_str(),
                "type" | "policy" | "references" | "claim" | "value" | "column" | "order"
            ) {
                return Err(invalid(format!("{path}.{key}"), "unknown key"));
            }
        }
        if let Some(p) = t.get("policy") {
            let toml::Value::String(p) = p else {
                return Err(invalid(format!("{path}.policy"), "must be a string"));
            };
            policy = parse_policy(&path, t, p)?;
        }
        match t.get("references") {
            None => {}
            Some(toml::Value::String(r)) => references = Some(r.clone()),
            Some(_) => {
                return Err(invalid(
                    format!("{path}.references"),
                    "must be a table name",
                ));
            }
        }
    }
    check_policy_type(&path, &policy, ty)?;
    Ok(Some(Column {
        name: name.to_string(),
        ty,
        policy,
        references,
    }))
}

/// Refuses a policy that cannot apply to the column's type.
fn check_policy_type(path: &str, policy: &Policy, ty: ColumnType) -> Result<()> {
    let numeric = matches!(ty, ColumnType::Integer | ColumnType::Real);
    let fits = match policy {
        Policy::Counter | Policy::Min | Policy::Max => numeric,
        Policy::Text | Policy::Order { .. } => ty == ColumnType::Text,
        Policy::List => ty == ColumnType::Json,
        _ => true,
    };
    if fits {
        return Ok(());
    }
    let needs = match policy {
        Policy::Text | Policy::Order { .. } => "a text column",
        Policy::List => "a json column (holding an array)",
        _ => "an integer or real column",
    };
    Err(invalid(
        path,
        format!("policy \"{}\" needs {needs}, not {ty}", policy.name()),
    ))
}

impl Schema {
    /// Parses and validates a schema file.
    pub fn from_toml_str(text: &str) -> Result<Schema> {
        let root: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            SchemaError::Toml(e.to_string().trim().replace('\n', " "))
        })?;
        for key in root.keys() {
            if key != "version" && key != "tables" {
                return Err(invalid(
                    key,
                    "unknown key (expected `version` and `tables`)",
                ));
            }
        }
        let version = match root.get("version") {
            Some(toml::Value::Integer(v)) if *v >= 1 && *v <= i64::from(u32::MAX) => *v as u32,
            Some(_) => return Err(invalid("version", "must be a positive integer")),
            None => return Err(invalid("version", "missing (e.g. `version = 1`)")),
        };
        let tables_spec = match root.get("tables") {
            Some(toml::Value::Table(t)) => t,
            Some(_) => return Err(invalid("tables", "must be a table of tables")),
            None => {
                return Err(invalid(
                    "tables",
                    "missing: declare at least one [tables.NAME]",
                ));
            }
        };
        let mut tables = IndexMap::new();
        for (tname, tspec) in tables_spec {
            let path = format!("tables.{tname}");
            if !is_valid_identifier(tname) {
                return Err(invalid(
                    &path,
                    "table names are letters, digits and _, not starting with a digit or _burrow",
                ));
            }
            let toml::Value::Table(tspec) = tspec else {
                return Err(invalid(&path, "must be a table"));
            };
            for key in tspec.keys() {
                if !matches!(
                    key.as_str(),
                    "priority" | "columns" | "policy" | "on_delete_conflict"
                ) {
                    return Err(invalid(format!("{path}.{key}"), "unknown key"));
                }
            }
            let priority = match tspec.get("priority") {
                None => Priority::Normal,
                Some(toml::Value::String(p)) => Priority::parse(p).ok_or_else(|| {
                    invalid(
                        format!("{path}.priority"),
                        format!("unknown priority \"{p}\" (expected critical, normal or bulk)"),
                    )
                })?,
                Some(_) => return Err(invalid(format!("{path}.priority"), "must be a string")),
            };
            let default_policy = match tspec.get("policy") {
                None => Policy::Merge,
                Some(toml::Value::String(p)) => parse_policy(&path, &toml::Table::new(), p)?,
                Some(_) => return Err(invalid(format!("{path}.policy"), "must be a string")),
            };
            let on_delete_conflict = match tspec.get("on_delete_conflict") {
                None => DeleteConflict::default(),
                Some(toml::Value::String(p)) => DeleteConflict::parse(p).ok_or_else(|| {
                    invalid(
                        format!("{path}.on_delete_conflict"),
                        format!(
                            "unknown value \"{p}\" (expected delete_wins, update_wins or manual)"
                        ),
                    )
                })?,
                Some(_) => {
                    return Err(invalid(
                        format!("{path}.on_delete_conflict"),
                        "must be a string",
                    ));
                }
            };
            let Some(toml::Value::Table(cols)) = tspec.get("columns") else {
                return Err(invalid(
                    format!("{path}.columns"),
                    "missing: declare the columns",
                ));
            };
            let mut columns = Vec::new();
            for (cname, cspec) in cols {
                if let Some(c) = parse_column(tname, cname, cspec, &default_policy)? {
                    columns.push(c);
                }
            }
            if columns.is_empty() {
                return Err(invalid(
                    format!("{path}.columns"),
                    "needs at least one column besides `id`",
                ));
            }
            tables.insert(
                tname.clone(),
                Table {
                    name: tname.clone(),
                    priority,
                    columns,
                    on_delete_conflict,
                },
            );
        }
        if tables.is_empty() {
            return Err(invalid("tables", "declare at least one table"));
        }
        let schema = Schema { version, tables };
        // SQLite names are case-insensitive: `a` and `A` would be the same table or column.
        let mut seen_tables = std::collections::HashSet::new();
        for t in schema.tables.values() {
            if !seen_tables.insert(t.name.to_ascii_lowercase()) {
                return Err(invalid(
                    format!("tables.{}", t.name),
                    "another table has the same name up to letter case",
                ));
            }
            let mut seen_cols = std::collections::HashSet::from([ID_COLUMN.to_string()]);
            for c in &t.columns {
                if !seen_cols.insert(c.name.to_ascii_lowercase()) {
                    return Err(invalid(
                        format!("tables.{}.columns.{}", t.name, c.name),
                        "another column has the same name up to letter case",
                    ));
                }
            }
        }
        for t in schema.tables.values() {
            for c in &t.columns {
                if let Policy::MaxBy { column } = &c.policy
                    && (column == &c.name || t.column(column).is_none())
                {
                    return Err(invalid(
                        format!("tables.{}.columns.{}.column", t.name, c.name),
                        format!(
                            "max_by needs another column of {}, not \"{column}\"",
                            t.name
                        ),
                    ));
                }
                if let Some(r) = &c.references {
                    if !schema.tables.contains_key(r) {
                        return Err(invalid(
                            format!("tables.{}.columns.{}.references", t.name, c.name),
                            format!("no table named \"{r}\""),
                        ));
                    }
                    if c.ty != ColumnType::Text {
                        return Err(invalid(
                            format!("tables.{}.columns.{}", t.name, c.name),
                            "a reference holds an id, so its type must be text",
                        ));
                    }
                }
            }
        }
        Ok(schema)
    }

    /// Reads and parses a schema file from disk.
    pub fn from_file(path: &std::path::Path) -> Result<Schema> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| invalid(path.display().to_string(), format!("cannot read: {e}")))?;
        Schema::from_toml_str(&text)
    }

    /// The table named `name`.
    pub fn table(&self, name: &str) -> Option<&Table> {
        self.tables.get(name)
    }

    /// A canonical text form, compared to detect edits without a version bump: the
    /// schema's TOML rendering ([`Schema::to_toml`]).
    pub fn fingerprint(&self) -> String {
        self.to_toml()
    }

    /// A TOML text that parses back to an equal schema; stored by clients opened with a
    /// schema built in code.
    pub fn to_toml(&self) -> String {
        fn policy_keys(p: &Policy) -> String {
            match p {
                Policy::Prefer { claim, value } => {
                    format!(", policy = \"prefer\", claim = {claim:?}, value = {value:?}")
                }
                Policy::MaxBy { column } => format!(", policy = \"max_by\", column = {column:?}"),
                Policy::Order { order } => format!(", policy = \"order\", order = {order:?}"),
                other => format!(", policy = {:?}", other.name()),
            }
        }
        let mut out = format!("version = {}\n", self.version);
        for t in self.tables.values() {
            out.push_str(&format!(
                "\n[tables.{}]\npriority = \"{}\"\n",
                t.name,
                t.priority.as_str()
            ));
            if t.on_delete_conflict != DeleteConflict::DeleteWins {
                out.push_str(&format!(
                    "on_delete_conflict = \"{}\"\n",
                    t.on_delete_conflict.as_str()
                ));
            }
            out.push_str(&format!("[tables.{}.columns]\nid = \"text\"\n", t.name));
            for c in &t.columns {
                let refs = c
                    .references
                    .as_ref()
                    .map(|r| format!(", references = {r:?}"))
                    .unwrap_or_default();
                out.push_str(&format!(
                    "{} = {{ type = \"{}\"{}{} }}\n",
                    c.name,
                    c.ty,
                    policy_keys(&c.policy),
                    refs
                ));
            }
        }
        out
    }

    /// Checks that `self` can replace `old` in place: a higher version that only adds tables
    /// and columns, or changes priorities and policies. Returns what is new.
    pub fn migration_from(&self, old: &Schema) -> Result<SchemaDiff> {
        let incompatible = |reason: String| SchemaError::Incompatible {
            from: old.version,
            to: self.version,
            reason,
        };
        if self.version < old.version {
            return Err(incompatible(format!(
                "the database is already at version {}, newer than the file",
                old.version
            )));
        }
        if self.version == old.version {
            if self.fingerprint() != old.fingerprint() {
                return Err(incompatible(
                    "the schema changed but its version did not; bump `version`".into(),
                ));
            }
            return Ok(SchemaDiff::default());
        }
        let mut diff = SchemaDiff::default();
        for ot in old.tables.values() {
            let Some(nt) = self.tables.get(&ot.name) else {
                return Err(incompatible(format!("table `{}` was removed", ot.name)));
            };
            for oc in &ot.columns {
                match nt.column(&oc.name) {
                    None => {
                        return Err(incompatible(format!(
                            "column `{}.{}` was removed",
                            ot.name, oc.name
                        )));
                    }
                    Some(nc) if nc.ty != oc.ty => {
                        return Err(incompatible(format!(
                            "column `{}.{}` changed type from {} to {}",
                            ot.name, oc.name, oc.ty, nc.ty
                        )));
                    }
                    Some(nc) if nc.policy.representation() != oc.policy.representation() => {
                        return Err(incompatible(format!(
                            "column `{}.{}` changed policy from {} to {}, which changes how its \
                             values are synced (plain, counter increments or CRDT)",
                            ot.name,
                            oc.name,
                            oc.policy.name(),
                            nc.policy.name()
                        )));
                    }
                    Some(_) => {}
                }
            }
            for nc in &nt.columns {
                if ot.column(&nc.name).is_none() {
                    diff.added_columns.push((nt.name.clone(), nc.name.clone()));
                }
            }
        }
        for nt in self.tables.values() {
            if !old.tables.contains_key(&nt.name) {
                diff.added_tables.push(nt.name.clone());
            }
        }
        Ok(diff)
    }
}

/// What a compatible schema upgrade adds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SchemaDiff {
    /// Names of new tables.
    pub added_tables: Vec<String>,
    /// `(table, column)` of new columns in existing tables.
    pub added_columns: Vec<(String, String)>,
}

impl SchemaDiff {
    /// Whether the upgrade adds nothing.
    pub fn is_empty(&self) -> bool {
        self.added_tables.is_empty() && self.added_columns.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUE_EXAMPLE: &str = r#"
version = 1
[tables.routes]
priority = "normal"
[tables.routes.columns]
id = "text"
driver_id = "text"
day = "text"
[tables.shipments]
priority = "critical"
[tables.shipments.columns]
id = "text"
route_id = { type = "text", references = "routes" }
status = { type = "text", policy = "lww" }
address = "text"
weight_kg = "real"
"#;

    #[test]
    fn accepts_the_issue_example() {
        let s = Schema::from_toml_str(ISSUE_EXAMPLE).unwrap();
        assert_eq!(s.version, 1);
        let sh = s.table("shipments").unwrap();
        assert_eq!(sh.priority, Priority::Critical);
        let names: Vec<_> = sh.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["route_id", "status", "address", "weight_kg"]);
        assert_eq!(
            sh.column("route_id").unwrap().references.as_deref(),
            Some("routes")
        );
        assert_eq!(sh.column("status").unwrap().policy, Policy::Lww);
        assert_eq!(sh.column("address").unwrap().policy, Policy::Merge);
    }

    #[test]
    fn every_policy_parses_and_round_trips() {
        for p in [
            r#"{ type = "integer", policy = "counter" }"#,
            r#"{ type = "text", policy = "text" }"#,
            r#"{ type = "json", policy = "list" }"#,
            r#"{ type = "text", policy = "manual" }"#,
            r#"{ type = "integer", policy = "max" }"#,
            r#"{ type = "text", policy = "custom:mine" }"#,
            r#"{ type = "bool", policy = "prefer", claim = "role", value = "manager" }"#,
            r#"{ type = "real", policy = "max_by", column = "at" }"#,
            r#"{ type = "text", policy = "order", order = ["a", "b"] }"#,
        ] {
            let text = format!(
                "version = 1\n[tables.t]\non_delete_conflict = \"update_wins\"\n[tables.t.columns]\nid = \"text\"\nat = \"real\"\nx = {p}\n"
            );
            let schema = Schema::from_toml_str(&text).unwrap();
            assert_eq!(
                Schema::from_toml_str(&schema.to_toml()).unwrap(),
                schema,
                "{p} round-trips"
            );
            assert_eq!(
                schema.tables["t"].on_delete_conflict,
                DeleteConflict::UpdateWins
            );
        }
    }

    #[test]
    fn policies_that_do_not_fit_the_type_are_refused() {
        for (p, needs) in [
            (
                r#"{ type = "text", policy = "counter" }"#,
                "integer or real",
            ),
            (r#"{ type = "integer", policy = "text" }"#, "a text column"),
            (r#"{ type = "text", policy = "list" }"#, "a json column"),
            (r#"{ type = "bool", policy = "min" }"#, "integer or real"),
            (
                r#"{ type = "integer", policy = "order", order = ["a"] }"#,
                "a text column",
            ),
            (
                r#"{ type = "real", policy = "max_by", column = "nope" }"#,
                "another column",
            ),
            (
                r#"{ type = "real", policy = "max_by", column = "x" }"#,
                "another column",
            ),
        ] {
            let text = format!("version = 1\n[tables.t.columns]\nx = {p}\n");
            let err = Schema::from_toml_str(&text).unwrap_err().to_string();
            assert!(err.contains(needs), "{p}: {err}");
        }
        let bad = "version = 1\n[tables.t]\non_delete_conflict = \"never\"\n[tables.t.columns]\nx = \"text\"\n";
        assert!(
            Schema::from_toml_str(bad)
                .unwrap_err()
                .to_string()
                .contains("expected delete_wins, update_wins or manual")
        );
    }

    #[test]
    fn a_migration_may_not_change_how_a_column_syncs() {
        let v1 =
            Schema::from_toml_str("version = 1\n[tables.t.columns]\nq = \"integer\"\n").unwrap();
        let v2 = Schema::from_toml_str(
            "version = 2\n[tables.t.columns]\nq = { type = \"integer\", policy = \"counter\" }\n",
        )
        .unwrap();
        assert!(
            v2.migration_from(&v1)
                .unwrap_err()
                .to_string()
                .contains("changed policy")
        );
        let v2 = Schema::from_toml_str(
            "version = 2\n[tables.t.columns]\nq = { type = \"integer\", policy = \"max\" }\n",
        )
        .unwrap();
        assert!(v2.migration_from(&v1).is_ok());
    }

    #[test]
    fn unknown_policy_type_and_keys_are_clear_errors() {
        let bad = |col: &str| {
            let text = format!("version = 1\n[tables.t.columns]\nx = {col}\n");
            Schema::from_toml_str(&text).unwrap_err().to_string()
        };
        assert!(
            bad(r#"{ type = "text", policy = "newest" }"#).contains("unknown policy \"newest\"")
        );
        assert!(bad(r#""varchar""#).contains("unknown type \"varchar\""));
        assert!(bad(r#"{ type = "text", polcy = "lww" }"#).contains("tables.t.columns.x.polcy"));
        assert!(bad(r#"{ type = "text", policy = "prefer" }"#).contains("needs the key `claim`"));
    }

    #[test]
    fn structural_errors_name_their_path() {
        let e = Schema::from_toml_str("[tables.t.columns]\nx = \"text\"").unwrap_err();
        assert!(e.to_string().contains("version"));
        let e =
            Schema::from_toml_str("version = 1\n[tables.t.columns]\nid = \"integer\"\nx=\"text\"")
                .unwrap_err();
        assert!(e.to_string().contains("must be of type text"));
        let e = Schema::from_toml_str(
            "version = 1\n[tables.t.columns]\nr = { type = \"text\", references = \"nope\" }",
        )
        .unwrap_err();
        assert!(e.to_string().contains("no table named \"nope\""));
        assert!(
            Schema::from_toml_str("version = 1\n[tables._burrow_x.columns]\nx = \"text\"").is_err()
        );
        assert!(matches!(
            Schema::from_toml_str("version = "),
            Err(SchemaError::Toml(_))
        ));
    }

    #[test]
    fn to_toml_round_trips() {
        let s = Schema::from_toml_str(
            "version = 3\n[tables.a]\npriority = \"bulk\"\n[tables.a.columns]\nx = \"blob\"\ny = { type = \"text\", policy = \"lww\" }\n[tables.b.columns]\nr = { type = \"text\", references = \"a\" }\n",
        )
        .unwrap();
        assert_eq!(Schema::from_toml_str(&s.to_toml()).unwrap(), s);
    }

    #[test]
    fn names_differing_only_in_case_are_refused() {
        let e =
            Schema::from_toml_str("version = 1\n[tables.t.columns]\nb = \"text\"\nB = \"text\"\n");
        assert!(e.unwrap_err().to_string().contains("letter case"));
        let e = Schema::from_toml_str("version = 1\n[tables.t.columns]\nID = \"text\"\n");
        assert!(e.unwrap_err().to_string().contains("letter case"));
        let e = Schema::from_toml_str(
            "version = 1\n[tables.a.columns]\nx = \"text\"\n[tables.A.columns]\nx = \"text\"\n",
        );
        assert!(e.unwrap_err().to_string().contains("letter case"));
    }

    #[test]
    fn migration_allows_additions_and_refuses_removals_and_type_changes() {
        let v1 = Schema::from_toml_str(ISSUE_EXAMPLE).unwrap();
        let v2 = Schema::from_toml_str(
            &(ISSUE_EXAMPLE.replace("version = 1", "version = 2").replace(
                "weight_kg = \"real\"",
                "weight_kg = \"real\"\nnote = \"text\"",
            ) + "[tables.scans.columns]\ncode = \"text\"\n"),
        )
        .unwrap();
        let diff = v2.migration_from(&v1).unwrap();
        assert_eq!(diff.added_tables, ["scans"]);
        assert_eq!(
            diff.added_columns,
            [("shipments".to_string(), "note".to_string())]
        );
        assert!(v1.migration_from(&v2).is_err());

        let retyped = Schema::from_toml_str(
            &ISSUE_EXAMPLE
                .replace("version = 1", "version = 2")
                .replace("weight_kg = \"real\"", "weight_kg = \"text\""),
        )
        .unwrap();
        let e = retyped.migration_from(&v1).unwrap_err().to_string();
        assert!(e.contains("weight_kg") && e.contains("changed type"), "{e}");

        let same_version_edit =
            Schema::from_toml_str(&ISSUE_EXAMPLE.replace("address = \"text\"", "")).unwrap();
        assert!(
            same_version_edit
                .migration_from(&v1)
                .unwrap_err()
                .to_string()
                .contains("bump")
        );
        assert!(v1.migration_from(&v1).unwrap().is_empty());
    }
}
