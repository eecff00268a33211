//! Reads the `[rules]`, `[streams.*]` and `[[permissions]]` sections of `burrow.toml`.

use std::collections::{BTreeMap, BTreeSet};

use super::check::{Scope, check_expr, split_where};
use super::parser::{Expr, parse_expr};
use super::{Action, Permission, RulesError, Stream, SyncRules};
use crate::schema::{ColumnType, ID_COLUMN, Schema, Table, is_valid_identifier};

fn config_err<T>(path: impl Into<String>, message: impl Into<String>) -> Result<T, RulesError> {
    Err(RulesError::Config {
        path: path.into(),
        message: message.into(),
    })
}

fn check_keys(path: &str, table: &toml::Table, allowed: &[&str]) -> Result<(), RulesError> {
    for key in table.keys() {
        if !allowed.contains(&key.as_str()) {
            return config_err(
                format!("{path}.{key}"),
                format!("unknown key (expected {})", allowed.join(", ")),
            );
        }
    }
    Ok(())
}

fn opt_string<'t>(
    path: &str,
    table: &'t toml::Table,
    key: &str,
) -> Result<Option<&'t str>, RulesError> {
    match table.get(key) {
        None => Ok(None),
        Some(toml::Value::String(s)) => Ok(Some(s)),
        Some(_) => config_err(format!("{path}.{key}"), "must be a string"),
    }
}

fn string_list(path: &str, v: &toml::Value) -> Result<Vec<String>, RulesError> {
    let toml::Value::Array(items) = v else {
        return config_err(path, "must be an array of strings");
    };
    items
        .iter()
        .map(|i| match i {
            toml::Value::String(s) => Ok(s.clone()),
            _ => config_err(path, "must be an array of strings"),
        })
        .collect()
}

/// Parses a timezone: `UTC`, `Z` or a fixed offset `±HH:MM`; returns minutes east of UTC.
pub(crate) fn parse_timezone(s: &str) -> Option<i32> {
    if s.eq_ignore_ascii_case("utc") || s == "Z" {
        return Some(0);
    }
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let (h, m) = rest.split_once(':')?;
    if h.len() != 2 || m.len() != 2 || !(h.bytes().chain(m.bytes())).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let h: i32 = h.parse().ok()?;
    let m: i32 = m.parse().ok()?;
    if h > 18 || m > 59 || (h == 18 && m > 0) {
        return None;
    }
    Some(sign * (h * 60 + m))
}

/// Parses and checks one expression; errors name the rule and the position.
fn expr(rule: &str, src: &str, scope: &Scope) -> Result<Expr, RulesError> {
    let e = parse_expr(src).map_err(|e| RulesError::Expr {
        rule: rule.to_string(),
        line: e.pos.line,
        column: e.pos.col,
        message: e.message,
    })?;
    check_expr(&e, scope).map_err(|e| RulesError::Expr {
        rule: rule.to_string(),
        line: e.pos.line,
        column: e.pos.col,
        message: e.message,
    })?;
    Ok(e)
}

pub(crate) fn parse(text: &str, schema: &Schema) -> Result<SyncRules, RulesError> {
    let root: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| RulesError::Toml(e.to_string().trim().replace('\n', " ")))?;
    let present = ["rules", "streams", "permissions"]
        .iter()
        .any(|k| root.contains_key(*k));

    let mut tz_offset_minutes = 0;
    match root.get("rules") {
        None => {}
        Some(toml::Value::Table(rules)) => {
            check_keys("rules", rules, &["timezone"])?;
            if let Some(tz) = opt_string("rules", rules, "timezone")? {
                tz_offset_minutes = parse_timezone(tz).ok_or_else(|| RulesError::Config {
                    path: "rules.timezone".into(),
                    message: format!(
                        "unsupported timezone \"{tz}\": use \"UTC\" or a fixed offset such as \
                         \"+02:00\" or \"-05:30\" (IANA names like Europe/Berlin are not \
                         supported)"
                    ),
                })?;
            }
        }
        Some(_) => return config_err("rules", "must be a table ([rules])"),
    }

    let mut streams = Vec::new();
    match root.get("streams") {
        None => {}
        Some(toml::Value::Table(specs)) => {
            for (name, spec) in specs {
                streams.push(parse_stream(name, spec, schema)?);
            }
        }
        Some(_) => return config_err("streams", "must be a table of streams ([streams.NAME])"),
    }

    let mut permissions = Vec::new();
    match root.get("permissions") {
        None => {}
        Some(toml::Value::Array(items)) => {
            for (index, item) in items.iter().enumerate() {
                permissions.push(parse_permission(index, item, schema)?);
            }
        }
        Some(_) => {
            return config_err(
                "permissions",
                "must be an array of tables ([[permissions]])",
            );
        }
    }

    Ok(SyncRules {
        schema: schema.clone(),
        present,
        tz_offset_minutes,
        streams,
        permissions,
        lookup_indexes: Vec::new(),
        lookup_tables: BTreeSet::new(),
    }
    .with_lookup_summaries())
}

