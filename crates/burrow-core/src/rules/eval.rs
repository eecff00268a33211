//! Evaluates checked expressions with SQL three-valued logic, normalises values for bucket
//! keys, and runs lookups (lazily, memoised within one call).

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};

use super::check::column_type;
use super::parser::{CmpOp, Expr, InSet, LookupExpr, Operand, Term};
use super::{Lookup, LookupError};
use crate::claims::ClaimSet;
use crate::schema::{ColumnType, Schema, Table};
use crate::value::Value;

/// The most lookup queries one lookup expression may issue (one per combination of
/// multi-valued claim filters), and the most buckets one stream may grant one user.
pub const MAX_COMBINATIONS: usize = 100_000;

/// A row as the caller supplies it: column name → value.
pub(crate) type RowFn<'a> = &'a dyn Fn(&str) -> Option<Value>;

/// Everything an expression can see.
pub(crate) struct Env<'a> {
    pub schema: &'a Schema,
    pub claims: &'a ClaimSet,
    /// Normalised parameter values (a parameterised stream's subscription).
    pub params: Option<&'a BTreeMap<String, Value>>,
    pub today: &'a str,
    /// The row in context and its table.
    pub row: Option<(&'a Table, RowFn<'a>)>,
}

/// Lookups already answered within one call.
pub(crate) struct Memo<'l> {
    lookup: &'l mut dyn Lookup,
    cache: HashMap<String, Vec<Value>>,
}

impl<'l> Memo<'l> {
    pub(crate) fn new(lookup: &'l mut dyn Lookup) -> Memo<'l> {
        Memo {
            lookup,
            cache: HashMap::new(),
        }
    }

    fn query(
        &mut self,
        table: &str,
        column: &str,
        filters: &[(String, Value)],
    ) -> Result<Vec<Value>, LookupError> {
        let key = format!(
            "{table}\u{0}{column}\u{0}{}",
            encode_values(filters.iter().map(|(c, v)| (c.as_str(), v)))
        );
        if let Some(hit) = self.cache.get(&key) {
            return Ok(hit.clone());
        }
        let out = self.lookup.lookup(table, column, filters)?;
        self.cache.insert(key, out.clone());
        Ok(out)
    }
}

fn encode_values<'v>(items: impl Iterator<Item = (&'v str, &'v Value)>) -> String {
    let items: Vec<serde_json::Value> = items
        .map(|(c, v)| serde_json::json!([c, v.to_json()]))
        .collect();
    serde_json::Value::Array(items).to_string()
}

/// A claim's text as a number: an `i64` if it parses as one, else a finite `f64`.
pub(crate) fn claim_number(s: &str) -> Option<Value> {
    if let Ok(i) = s.parse::<i64>() {
        return Some(Value::Integer(i));
    }
    match s.parse::<f64>() {
        Ok(f) if f.is_finite() => Some(Value::Real(if f == 0.0 { 0.0 } else { f })),
        _ => None,
    }
}

/// A stored value as the rules see it: values that do not fit the column's type read as NULL;
/// integers in a real column become reals; NaN and infinities read as NULL.
pub(crate) fn read_value(v: Option<Value>, ty: ColumnType) -> Value {
    match (ty, v) {
        (ColumnType::Text, Some(Value::Text(s))) => Value::Text(s),
        (ColumnType::Integer, Some(Value::Integer(i))) => Value::Integer(i),
        (ColumnType::Real, Some(Value::Real(f))) if f.is_finite() => {
            Value::Real(if f == 0.0 { 0.0 } else { f })
        }
        (ColumnType::Real, Some(Value::Integer(i))) => Value::Real(i as f64),
        (ColumnType::Bool, Some(Value::Bool(b))) => Value::Bool(b),
        (ColumnType::Bool, Some(Value::Integer(i @ (0 | 1)))) => Value::Bool(i == 1),
        (ColumnType::Json, Some(Value::Json(s) | Value::Text(s))) => Value::Json(s),
        (ColumnType::Blob, Some(Value::Blob(b))) => Value::Blob(b),
        _ => Value::Null,
    }
}

/// An integer exactly representable as `f64`, as that `f64`.
fn exact_f64(i: i64) -> Option<f64> {
    let f = i as f64;
    (f as i128 == i as i128).then_some(f)
}

