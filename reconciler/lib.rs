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
//! | [`cli`] | clap commands; the only place that prints or knows exit codes | all |
//! | [`policy`] | effective settings with provenance (`explain`) | `load`, `model` |
//! | [`load`] | read fleet and catalogs from a directory or a git commit; strict YAML; located diagnostics; `validate` | `model` |
//! | [`model`] | the types of every YAML file, checked as parsed; no I/O | nothing of ours |
//!
//! Later layers slot in between: `inventory` and `fixops` beside `load`,
//! `plan` beside `policy`, then `store`, `apply` and `watch` above them.
//!
//! # Principles
//!
//! * Bad input is a [`load::Diagnostic`] with file, line, column and a hint,
//!   and exit code 2; nothing is changed.
//! * Reading from git never checks out: trees are read from objects.
//! * Values are valid once parsed: a [`model::values::Glob`] is compiled, a
//!   [`model::values::Version`] is full semver, a path cannot climb out.

pub mod apply;
pub mod cli;
pub mod confined;
pub mod fixops;
pub mod inventory;
pub mod load;
pub mod model;
pub mod plan;
pub mod policy;
pub mod store;
