//! Helpers shared by the CLI's process-level tests.
#![allow(dead_code)]

use std::process::{Command, Output};

/// The `burrow` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_burrow");
/// The delivery schema shipped with the CLI.
pub const SCHEMA: &str = include_str!("../../assets/delivery.toml");

/// Runs `burrow` with `args`, ignoring any token or server URL in the environment.
pub fn burrow(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("BURROW_TOKEN")
        .env_remove("BURROW_URL")
        .output()
        .unwrap()
}

/// The stdout of a run that must have succeeded.
pub fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}
