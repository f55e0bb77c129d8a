//! Fuzz target: random fix ops on random file bytes, with their invariants.
//! The harness is `sitekeeper::fuzzing::fix_ops`, which `cargo test` also runs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sitekeeper::fuzzing::fix_ops(data));
