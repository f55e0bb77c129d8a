//! Fuzz target: one of the seven YAML file kinds (first byte) loaded as `validate` does,
//! then, if the fleet is valid, planned, checked and explained at both ends of the clock.
//! The harness is `sitekeeper::fuzzing::yaml`, which `cargo test` also runs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sitekeeper::fuzzing::yaml(data));
