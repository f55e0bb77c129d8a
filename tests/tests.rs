//! sitekeeper's integration tests, built as one binary (see Cargo.toml).
//!
//! Each module covers one area and drives the real binary or library with
//! real files and real git repositories; nothing is mocked.

mod support;

mod adopt;
mod approvals;
mod bench_smoke;
mod changed_since;
mod check;
mod cli;
mod converge;
mod crash;
mod daemon_faults;
mod dashboard;
mod data;
mod data_django;
mod data_postgres;
mod examples;
mod fsync;
mod fuzz_corpus;
mod git_ca_store;
mod git_sources;
mod git_transports;
mod hooks;
mod hostile_corpus;
mod hostile_sites;
mod invalid_corpus;
mod layout;
mod markdown;
mod noop_scan;
mod notify;
mod notify_tls;
mod page_checks;
mod papercuts;
mod plan_cli;
mod planning;
mod properties;
mod race;
mod readme_demo;
mod reports;
mod schema;
mod signatures;
mod site_index;
mod validate;
mod watch;
mod yaml_traps;
