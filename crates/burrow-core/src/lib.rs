//! Burrow's sans-IO domain model: the schema file, values, hybrid logical clock, op and change
//! types, and the conflict-resolution rules shared by client and server.
//!
//! Nothing in this crate performs IO, reads the system clock or draws randomness directly:
//! time and randomness arrive through the [`env::Clock`] and [`env::Rng`] traits so that a
//! seeded simulator can reproduce a run exactly.

pub mod backoff;
pub mod claims;
pub mod conflict;
pub mod crdt;
pub mod env;
pub mod hash;
pub mod hlc;
pub mod op;
pub mod resolve;
pub mod rules;
pub mod schema;
pub mod value;

pub use claims::ClaimSet;
pub use hlc::Hlc;
pub use op::{Cursor, FieldValue, Op, OpKind, OutcomeKind, RowChange};
pub use schema::{
    Column, ColumnType, DeleteConflict, Policy, Priority, Representation, Schema, SchemaError,
    Table,
};
pub use value::Value;
