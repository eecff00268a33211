//! A recursive-descent parser from tokens to the expression tree. Nesting is bounded by
//! [`MAX_DEPTH`], so no input can overflow the stack.

use super::lexer::{Pos, Tok, is_keyword, lex};
use crate::value::Value;

/// The deepest nesting of parentheses, `NOT`s and lookups an expression may have.
pub const MAX_DEPTH: usize = 64;

/// A parse error: where and what.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ParseError {
    pub pos: Pos,
    pub message: String,
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A value-producing term.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Operand {
    /// A literal (text, integer, real, bool or NULL).
    Lit(Value),
    /// A column of the row in context.
    Column(String),
    /// `auth.NAME`: a token claim (one or more text values).
    Auth(String),
    /// `param.NAME`: a stream parameter.
    Param(String),
    /// `today()`.
    Today,
}

/// An operand with its position.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Term {
    pub op: Operand,
    pub pos: Pos,
}

/// `(SELECT column FROM table WHERE c1 = v1 AND …)`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LookupExpr {
    pub table: String,
    pub table_pos: Pos,
    pub column: String,
    pub column_pos: Pos,
    /// `(filter column, its position, the value it must equal)`.
    pub filters: Vec<(String, Pos, Term)>,
    pub pos: Pos,
}

/// The right side of `IN`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum InSet {
    /// `(lit, lit, …)`.
    List(Vec<Term>),
    /// `(SELECT …)`.
    Lookup(LookupExpr),
    /// `auth.NAME` (every value of the claim).
    Auth(String, Pos),
}

/// A boolean expression.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr {
    /// `a OP b`.
    Cmp(CmpOp, Term, Term, Pos),
    /// `a [NOT] IN set`.
    In {
        lhs: Term,
        set: InSet,
        negated: bool,
        pos: Pos,
    },
    /// `a IS [NOT] NULL`.
    IsNull { term: Term, negated: bool, pos: Pos },
    /// A bare operand used as a condition (a bool column, parameter or literal).
    Truth(Term),
    /// Every part holds.
    And(Vec<Expr>),
    /// Some part holds.
    Or(Vec<Expr>),
    /// `NOT e`.
    Not(Box<Expr>, Pos),
}

/// Parses a whole expression.
pub(crate) fn parse_expr(src: &str) -> Result<Expr, ParseError> {
    let tokens = lex(src).map_err(|e| ParseError {
        pos: e.pos,
        message: e.message,
    })?;
    let mut p = Parser { tokens, at: 0 };
    let e = p.or_expr(0)?;
    let (tok, pos) = p.peek();
    if *tok != Tok::End {
        return Err(ParseError {
            pos,
            message: format!("expected AND, OR or the end of the expression, found {tok}"),
        });
    }
    Ok(e)
}

struct Parser {
    tokens: Vec<(Tok, Pos)>,
    at: usize,
}

const OPERAND_HINT: &str = "a column, a literal, auth.NAME, param.NAME or today()";

impl Parser {
    fn peek(&self) -> (&Tok, Pos) {
        match self.tokens.get(self.at).or(self.tokens.last()) {
            Some((t, p)) => (t, *p),
            None => (&Tok::End, Pos::START),
        }
    }

    fn peek_at(&self, n: usize) -> &Tok {
        self.tokens.get(self.at + n).map_or(&Tok::End, |(t, _)| t)
    }

    fn bump(&mut self) -> (Tok, Pos) {
        let (t, p) = self.peek();
        let out = (t.clone(), p);
        if self.at < self.tokens.len() {
            self.at += 1;
        }
        out
    }

    fn is_kw(&self, kw: &str) -> bool {
        matches!(self.peek().0, Tok::Ident(s) if s.eq_ignore_ascii_case(kw))
    }

