//! `sitekeeper schema`: the JSON Schemas of every file kind, generated from
//! the model types so they can never drift from what the loader accepts.

use std::path::Path;

use super::{CliError, Printer};
use crate::model::FileKind;

/// The text of one schema file, as committed under `schema/`.
pub fn schema_text(kind: FileKind) -> String {
    let mut text = serde_json::to_string_pretty(&kind.schema()).unwrap_or_default();
    text.push('\n');
    text
}

pub(super) fn run(printer: &Printer, out: Option<&Path>) -> Result<(), CliError> {
    match out {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| CliError::Failed(format!("{}: {e}", dir.display())))?;
            for kind in FileKind::ALL {
                let path = dir.join(kind.schema_file());
                std::fs::write(&path, schema_text(kind))
                    .map_err(|e| CliError::Failed(format!("{}: {e}", path.display())))?;
            }
            printer.say(&format!(
                "wrote {} schemas to {}",
                FileKind::ALL.len(),
                dir.display()
            ));
        }
        None => {
            let all: serde_json::Map<String, serde_json::Value> = FileKind::ALL
                .iter()
                .map(|k| {
                    (
                        k.schema_file().to_owned(),
                        serde_json::Value::from(k.schema()),
                    )
                })
                .collect();
            printer.report(&serde_json::to_string_pretty(&all).unwrap_or_default());
        }
    }
    Ok(())
}
