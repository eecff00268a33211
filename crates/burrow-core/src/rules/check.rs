//! Type-checks expressions against the schema and splits a stream's `where` into bucket terms
//! and row filters.

use std::collections::BTreeMap;

use super::lexer::Pos;
use super::parser::{CmpOp, Expr, InSet, LookupExpr, Operand, Term};
use crate::schema::{ColumnType, ID_COLUMN, Schema, Table};
use crate::value::Value;

/// A type error: where and what.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CheckError {
    pub pos: Pos,
    pub message: String,
}

fn error<T>(pos: Pos, message: impl Into<String>) -> Result<T, CheckError> {
    Err(CheckError {
        pos,
        message: message.into(),
    })
}

/// The static type of an operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ty {
    /// A value of a column type.
    Col(ColumnType),
    /// A token claim: one or more text values, compared numerically with numbers.
    Claim,
    /// The literal `NULL`.
    Null,
}

impl Ty {
    fn name(self) -> &'static str {
        match self {
            Ty::Col(t) => t.as_str(),
            Ty::Claim => "claim text",
            Ty::Null => "null",
        }
    }
}

/// What an expression may refer to.
pub(crate) struct Scope<'a> {
    pub schema: &'a Schema,
    /// The table whose row is in context, if any.
    pub row: Option<&'a Table>,
    /// Why there is no row, for the error message.
    pub no_row: &'static str,
    /// The declared parameters, if parameters are allowed here.
    pub params: Option<&'a BTreeMap<String, ColumnType>>,
    /// Why there are no parameters, for the error message.
    pub no_params: &'static str,
}

/// The type of `id` and of every other column of `table` named `name`.
pub(crate) fn column_type(table: &Table, name: &str) -> Option<ColumnType> {
    if name == ID_COLUMN {
        Some(ColumnType::Text)
    } else {
        table.column(name).map(|c| c.ty)
    }
}

fn describe(t: &Term) -> String {
    match &t.op {
        Operand::Lit(Value::Text(s)) => format!("'{}'", s.replace('\'', "''")),
        Operand::Lit(Value::Integer(i)) => i.to_string(),
        Operand::Lit(Value::Real(f)) => f.to_string(),
        Operand::Lit(Value::Bool(b)) => b.to_string(),
        Operand::Lit(_) => "NULL".into(),
        Operand::Column(c) => format!("column \"{c}\""),
        Operand::Auth(a) => format!("auth.{a}"),
        Operand::Param(p) => format!("param.{p}"),
        Operand::Today => "today()".into(),
    }
}

fn literal_type(v: &Value) -> Ty {
    match v {
        Value::Null => Ty::Null,
        Value::Integer(_) => Ty::Col(ColumnType::Integer),
        Value::Real(_) => Ty::Col(ColumnType::Real),
        Value::Bool(_) => Ty::Col(ColumnType::Bool),
        Value::Blob(_) => Ty::Col(ColumnType::Blob),
        Value::Json(_) => Ty::Col(ColumnType::Json),
        Value::Text(_) => Ty::Col(ColumnType::Text),
    }
}

/// Whether values of the two types can be compared.
fn comparable(a: Ty, b: Ty) -> bool {
    use ColumnType as C;
    let numeric = |t: Ty| matches!(t, Ty::Col(C::Integer | C::Real));
    match (a, b) {
        (Ty::Null, _) | (_, Ty::Null) => false,
        (Ty::Claim, Ty::Claim) => true,
        (Ty::Claim, Ty::Col(t)) | (Ty::Col(t), Ty::Claim) => {
            matches!(t, C::Text | C::Integer | C::Real)
        }
        _ if numeric(a) && numeric(b) => true,
        (Ty::Col(C::Text), Ty::Col(C::Text)) | (Ty::Col(C::Bool), Ty::Col(C::Bool)) => true,
        _ => false,
    }
}

fn check_comparable(a: &Term, ta: Ty, b: &Term, tb: Ty, pos: Pos) -> Result<(), CheckError> {
    if ta == Ty::Null || tb == Ty::Null {
        let at = if ta == Ty::Null { a.pos } else { b.pos };
        return error(
            at,
            "a comparison with NULL is never true; use IS NULL or IS NOT NULL",
        );
    }
    if comparable(ta, tb) {
        return Ok(());
    }
    for (t, ty) in [(a, ta), (b, tb)] {
        if let Ty::Col(c @ (ColumnType::Json | ColumnType::Blob)) = ty {
            return error(
                t.pos,
                format!(
                    "{} is {c}; {c} values cannot be compared (only IS NULL)",
                    describe(t)
                ),
            );
        }
    }
    error(
        pos,
        format!(
            "cannot compare {} ({}) with {} ({})",
            describe(a),
            ta.name(),
            describe(b),
            tb.name()
        ),
    )
}

