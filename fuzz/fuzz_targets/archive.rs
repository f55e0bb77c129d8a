//! Fuzz target: archive extraction (tar, tar.gz, zip, tar.zst): nothing lands outside.
//! The harness is `sitekeeper::fuzzing::archive`, which `cargo test` also runs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sitekeeper::fuzzing::archive(data));
