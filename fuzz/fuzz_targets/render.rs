//! Fuzz target: plan rendering (human, JSON, Markdown) of arbitrary plans.
//! The harness is `sitekeeper::fuzzing::render`, which `cargo test` also runs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sitekeeper::fuzzing::render(data));