/// The type of an operand in `scope`.
pub(crate) fn term_type(t: &Term, scope: &Scope) -> Result<Ty, CheckError> {
    match &t.op {
        Operand::Lit(v) => Ok(literal_type(v)),
        Operand::Auth(_) => Ok(Ty::Claim),
        Operand::Today => Ok(Ty::Col(ColumnType::Text)),
        Operand::Param(name) => match scope.params {
            None => error(t.pos, format!("param.{name}: {}", scope.no_params)),
            Some(params) => match params.get(name) {
                Some(ty) => Ok(Ty::Col(*ty)),
                None if params.is_empty() => error(
                    t.pos,
                    format!("unknown parameter \"{name}\" (the stream declares no `params`)"),
                ),
                None => error(
                    t.pos,
                    format!(
                        "unknown parameter \"{name}\" (the stream declares {})",
                        params
                            .keys()
                            .map(String::as_str)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ),
            },
        },
        Operand::Column(name) => match scope.row {
            None => error(
                t.pos,
                format!("column \"{name}\" used where {}", scope.no_row),
            ),
            Some(table) => match column_type(table, name) {
                Some(ty) => Ok(Ty::Col(ty)),
                None => error(
                    t.pos,
                    format!("unknown column \"{name}\" in table {}", table.name),
                ),
            },
        },
    }
}

/// Checks a lookup and returns the type of the column it yields.
pub(crate) fn check_lookup(l: &LookupExpr, scope: &Scope) -> Result<Ty, CheckError> {
    let Some(table) = scope.schema.table(&l.table) else {
        return error(
            l.table_pos,
            format!("unknown table \"{}\" in lookup", l.table),
        );
    };
    let Some(out_ty) = column_type(table, &l.column) else {
        return error(
            l.column_pos,
            format!("unknown column \"{}\" in table {}", l.column, table.name),
        );
    };
    if matches!(out_ty, ColumnType::Json | ColumnType::Blob) {
        return error(
            l.column_pos,
            format!(
                "a lookup cannot return column \"{}\": {out_ty} values cannot be compared",
                l.column
            ),
        );
    }
    for (col, col_pos, value) in &l.filters {
        let Some(col_ty) = column_type(table, col) else {
            return error(
                *col_pos,
                format!("unknown column \"{col}\" in table {}", table.name),
            );
        };
        if let Operand::Column(c) = &value.op {
            return error(
                value.pos,
                format!(
                    "a lookup filter compares with auth.NAME, param.NAME, today() or a literal, \
                     not with a column (\"{c}\")"
                ),
            );
        }
        let vty = term_type(value, scope)?;
        let col_term = Term {
            op: Operand::Column(col.clone()),
            pos: *col_pos,
        };
        check_comparable(&col_term, Ty::Col(col_ty), value, vty, *col_pos)?;
    }
    Ok(Ty::Col(out_ty))
}

/// Type-checks a condition.
pub(crate) fn check_expr(e: &Expr, scope: &Scope) -> Result<(), CheckError> {
    match e {
        Expr::Cmp(_, a, b, pos) => {
            let ta = term_type(a, scope)?;
            let tb = term_type(b, scope)?;
            check_comparable(a, ta, b, tb, *pos)
        }
        Expr::In { lhs, set, pos, .. } => {
            let tl = term_type(lhs, scope)?;
            match set {
                InSet::List(items) => {
                    for item in items {
                        let ti = term_type(item, scope)?;
                        if ti == Ty::Null {
                            return error(item.pos, "NULL in an IN list never matches; remove it");
                        }
                        check_comparable(lhs, tl, item, ti, *pos)?;
                    }
                    Ok(())
                }
                InSet::Lookup(l) => {
                    let tr = check_lookup(l, scope)?;
                    let out = Term {
                        op: Operand::Column(l.column.clone()),
                        pos: l.column_pos,
                    };
                    check_comparable(lhs, tl, &out, tr, *pos)
                }
                InSet::Auth(name, apos) => {
                    let claim = Term {
                        op: Operand::Auth(name.clone()),
                        pos: *apos,
                    };
                    check_comparable(lhs, tl, &claim, Ty::Claim, *pos)
                }
            }
        }
        Expr::IsNull { term, .. } => term_type(term, scope).map(|_| ()),
        Expr::Truth(t) => match term_type(t, scope)? {
            Ty::Col(ColumnType::Bool) => Ok(()),
            other => error(
                t.pos,
                format!(
                    "expected a condition, found {} ({}); compare it with something",
                    describe(t),
                    other.name()
                ),
            ),
        },
        Expr::And(parts) | Expr::Or(parts) => parts.iter().try_for_each(|p| check_expr(p, scope)),
        Expr::Not(inner, _) => check_expr(inner, scope),
    }
}

/// Where a bucket term's values come from when granting.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum BucketSource {
    /// Every value of a claim.
    Auth(String),
    /// A stream parameter.
    Param(String),
    /// `today()`.
    Today,
    /// The values a lookup returns.
    Lookup(LookupExpr),
}

