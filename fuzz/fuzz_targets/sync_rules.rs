#![no_main]
//! Fuzz target `sync_rules`: see `burrow_fuzz::sync_rules`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| burrow_fuzz::sync_rules(data));
