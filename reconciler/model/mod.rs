//! The desired state as people write it: the types of every YAML file.
//!
//! Types here are plain serde + schemars data, checked as they are parsed
//! (see [`values`] and [`words`]). This module imports nothing else of ours
//! and does no I/O; locating a problem in a file is `load`'s job.

pub mod catalog;
pub mod fleet;
pub mod hash;
pub mod policy;
pub mod selector;
pub mod values;
pub mod words;

pub use catalog::{
    Catalog, Channel, DeleteOp, Fix, Op, Payload, RegexOp, Release, ReplaceOp, WriteOp,
};
pub use fleet::{
    Approval, Approvals, CatalogSource, EmailTarget, FleetConfig, Health, Hooks, NotifyTarget,
    OptIn, PageCheck, Site, SiteFile, Window,
};
pub use policy::{Ceilings, Defaults, Policy};
pub use selector::Selector;

/// A problem found by a check that spans several fields, at a value path
/// such as `health.http` or `ops[1].write.content`, relative to its document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where, as a path into the document.
    pub path: String,
    /// What is wrong; may end in `(hint: …)`.
    pub message: String,
}

impl Problem {
    /// A problem at `path`.
    pub fn at(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// The kinds of file sitekeeper reads, each with its own JSON Schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// `fleet.yaml`.
    Fleet,
    /// `sites/<name>.yaml`.
    Site,
    /// `policies/<name>.yaml`.
    Policy,
    /// `approvals/<site>.yaml`.
    Approvals,
    /// `catalog.yaml`.
    Catalog,
    /// `releases/<version>.yaml`.
    Release,
    /// `fixes/<NNNN>-<slug>.yaml`.
    Fix,
}

impl FileKind {
    /// Every kind, in the order schemas are written.
    pub const ALL: [FileKind; 7] = [
        FileKind::Fleet,
        FileKind::Site,
        FileKind::Policy,
        FileKind::Approvals,
        FileKind::Catalog,
        FileKind::Release,
        FileKind::Fix,
    ];

    /// The schema's file name under `schema/`.
    pub fn schema_file(self) -> &'static str {
        match self {
            FileKind::Fleet => "fleet.schema.json",
            FileKind::Site => "site.schema.json",
            FileKind::Policy => "policy.schema.json",
            FileKind::Approvals => "approvals.schema.json",
            FileKind::Catalog => "catalog.schema.json",
            FileKind::Release => "release.schema.json",
            FileKind::Fix => "fix.schema.json",
        }
    }

    /// The JSON Schema of this kind of file.
    pub fn schema(self) -> schemars::Schema {
        let generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
        let mut schema = match self {
            FileKind::Fleet => generator.into_root_schema_for::<FleetConfig>(),
            FileKind::Site => generator.into_root_schema_for::<SiteFile>(),
            FileKind::Policy => generator.into_root_schema_for::<Policy>(),
            FileKind::Approvals => generator.into_root_schema_for::<Approvals>(),
            FileKind::Catalog => generator.into_root_schema_for::<Catalog>(),
            FileKind::Release => generator.into_root_schema_for::<Release>(),
            FileKind::Fix => generator.into_root_schema_for::<Fix>(),
        };
        schema.insert(
            "$id".into(),
            format!("https://sitekeeper.dev/schema/{}", self.schema_file()).into(),
        );
        schema
    }
}
