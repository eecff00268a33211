//! The claims of the user who wrote an op, as the resolution rules (`prefer`) and, later, sync
//! rules see them: each claim name maps to one or more string values.

use std::collections::BTreeMap;

/// A writer's token claims, flattened to strings (`role = ["manager"]`, `sub = ["u1"]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimSet(BTreeMap<String, Vec<String>>);

impl ClaimSet {
    /// No claims (a writer nobody prefers).
    pub fn new() -> ClaimSet {
        ClaimSet::default()
    }

    /// Adds one value of a claim.
    pub fn with(mut self, claim: &str, value: &str) -> ClaimSet {
        self.0
            .entry(claim.to_string())
            .or_default()
            .push(value.to_string());
        self
    }

    /// Claims from a decoded token: strings, numbers and booleans become their text; an array
    /// contributes each of its scalar items (`roles = ["a", "b"]`); objects are ignored.
    pub fn from_json<'a>(
        claims: impl IntoIterator<Item = (&'a String, &'a serde_json::Value)>,
    ) -> ClaimSet {
        fn scalar(v: &serde_json::Value) -> Option<String> {
            match v {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Number(n) => Some(n.to_string()),
                serde_json::Value::Bool(b) => Some(b.to_string()),
                _ => None,
            }
        }
        let mut set = ClaimSet::new();
        for (name, v) in claims {
            let values: Vec<String> = match v {
                serde_json::Value::Array(items) => items.iter().filter_map(scalar).collect(),
                other => scalar(other).into_iter().collect(),
            };
            if !values.is_empty() {
                set.0.entry(name.clone()).or_default().extend(values);
            }
        }
        set
    }

    /// Whether the claim `claim` has the value `value` (or contains it, for arrays).
    pub fn has(&self, claim: &str, value: &str) -> bool {
        self.0
            .get(claim)
            .is_some_and(|vs| vs.iter().any(|v| v == value))
    }

    /// Every value of a claim, in token order (empty if the token lacks it).
    pub fn values(&self, claim: &str) -> &[String] {
        self.0.get(claim).map_or(&[], Vec::as_slice)
    }

    /// The first value of a claim, if any.
    pub fn get(&self, claim: &str) -> Option<&str> {
        self.0
            .get(claim)
            .and_then(|vs| vs.first())
            .map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_and_arrays_flatten() {
        let raw: BTreeMap<String, serde_json::Value> = serde_json::from_str(
            r#"{"role": "manager", "roles": ["a", "b"], "level": 3, "admin": true, "obj": {"x": 1}}"#,
        )
        .unwrap();
        let c = ClaimSet::from_json(&raw);
        assert!(c.has("role", "manager"));
        assert!(!c.has("role", "driver"));
        assert!(c.has("roles", "b"));
        assert!(c.has("level", "3"));
        assert!(c.has("admin", "true"));
        assert_eq!(c.get("obj"), None);
    }
}