    fn eat_kw(&mut self, kw: &str) -> bool {
        if self.is_kw(kw) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expected<T>(&self, what: &str) -> Result<T, ParseError> {
        let (tok, pos) = self.peek();
        Err(ParseError {
            pos,
            message: format!("expected {what}, found {tok}"),
        })
    }

    fn expect(&mut self, tok: Tok, what: &str) -> Result<Pos, ParseError> {
        if *self.peek().0 == tok {
            Ok(self.bump().1)
        } else {
            self.expected(what)
        }
    }

    fn expect_kw(&mut self, kw: &str) -> Result<(), ParseError> {
        if self.eat_kw(kw) {
            Ok(())
        } else {
            self.expected(&kw.to_ascii_uppercase())
        }
    }

    fn deeper(&self, depth: usize) -> Result<usize, ParseError> {
        if depth >= MAX_DEPTH {
            Err(ParseError {
                pos: self.peek().1,
                message: format!("expression nested too deeply (more than {MAX_DEPTH} levels)"),
            })
        } else {
            Ok(depth + 1)
        }
    }

    fn or_expr(&mut self, depth: usize) -> Result<Expr, ParseError> {
        let mut parts = vec![self.and_expr(depth)?];
        while self.eat_kw("or") {
            parts.push(self.and_expr(depth)?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Expr::Or(flatten(parts, true))
        })
    }

    fn and_expr(&mut self, depth: usize) -> Result<Expr, ParseError> {
        let mut parts = vec![self.not_expr(depth)?];
        while self.eat_kw("and") {
            parts.push(self.not_expr(depth)?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Expr::And(flatten(parts, false))
        })
    }

    fn not_expr(&mut self, depth: usize) -> Result<Expr, ParseError> {
        if self.is_kw("not") {
            let depth = self.deeper(depth)?;
            let pos = self.bump().1;
            let inner = self.not_expr(depth)?;
            return Ok(Expr::Not(Box::new(inner), pos));
        }
        self.predicate(depth)
    }

    fn predicate(&mut self, depth: usize) -> Result<Expr, ParseError> {
        if *self.peek().0 == Tok::LParen {
            let depth = self.deeper(depth)?;
            self.bump();
            let inner = self.or_expr(depth)?;
            self.expect(Tok::RParen, "')'")?;
            return Ok(inner);
        }
        let lhs = self.operand()?;
        let pos = lhs.pos;
        let op = match self.peek().0 {
            Tok::Eq => Some(CmpOp::Eq),
            Tok::Ne => Some(CmpOp::Ne),
            Tok::Lt => Some(CmpOp::Lt),
            Tok::Le => Some(CmpOp::Le),
            Tok::Gt => Some(CmpOp::Gt),
            Tok::Ge => Some(CmpOp::Ge),
            _ => None,
        };
        if let Some(op) = op {
            self.bump();
            let rhs = self.operand()?;
            return Ok(Expr::Cmp(op, lhs, rhs, pos));
        }
        if self.eat_kw("is") {
            let negated = self.eat_kw("not");
            self.expect_kw("null")?;
            return Ok(Expr::IsNull {
                term: lhs,
                negated,
                pos,
            });
        }
        let negated = if self.is_kw("not")
            && matches!(self.peek_at(1), Tok::Ident(s) if s.eq_ignore_ascii_case("in"))
        {
            self.bump();
            true
        } else {
            false
        };
        if self.eat_kw("in") {
            let set = self.in_set()?;
            return Ok(Expr::In {
                lhs,
                set,
                negated,
                pos,
            });
        }
        Ok(Expr::Truth(lhs))
    }

    fn in_set(&mut self) -> Result<InSet, ParseError> {
        if self.is_kw("auth") && *self.peek_at(1) == Tok::Dot {
            let t = self.operand()?;
            if let Operand::Auth(name) = t.op {
                return Ok(InSet::Auth(name, t.pos));
            }
        }
        let open = self.expect(Tok::LParen, "'(' or auth.NAME after IN")?;
        if self.is_kw("select") {
            let lookup = self.lookup(open)?;
            self.expect(Tok::RParen, "')' closing the lookup")?;
            return Ok(InSet::Lookup(lookup));
        }
        let mut items = vec![self.literal("a literal or SELECT")?];
        while *self.peek().0 == Tok::Comma {
            self.bump();
            items.push(self.literal("a literal")?);
        }
        self.expect(Tok::RParen, "',' or ')'")?;
        Ok(InSet::List(items))
    }

    fn literal(&mut self, what: &str) -> Result<Term, ParseError> {
        let starts_literal = match self.peek().0 {
            Tok::Str(_) | Tok::Int(_) | Tok::Real(_) | Tok::Minus => true,
            Tok::Ident(s) => ["true", "false", "null"]
                .iter()
                .any(|k| k.eq_ignore_ascii_case(s)),
            _ => false,
        };
        if !starts_literal {
            return self.expected(what);
        }
        let t = self.operand()?;
        debug_assert!(matches!(t.op, Operand::Lit(_)));
        Ok(t)
    }

    /// `SELECT col FROM table WHERE c = v AND …`; the opening parenthesis is at `open`.
    fn lookup(&mut self, open: Pos) -> Result<LookupExpr, ParseError> {
        self.expect_kw("select")?;
        let (column, column_pos) = self.name("the column the lookup returns")?;
        if *self.peek().0 == Tok::Comma {
            return self.expected("FROM (a lookup returns a single column)");
        }
        self.expect_kw("from")?;
        let (table, table_pos) = self.name("a table name")?;
        self.expect_kw("where")?;
        let mut filters = Vec::new();
        loop {
            let (col, col_pos) = self.name("a column of the looked-up table")?;
            self.expect(Tok::Eq, "'=' (lookup filters are equalities)")?;
            let value = self.operand()?;
            filters.push((col, col_pos, value));
            if !self.eat_kw("and") {
                break;
            }
        }
        if self.is_kw("or") {
            return self.expected("')' (lookup filters are joined with AND only)");
        }
        Ok(LookupExpr {
            table,
            table_pos,
            column,
            column_pos,
            filters,
            pos: open,
        })
    }

    /// A table or column name: an identifier that is not a keyword, or a quoted one.
    fn name(&mut self, what: &str) -> Result<(String, Pos), ParseError> {
        match self.peek() {
            (Tok::Ident(s), pos) if !is_keyword(s) => {
                let s = s.clone();
                self.bump();
                Ok((s, pos))
            }
            (Tok::QuotedIdent(s), pos) => {
                let s = s.clone();
                self.bump();
                Ok((s, pos))
            }
            _ => self.expected(what),
        }
    }

    fn operand(&mut self) -> Result<Term, ParseError> {
        let (tok, pos) = self.peek();
        let tok = tok.clone();
        let op = match tok {
            Tok::Str(s) => {
                self.bump();
                Operand::Lit(Value::Text(s))
            }
            Tok::Int(_) | Tok::Real(_) => Operand::Lit(self.number(false)?),
            Tok::Minus => {
                self.bump();
                if !matches!(self.peek().0, Tok::Int(_) | Tok::Real(_)) {
                    return self.expected("a number after '-'");
                }
                Operand::Lit(self.number(true)?)
            }
            Tok::QuotedIdent(s) => {
                self.bump();
                Operand::Column(s)
            }
            Tok::Ident(word) => {
                let lower = word.to_ascii_lowercase();
                match lower.as_str() {
                    "true" | "false" => {
                        self.bump();
                        Operand::Lit(Value::Bool(lower == "true"))
                    }
                    "null" => {
                        self.bump();
                        Operand::Lit(Value::Null)
                    }
                    "auth" | "param" if *self.peek_at(1) == Tok::Dot => {
                        self.bump();
                        self.bump();
                        let name = match self.peek() {
                            (Tok::Ident(s), _) => s.clone(),
                            (Tok::QuotedIdent(s), _) if lower == "auth" => s.clone(),
                            _ => {
                                return self.expected(if lower == "auth" {
                                    "a claim name after auth."
                                } else {
                                    "a parameter name after param."
                                });
                            }
                        };
                        self.bump();
                        if lower == "auth" {
                            Operand::Auth(name)
                        } else {
                            Operand::Param(name)
                        }
                    }
                    "today" if *self.peek_at(1) == Tok::LParen => {
                        self.bump();
                        self.bump();
                        self.expect(Tok::RParen, "')' (today() takes no arguments)")?;
                        Operand::Today
                    }
                    _ if is_keyword(&word) => return self.expected(OPERAND_HINT),
                    _ => {
                        self.bump();
                        if *self.peek().0 == Tok::Dot {
                            return self.expected(
                                "an operator (only auth.NAME and param.NAME take a '.'; \
                                 columns are named without their table)",
                            );
                        }
                        if *self.peek().0 == Tok::LParen {
                            return self.expected("an operator (the only function is today())");
                        }
                        Operand::Column(word)
                    }
                }
            }
            _ => return self.expected(OPERAND_HINT),
        };
        Ok(Term { op, pos })
    }

    /// The number at the cursor, negated if `negative`.
    fn number(&mut self, negative: bool) -> Result<Value, ParseError> {
        let (tok, pos) = self.bump();
        let sign = if negative { "-" } else { "" };
        match tok {
            Tok::Int(digits) => format!("{sign}{digits}")
                .parse::<i64>()
                .map(Value::Integer)
                .map_err(|_| ParseError {
                    pos,
                    message: format!("integer {sign}{digits} does not fit in 64 bits"),
                }),
            Tok::Real(text) => match format!("{sign}{text}").parse::<f64>() {
                Ok(f) if f.is_finite() => Ok(Value::Real(if f == 0.0 { 0.0 } else { f })),
                _ => Err(ParseError {
                    pos,
                    message: format!("real {sign}{text} is not a finite number"),
                }),
            },
            other => Err(ParseError {
                pos,
                message: format!("expected a number, found {other}"),
            }),
        }
    }
}

/// Merges nested ANDs (or ORs) into one list: `(a AND b) AND c` is `a AND b AND c`.
fn flatten(parts: Vec<Expr>, or: bool) -> Vec<Expr> {
    let mut out = Vec::with_capacity(parts.len());
    for p in parts {
        match p {
            Expr::And(inner) if !or => out.extend(inner),
            Expr::Or(inner) if or => out.extend(inner),
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn err(src: &str) -> (usize, usize, String) {
        let e = parse_expr(src).unwrap_err();
        (e.pos.line, e.pos.col, e.message)
    }

    #[test]
    fn precedence_is_not_then_and_then_or() {
        let e = parse_expr("a = 1 OR b = 2 AND NOT c = 3").unwrap();
        let Expr::Or(parts) = e else { panic!() };
        assert_eq!(parts.len(), 2);
        let Expr::And(inner) = &parts[1] else {
            panic!()
        };
        assert!(matches!(inner[1], Expr::Not(_, _)));
    }

    #[test]
    fn parenthesised_ands_flatten() {
        let e = parse_expr("(a = 1 AND b = 2) AND (c = 3)").unwrap();
        let Expr::And(parts) = e else { panic!() };
        assert_eq!(parts.len(), 3);
    }

    #[test]
    fn keywords_are_case_insensitive() {
        let e = parse_expr("a iS nOt NuLl aNd b nOt In (1, 2) Or TRUE").unwrap();
        assert!(matches!(e, Expr::Or(_)));
    }

    #[test]
    fn literals() {
        let lit = |s: &str| match parse_expr(&format!("x = {s}")).unwrap() {
            Expr::Cmp(
                _,
                _,
                Term {
                    op: Operand::Lit(v),
                    ..
                },
                _,
            ) => v,
            other => panic!("{other:?}"),
        };
        assert_eq!(lit("'a''b'"), Value::Text("a'b".into()));
        assert_eq!(lit("42"), Value::Integer(42));
        assert_eq!(lit("-9223372036854775808"), Value::Integer(i64::MIN));
        assert_eq!(lit("-2.5"), Value::Real(-2.5));
        assert_eq!(lit("1e3"), Value::Real(1000.0));
        assert_eq!(lit("TRUE"), Value::Bool(true));
        assert_eq!(lit("null"), Value::Null);
        assert!(err("x = 9223372036854775808").2.contains("64 bits"));
        assert!(err("x = 1e999").2.contains("finite"));
    }

    #[test]
    fn references_and_lookups() {
        let e = parse_expr(
            "route_id IN (SELECT id FROM routes WHERE driver_id = auth.sub AND day = today())",
        )
        .unwrap();
        let Expr::In {
            set: InSet::Lookup(l),
            negated: false,
            ..
        } = e
        else {
            panic!()
        };
        assert_eq!((l.table.as_str(), l.column.as_str()), ("routes", "id"));
        assert_eq!(l.filters.len(), 2);
        assert_eq!(l.filters[1].2.op, Operand::Today);
        assert_eq!((l.pos.line, l.pos.col), (1, 13));
        let e = parse_expr("zone NOT IN auth.zones").unwrap();
        assert!(matches!(
            e,
            Expr::In {
                set: InSet::Auth(_, _),
                negated: true,
                ..
            }
        ));
        let e = parse_expr("auth.\"https://x/roles\" = param.p").unwrap();
        assert!(matches!(
            e,
            Expr::Cmp(
                CmpOp::Eq,
                Term {
                    op: Operand::Auth(_),
                    ..
                },
                Term {
                    op: Operand::Param(_),
                    ..
                },
                _
            )
        ));
    }

    #[test]
    fn syntax_errors_say_what_was_expected_and_where() {
        assert_eq!(
            err("a = "),
            (
                1,
                5,
                format!("expected {OPERAND_HINT}, found end of expression")
            )
        );
        assert_eq!(err("a = 1 b").0, 1);
        assert!(err("a = 1 b").2.contains("expected AND, OR"));
        assert_eq!(err("(a = 1").2, "expected ')', found end of expression");
        assert!(
            err("x IN (SELECT a, b FROM t WHERE c = 1)")
                .2
                .contains("single column")
        );
        assert!(
            err("x IN (SELECT a FROM t WHERE c = 1 OR d = 2)")
                .2
                .contains("AND only")
        );
        assert!(
            err("x IN (SELECT a FROM t WHERE c < 1)")
                .2
                .contains("equalities")
        );
        assert!(err("x IN (SELECT a FROM t)").2.contains("expected WHERE"));
        assert!(err("x IN (y)").2.contains("expected a literal or SELECT"));
        assert!(err("routes.id = 1").2.contains("without their table"));
        assert!(err("lower(x) = 1").2.contains("today()"));
        assert!(err("x = today(1)").2.contains("no arguments"));
        assert!(err("and = 1").2.contains("expected a column"));
        assert_eq!(
            err("").2,
            format!("expected {OPERAND_HINT}, found end of expression")
        );
        let (l, c, _) = err("a = 1 AND\n  b = ");
        assert_eq!((l, c), (2, 7));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let ok = format!(
            "{}a = 1{}",
            "(".repeat(MAX_DEPTH - 1),
            ")".repeat(MAX_DEPTH - 1)
        );
        assert!(parse_expr(&ok).is_ok());
        let deep = format!("{}a = 1{}", "(".repeat(100_000), ")".repeat(100_000));
        assert!(err(&deep).2.contains("nested too deeply"));
        let nots = "NOT ".repeat(100_000) + "a = 1";
        assert!(err(&nots).2.contains("nested too deeply"));
        let long = vec!["a = 1"; 100_000].join(" AND ");
        assert!(parse_expr(&long).is_ok());
    }
}
