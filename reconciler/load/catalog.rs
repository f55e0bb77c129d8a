//! Loading a catalog repo: `catalog.yaml`, releases and fixes, with the
//! checks that need the catalog's own files (payloads, fix sources).

use std::collections::BTreeMap;

use super::source::{EntryKind, Source};
use super::{Diagnostics, Loaded, read_doc, yaml_files};
use crate::model::{Catalog, Fix, Op, Release};

/// A product's catalog as loaded.
#[derive(Debug)]
pub struct LoadedCatalog {
    /// The product name, as `fleet.yaml` keys it.
    pub product: String,
    /// Where it was read from (and the commit, for git sources).
    pub source: Source,
    /// `catalog.yaml`.
    pub catalog: Loaded<Catalog>,
    /// Releases, sorted by version.
    pub releases: Vec<Loaded<Release>>,
    /// Fixes, in name order (the order they apply in).
    pub fixes: Vec<Loaded<Fix>>,
    /// The verdict on the commit read, against the catalog's
    /// `allowed_signers` (SPEC §7).
    pub trust: super::Trust,
}

pub(super) fn load_catalog(
    product: &str,
    source: Source,
    diags: &mut Diagnostics,
) -> Option<LoadedCatalog> {
    let (value, origin) = read_doc::<Catalog>(&source, "catalog.yaml", diags)?;
    let catalog = Loaded { value, origin };
    if catalog.product != product {
        diags.push(catalog.origin.diag(
            "product",
            format!(
                "this catalog publishes {:?}, but fleet.yaml lists it as {product:?} (hint: make the catalogs key in fleet.yaml match the product)",
                catalog.product
            ),
        ));
    }
    if catalog.channels.is_empty() {
        diags.push(
            catalog
                .origin
                .diag("channels", "a catalog needs at least one channel"),
        );
    }

    let mut releases: Vec<Loaded<Release>> = Vec::new();
    let mut seen_versions = BTreeMap::new();
    for (stem, rel) in yaml_files(&source, "releases", diags) {
        let Some((value, origin)) = read_doc::<Release>(&source, &rel, diags) else {
            continue;
        };
        let release = Loaded { value, origin };
        check_release(&release, &stem, &catalog, &source, diags);
        if let Some(first) =
            seen_versions.insert(release.version.clone(), release.origin.file().to_owned())
        {
            diags.push(release.origin.diag(
                "version",
                format!("version {} is also released by {first}", release.version),
            ));
            continue;
        }
        releases.push(release);
    }
    releases.sort_by(|a, b| a.version.cmp(&b.version));

    let mut fixes: Vec<Loaded<Fix>> = Vec::new();
    for (stem, rel) in yaml_files(&source, "fixes", diags) {
        let Some((value, origin)) = read_doc::<Fix>(&source, &rel, diags) else {
            continue;
        };
        let fix = Loaded { value, origin };
        check_fix(&fix, &stem, &source, diags);
        if let Some(first) = fixes.iter().find(|f| f.id == fix.id) {
            diags.push(fix.origin.diag(
                "id",
                format!(
                    "the fix id {:?} is already used at {} (hint: fix ids must be unique in the catalog)",
                    fix.id,
                    first.origin.locate("id")
                ),
            ));
            continue;
        }
        fixes.push(fix);
    }

    Some(LoadedCatalog {
        product: product.to_owned(),
        source,
        catalog,
        releases,
        fixes,
        // Set by the fleet loader, which knows the catalog's signers.
        trust: super::Trust::NotRequired,
    })
}

