//! Whether a fleet or catalog commit may be acted on (SPEC §7): the
//! [`Trust`] verdict, computed once when the source is loaded.
//!
//! A catalog naming `allowed_signers` must be read at a commit signed by a
//! listed key. A fleet fetched from a git URL is held to its own top-level
//! `allowed_signers` by trust on first use: once a fleet URL was seen
//! requiring signatures, a record under the state dir keeps requiring them,
//! with the keys of the last trusted fleet commit, and its next head must
//! descend from that commit. So a pushed commit cannot switch signing off
//! by deleting the line, nor swap in its own keys, nor rewind the fleet.
//! The record's path is [`StateDir::fleet_trust_record`], and it is written
//! durably ([`crate::atomic`]): a crash must not forget a trust.
//!
//! This file decides and records verdicts; it never changes a site. Planning
//! turns an untrusted verdict into `held: untrusted_source`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::signers::{self, AllowedSigners};
use super::source::Source;
use crate::atomic::{Durability, atomic_write};
use crate::statedir::StateDir;

/// The verdict on a fleet or catalog commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Trust {
    /// No signatures are required of this source.
    NotRequired,
    /// The commit is signed by a listed key.
    Trusted {
        /// The commit.
        commit: String,
        /// The principals of the listed key that signed it.
        signer: String,
        /// That key's fingerprint (`SHA256:…`).
        key: String,
    },
    /// The commit must not be acted on.
    Untrusted {
        /// Why, in a sentence for the site owner.
        reason: String,
    },
}

impl Trust {
    /// The reason, when untrusted.
    pub fn untrusted(&self) -> Option<&str> {
        match self {
            Trust::Untrusted { reason } => Some(reason),
            _ => None,
        }
    }

    /// Whether signatures are required of this source (and so also the
    /// no-downgrade rule, SPEC §7).
    pub fn required(&self) -> bool {
        !matches!(self, Trust::NotRequired)
    }

    /// One line for people: `signed by alice@example.com (SHA256:…)`.
    pub fn summary(&self) -> String {
        match self {
            Trust::NotRequired => "signatures not required".to_owned(),
            Trust::Trusted { signer, key, .. } => format!("signed by {signer} ({key})"),
            Trust::Untrusted { reason } => format!("UNTRUSTED: {reason}"),
        }
    }
}

/// The first 12 hex digits of a commit id, for messages.
pub fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

/// The verdict on the commit `source` was read at, against `signers`
/// (named `signers_name` in messages). `what` names the source
/// (`the catalog acme`). A directory source is untrusted: it has no commit
/// to sign.
pub fn verify_source(
    source: &Source,
    what: &str,
    signers: &AllowedSigners,
    signers_name: &str,
) -> Trust {
    let untrusted = |reason: String| Trust::Untrusted { reason };
    let Some(commit) = source.commit() else {
        return untrusted(format!(
            "{what} is read from a directory, which has no commit to sign"
        ));
    };
    let found = match source.commit_signature() {
        Ok(Some(found)) => found,
        Ok(None) => {
            return untrusted(format!("{what} has no commit to check"));
        }
        Err(e) => {
            return untrusted(format!(
                "the signature of {what} at {} cannot be read: {e}",
                short(commit)
            ));
        }
    };
    let Some(signature) = &found.signature else {
        return untrusted(format!(
            "commit {} of {what} is not signed, and {signers_name} requires a signature by a listed key",
            short(commit)
        ));
    };
    match signers::verify(signature, &found.signed, found.time, signers) {
        Ok(v) => Trust::Trusted {
            commit: commit.to_owned(),
            signer: v.principals,
            key: v.fingerprint,
        },
        Err(why) => untrusted(format!(
            "commit {} of {what}: {why} (allowed signers: {signers_name})",
            short(commit)
        )),
    }
}

