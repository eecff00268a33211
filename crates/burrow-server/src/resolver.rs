//! Server-side custom conflict resolvers: the `custom:NAME` policy. Implement
//! [`CustomResolver`] and register it in [`ServerConfig::resolvers`](crate::ServerConfig) under
//! `NAME`; the server refuses to start when the schema names a resolver nobody registered.
//!
//! The resolver judges every write to a field that already has a value (`input.concurrent`
//! tells a concurrent write from a deliberate edit). It must be deterministic, and for
//! devices to converge whatever the arrival order it must pick the same value from a set of
//! concurrent writes in any order (commutative), e.g. by ranking values and breaking ties on
//! the versions' `(hlc, replica)`.
//!
//! ```
//! use burrow_server::resolver::{CustomChoice, CustomInput, CustomResolver};
//! use burrow_core::Value;
//!
//! /// Keeps the longer text (e.g. the more detailed damage report).
//! #[derive(Debug)]
//! struct Longest;
//! impl CustomResolver for Longest {
//!     fn resolve(&self, input: &CustomInput<'_>) -> CustomChoice {
//!         if !input.concurrent {
//!             return CustomChoice::TakeIncoming; // a deliberate edit of the current text
//!         }
//!         let len = |v: &Value| match v { Value::Text(s) => s.chars().count(), _ => 0 };
//!         if len(input.incoming) > len(&input.current.value) {
//!             CustomChoice::TakeIncoming
//!         } else {
//!             CustomChoice::KeepCurrent
//!         }
//!     }
//! }
//! let schema = burrow_core::Schema::from_toml_str(
//!     "version = 1\n[tables.jobs.columns]\nreport = { type = \"text\", policy = \"custom:longest\" }\n",
//! ).unwrap();
//! let mut config = burrow_server::ServerConfig::new("/tmp/burrow-doc".into(), schema);
//! config.register_resolver("longest", Longest);
//! assert!(config.check_resolvers().is_ok());
//! ```

pub use burrow_core::resolve::{CustomChoice, CustomInput, CustomResolver, CustomResolvers};

use burrow_core::{Policy, Schema};

/// The first `custom:NAME` column of `schema` whose resolver is not in `registered`, as
/// `(table.column, NAME)`.
pub fn missing_resolver(schema: &Schema, registered: &CustomResolvers) -> Option<(String, String)> {
    schema.tables.values().find_map(|t| {
        t.columns.iter().find_map(|c| match &c.policy {
            Policy::Custom(name) if !registered.contains_key(name) => {
                Some((format!("{}.{}", t.name, c.name), name.clone()))
            }
            _ => None,
        })
    })
}
