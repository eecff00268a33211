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

/// A `burrow serve` child process, killed on drop.
pub struct Server(pub std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `burrow serve --listen 127.0.0.1:0 <args>` and returns it with the URL it printed
/// (the OS picks the port, so parallel tests never race for one). Panics with the server's
/// output when it exits before listening.
pub fn spawn_server(args: &[&std::ffi::OsStr]) -> (Server, String) {
    use std::io::BufRead;
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .env_remove("BURROW_SECRET")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let server = Server(child);
    let mut lines = std::io::BufReader::new(stderr).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.split("listening on ").nth(1) {
            let url = rest.split_whitespace().next().unwrap().to_string();
            // Keep draining the server's stderr so it never blocks on a full pipe.
            std::thread::spawn(move || lines.for_each(drop));
            return (server, url);
        }
        seen.push(line);
    }
    panic!("server exited before listening:\n{}", seen.join("\n"));
}
