//! The committed `schema/` must equal what `sitekeeper schema` writes, so a
//! field added to a model type without regenerating the schemas fails here.

use crate::support::{repo_root, run_in, stderr};

#[test]
fn committed_schemas_equal_the_generated_ones() {
    let out_dir = tempfile::tempdir().unwrap();
    let out = run_in(
        &repo_root(),
        &["schema", "--out", out_dir.path().to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let mut generated: Vec<_> = std::fs::read_dir(out_dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let mut committed: Vec<_> = std::fs::read_dir(repo_root().join("schema"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    generated.sort();
    committed.sort();
    assert_eq!(
        generated, committed,
        "schema/ holds other files than `sitekeeper schema` writes"
    );
    for name in generated {
        let fresh = std::fs::read_to_string(out_dir.path().join(&name)).unwrap();
        let kept = std::fs::read_to_string(repo_root().join("schema").join(&name)).unwrap();
        assert!(
            fresh == kept,
            "schema/{} is stale: run `cargo run -- schema --out schema` and commit the result",
            name.to_string_lossy()
        );
    }
}

#[test]
fn site_schema_describes_every_site_field() {
    // A property of the generator, checked on one type: fields reach the schema.
    let text = std::fs::read_to_string(repo_root().join("schema/site.schema.json")).unwrap();
    let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
    let props = &schema["$defs"]["Site"]["properties"];
    for field in [
        "site", "root", "product", "channel", "version", "policy", "ring", "labels", "layout",
        "opt_in", "paths", "window", "health", "hooks", "drift",
    ] {
        assert!(props.get(field).is_some(), "site schema lacks {field}");
    }
    assert_eq!(
        schema["$defs"]["Site"]["additionalProperties"],
        serde_json::Value::Bool(false)
    );
}

#[test]
fn every_example_and_policy_yaml_names_its_schema() {
    let mut files = Vec::new();
    for dir in ["examples", "policies"] {
        collect_yaml(&repo_root().join(dir), &mut files);
    }
    assert!(files.len() > 10, "found only {} YAML files", files.len());
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let first = text.lines().next().unwrap_or("");
        let Some(target) = first.strip_prefix("# yaml-language-server: $schema=") else {
            panic!(
                "{} does not start with a yaml-language-server schema line",
                file.display()
            );
        };
        let resolved = file.parent().unwrap().join(target);
        assert!(
            resolved.is_file(),
            "{}: schema {} does not exist",
            file.display(),
            resolved.display()
        );
    }
}

fn collect_yaml(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        // Deployment manifests (Kubernetes) and CI pipelines are not
        // sitekeeper files: no schema of ours describes them.
        if path.ends_with("examples/deploy") || path.ends_with("examples/ci") {
            continue;
        }
        if path.is_dir() {
            collect_yaml(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}