/// What the state dir remembers about a fleet URL that required signatures.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct FleetRecord {
    /// The fleet URL.
    url: String,
    /// The last fleet commit found trusted.
    commit: String,
    /// Where that commit's fleet.yaml pointed for its signers.
    signers_file: String,
    /// The text of that file at that commit: the keys its successor must be signed by.
    signers: String,
}

/// The verdict on a fleet fetched from `url`, whose head names
/// `head_signers` (its `allowed_signers` path and that file's text, if it
/// names one and the file reads). Trust on first use: without a record, the
/// head must be signed by a key of its own signers file; with one, by a key
/// of the recorded file and descend from the recorded commit. A trusted
/// head becomes the record, with its own signers file when it names one
/// (so keys rotate by a commit the old keys sign), else the recorded keys.
///
/// The record is kept under the state dir given on the command line (or
/// the environment), never one that the fleet's own `fleet.yaml` names: a
/// fleet not yet trusted must not choose where its trust is looked up.
pub fn fleet_trust(
    source: &Source,
    url: &str,
    state_dir: &Path,
    head_signers: Option<(&str, &str)>,
) -> Trust {
    let untrusted = |reason: String| Trust::Untrusted { reason };
    let Some(head) = source.commit() else {
        return Trust::NotRequired;
    };
    let path = StateDir::new(state_dir).fleet_trust_record(url);
    let record: Option<FleetRecord> = match std::fs::read(&path) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(r) => Some(r),
            // Failing closed: a damaged record must not switch signing off.
            Err(e) => {
                return untrusted(format!(
                    "the fleet's trust record {} is damaged ({e}); restore it, or delete it to trust the fleet's current signers anew",
                    path.display()
                ));
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return untrusted(format!(
                "the fleet's trust record {} cannot be read: {e}",
                path.display()
            ));
        }
    };
    let (keys_text, keys_name, signers_file) = match (&record, head_signers) {
        (Some(r), _) => (
            r.signers.as_str(),
            format!(
                "{} of the last trusted fleet commit {}",
                r.signers_file,
                short(&r.commit)
            ),
            r.signers_file.as_str(),
        ),
        (None, Some((file, text))) => (text, file.to_owned(), file),
        (None, None) => return Trust::NotRequired,
    };
    let (keys, errors) = signers::parse(keys_text);
    if !errors.is_empty() || keys.entries.is_empty() {
        return untrusted(format!(
            "the fleet's allowed signers file {keys_name} is missing, empty or broken (see `sitekeeper validate`)"
        ));
    }
    let verdict = verify_source(source, "the fleet repo", &keys, &keys_name);
    if verdict.untrusted().is_some() {
        return verdict;
    }
    if let Some(r) = &record {
        match source.descends_from(&r.commit) {
            Ok(true) => {}
            Ok(false) => {
                return untrusted(format!(
                    "fleet commit {} is not a descendant of {}, the last trusted fleet commit (no silent downgrade)",
                    short(head),
                    short(&r.commit)
                ));
            }
            Err(e) => return untrusted(e.to_string()),
        }
    }
    // The keys the next head must be signed by: this head's own file when
    // it names one that parses, else the ones that were required here.
    let next = match head_signers {
        Some((file, text)) if signers::parse(text).1.is_empty() => (file, text),
        _ => (signers_file, keys_text),
    };
    let next = FleetRecord {
        url: url.to_owned(),
        commit: head.to_owned(),
        signers_file: next.0.to_owned(),
        signers: next.1.to_owned(),
    };
    if let Err(e) = write_record(&path, &next) {
        // Failing closed: a trust that is not recorded could be dropped by the next push.
        return untrusted(format!(
            "the fleet's trust record {} cannot be written: {e}",
            path.display()
        ));
    }
    verdict
}

/// Writes the record durably: a trust that a crash could lose would let
/// the next head pass on first use again.
fn write_record(path: &Path, record: &FleetRecord) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?;
    atomic_write(path, &bytes, Durability::Durable)
}