/// A value compared against a column of type `ty`, in the one form equal values share
/// (so that bucket keys of equal values are equal). Claims arrive as text and are parsed
/// as numbers for numeric columns. `None`: the value can equal no value of the column.
pub(crate) fn to_column_type(v: &Value, ty: ColumnType) -> Option<Value> {
    match (ty, v) {
        (ColumnType::Text, Value::Text(s)) => Some(Value::Text(s.clone())),
        (ColumnType::Integer, Value::Integer(i)) => Some(Value::Integer(*i)),
        (ColumnType::Integer, Value::Real(f)) => {
            let t = f.trunc();
            if t != *f || !(-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&t) {
                return None;
            }
            Some(Value::Integer(t as i64))
        }
        (ColumnType::Real, Value::Real(f)) if f.is_finite() => {
            Some(Value::Real(if *f == 0.0 { 0.0 } else { *f }))
        }
        (ColumnType::Real, Value::Integer(i)) => exact_f64(*i).map(Value::Real),
        (ColumnType::Integer | ColumnType::Real, Value::Text(s)) => {
            to_column_type(&claim_number(s)?, ty)
        }
        (ColumnType::Bool, Value::Bool(b)) => Some(Value::Bool(*b)),
        (ColumnType::Bool, Value::Integer(i @ (0 | 1))) => Some(Value::Bool(*i == 1)),
        _ => None,
    }
}

/// Compares an integer with a float exactly.
fn cmp_int_real(i: i64, f: f64) -> Option<Ordering> {
    if f.is_nan() {
        return None;
    }
    if f >= 9.223_372_036_854_776e18 {
        return Some(Ordering::Less);
    }
    if f < -9.223_372_036_854_776e18 {
        return Some(Ordering::Greater);
    }
    let t = f.trunc();
    Some(i.cmp(&(t as i64)).then_with(|| {
        if f > t {
            Ordering::Less
        } else if f < t {
            Ordering::Greater
        } else {
            Ordering::Equal
        }
    }))
}

