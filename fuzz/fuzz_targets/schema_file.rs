#![no_main]
//! Fuzz target `schema_file`: see `burrow_fuzz::schema_file`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| burrow_fuzz::schema_file(data));
