//! Sync rules and write permissions: which rows each user's device receives (streams and
//! buckets) and which writes a user may make. The language and the config format are
//! documented in `docs/sync-rules.md`.
//!
//! The crate stays sans-IO: the caller supplies the time ([`EvalContext::now_ms`]) and answers
//! lookups through the [`Lookup`] trait. Nothing from a rule is ever spliced into SQL: the
//! library hands out table and column names that were checked against the schema and values
//! as typed [`Value`]s.
//!
//! # The bucket model
//!
//! A stream's `where` is a conjunction of *bucket terms* (`column = auth.X | param.X |
//! today()`, `column IN (SELECT …) | auth.X`) and *row filters* (conditions on the row's own
//! columns and literals). A row belongs to the bucket named by the stream and the row's values
//! of the bucket columns ([`SyncRules::row_buckets`]); a user is granted the buckets named by
//! the values the bucket terms' right sides take for them ([`SyncRules::grants`]). A row
//! reaches a user iff one of its buckets is granted.

mod check;
mod config;
mod eval;
mod lexer;
mod parser;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use check::{BucketSource, BucketTerm};
use eval::{Env, Memo, RowFn};
use parser::Expr;

pub use eval::MAX_COMBINATIONS;
pub use parser::MAX_DEPTH;

use crate::claims::ClaimSet;
use crate::schema::{ColumnType, ID_COLUMN, Schema};
use crate::value::Value;

/// An error in the rules configuration. Expression errors name the rule and the 1-based
/// `line:column` inside the expression string.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RulesError {
    /// The document is not valid TOML.
    #[error("burrow.toml is not valid TOML: {0}")]
    Toml(String),
    /// A key of `[rules]`, `[streams.*]` or `[[permissions]]` is missing, unknown or of the
    /// wrong kind.
    #[error("{path}: {message}")]
    Config {
        /// Dotted path of the key, e.g. `streams.todays_routes.table` or
        /// `permissions[1].actions`.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// An expression does not parse or does not type-check.
    #[error("{rule} at {line}:{column}: {message}")]
    Expr {
        /// The expression's key, e.g. `streams.route_shipments.where` or
        /// `permissions[1].when`.
        rule: String,
        /// 1-based line inside the expression string.
        line: usize,
        /// 1-based column (in characters) inside the expression string.
        column: usize,
        /// What was expected or is wrong.
        message: String,
    },
}

/// The name of a bucket: the stream name followed by the canonical JSON array of the row's
/// bucket-column values, e.g. `todays_routes["u1","2026-11-26"]` or `all_shipments[]`.
/// Integers and text never collide (`[1]` vs `["1"]`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BucketKey(pub String);

impl BucketKey {
    /// The stream part of the key.
    pub fn stream(&self) -> &str {
        self.0.split('[').next().unwrap_or("")
    }
}

impl fmt::Display for BucketKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A client's request to receive a parameterised stream with the given parameter values.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    /// The stream's name.
    pub stream: String,
    /// A value for each of the stream's `params`.
    pub params: BTreeMap<String, Value>,
}

/// Who is asking, and when.
#[derive(Debug, Clone, Copy)]
pub struct EvalContext<'a> {
    /// The user's token claims (`auth.NAME`); the user id is `claims.get("sub")`.
    pub claims: &'a ClaimSet,
    /// The evaluation time in Unix milliseconds; `today()` is its date in the configured
    /// timezone.
    pub now_ms: u64,
}

/// Answers lookups (`(SELECT column FROM table WHERE c1 = v1 AND …)`) from the server's data.
pub trait Lookup {
    /// The values of `column` in every live (non-deleted) row of `table` whose columns equal
    /// all `filters` (`(column, value)` pairs; the values are already of the filter columns'
    /// types). The order does not matter; duplicates are allowed.
    fn lookup(
        &mut self,
        table: &str,
        column: &str,
        filters: &[(String, Value)],
    ) -> Result<Vec<Value>, LookupError>;
}

/// A lookup could not be answered (a storage error, or too many combinations).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("lookup failed: {0}")]
pub struct LookupError(pub String);

/// A kind of write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// Creating a row.
    Insert,
    /// Changing fields of an existing row.
    Update,
    /// Deleting a row.
    Delete,
}

