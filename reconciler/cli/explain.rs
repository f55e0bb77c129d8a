//! `sitekeeper explain SITE`: every effective setting of a site and the file
//! and line that decided it, including why a ceiling clamped an opt-in.

use serde::Serialize;

use super::{CliError, Format, Global, Printer, load_clean};
use crate::load::{Diagnostic, Location};
use crate::policy::{self, ChainLink, Effective, Row};

#[derive(Serialize)]
struct Report<'a> {
    site: &'a str,
    file: &'a str,
    policy_chain: &'a [ChainLink],
    settings: Vec<Row>,
}

pub(super) fn run(global: &Global, printer: &Printer, name: &str) -> Result<(), CliError> {
    let fleet = load_clean(global)?;
    let Some(site) = fleet.site(name) else {
        let names: Vec<&str> = fleet.sites.iter().map(|s| s.site.as_str()).collect();
        return Err(Diagnostic::new(
            Location::file(fleet.source.display("sites/")),
            format!("there is no site named {name:?}"),
        )
        .with_hint(format!("the sites are {}", names.join(", ")))
        .into());
    };
    let effective = policy::resolve(&fleet, site)?;
    let text = match printer.format {
        Format::Json => {
            let report = Report {
                site: &effective.site,
                file: &effective.file,
                policy_chain: &effective.chain,
                settings: effective.rows(),
            };
            serde_json::to_string_pretty(&report).unwrap_or_default()
        }
        Format::Markdown => markdown(&effective),
        Format::Human => human(printer, &effective),
    };
    printer.report(&text);
    Ok(())
}

/// A value as it would be written in YAML.
fn show(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => "(none)".to_owned(),
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(items) => format!(
            "[{}]",
            items.iter().map(show).collect::<Vec<_>>().join(", ")
        ),
        serde_json::Value::Object(map) => {
            let parts: Vec<String> = map
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| format!("{k}: {}", show(v)))
                .collect();
            format!("{{{}}}", parts.join(", "))
        }
        other => other.to_string(),
    }
}

fn chain_text(e: &Effective) -> String {
    e.chain
        .iter()
        .map(|l| {
            format!(
                "{} ({}{})",
                l.name,
                if l.stock { "stock, " } else { "" },
                l.file
            )
        })
        .collect::<Vec<_>>()
        .join(" → ")
}

fn human(p: &Printer, e: &Effective) -> String {
    let rows = e.rows();
    let name_w = rows.iter().map(|r| r.name.len()).max().unwrap_or(0);
    let values: Vec<String> = rows.iter().map(|r| show(&r.value)).collect();
    let value_w = values
        .iter()
        .map(|v| v.chars().count())
        .max()
        .unwrap_or(0)
        .min(40);
    let mut out = format!(
        "{} {}\n",
        p.bold(&format!("site {}", e.site)),
        p.dim(&format!("({})", e.file))
    );
    out.push_str(&format!("policy chain: {}\n\n", chain_text(e)));
    for (row, value) in rows.iter().zip(&values) {
        let pad = value_w.saturating_sub(value.chars().count());
        out.push_str(&format!(
            "  {:name_w$}  {value}{}  {}\n",
            row.name,
            " ".repeat(pad),
            p.dim(&row.from.to_string())
        ));
        if let Some(note) = &row.note {
            out.push_str(&format!(
                "  {:name_w$}  {}\n",
                "",
                p.warn(&format!("↳ {note}"))
            ));
        }
    }
    out
}

fn markdown(e: &Effective) -> String {
    let mut out = format!(
        "### `{}`\n\nPolicy chain: {}\n\n| setting | value | set by |\n| --- | --- | --- |\n",
        e.site,
        chain_text(e)
    );
    for row in e.rows() {
        let mut from = format!("`{}`", row.from);
        if let Some(note) = &row.note {
            from.push_str(&format!("<br>{note}"));
        }
        out.push_str(&format!(
            "| `{}` | `{}` | {} |\n",
            row.name,
            show(&row.value),
            from
        ));
    }
    out
}