fn check_release(
    release: &Loaded<Release>,
    stem: &str,
    catalog: &Loaded<Catalog>,
    source: &Source,
    diags: &mut Diagnostics,
) {
    let o = &release.origin;
    if release.version.to_string() != stem {
        diags.push(o.diag(
            "version",
            format!("the release is version {} but its file is {stem}.yaml (hint: name the file after the version)", release.version),
        ));
    }
    for p in release.problems() {
        diags.push(o.problem(&p));
    }
    for (i, channel) in release.channels.iter().enumerate() {
        if !catalog.channels.contains_key(channel) {
            diags.push(o.diag(
                &format!("channels[{i}]"),
                format!(
                    "{channel:?} is not a channel of catalog.yaml (hint: the channels are {})",
                    names(catalog.channels.keys())
                ),
            ));
        }
    }
    let payload = &release.payload;
    if let Some(tree) = &payload.tree
        && source.kind(tree.as_str()) != Some(EntryKind::Dir)
    {
        diags.push(o.diag(
            "payload.tree",
            format!("the payload tree {tree}/ is not a directory of the catalog"),
        ));
    }
    if let Some(archive) = &payload.archive {
        match source.kind(archive.as_str()) {
            Some(EntryKind::File) => {
                let name = archive.as_str();
                if !(name.ends_with(".tar.gz") || name.ends_with(".tgz") || name.ends_with(".tar"))
                {
                    diags.push(o.diag(
                        "payload.archive",
                        format!("{archive} is not a .tar.gz, .tgz or .tar archive"),
                    ));
                }
                if let Some(expected) = &payload.sha256 {
                    match source.sha256(name) {
                        Ok(actual) if actual == expected.as_str() => {}
                        Ok(actual) => diags.push(o.diag(
                            "payload.sha256",
                            format!("the archive {archive} has SHA-256 {actual}, not the {expected} written here (hint: the archive or the checksum changed; publish them together)"),
                        )),
                        Err(e) => diags.push(o.diag("payload.archive", e.to_string())),
                    }
                }
            }
            _ => diags.push(o.diag(
                "payload.archive",
                format!("the archive {archive} is not a file of the catalog"),
            )),
        }
    }
}

fn check_fix(fix: &Loaded<Fix>, stem: &str, source: &Source, diags: &mut Diagnostics) {
    let o = &fix.origin;
    if fix.id != stem {
        diags.push(o.diag(
            "id",
            format!("the fix id is {:?} but its file is {stem}.yaml (hint: the id must equal the file name without .yaml)", fix.id),
        ));
    }
    for p in fix.problems() {
        diags.push(o.problem(&p));
    }
    for (i, op) in fix.ops.iter().enumerate() {
        if let Op::Write(w) | Op::Add(w) = op
            && let Some(src) = &w.source
            && source.kind(&fix_source_path(src)) != Some(EntryKind::File)
        {
            diags.push(o.diag(
                &format!("ops[{i}].{}.source", op.name()),
                format!("the source file fixes/{src} is not a file of the catalog (hint: source paths are relative to the fixes/ directory, such as files/0007/safe.php)"),
            ));
        }
    }
}

/// Where a fix's `source:` lives in the catalog: relative to `fixes/` (SPEC §2.2).
pub fn fix_source_path(source: &crate::model::values::RelPath) -> String {
    format!("fixes/{source}")
}

/// `a, b, c` for messages.
pub(super) fn names<'a>(items: impl Iterator<Item = &'a String>) -> String {
    items.map(String::as_str).collect::<Vec<_>>().join(", ")
}

impl LoadedCatalog {
    /// The bytes of a fix's `source:` file (`rel` is relative to the
    /// catalog's `fixes/` directory, SPEC §2.2).
    pub fn fix_source(&self, rel: &str) -> Result<Vec<u8>, String> {
        self.source
            .read(&format!("fixes/{rel}"))
            .map_err(|e| e.to_string())
    }

    /// The content `blob` of a release's payload.
    pub fn payload_blob(
        &self,
        payload: &super::payload::Payload,
        blob: crate::model::hash::BlobId,
    ) -> Result<Vec<u8>, String> {
        payload
            .content(&self.source, blob)
            .map_err(|e| e.to_string())
    }
}
