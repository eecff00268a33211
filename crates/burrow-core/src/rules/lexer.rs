//! Splits a rule expression into tokens, each with its 1-based line:column position.

use std::fmt;

/// A 1-based position inside an expression string (columns count characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Pos {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub col: usize,
}

impl Pos {
    pub(crate) const START: Pos = Pos { line: 1, col: 1 };
}

/// One token of an expression.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    /// A bare identifier or keyword (`driver_id`, `AND`, `auth`).
    Ident(String),
    /// A double-quoted identifier (`"from"`), never a keyword.
    QuotedIdent(String),
    /// A single-quoted text literal, `''` already unescaped.
    Str(String),
    /// The digits of an integer literal (the sign is a separate token).
    Int(String),
    /// The text of a real literal (`1.5`, `2e3`).
    Real(String),
    LParen,
    RParen,
    Comma,
    Dot,
    Minus,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// End of the expression.
    End,
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Ident(s) if is_keyword(s) => write!(f, "keyword {}", s.to_ascii_uppercase()),
            Tok::Ident(s) => write!(f, "identifier {s}"),
            Tok::QuotedIdent(s) => write!(f, "identifier \"{s}\""),
            Tok::Str(s) => write!(f, "text '{}'", s.replace('\'', "''")),
            Tok::Int(s) | Tok::Real(s) => write!(f, "number {s}"),
            Tok::LParen => f.write_str("'('"),
            Tok::RParen => f.write_str("')'"),
            Tok::Comma => f.write_str("','"),
            Tok::Dot => f.write_str("'.'"),
            Tok::Minus => f.write_str("'-'"),
            Tok::Eq => f.write_str("'='"),
            Tok::Ne => f.write_str("'!='"),
            Tok::Lt => f.write_str("'<'"),
            Tok::Le => f.write_str("'<='"),
            Tok::Gt => f.write_str("'>'"),
            Tok::Ge => f.write_str("'>='"),
            Tok::End => f.write_str("end of expression"),
        }
    }
}

/// The reserved words of the language (matched case-insensitively). They cannot be used as
/// bare column names; quote them (`"from"`) instead.
pub(crate) const KEYWORDS: &[&str] = &[
    "and", "or", "not", "in", "is", "null", "true", "false", "select", "from", "where",
];

/// Whether `word` is a reserved word, in any letter case.
pub(crate) fn is_keyword(word: &str) -> bool {
    KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(word))
}

/// A lexing error: where and what.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LexError {
    pub pos: Pos,
    pub message: String,
}

