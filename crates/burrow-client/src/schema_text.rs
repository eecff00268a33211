//! Renders a parsed schema back to TOML, for databases opened with a schema built in code.

use burrow_core::{Policy, Schema};

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

/// A TOML text that parses back to an equal schema.
pub fn render(schema: &Schema) -> String {
    let mut out = format!("version = {}\n", schema.version);
    for t in schema.tables.values() {
        out.push_str(&format!(
            "\n[tables.{}]\npriority = \"{}\"\n",
            t.name,
            t.priority.as_str()
        ));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_round_trips() {
        let s = Schema::from_toml_str(
            "version = 3\n[tables.a]\npriority = \"bulk\"\n[tables.a.columns]\nx = \"blob\"\ny = { type = \"text\", policy = \"lww\" }\n[tables.b.columns]\nr = { type = \"text\", references = \"a\" }\n",
        )
        .unwrap();
        assert_eq!(Schema::from_toml_str(&render(&s)).unwrap(), s);
    }
}
