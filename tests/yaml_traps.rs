//! One test per YAML trap the loader must close (issue: duplicate keys, tags,
//! merge keys, several documents, alias bombs, deep nesting, huge files,
//! unknown fields, YAML 1.1 booleans). Each asserts the refusal and its
//! exact position, through the real loader and the real model types.

use std::time::Instant;

use sitekeeper::load::Diagnostic;
use sitekeeper::load::yaml::parse;
use sitekeeper::model::{Policy, Site};

const SITE: &str = "site: shop\nroot: /srv/shop\nproduct: acme\nchannel: stable\n";

fn site_err(extra: &str) -> Diagnostic {
    let text = format!("{SITE}{extra}");
    match parse::<Site>("sites/shop.yaml", text.as_bytes()) {
        Ok((site, _)) => panic!("accepted {extra:?} as {site:?}"),
        Err(d) => d,
    }
}

fn pos(d: &Diagnostic) -> (usize, usize) {
    (d.at.line, d.at.column)
}

#[test]
fn duplicate_top_level_key_is_refused_at_the_second() {
    let d = site_err("channel: beta\n");
    assert_eq!(pos(&d), (5, 1), "{d}");
    assert!(
        d.message
            .contains("`channel` appears twice (first at line 4, column 1)"),
        "{d}"
    );
}

#[test]
fn duplicate_key_in_a_map_typed_field_is_refused() {
    // serde_yaml and its forks keep the last value here without a word.
    let d = site_err("labels:\n  env: staging\n  env: production\n");
    assert_eq!(pos(&d), (7, 3), "{d}");
    assert!(d.message.contains("`env` appears twice"), "{d}");
}

#[test]
fn binary_tag_is_refused_not_decoded() {
    let d = site_err("labels: {note: !!binary aGVsbG8=}\n");
    assert_eq!(pos(&d), (5, 16), "{d}");
    assert!(d.message.contains("`!!binary`"), "{d}");
    let d = site_err("ring: !custom 1\n");
    assert!(d.message.contains("`!custom`"), "{d}");
}

#[test]
fn merge_keys_are_refused() {
    let d = site_err("labels:\n  <<: {env: prod}\n");
    assert_eq!(pos(&d), (6, 3), "{d}");
    assert!(d.message.contains("merge keys"), "{d}");
}

#[test]
fn several_documents_are_refused() {
    let text = format!("{SITE}---\n{SITE}");
    let d = parse::<Site>("sites/shop.yaml", text.as_bytes()).unwrap_err();
    assert_eq!(pos(&d), (5, 1), "{d}");
    assert!(d.message.contains("more than one YAML document"), "{d}");
}

#[test]
fn a_long_list_without_aliases_is_no_alias_bomb() {
    // 10,000 sites in one file, as a host of many sites keeps them:
    // 150,000 nodes written out, under the file size limit. Found when
    // `adopt --all` of such a fleet was refused as an alias bomb.
    let mut text = String::new();
    for i in 0..30_000 {
        text.push_str(&format!("- {{a: {i}, b: x}}\n"));
    }
    assert!(text.len() < sitekeeper::load::yaml::MAX_FILE_BYTES);
    let (doc, _) = parse::<Vec<serde_json::Value>>("sites/all.yaml", text.as_bytes()).unwrap();
    assert_eq!(doc.len(), 30_000);
}

#[test]
fn alias_bomb_fails_fast() {
    // The billion laughs: 9 levels of 9 aliases expand to 9^9 values.
    let mut text = String::from("labels: &a0 {x: lol}\n");
    for level in 1..=9 {
        let refs: Vec<String> = (0..9).map(|_| format!("*a{}", level - 1)).collect();
        text.push_str(&format!("l{level}: &a{level} [{}]\n", refs.join(", ")));
    }
    let started = Instant::now();
    let d = parse::<Site>("sites/bomb.yaml", text.as_bytes()).unwrap_err();
    let elapsed = started.elapsed();
    assert!(d.message.contains("alias bomb"), "{d}");
    // The bound for this denial-of-service guard: refused in < 100 ms.
    assert!(elapsed.as_millis() < 100, "took {elapsed:?}");
}

#[test]
fn nesting_deeper_than_the_limit_is_refused() {
    let deep = format!("{}{}", "[".repeat(40), "]".repeat(40));
    let d = site_err(&format!("labels: {{x: {deep}}}\n"));
    assert_eq!(d.at.line, 5, "{d}");
    assert!(d.message.contains("nest deeper than 32"), "{d}");
}

#[test]
fn files_over_one_mebibyte_are_refused_before_parsing() {
    let mut text = String::from(SITE);
    text.push_str(&format!("# {}\n", "x".repeat(1 << 20)));
    let d = parse::<Site>("sites/huge.yaml", text.as_bytes()).unwrap_err();
    assert_eq!(pos(&d), (1, 1), "{d}");
    assert!(d.message.contains("over the 1 MiB limit"), "{d}");
}

#[test]
fn unknown_fields_are_refused_with_the_allowed_ones() {
    let d = site_err("chanel: beta\n");
    assert_eq!(pos(&d), (5, 1), "{d}");
    assert_eq!(d.message, "unknown field \"chanel\"");
    assert!(d.hint.as_deref().unwrap_or("").contains("channel"), "{d}");
    let d = site_err("opt_in:\n  upgrade: patch\n");
    assert_eq!(pos(&d), (6, 3), "{d}");
    assert_eq!(d.message, "opt_in: unknown field \"upgrade\"");
}

#[test]
fn yaml_1_1_booleans_are_refused_where_a_boolean_is_expected() {
    for word in ["yes", "no", "on", "off", "y", "n"] {
        let d = site_err(&format!("opt_in:\n  diagnostics: {word}\n"));
        assert_eq!(pos(&d), (6, 16), "{word}: {d}");
        assert_eq!(d.message, format!("diagnostics: {word:?} is not a boolean"));
    }
    let policy = "policy: p\nprereleases: on\n";
    let d = parse::<Policy>("policies/p.yaml", policy.as_bytes()).unwrap_err();
    assert_eq!(pos(&d), (2, 14), "{d}");
}

#[test]
fn enum_values_list_the_choices_with_the_field_name() {
    let d = site_err("opt_in:\n  upgrades: everything\n");
    assert_eq!(pos(&d), (6, 13), "{d}");
    assert_eq!(
        d.message,
        "upgrades: \"everything\" is not one of none, patch, minor, major"
    );
}

#[test]
fn a_plain_valid_site_parses_with_positions() {
    let (site, index) = parse::<Site>(
        "sites/shop.yaml",
        format!("{SITE}opt_in:\n  upgrades: patch\n").as_bytes(),
    )
    .unwrap();
    assert_eq!(site.site.as_str(), "shop");
    assert_eq!(index.get("opt_in.upgrades").map(|p| p.value), Some((6, 13)));
}