/// Orders two values of comparable kinds; `None` for NULL or kinds that do not compare.
pub(crate) fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Integer(x), Value::Integer(y)) => Some(x.cmp(y)),
        (Value::Real(x), Value::Real(y)) => x.partial_cmp(y),
        (Value::Integer(x), Value::Real(y)) => cmp_int_real(*x, *y),
        (Value::Real(x), Value::Integer(y)) => cmp_int_real(*y, *x).map(Ordering::reverse),
        (Value::Text(x), Value::Text(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// The value(s) an operand evaluates to.
#[derive(Debug, Clone)]
enum Ev {
    One(Value),
    /// A claim: all its values (none if the claim is absent).
    Claim(Vec<String>),
}

/// The concrete values of `ev` when compared with `other`: claims become numbers next to a
/// number (those that do not parse are dropped) and stay text otherwise.
fn concrete(ev: &Ev, other: &Ev) -> Vec<Value> {
    match (ev, other) {
        (Ev::One(v), _) => vec![v.clone()],
        (Ev::Claim(vs), Ev::One(Value::Integer(_) | Value::Real(_))) => {
            vs.iter().filter_map(|s| claim_number(s)).collect()
        }
        (Ev::Claim(vs), _) => vs.iter().map(|s| Value::Text(s.clone())).collect(),
    }
}

fn apply_op(op: CmpOp, a: &Value, b: &Value) -> Option<bool> {
    let ord = compare(a, b)?;
    Some(match op {
        CmpOp::Eq => ord == Ordering::Equal,
        CmpOp::Ne => ord != Ordering::Equal,
        CmpOp::Lt => ord == Ordering::Less,
        CmpOp::Le => ord != Ordering::Greater,
        CmpOp::Gt => ord == Ordering::Greater,
        CmpOp::Ge => ord != Ordering::Less,
    })
}

/// Three-valued OR over an iterator of results.
fn any3(items: impl IntoIterator<Item = Option<bool>>) -> Option<bool> {
    let mut unknown = false;
    for r in items {
        match r {
            Some(true) => return Some(true),
            None => unknown = true,
            Some(false) => {}
        }
    }
    if unknown { None } else { Some(false) }
}

/// `a OP b` where either side may be a set of claim values: `!=` holds when no pair is
/// equal, every other operator when some pair satisfies it. An empty side is unknown.
fn compare_ev(op: CmpOp, a: &Ev, b: &Ev) -> Option<bool> {
    if op == CmpOp::Ne {
        return compare_ev(CmpOp::Eq, a, b).map(|eq| !eq);
    }
    let left = concrete(a, b);
    let right = concrete(b, a);
    if left.is_empty() || right.is_empty() {
        return None;
    }
    any3(
        left.iter()
            .flat_map(|x| right.iter().map(move |y| apply_op(op, x, y))),
    )
}

/// `lhs IN (items)`: some item equals; empty sets never match.
fn in_values(lhs: &Ev, items: &[Value]) -> Option<bool> {
    any3(
        items
            .iter()
            .map(|v| compare_ev(CmpOp::Eq, lhs, &Ev::One(v.clone()))),
    )
}

impl Env<'_> {
    fn term(&self, t: &Term) -> Ev {
        match &t.op {
            Operand::Lit(v) => Ev::One(v.clone()),
            Operand::Auth(name) => Ev::Claim(self.claims.values(name).to_vec()),
            Operand::Param(name) => Ev::One(
                self.params
                    .and_then(|p| p.get(name).cloned())
                    .unwrap_or(Value::Null),
            ),
            Operand::Today => Ev::One(Value::Text(self.today.to_string())),
            Operand::Column(name) => match self.row {
                Some((table, row)) => match column_type(table, name) {
                    Some(ty) => Ev::One(read_value(row(name), ty)),
                    None => Ev::One(Value::Null),
                },
                None => Ev::One(Value::Null),
            },
        }
    }

    /// The values of a bucket source or lookup filter, as values of a column of type `ty`
    /// (deduplicated; values that cannot equal such a column are dropped).
    pub(crate) fn values_for(&self, t: &Term, ty: ColumnType) -> Vec<Value> {
        let raw: Vec<Value> = match self.term(t) {
            Ev::One(v) => vec![v],
            Ev::Claim(vs) => vs.into_iter().map(Value::Text).collect(),
        };
        dedup(raw.iter().filter_map(|v| to_column_type(v, ty)))
    }

    /// Runs a lookup: one query per combination of filter values (a claim filter may have
    /// several), the union of the results, read as the looked-up column's type.
    pub(crate) fn lookup(
        &self,
        l: &LookupExpr,
        memo: &mut Memo,
    ) -> Result<Vec<Value>, LookupError> {
        let Some(table) = self.schema.table(&l.table) else {
            return Ok(Vec::new());
        };
        let Some(out_ty) = column_type(table, &l.column) else {
            return Ok(Vec::new());
        };
        let mut choices: Vec<(String, Vec<Value>)> = Vec::new();
        for (col, _, value) in &l.filters {
            let Some(ty) = column_type(table, col) else {
                return Ok(Vec::new());
            };
            let vs = self.values_for(value, ty);
            if vs.is_empty() {
                return Ok(Vec::new());
            }
            choices.push((col.clone(), vs));
        }
        let mut out = Vec::new();
        for combo in product(choices.iter().map(|(_, vs)| vs.as_slice()))? {
            let filters: Vec<(String, Value)> = choices
                .iter()
                .zip(combo)
                .map(|((c, _), v)| (c.clone(), v))
                .collect();
            for v in memo.query(&l.table, &l.column, &filters)? {
                out.push(read_value(Some(v), out_ty));
            }
        }
        Ok(out)
    }

    /// Evaluates a condition: `Some(true)`, `Some(false)` or unknown (`None`, SQL NULL).
    /// `AND`/`OR` stop at the first part that decides them, so later lookups are not run.
    pub(crate) fn eval(&self, e: &Expr, memo: &mut Memo) -> Result<Option<bool>, LookupError> {
        Ok(match e {
            Expr::Cmp(op, a, b, _) => compare_ev(*op, &self.term(a), &self.term(b)),
            Expr::In {
                lhs, set, negated, ..
            } => {
                let l = self.term(lhs);
                let r = match set {
                    InSet::List(items) => {
                        let vs: Vec<Value> = items
                            .iter()
                            .map(|t| match self.term(t) {
                                Ev::One(v) => v,
                                Ev::Claim(_) => Value::Null,
                            })
                            .collect();
                        in_values(&l, &vs)
                    }
                    InSet::Auth(name, _) => {
                        let claim = Ev::Claim(self.claims.values(name).to_vec());
                        let vs = match &l {
                            Ev::One(v) => concrete(&claim, &Ev::One(v.clone())),
                            Ev::Claim(_) => concrete(&claim, &claim),
                        };
                        in_values(&l, &vs)
                    }
                    InSet::Lookup(lk) => {
                        let vs = self.lookup(lk, memo)?;
                        in_values(&l, &vs)
                    }
                };
                if *negated { r.map(|b| !b) } else { r }
            }
            Expr::IsNull { term, negated, .. } => {
                let null = match self.term(term) {
                    Ev::One(v) => v == Value::Null,
                    Ev::Claim(vs) => vs.is_empty(),
                };
                Some(null != *negated)
            }
            Expr::Truth(t) => match self.term(t) {
                Ev::One(Value::Bool(b)) => Some(b),
                _ => None,
            },
            Expr::Not(inner, _) => self.eval(inner, memo)?.map(|b| !b),
            Expr::And(parts) => {
                let mut unknown = false;
                for p in parts {
                    match self.eval(p, memo)? {
                        Some(false) => return Ok(Some(false)),
                        None => unknown = true,
                        Some(true) => {}
                    }
                }
                if unknown { None } else { Some(true) }
            }
            Expr::Or(parts) => {
                let mut unknown = false;
                for p in parts {
                    match self.eval(p, memo)? {
                        Some(true) => return Ok(Some(true)),
                        None => unknown = true,
                        Some(false) => {}
                    }
                }
                if unknown { None } else { Some(false) }
            }
        })
    }

    /// Whether a condition holds (unknown does not).
    pub(crate) fn holds(&self, e: &Expr, memo: &mut Memo) -> Result<bool, LookupError> {
        Ok(self.eval(e, memo)? == Some(true))
    }
}

/// Values deduplicated by their canonical encoding, in a stable (sorted) order.
pub(crate) fn dedup(values: impl Iterator<Item = Value>) -> Vec<Value> {
    let mut seen: BTreeMap<String, Value> = BTreeMap::new();
    for v in values {
        seen.entry(v.to_json().to_string()).or_insert(v);
    }
    seen.into_values().collect()
}

/// Every combination of one value from each slice (the cartesian product), refusing more than
/// [`MAX_COMBINATIONS`].
pub(crate) fn product<'v>(
    sets: impl Iterator<Item = &'v [Value]>,
) -> Result<Vec<Vec<Value>>, LookupError> {
    let mut out: Vec<Vec<Value>> = vec![Vec::new()];
    for set in sets {
        let size = out.len().saturating_mul(set.len());
        if size > MAX_COMBINATIONS {
            return Err(LookupError(format!(
                "more than {MAX_COMBINATIONS} combinations of parameter values"
            )));
        }
        let mut next = Vec::with_capacity(size);
        for prefix in &out {
            for v in set {
                let mut combo = prefix.clone();
                combo.push(v.clone());
                next.push(combo);
            }
        }
        out = next;
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn integers_and_reals_compare_exactly() {
        let big = (1i64 << 53) + 1;
        assert_eq!(
            compare(&Value::Integer(big), &Value::Real((1u64 << 53) as f64)),
            Some(Ordering::Greater)
        );
        assert_eq!(
            compare(&Value::Integer(3), &Value::Real(3.0)),
            Some(Ordering::Equal)
        );
        assert_eq!(
            compare(&Value::Real(2.5), &Value::Integer(3)),
            Some(Ordering::Less)
        );
        assert_eq!(
            compare(&Value::Integer(-3), &Value::Real(-2.5)),
            Some(Ordering::Less)
        );
        assert_eq!(
            compare(&Value::Integer(i64::MAX), &Value::Real(1e19)),
            Some(Ordering::Less)
        );
        assert_eq!(compare(&Value::Null, &Value::Null), None);
        assert_eq!(compare(&Value::Text("1".into()), &Value::Integer(1)), None);
    }

    #[test]
    fn normalisation_makes_equal_values_share_one_form() {
        use ColumnType as C;
        let t = |s: &str| Value::Text(s.into());
        assert_eq!(
            to_column_type(&t("42"), C::Integer),
            Some(Value::Integer(42))
        );
        assert_eq!(
            to_column_type(&t("42.0"), C::Integer),
            Some(Value::Integer(42))
        );
        assert_eq!(to_column_type(&t("4.2"), C::Integer), None);
        assert_eq!(to_column_type(&t("x"), C::Integer), None);
        assert_eq!(to_column_type(&t("NaN"), C::Real), None);
        assert_eq!(to_column_type(&t("inf"), C::Real), None);
        assert_eq!(to_column_type(&t("-0"), C::Real), Some(Value::Real(0.0)));
        assert_eq!(
            to_column_type(&Value::Integer((1 << 53) + 1), C::Real),
            None
        );
        assert_eq!(
            to_column_type(&Value::Integer(7), C::Real),
            Some(Value::Real(7.0))
        );
        assert_eq!(to_column_type(&t("42"), C::Text), Some(t("42")));
        assert_eq!(to_column_type(&Value::Null, C::Text), None);
        assert_eq!(read_value(Some(t("42")), C::Integer), Value::Null);
        assert_eq!(
            read_value(Some(Value::Real(f64::NAN)), C::Real),
            Value::Null
        );
        assert_eq!(
            read_value(Some(Value::Integer(1)), C::Bool),
            Value::Bool(true)
        );
    }

    #[test]
    fn product_is_bounded() {
        let a: Vec<Value> = (0..1000).map(Value::Integer).collect();
        assert_eq!(product([a.as_slice()].into_iter()).unwrap().len(), 1000);
        assert!(product([a.as_slice(), a.as_slice()].into_iter()).is_err());
    }
}
