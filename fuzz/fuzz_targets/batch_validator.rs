#![no_main]
//! Fuzz target `batch_validator`: see `burrow_fuzz::batch_validator`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| burrow_fuzz::batch_validator(data));
