//! sitekeeper keeps a fleet of installed web sites on the release and hot
//! fixes their owners asked for, declaratively, from git.
//!
//! # Architecture
//!
//! The contract is `SPEC.md`; this is the map of the code. Dependencies point
//! one way, from the top of this list to the bottom:
//!
//! | module | role | may use |
//! | --- | --- | --- |
//! | [`cli`] | clap commands; the only place that prints or knows exit codes | all (only the changing commands, `apply`, `rollback` and `adopt`, reach [`apply`]; `status` recovers an interrupted change through them) |
//! | [`watch`] | the daemon: triggers, requeue and backoff (`error_policy`), the sites of its `--selector`, fetch failures per repository and their retries (`watch::fetches`), file watching, the HTTP endpoints, what only the daemon publishes (`watch::publish`: upgrade notices, opt-in status reports), notifications (`watch::notify`: events raised on transitions, their delivery task beside the reconciles, the senders `notify test` also uses), and the dashboard (`watch::ui`: server-rendered pages, the live feed of phases, sessions with CSRF tokens, and the operator's reconcile, rollback and lift, which the loop runs like a reconcile); the only owner of tokio | `apply` and below |
//! | [`apply`] | changing a site: adopt; the journaled apply/rollback transaction (in place, or a release directory and a symlink swap) and recovery; many sites' transactions as group commits sharing their durability barriers (`apply::group`, `txn::phased`, `converge::batch`); the site's data around a change (`apply::data`: SQLite backup, `snapshot`/`restore` commands) and a release's migrations, with the recovery of a migrating change as a failed one (`converge::settle`); hooks and health checks (`apply::health`: the command, the URL, and page checks judged before and after, with their screenshots); the clock records take their time from; `ApplyError` | `observe` and below |
//! | [`observe`] | reading a site: its gathered state for the planner, the trust verdict (signatures, no downgrade), the preflight, and its status; read-only commands stop here | `store` and below |
//! | [`store`] | the state dir, and the only module that names a site's state files (`SiteState`): flock, ledger, rollback points in `points.git`, `quarantine.json`, the progress report `status.json`, data snapshots `data/<point>/` with their manifests, the failure marker `failure.json`, the open migrating change `journal/change.json`, the notification outbox (`store::outbox`), and the site index's name `index.bin` (its format is `inventory`'s); re-exports the one atomic writer and `StateDir` | `model`, `atomic`, `statedir`, `durability`, `cachefile` |
//! | [`plan`] | pure: (desired, observed, ledger, clock) → plan; rendering | `policy`, `fixops`, `inventory`, `load`, `model` |
//! | [`policy`] | effective settings with provenance (`explain`) | `load`, `model` |
//! | [`load`] | read fleet and catalogs from a directory (through `confined`: no link followed) or a git commit; strict YAML; payloads; `validate`; allowed signers and the trust verdict on each fleet and catalog commit | `confined`, `git`, `model`, `atomic` and `statedir` (the fleet's trust record, the git cache) |
//! | [`inventory`] | scan a site root: kinds, modes, hashes; the site index (`inventory::index`: stat data, hashes and the last point's file list in one sorted file read through `mmap`), which the scan, the planner and `apply`'s record of what it wrote share | `confined`, `model`, `cachefile` |
//! | [`fixops`] | the fix operations as pure functions on bytes | `model` |
//! | [`git`] | the one fetch into a cache repository (locked per URL, refs resolved to commits) for `load` and `watch::publish`, with the git access options of SPEC §3: deploy key or agent, host keys always checked against known_hosts, extra CAs, https token; failures typed (host key, credential, certificate, network) | nothing of ours |
//! | [`confined`] | every read of a site's files and of a directory catalog or fleet: `openat2` beneath the root, no links | `durability` |
//! | [`cachefile`] | cache files in the state dir (the site index): versioned, checksummed, written at `Durability::Cache`; what a crash left of them is removed under the lock | `atomic` |
//! | [`statedir`] | the names of the state dir's shared entries (`locks/`, `cache/git`, `cache/reports`, `trust/`, `outbox/`); below `load`, which keeps the git cache and trust records there | nothing of ours |
//! | [`atomic`] | the one atomic writer, `atomic_write(path, bytes, Durability::{Cache, Durable})`; below `load`, which writes the fleet's trust record | `durability` |
//! | [`durability`] | for crash tests only: what a crash could lose (unsynced data and entries), and losing it; inert otherwise | nothing of ours |
//! | [`model`] | the types of every YAML file, checked as parsed, and the label selector of `--selector`; no I/O | nothing of ours |
//!
//! `confined` sits at the bottom (beside `model`) so that `inventory`,
//! `apply` and `load` reach files through the same layer.

//! # Principles
//!
//! * Bad input is a [`load::Diagnostic`] with file, line, column and a hint,
//!   and exit code 2; nothing is changed.
//! * Reading from git never checks out: trees are read from objects.
//! * Values are valid once parsed: a [`model::values::Glob`] is compiled, a
//!   [`model::values::Version`] is full semver, a path cannot climb out.

pub mod apply;
pub mod atomic;
pub mod cachefile;
pub mod cli;
pub mod confined;
pub mod durability;
pub mod fixops;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod git;
pub mod inventory;
pub mod load;
pub mod model;
pub mod observe;
pub mod plan;
pub mod policy;
pub mod statedir;
pub mod store;
pub mod watch;