/// A `column = P` or `column IN S` term of a stream's `where`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BucketTerm {
    pub column: String,
    pub ty: ColumnType,
    pub source: BucketSource,
}

/// Whether `e` mentions anything but row columns and literals; if so, the position of the
/// first such reference.
pub(crate) fn first_parameter(e: &Expr) -> Option<Pos> {
    let term = |t: &Term| match t.op {
        Operand::Auth(_) | Operand::Param(_) | Operand::Today => Some(t.pos),
        _ => None,
    };
    match e {
        Expr::Cmp(_, a, b, _) => term(a).or_else(|| term(b)),
        Expr::In { lhs, set, .. } => term(lhs).or(match set {
            InSet::List(items) => items.iter().find_map(term),
            InSet::Lookup(l) => Some(l.pos),
            InSet::Auth(_, p) => Some(*p),
        }),
        Expr::IsNull { term: t, .. } | Expr::Truth(t) => term(t),
        Expr::And(parts) | Expr::Or(parts) => parts.iter().find_map(first_parameter),
        Expr::Not(inner, _) => first_parameter(inner),
    }
}

/// Splits a (type-checked) stream `where` into bucket terms and row filters.
pub(crate) fn split_where(
    e: &Expr,
    table: &Table,
) -> Result<(Vec<BucketTerm>, Vec<Expr>), CheckError> {
    let conjuncts: Vec<&Expr> = match e {
        Expr::And(parts) => parts.iter().collect(),
        other => vec![other],
    };
    let mut buckets = Vec::new();
    let mut filters = Vec::new();
    for c in conjuncts {
        let Some(param_pos) = first_parameter(c) else {
            filters.push(c.clone());
            continue;
        };
        let bucket = |col: &Term, source: BucketSource| -> Option<BucketTerm> {
            let Operand::Column(name) = &col.op else {
                return None;
            };
            Some(BucketTerm {
                column: name.clone(),
                ty: column_type(table, name)?,
                source,
            })
        };
        let source_of = |t: &Term| match &t.op {
            Operand::Auth(a) => Some(BucketSource::Auth(a.clone())),
            Operand::Param(p) => Some(BucketSource::Param(p.clone())),
            Operand::Today => Some(BucketSource::Today),
            _ => None,
        };
        let term = match c {
            Expr::Cmp(CmpOp::Eq, a, b, _) => match (source_of(a), source_of(b)) {
                (None, Some(s)) => bucket(a, s),
                (Some(s), None) => bucket(b, s),
                _ => None,
            },
            Expr::In {
                lhs,
                set,
                negated: false,
                ..
            } => match set {
                InSet::Lookup(l) => bucket(lhs, BucketSource::Lookup(l.clone())),
                InSet::Auth(a, _) => bucket(lhs, BucketSource::Auth(a.clone())),
                InSet::List(_) => None,
            },
            _ => None,
        };
        match term {
            Some(t) => buckets.push(t),
            None => {
                return error(
                    param_pos,
                    "parameter terms (auth.*, param.*, today(), lookups) in `where` must be \
                     top-level `column = value` or `column IN (...)` terms joined by AND; \
                     conditions that do not involve the row belong in `when`",
                );
            }
        }
    }
    Ok((buckets, filters))
}

/// Every lookup in `e`.
pub(crate) fn lookups<'e>(e: &'e Expr, out: &mut Vec<&'e LookupExpr>) {
    match e {
        Expr::In {
            set: InSet::Lookup(l),
            ..
        } => out.push(l),
        Expr::And(parts) | Expr::Or(parts) => parts.iter().for_each(|p| lookups(p, out)),
        Expr::Not(inner, _) => lookups(inner, out),
        _ => {}
    }
}