impl Action {
    /// The config spelling: `insert`, `update` or `delete`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Insert => "insert",
            Action::Update => "update",
            Action::Delete => "delete",
        }
    }

    /// Parses the config spelling.
    pub fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "insert" => Action::Insert,
            "update" => Action::Update,
            "delete" => Action::Delete,
            _ => return None,
        })
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a write or a subscription was refused. Codes: `permission_denied`, `lookup_failed`,
/// `unknown_stream`, `not_parameterised`, `invalid_params`, `subscription_denied`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {reason}")]
pub struct Denied {
    /// A stable machine-readable code.
    pub code: &'static str,
    /// A human-readable explanation naming the table, columns, action or stream and the
    /// rules that were tried.
    pub reason: String,
}

fn denied(code: &'static str, reason: impl Into<String>) -> Denied {
    Denied {
        code,
        reason: reason.into(),
    }
}

/// A named stream over one table (`[streams.NAME]`).
#[derive(Debug, Clone)]
pub struct Stream {
    name: String,
    table: String,
    params: BTreeMap<String, ColumnType>,
    when: Option<Expr>,
    where_: Option<Expr>,
    buckets: Vec<BucketTerm>,
    filters: Vec<Expr>,
}

impl Stream {
    /// The stream's name (its key in `[streams]`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The table whose rows it carries.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The declared parameters and their types (empty for an automatic stream).
    pub fn params(&self) -> &BTreeMap<String, ColumnType> {
        &self.params
    }

    /// Whether the stream has parameters, i.e. is received only by subscribing.
    pub fn is_parameterised(&self) -> bool {
        !self.params.is_empty()
    }

    /// The bucket columns, in order of appearance in `where`.
    pub fn bucket_columns(&self) -> impl Iterator<Item = &str> {
        self.buckets.iter().map(|b| b.column.as_str())
    }
}

/// One `[[permissions]]` entry.
#[derive(Debug, Clone)]
pub(crate) struct Permission {
    /// Its 0-based position, for messages (`permissions[1]`).
    index: usize,
    /// `None` for `"*"`.
    table: Option<String>,
    actions: Vec<Action>,
    /// `None`: every column.
    columns: Option<Vec<String>>,
    when: Option<Expr>,
}

/// Parsed and type-checked sync rules and write permissions.
#[derive(Debug, Clone)]
pub struct SyncRules {
    schema: Schema,
    present: bool,
    tz_offset_minutes: i32,
    streams: Vec<Stream>,
    permissions: Vec<Permission>,
    /// [`SyncRules::lookup_indexes`], computed once (the server asks on every row write).
    lookup_indexes: Vec<(String, Vec<String>)>,
    /// [`SyncRules::lookup_tables`], computed once.
    lookup_tables: BTreeSet<String>,
}