/// Splits `src` into tokens; the last token is always [`Tok::End`].
pub(crate) fn lex(src: &str) -> Result<Vec<(Tok, Pos)>, LexError> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let mut pos = Pos::START;
    // Advances over `n` characters, tracking the position.
    let advance = |i: &mut usize, pos: &mut Pos, n: usize| {
        for _ in 0..n {
            if chars.get(*i) == Some(&'\n') {
                pos.line += 1;
                pos.col = 1;
            } else {
                pos.col += 1;
            }
            *i += 1;
        }
    };
    while let Some(&c) = chars.get(i) {
        let start = pos;
        let next = chars.get(i + 1).copied();
        if c.is_whitespace() {
            advance(&mut i, &mut pos, 1);
            continue;
        }
        let single = match c {
            '(' => Some(Tok::LParen),
            ')' => Some(Tok::RParen),
            ',' => Some(Tok::Comma),
            '.' if !next.is_some_and(|n| n.is_ascii_digit()) => Some(Tok::Dot),
            '-' => Some(Tok::Minus),
            '=' => Some(Tok::Eq),
            _ => None,
        };
        if let Some(tok) = single {
            out.push((tok, start));
            advance(&mut i, &mut pos, 1);
            continue;
        }
        match c {
            '!' | '<' | '>' => {
                let (tok, len) = match (c, next) {
                    ('!', Some('=')) => (Tok::Ne, 2),
                    ('<', Some('>')) => (Tok::Ne, 2),
                    ('<', Some('=')) => (Tok::Le, 2),
                    ('>', Some('=')) => (Tok::Ge, 2),
                    ('<', _) => (Tok::Lt, 1),
                    ('>', _) => (Tok::Gt, 1),
                    _ => {
                        return Err(LexError {
                            pos: start,
                            message: "unexpected character '!' (did you mean '!='?)".into(),
                        });
                    }
                };
                out.push((tok, start));
                advance(&mut i, &mut pos, len);
            }
            '\'' => {
                let mut text = String::new();
                advance(&mut i, &mut pos, 1);
                loop {
                    match chars.get(i) {
                        None => {
                            return Err(LexError {
                                pos: start,
                                message: "unterminated text literal (a ' is never closed)".into(),
                            });
                        }
                        Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                            text.push('\'');
                            advance(&mut i, &mut pos, 2);
                        }
                        Some('\'') => {
                            advance(&mut i, &mut pos, 1);
                            break;
                        }
                        Some(&ch) => {
                            text.push(ch);
                            advance(&mut i, &mut pos, 1);
                        }
                    }
                }
                out.push((Tok::Str(text), start));
            }
            '"' => {
                let mut text = String::new();
                advance(&mut i, &mut pos, 1);
                loop {
                    match chars.get(i) {
                        None | Some('\n') => {
                            return Err(LexError {
                                pos: start,
                                message: "unterminated quoted identifier (a \" is never closed)"
                                    .into(),
                            });
                        }
                        Some('"') => {
                            advance(&mut i, &mut pos, 1);
                            break;
                        }
                        Some(&ch) => {
                            text.push(ch);
                            advance(&mut i, &mut pos, 1);
                        }
                    }
                }
                if text.is_empty() {
                    return Err(LexError {
                        pos: start,
                        message: "empty quoted identifier".into(),
                    });
                }
                out.push((Tok::QuotedIdent(text), start));
            }
            c if c.is_ascii_digit() || c == '.' => {
                let mut j = i;
                let digits = |j: &mut usize| {
                    while chars.get(*j).is_some_and(|d| d.is_ascii_digit()) {
                        *j += 1;
                    }
                };
                digits(&mut j);
                let mut real = false;
                if chars.get(j) == Some(&'.') {
                    real = true;
                    j += 1;
                    digits(&mut j);
                }
                if matches!(chars.get(j), Some('e' | 'E')) {
                    let mut k = j + 1;
                    if matches!(chars.get(k), Some('+' | '-')) {
                        k += 1;
                    }
                    if chars.get(k).is_some_and(|d| d.is_ascii_digit()) {
                        real = true;
                        j = k;
                        digits(&mut j);
                    }
                }
                if chars
                    .get(j)
                    .is_some_and(|d| d.is_ascii_alphanumeric() || *d == '_' || *d == '.')
                {
                    return Err(LexError {
                        pos: start,
                        message: "malformed number".into(),
                    });
                }
                let text: String = chars[i..j].iter().collect();
                out.push((
                    if real {
                        Tok::Real(text)
                    } else {
                        Tok::Int(text)
                    },
                    start,
                ));
                let n = j - i;
                advance(&mut i, &mut pos, n);
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let mut j = i;
                while chars
                    .get(j)
                    .is_some_and(|d| d.is_ascii_alphanumeric() || *d == '_')
                {
                    j += 1;
                }
                let text: String = chars[i..j].iter().collect();
                out.push((Tok::Ident(text), start));
                let n = j - i;
                advance(&mut i, &mut pos, n);
            }
            other => {
                return Err(LexError {
                    pos: start,
                    message: format!("unexpected character {other:?}"),
                });
            }
        }
    }
    out.push((Tok::End, pos));
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<Tok> {
        lex(s).unwrap().into_iter().map(|(t, _)| t).collect()
    }

    #[test]
    fn splits_operators_literals_and_identifiers() {
        assert_eq!(
            toks("a<>'it''s' AND b<=1.5e3, c != -7 >= \"from\""),
            vec![
                Tok::Ident("a".into()),
                Tok::Ne,
                Tok::Str("it's".into()),
                Tok::Ident("AND".into()),
                Tok::Ident("b".into()),
                Tok::Le,
                Tok::Real("1.5e3".into()),
                Tok::Comma,
                Tok::Ident("c".into()),
                Tok::Ne,
                Tok::Minus,
                Tok::Int("7".into()),
                Tok::Ge,
                Tok::QuotedIdent("from".into()),
                Tok::End,
            ]
        );
        assert_eq!(
            toks("auth.sub"),
            vec![
                Tok::Ident("auth".into()),
                Tok::Dot,
                Tok::Ident("sub".into()),
                Tok::End
            ]
        );
        assert_eq!(toks(".5"), vec![Tok::Real(".5".into()), Tok::End]);
    }

    #[test]
    fn positions_are_one_based_lines_and_character_columns() {
        let t = lex("a =\n  'é' OR\tb").unwrap();
        let pos: Vec<(usize, usize)> = t.iter().map(|(_, p)| (p.line, p.col)).collect();
        assert_eq!(pos, vec![(1, 1), (1, 3), (2, 3), (2, 7), (2, 10), (2, 11)]);
    }

    #[test]
    fn errors_point_at_the_offending_character() {
        let e = lex("a = 'open").unwrap_err();
        assert_eq!((e.pos.line, e.pos.col), (1, 5));
        assert!(e.message.contains("unterminated"));
        let e = lex("a ; b").unwrap_err();
        assert_eq!((e.pos.line, e.pos.col), (1, 3));
        let e = lex("a = 12abc").unwrap_err();
        assert!(e.message.contains("malformed number"));
        assert!(lex("x ! y").is_err());
        assert!(lex("\"\"").is_err());
    }
}