fn parse_stream(name: &str, spec: &toml::Value, schema: &Schema) -> Result<Stream, RulesError> {
    let path = format!("streams.{name}");
    if !is_valid_identifier(name) {
        return config_err(
            &path,
            "stream names are letters, digits and _, not starting with a digit",
        );
    }
    let toml::Value::Table(spec) = spec else {
        return config_err(&path, "must be a table");
    };
    check_keys(&path, spec, &["table", "params", "when", "where"])?;
    let Some(table_name) = opt_string(&path, spec, "table")? else {
        return config_err(&path, "missing `table = \"NAME\"`");
    };
    let Some(table) = schema.table(table_name) else {
        return config_err(
            format!("{path}.table"),
            format!("no table named \"{table_name}\" in the schema"),
        );
    };
    let mut params = BTreeMap::new();
    match spec.get("params") {
        None => {}
        Some(toml::Value::Table(ps)) => {
            for (pname, pty) in ps {
                let ppath = format!("{path}.params.{pname}");
                if !is_valid_identifier(pname) {
                    return config_err(
                        &ppath,
                        "parameter names are letters, digits and _, not starting with a digit",
                    );
                }
                let ty = match pty {
                    toml::Value::String(s) => match ColumnType::parse(s) {
                        Some(
                            t @ (ColumnType::Text
                            | ColumnType::Integer
                            | ColumnType::Real
                            | ColumnType::Bool),
                        ) => t,
                        _ => {
                            return config_err(
                                &ppath,
                                format!(
                                    "unknown parameter type \"{s}\" (expected text, integer, real \
                                     or bool)"
                                ),
                            );
                        }
                    },
                    _ => return config_err(&ppath, "must be a type name such as \"text\""),
                };
                params.insert(pname.clone(), ty);
            }
        }
        Some(_) => {
            return config_err(
                format!("{path}.params"),
                "must be a table of name = \"type\"",
            );
        }
    }
    let scope_when = Scope {
        schema,
        row: None,
        no_row: "there is no row: `when` decides who receives the stream; row conditions \
                 belong in `where`",
        params: Some(&params),
        no_params: "",
    };
    let when = opt_string(&path, spec, "when")?
        .map(|src| expr(&format!("{path}.when"), src, &scope_when))
        .transpose()?;
    let scope_where = Scope {
        row: Some(table),
        ..scope_when
    };
    let (where_, buckets, filters) = match opt_string(&path, spec, "where")? {
        None => (None, Vec::new(), Vec::new()),
        Some(src) => {
            let rule = format!("{path}.where");
            let e = expr(&rule, src, &scope_where)?;
            let (buckets, filters) = split_where(&e, table).map_err(|err| RulesError::Expr {
                rule,
                line: err.pos.line,
                column: err.pos.col,
                message: err.message,
            })?;
            (Some(e), buckets, filters)
        }
    };
    Ok(Stream {
        name: name.to_string(),
        table: table_name.to_string(),
        params,
        when,
        where_,
        buckets,
        filters,
    })
}

fn parse_permission(
    index: usize,
    spec: &toml::Value,
    schema: &Schema,
) -> Result<Permission, RulesError> {
    let path = format!("permissions[{index}]");
    let toml::Value::Table(spec) = spec else {
        return config_err(&path, "must be a table");
    };
    check_keys(&path, spec, &["table", "actions", "columns", "when"])?;
    let Some(table_name) = opt_string(&path, spec, "table")? else {
        return config_err(
            &path,
            "missing `table = \"NAME\"` (or \"*\" for every table)",
        );
    };
    let table: Option<&Table> = if table_name == "*" {
        None
    } else {
        match schema.table(table_name) {
            Some(t) => Some(t),
            None => {
                return config_err(
                    format!("{path}.table"),
                    format!("no table named \"{table_name}\" in the schema"),
                );
            }
        }
    };
    let Some(actions_spec) = spec.get("actions") else {
        return config_err(
            &path,
            "missing `actions` (any of \"insert\", \"update\", \"delete\")",
        );
    };
    let mut actions = Vec::new();
    for a in string_list(&format!("{path}.actions"), actions_spec)? {
        match Action::parse(&a) {
            Some(act) if !actions.contains(&act) => actions.push(act),
            Some(_) => {}
            None => {
                return config_err(
                    format!("{path}.actions"),
                    format!("unknown action \"{a}\" (expected insert, update or delete)"),
                );
            }
        }
    }
    if actions.is_empty() {
        return config_err(format!("{path}.actions"), "lists no action");
    }
    let columns = match spec.get("columns") {
        None => None,
        Some(v) => {
            let cols = string_list(&format!("{path}.columns"), v)?;
            let Some(t) = table else {
                return config_err(
                    format!("{path}.columns"),
                    "a permission for every table (\"*\") cannot name columns",
                );
            };
            for c in &cols {
                if c != ID_COLUMN && t.column(c).is_none() {
                    return config_err(
                        format!("{path}.columns"),
                        format!("unknown column \"{c}\" in table {}", t.name),
                    );
                }
            }
            Some(cols)
        }
    };
    let scope = Scope {
        schema,
        row: table,
        no_row: "the permission is for every table (\"*\"), so it has no columns",
        params: None,
        no_params: "permissions have no parameters (only streams declare `params`)",
    };
    let when = opt_string(&path, spec, "when")?
        .map(|src| expr(&format!("{path}.when"), src, &scope))
        .transpose()?;
    Ok(Permission {
        index,
        table: table.map(|t| t.name.clone()),
        actions,
        columns,
        when,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn timezones() {
        assert_eq!(parse_timezone("UTC"), Some(0));
        assert_eq!(parse_timezone("utc"), Some(0));
        assert_eq!(parse_timezone("Z"), Some(0));
        assert_eq!(parse_timezone("+02:00"), Some(120));
        assert_eq!(parse_timezone("-05:30"), Some(-330));
        assert_eq!(parse_timezone("+18:00"), Some(1080));
        assert_eq!(parse_timezone("+18:01"), None);
        assert_eq!(parse_timezone("+2:00"), None);
        assert_eq!(parse_timezone("+02:60"), None);
        assert_eq!(parse_timezone("Europe/Berlin"), None);
        assert_eq!(parse_timezone("+é"), None);
        assert_eq!(parse_timezone(""), None);
    }
}