/// The civil date (`YYYY-MM-DD`) of `now_ms` (Unix milliseconds) at a fixed offset from UTC
/// of `tz_offset_minutes` (east positive: `+02:00` is 120).
pub fn today(now_ms: u64, tz_offset_minutes: i32) -> String {
    let ms = i128::from(now_ms) + i128::from(tz_offset_minutes) * 60_000;
    let days = ms.div_euclid(86_400_000);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i128::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

impl SyncRules {
    /// Parses the `[rules]`, `[streams.*]` and `[[permissions]]` sections of a `burrow.toml`
    /// document and type-checks every expression against `schema`. Other top-level keys
    /// (`[server]`, `[limits]`, …) are ignored.
    ///
    /// ```
    /// use burrow_core::Schema;
    /// use burrow_core::rules::SyncRules;
    /// let schema = Schema::from_toml_str(r#"
    ///     version = 1
    ///     [tables.routes.columns]
    ///     driver_id = "text"
    ///     day = "text"
    /// "#).unwrap();
    /// let rules = SyncRules::parse(r#"
    ///     [server]
    ///     listen = "0.0.0.0:8080"   # not ours: ignored
    ///     [streams.todays_routes]
    ///     table = "routes"
    ///     where = "driver_id = auth.sub AND day = today()"
    /// "#, &schema).unwrap();
    /// let row = |c: &str| match c {
    ///     "id" => Some(burrow_core::Value::Text("r1".into())),
    ///     "driver_id" => Some(burrow_core::Value::Text("u1".into())),
    ///     "day" => Some(burrow_core::Value::Text("2026-11-26".into())),
    ///     _ => None,
    /// };
    /// let keys = rules.row_buckets("routes", &row);
    /// assert_eq!(keys[0].to_string(), r#"todays_routes["u1","2026-11-26"]"#);
    ///
    /// let err = SyncRules::parse(
    ///     "[streams.s]\ntable = \"routes\"\nwhere = \"drver_id = auth.sub\"",
    ///     &schema,
    /// ).unwrap_err();
    /// assert_eq!(
    ///     err.to_string(),
    ///     "streams.s.where at 1:1: unknown column \"drver_id\" in table routes",
    /// );
    /// ```
    pub fn parse(toml_text: &str, schema: &Schema) -> Result<SyncRules, RulesError> {
        config::parse(toml_text, schema)
    }

    /// Whether the document has no `[rules]`, `[streams]` or `[[permissions]]` at all: the
    /// server then keeps its open behaviour (everyone reads and writes everything).
    pub fn is_empty(&self) -> bool {
        !self.present
    }

    /// Whether any stream is declared.
    pub fn has_streams(&self) -> bool {
        !self.streams.is_empty()
    }

    /// Whether any permission is declared. Without one, [`SyncRules::check_write`] allows
    /// every write.
    pub fn has_permissions(&self) -> bool {
        !self.permissions.is_empty()
    }

    /// The configured timezone as minutes east of UTC.
    pub fn tz_offset_minutes(&self) -> i32 {
        self.tz_offset_minutes
    }

    /// `today()` at `now_ms` in the configured timezone.
    pub fn today(&self, now_ms: u64) -> String {
        today(now_ms, self.tz_offset_minutes)
    }

    /// Every stream, in file order.
    pub fn streams(&self) -> impl Iterator<Item = &Stream> {
        self.streams.iter()
    }

    /// The stream named `name`.
    pub fn stream(&self, name: &str) -> Option<&Stream> {
        self.streams.iter().find(|s| s.name == name)
    }

    /// The buckets a row of `table` belongs to, over every stream of the table: for each
    /// stream whose row filters hold and whose bucket columns are all non-NULL, one key.
    /// `row` returns the row's value of a column by name (including `"id"`); a missing
    /// column, or a value that does not fit the column's type, reads as NULL.
    pub fn row_buckets(&self, table: &str, row: &dyn Fn(&str) -> Option<Value>) -> Vec<BucketKey> {
        let Some(tdef) = self.schema.table(table) else {
            return Vec::new();
        };
        let claims = ClaimSet::new();
        let env = Env {
            schema: &self.schema,
            claims: &claims,
            params: None,
            today: "",
            row: Some((tdef, row)),
        };
        let mut none = NoLookup;
        let mut memo = Memo::new(&mut none);
        let mut out = Vec::new();
        'streams: for s in self.streams.iter().filter(|s| s.table == table) {
            for f in &s.filters {
                // Row filters mention no lookups, so this cannot fail.
                if !env.holds(f, &mut memo).unwrap_or(false) {
                    continue 'streams;
                }
            }
            let mut values = Vec::with_capacity(s.buckets.len());
            for b in &s.buckets {
                let v = eval::read_value(row(&b.column), b.ty);
                match eval::to_column_type(&v, b.ty) {
                    Some(v) => values.push(v),
                    None => continue 'streams,
                }
            }
            out.push(bucket_key(&s.name, &values));
        }
        out
    }

    /// Every bucket the user may read now: each automatic stream (one without `params`)
    /// whose `when` holds, plus each subscription that [`SyncRules::check_subscription`] would
    /// allow (others are skipped silently). Lookups run lazily and identical lookups run once.
    /// Fails if a lookup fails or one stream would grant more than [`MAX_COMBINATIONS`]
    /// buckets.
    pub fn grants(
        &self,
        ctx: &EvalContext,
        subs: &[Subscription],
        lookup: &mut dyn Lookup,
    ) -> Result<BTreeSet<BucketKey>, LookupError> {
        let today = self.today(ctx.now_ms);
        let mut memo = Memo::new(lookup);
        let mut out = BTreeSet::new();
        for s in self.streams.iter().filter(|s| !s.is_parameterised()) {
            self.grant_stream(s, ctx, None, &today, &mut memo, &mut out)?;
        }
        for sub in subs {
            let Some(s) = self.stream(&sub.stream) else {
                continue;
            };
            if !s.is_parameterised() {
                continue;
            }
            let Ok(params) = normalise_params(s, &sub.params) else {
                continue;
            };
            self.grant_stream(s, ctx, Some(&params), &today, &mut memo, &mut out)?;
        }
        Ok(out)
    }

    fn grant_stream(
        &self,
        s: &Stream,
        ctx: &EvalContext,
        params: Option<&BTreeMap<String, Value>>,
        today: &str,
        memo: &mut Memo,
        out: &mut BTreeSet<BucketKey>,
    ) -> Result<(), LookupError> {
        let env = Env {
            schema: &self.schema,
            claims: ctx.claims,
            params,
            today,
            row: None,
        };
        if let Some(when) = &s.when
            && !env.holds(when, memo)?
        {
            return Ok(());
        }
        let mut sets = Vec::with_capacity(s.buckets.len());
        for b in &s.buckets {
            let term = |op| parser::Term {
                op,
                pos: lexer::Pos::START,
            };
            let values = match &b.source {
                BucketSource::Auth(a) => {
                    env.values_for(&term(parser::Operand::Auth(a.clone())), b.ty)
                }
                BucketSource::Param(p) => {
                    env.values_for(&term(parser::Operand::Param(p.clone())), b.ty)
                }
                BucketSource::Today => env.values_for(&term(parser::Operand::Today), b.ty),
                BucketSource::Lookup(l) => eval::dedup(
                    env.lookup(l, memo)?
                        .iter()
                        .filter_map(|v| eval::to_column_type(v, b.ty)),
                ),
            };
            if values.is_empty() {
                return Ok(());
            }
            sets.push(values);
        }
        for combo in eval::product(sets.iter().map(Vec::as_slice))? {
            out.insert(bucket_key(&s.name, &combo));
        }
        Ok(())
    }

    /// Whether the user may subscribe: the stream exists and is parameterised, the
    /// parameters are exactly the declared ones with values of the declared types, and the
    /// stream's `when` holds. A failed lookup is reported as `lookup_failed`.
    pub fn check_subscription(
        &self,
        ctx: &EvalContext,
        sub: &Subscription,
        lookup: &mut dyn Lookup,
    ) -> Result<(), Denied> {
        let Some(s) = self.stream(&sub.stream) else {
            return Err(denied(
                "unknown_stream",
                format!("there is no stream named \"{}\"", sub.stream),
            ));
        };
        if !s.is_parameterised() {
            return Err(denied(
                "not_parameterised",
                format!(
                    "stream {} has no params: it is synced automatically to whoever its `when` \
                     allows, not by subscription",
                    s.name
                ),
            ));
        }
        let params = normalise_params(s, &sub.params)?;
        let Some(when) = &s.when else {
            return Ok(());
        };
        let today = self.today(ctx.now_ms);
        let env = Env {
            schema: &self.schema,
            claims: ctx.claims,
            params: Some(&params),
            today: &today,
            row: None,
        };
        let mut memo = Memo::new(lookup);
        match env.holds(when, &mut memo) {
            Ok(true) => Ok(()),
            Ok(false) => Err(denied(
                "subscription_denied",
                format!(
                    "the `when` of stream {} does not hold for this user and these params",
                    s.name
                ),
            )),
            Err(e) => Err(denied("lookup_failed", format!("stream {}: {e}", s.name))),
        }
    }

    /// Checks one write. It is allowed iff some permission of `table` (or of `"*"`) lists
    /// `action`, covers every column in `columns` (`id` is always covered), and its `when`
    /// holds: for an insert on `new`, for a delete on `old`, for an update on both `old` (the
    /// stored row) and `new` (the row after the op). A missing row reads as all NULL. Without
    /// any permission ([`SyncRules::has_permissions`] false) every write is allowed.
    ///
    /// Errors: `permission_denied` (the reason lists the rules tried and why each did not
    /// apply) or `lookup_failed` (no rule allowed the write and a lookup failed).
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    pub fn check_write(
        &self,
        ctx: &EvalContext,
        table: &str,
        action: Action,
        columns: &[&str],
        old: Option<&dyn Fn(&str) -> Option<Value>>,
        new: Option<&dyn Fn(&str) -> Option<Value>>,
        lookup: &mut dyn Lookup,
    ) -> Result<(), Denied> {
        if !self.has_permissions() {
            return Ok(());
        }
        let today = self.today(ctx.now_ms);
        let null_row = |_: &str| None;
        let tdef = self.schema.table(table);
        let mut memo = Memo::new(lookup);
        let mut tried = Vec::new();
        let mut lookup_error = None;
        for p in &self.permissions {
            if p.table.as_deref().is_some_and(|t| t != table) {
                continue;
            }
            let name = format!("permissions[{}]", p.index);
            if !p.actions.contains(&action) {
                tried.push(format!("{name} does not allow {action}"));
                continue;
            }
            if let Some(cols) = &p.columns {
                let uncovered: Vec<&str> = columns
                    .iter()
                    .copied()
                    .filter(|c| *c != ID_COLUMN && !cols.iter().any(|k| k == c))
                    .collect();
                if !uncovered.is_empty() {
                    tried.push(format!(
                        "{name} does not cover column(s) {}",
                        uncovered.join(", ")
                    ));
                    continue;
                }
            }
            let Some(when) = &p.when else {
                return Ok(());
            };
            let rows: Vec<RowFn> = match action {
                Action::Insert => vec![new.unwrap_or(&null_row)],
                Action::Delete => vec![old.unwrap_or(&null_row)],
                Action::Update => vec![old.unwrap_or(&null_row), new.unwrap_or(&null_row)],
            };
            let labels: &[&str] = match action {
                Action::Insert => &["the new row"],
                Action::Delete => &["the stored row"],
                Action::Update => &["the stored row", "the updated row"],
            };
            let mut ok = true;
            for (row, label) in rows.into_iter().zip(labels) {
                let env = Env {
                    schema: &self.schema,
                    claims: ctx.claims,
                    params: None,
                    today: &today,
                    row: tdef.map(|t| (t, row)),
                };
                match env.holds(when, &mut memo) {
                    Ok(true) => {}
                    Ok(false) => {
                        tried.push(format!("{name}: `when` does not hold for {label}"));
                        ok = false;
                        break;
                    }
                    Err(e) => {
                        tried.push(format!("{name}: {e}"));
                        lookup_error.get_or_insert(e);
                        ok = false;
                        break;
                    }
                }
            }
            if ok {
                return Ok(());
            }
        }
        let what = if columns.is_empty() || action == Action::Delete {
            format!("{action} on {table}")
        } else {
            format!("{action} of {table}.{}", columns.join(", "))
        };
        let tried = if tried.is_empty() {
            format!("no permission mentions table {table}")
        } else {
            tried.join("; ")
        };
        match lookup_error {
            Some(e) => Err(denied("lookup_failed", format!("{what}: {e} ({tried})"))),
            None => Err(denied(
                "permission_denied",
                format!("{what} is not allowed: {tried}"),
            )),
        }
    }

    /// `(table, filter columns)` of every lookup (filter columns sorted, duplicates removed),
    /// so the server can index them.
    pub fn lookup_indexes(&self) -> &[(String, Vec<String>)] {
        &self.lookup_indexes
    }

    /// Every table a lookup reads: a write to one of them can change someone's grants or
    /// permissions.
    pub fn lookup_tables(&self) -> &BTreeSet<String> {
        &self.lookup_tables
    }

    /// Fills the lookup summaries from the parsed expressions (once, at parse).
    fn with_lookup_summaries(mut self) -> SyncRules {
        let mut indexes = BTreeSet::new();
        let mut tables = BTreeSet::new();
        for l in self.all_lookups() {
            let cols: BTreeSet<String> = l.filters.iter().map(|(c, _, _)| c.clone()).collect();
            indexes.insert((l.table.clone(), cols.into_iter().collect::<Vec<_>>()));
            tables.insert(l.table.clone());
        }
        self.lookup_indexes = indexes.into_iter().collect();
        self.lookup_tables = tables;
        self
    }

    fn all_lookups(&self) -> impl Iterator<Item = &parser::LookupExpr> {
        let mut out = Vec::new();
        for s in &self.streams {
            for e in s.when.iter().chain(s.where_.iter()) {
                check::lookups(e, &mut out);
            }
        }
        for p in &self.permissions {
            if let Some(e) = &p.when {
                check::lookups(e, &mut out);
            }
        }
        out.into_iter()
    }

    /// Evaluates a stream's `when` and `where` directly on one row: the predicate the buckets
    /// implement. Used as the oracle in tests.
    #[cfg(test)]
    pub(crate) fn row_visible(
        &self,
        stream: &str,
        ctx: &EvalContext,
        params: Option<&BTreeMap<String, Value>>,
        row: &dyn Fn(&str) -> Option<Value>,
        lookup: &mut dyn Lookup,
    ) -> Result<bool, LookupError> {
        let Some(s) = self.stream(stream) else {
            return Ok(false);
        };
        let Some(tdef) = self.schema.table(&s.table) else {
            return Ok(false);
        };
        let today = self.today(ctx.now_ms);
        let mut memo = Memo::new(lookup);
        let env = Env {
            schema: &self.schema,
            claims: ctx.claims,
            params,
            today: &today,
            row: Some((tdef, row)),
        };
        for e in s.when.iter().chain(s.where_.iter()) {
            if !env.holds(e, &mut memo)? {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// Checks a subscription's parameters against the stream's and converts them to the
/// declared types.
fn normalise_params(
    s: &Stream,
    given: &BTreeMap<String, Value>,
) -> Result<BTreeMap<String, Value>, Denied> {
    let mut out = BTreeMap::new();
    for name in given.keys() {
        if !s.params.contains_key(name) {
            return Err(denied(
                "invalid_params",
                format!("stream {} has no parameter \"{name}\"", s.name),
            ));
        }
    }
    for (name, ty) in &s.params {
        let Some(v) = given.get(name) else {
            return Err(denied(
                "invalid_params",
                format!("stream {} needs parameter \"{name}\" ({ty})", s.name),
            ));
        };
        // Text is parsed as a number only for claims; a parameter must have its own type.
        let fits = !matches!(v, Value::Text(_)) || *ty == ColumnType::Text;
        let Some(v) = eval::to_column_type(v, *ty).filter(|_| fits) else {
            return Err(denied(
                "invalid_params",
                format!(
                    "parameter \"{name}\" of stream {} must be a {ty}, not {}",
                    s.name,
                    v.kind_name()
                ),
            ));
        };
        out.insert(name.clone(), v);
    }
    Ok(out)
}

fn bucket_key(stream: &str, values: &[Value]) -> BucketKey {
    let json: Vec<serde_json::Value> = values.iter().map(Value::to_json).collect();
    BucketKey(format!("{stream}{}", serde_json::Value::Array(json)))
}

/// A [`Lookup`] with no data, for evaluations that never look anything up.
struct NoLookup;

impl Lookup for NoLookup {
    fn lookup(
        &mut self,
        _: &str,
        _: &str,
        _: &[(String, Value)],
    ) -> Result<Vec<Value>, LookupError> {
        Ok(Vec::new())
    }
}

/// An in-memory [`Lookup`] over a list of rows, for tests and small tools.
#[derive(Debug, Clone, Default)]
pub struct MemoryLookup {
    /// `(table, row)` pairs; a row maps column names (including `id`) to values.
    pub rows: Vec<(String, BTreeMap<String, Value>)>,
    /// How many queries reached this lookup (to observe memoisation).
    pub queries: usize,
}

impl MemoryLookup {
    /// No rows.
    pub fn new() -> MemoryLookup {
        MemoryLookup::default()
    }

    /// Adds a row to `table`.
    pub fn with_row(mut self, table: &str, row: &[(&str, Value)]) -> MemoryLookup {
        self.rows.push((
            table.to_string(),
            row.iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        ));
        self
    }
}

impl Lookup for MemoryLookup {
    fn lookup(
        &mut self,
        table: &str,
        column: &str,
        filters: &[(String, Value)],
    ) -> Result<Vec<Value>, LookupError> {
        self.queries += 1;
        Ok(self
            .rows
            .iter()
            .filter(|(t, row)| {
                t == table
                    && filters.iter().all(|(c, v)| {
                        row.get(c)
                            .and_then(|rv| eval::compare(rv, v))
                            .is_some_and(|o| o == std::cmp::Ordering::Equal)
                    })
            })
            .map(|(_, row)| row.get(column).cloned().unwrap_or(Value::Null))
            .collect())
    }
}
