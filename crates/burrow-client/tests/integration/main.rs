//! End-to-end tests of the client against a real server over loopback HTTP, with real
//! SQLite files.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod bad_input;
mod capture;
mod conflicts;
mod corruption;
mod downloads;
mod harness;
mod live;
mod migration;
mod policies;
mod quarantine;
mod runner;
mod selective;
mod sync;
mod tls;
