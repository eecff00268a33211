#![no_main]
//! Fuzz target `sync_request`: see `burrow_fuzz::sync_request`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| burrow_fuzz::sync_request(data));
