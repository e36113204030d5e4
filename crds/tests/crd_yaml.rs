//! The committed CRD YAML is what the types generate (CI fails when someone forgets to run the
//! generator), and the schema follows the API server's structural-schema rules.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;
use sessionizer_crds::crdgen::{self, OUTPUT_DIRS, REGENERATE_COMMAND};

#[test]
fn committed_crd_yaml_is_up_to_date() {
    let root = crdgen::workspace_root();
    let files = crdgen::render().expect("CRDs render");
    for dir in OUTPUT_DIRS {
        for file in &files {
            let path = root.join(dir).join(&file.file_name);
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                committed == file.contents,
                "CRD YAML is stale, run `{REGENERATE_COMMAND}` ({} differs)",
                path.display()
            );
        }
        let expected: BTreeSet<_> = files.iter().map(|f| f.file_name.clone()).collect();
        let present = yaml_files(&root.join(dir));
        assert_eq!(
            present, expected,
            "CRD YAML is stale, run `{REGENERATE_COMMAND}` and delete leftover files in {dir}"
        );
    }
}

fn yaml_files(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".yaml"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn schemas_are_structural_and_cel_inputs_are_bounded() {
    for crd in crdgen::crds().expect("CRDs render") {
        let schema = serde_json::to_value(&crd.spec.versions[0].schema).expect("JSON");
        let mut problems = Vec::new();
        check(&schema["openAPIV3Schema"], "", &mut problems);
        assert!(
            problems.is_empty(),
            "{}: {problems:#?}",
            crd.spec.names.kind
        );
    }
}

/// The rules of <https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/#specifying-a-structural-schema>
/// that matter for generated schemas, plus bounds on values CEL rules read (cost estimation).
fn check(node: &Value, path: &str, problems: &mut Vec<String>) {
    let has = |key: &str| node.get(key).is_some();
    let escape_hatch =
        has("x-kubernetes-int-or-string") || has("x-kubernetes-preserve-unknown-fields");
    if !has("type") && !escape_hatch && !path.is_empty() {
        problems.push(format!("{path}: no type"));
    }
    for key in [
        "$ref",
        "oneOf",
        "anyOf",
        "allOf",
        "not",
        "definitions",
        "$defs",
    ] {
        if has(key) && !escape_hatch {
            problems.push(format!("{path}: {key} is not allowed here"));
        }
    }
    if has("x-kubernetes-validations") {
        let bounded = match node["type"].as_str() {
            Some("string") => has("maxLength") || has("enum"),
            Some("array") => has("maxItems"),
            Some("object") if has("additionalProperties") => has("maxProperties"),
            _ => true,
        };
        if !bounded {
            problems.push(format!("{path}: CEL rule on an unbounded value"));
        }
        for rule in node["x-kubernetes-validations"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if rule["message"].as_str().is_none_or(str::is_empty) {
                problems.push(format!("{path}: rule {} has no message", rule["rule"]));
            }
        }
    }
    if node.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("map") {
        let item = &node["items"];
        let required: BTreeSet<_> = item["required"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        for key in node["x-kubernetes-list-map-keys"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            let defaulted = item["properties"][key].get("default").is_some();
            if !required.contains(key) && !defaulted {
                problems.push(format!(
                    "{path}: list-map key {key} is neither required nor defaulted"
                ));
            }
        }
    }
    if let Some(description) = node.get("description").and_then(Value::as_str)
        && description.trim().is_empty()
    {
        problems.push(format!("{path}: empty description"));
    }
    if !path.is_empty()
        && !has("description")
        && path.contains(".spec")
        && !path.ends_with("[]")
        && !path.ends_with("{}")
    {
        problems.push(format!("{path}: no description"));
    }
    if let Some(properties) = node.get("properties").and_then(Value::as_object) {
        for (name, child) in properties {
            check(child, &format!("{path}.{name}"), problems);
        }
    }
    if let Some(items) = node.get("items") {
        check(items, &format!("{path}[]"), problems);
    }
    if let Some(additional) = node.get("additionalProperties").filter(|a| a.is_object()) {
        check(additional, &format!("{path}{{}}"), problems);
    }
}
