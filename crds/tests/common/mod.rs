//! Helpers shared by the integration tests: fixtures, schemas and kube's offline CEL evaluator.

#![allow(dead_code, missing_docs)]

use std::path::PathBuf;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::core::cel::Validator;
use serde_json::Value;

pub fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A YAML fixture as JSON.
pub fn fixture(name: &str) -> Value {
    let text = std::fs::read_to_string(fixture_path(name)).expect("fixture exists");
    serde_yaml::from_str(&text).expect("fixture is YAML")
}

/// The `openAPIV3Schema` of a CRD as JSON.
pub fn schema(crd: &CustomResourceDefinition) -> Value {
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("CRD has a schema");
    serde_json::to_value(schema).expect("schema is JSON")
}

/// The messages of every CEL rule `object` fails (with `old` for transition rules).
pub fn cel_failures(
    crd: &CustomResourceDefinition,
    object: &Value,
    old: Option<&Value>,
) -> Vec<String> {
    match Validator::new().validate(&schema(crd), object, old) {
        Ok(()) => Vec::new(),
        Err(errors) => errors
            .into_vec()
            .into_iter()
            .map(|e| e.to_string())
            .collect(),
    }
}

/// The object after the API server's structural defaulting (schema `default`s applied).
pub fn defaulted(crd: &CustomResourceDefinition, object: &Value) -> Value {
    kube::core::cel::apply_defaults(&schema(crd), object)
}

/// `target` with `patch` applied as a JSON merge patch (RFC 7386).
pub fn merge_patch(target: &Value, patch: &Value) -> Value {
    let mut result = target.clone();
    json_patch::merge(&mut result, patch);
    result
}
