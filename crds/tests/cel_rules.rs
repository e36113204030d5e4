//! Every `check: cel` case of `fixtures/invalid-specs.yaml` is rejected by the CRD's own CEL rules
//! with the documented message, evaluated offline by kube's CEL evaluator. The `openapi` cases
//! need a real API server and run in e2e.

mod common;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serde::Deserialize;
use serde_json::Value;
use sessionizer_crds::{SessionJob, SessionJobCutover};

use common::{cel_failures, fixture, merge_patch};

#[derive(Deserialize)]
struct Case {
    name: String,
    base: String,
    check: String,
    #[serde(default)]
    operation: Option<String>,
    patch: Value,
    message: String,
}

fn crd_for(object: &Value) -> CustomResourceDefinition {
    match object["kind"].as_str() {
        Some("SessionJob") => SessionJob::crd(),
        Some("SessionJobCutover") => SessionJobCutover::crd(),
        other => panic!("unexpected kind {other:?}"),
    }
}

fn cases() -> Vec<Case> {
    serde_json::from_value(fixture("invalid-specs.yaml")).expect("invalid-specs.yaml parses")
}

#[test]
fn table_has_the_expected_shape() {
    let cases = cases();
    assert!(cases.len() >= 12);
    for case in &cases {
        assert!(
            matches!(case.check.as_str(), "cel" | "openapi"),
            "{}",
            case.name
        );
        assert!(
            matches!(
                case.operation.as_deref(),
                None | Some("create") | Some("update")
            ),
            "{}",
            case.name
        );
    }
}

#[test]
fn cel_cases_are_rejected_with_their_message() {
    let mut problems = Vec::new();
    for case in cases().iter().filter(|c| c.check == "cel") {
        let base = fixture(&case.base);
        let crd = crd_for(&base);
        let patched = merge_patch(&base, &case.patch);
        let old = (case.operation.as_deref() == Some("update")).then_some(&base);
        let failures = cel_failures(&crd, &patched, old);
        if !failures.iter().any(|f| f.contains(&case.message)) {
            problems.push(format!(
                "{}: expected {:?}, got {failures:?}",
                case.name, case.message
            ));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[derive(Deserialize)]
struct ValidCase {
    name: String,
    base: String,
    patch: Value,
}

#[test]
fn valid_edge_cases_pass_every_rule() {
    let cases: Vec<ValidCase> =
        serde_json::from_value(fixture("valid-specs.yaml")).expect("valid-specs.yaml parses");
    let mut problems = Vec::new();
    for case in &cases {
        let patched = merge_patch(&fixture(&case.base), &case.patch);
        let failures = cel_failures(&crd_for(&patched), &patched, None);
        if !failures.is_empty() {
            problems.push(format!("{}: {failures:?}", case.name));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn bases_pass_as_updates_of_themselves() {
    // Transition rules (`self == oldSelf`) hold for an unchanged object.
    for name in ["sessionjob-full.yaml", "cutover.yaml"] {
        let object = fixture(name);
        let failures = cel_failures(&crd_for(&object), &object, Some(&object));
        assert!(failures.is_empty(), "{name}: {failures:?}");
    }
}
