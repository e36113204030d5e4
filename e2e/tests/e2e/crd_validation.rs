//! The API server itself rejects bad SessionJob and SessionJobCutover specs with a message a user
//! understands, and accepts the edge cases that are valid. The cases are the table in
//! `crds/tests/fixtures/{invalid,valid}-specs.yaml`, shared with the crds crate's offline checks.

use std::path::PathBuf;

use kube::api::{ApiResource, DynamicObject, PostParams};
use kube::{Api, Resource};
use serde::Deserialize;
use serde_json::Value;
use sessionizer_crds::{SessionJob, SessionJobCutover};

use crate::support::env;

#[derive(Debug, Deserialize)]
struct Case {
    name: String,
    base: String,
    patch: Value,
    #[serde(default)]
    message: String,
    #[serde(default)]
    operation: Option<String>,
}

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crds/tests/fixtures")
}

fn load(name: &str) -> Value {
    let text = std::fs::read_to_string(fixtures_dir().join(name)).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

fn cases(file: &str) -> Vec<Case> {
    serde_yaml::from_value(serde_yaml::to_value(load(file)).unwrap()).unwrap()
}

/// `base` with `patch` merged in (RFC 7386), placed in `namespace`; returns it and whether it is
/// a SessionJobCutover.
fn build(base: &str, patch: &Value, namespace: &str) -> (DynamicObject, bool) {
    let mut object = load(base);
    json_patch::merge(&mut object, patch);
    object["metadata"]["namespace"] = namespace.into();
    let is_cutover = object["kind"] == "SessionJobCutover";
    (serde_json::from_value(object).unwrap(), is_cutover)
}

fn api(client: &kube::Client, namespace: &str, cutover: bool) -> Api<DynamicObject> {
    let resource = if cutover {
        ApiResource::erase::<SessionJobCutover>(&())
    } else {
        ApiResource::erase::<SessionJob>(&())
    };
    Api::namespaced_with(client.clone(), namespace, &resource)
}

fn dry_run() -> PostParams {
    PostParams {
        dry_run: true,
        ..PostParams::default()
    }
}

async fn setup() -> (kube::Client, String) {
    let env = env();
    let client = env.client().await.unwrap();
    sessionizer_e2e::crds::install(&client).await.unwrap();
    let namespace = env.namespace("crd").await.unwrap();
    (client, namespace)
}

#[tokio::test]
async fn the_api_server_rejects_every_invalid_spec_with_its_message() {
    let (client, namespace) = setup().await;
    let cases = cases("invalid-specs.yaml");
    assert!(cases.len() >= 10, "the table has {} cases", cases.len());
    let mut failures = Vec::new();
    for (index, case) in cases.iter().enumerate() {
        let (mut bad, cutover) = build(&case.base, &case.patch, &namespace);
        let api = api(&client, &namespace, cutover);
        let result = if case.operation.as_deref() == Some("update") {
            // Create the valid base for real (under a name of its own), then try to update it
            // into the bad object.
            let name = format!("update-case-{index}");
            let (mut base, _) = build(&case.base, &Value::Object(Default::default()), &namespace);
            base.metadata.name = Some(name.clone());
            let created = api.create(&PostParams::default(), &base).await.unwrap();
            bad.metadata.name = Some(name.clone());
            bad.metadata.resource_version = created.meta().resource_version.clone();
            api.replace(&name, &dry_run(), &bad).await
        } else {
            api.create(&dry_run(), &bad).await
        };
        match result {
            Err(kube::Error::Api(status)) if status.message.contains(&case.message) => {}
            Err(kube::Error::Api(status)) => failures.push(format!(
                "{}: rejected, but with {:?} (expected {:?})",
                case.name, status.message, case.message
            )),
            Err(other) => failures.push(format!("{}: unexpected error {other}", case.name)),
            Ok(_) => failures.push(format!("{}: accepted", case.name)),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn the_api_server_accepts_the_valid_edge_cases_and_fills_defaults() {
    let (client, namespace) = setup().await;
    let mut failures = Vec::new();
    for case in cases("valid-specs.yaml") {
        let (good, cutover) = build(&case.base, &case.patch, &namespace);
        if let Err(error) = api(&client, &namespace, cutover)
            .create(&dry_run(), &good)
            .await
        {
            failures.push(format!("{}: {error}", case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "valid specs rejected:\n{}",
        failures.join("\n")
    );

    // The minimal fixture comes back with the documented defaults filled in by the server.
    let (minimal, _) = build(
        "sessionjob-minimal.yaml",
        &Value::Object(Default::default()),
        &namespace,
    );
    let created = api(&client, &namespace, false)
        .create(&dry_run(), &minimal)
        .await
        .unwrap();
    let spec = &created.data["spec"];
    assert_eq!(spec["parallelism"], 1);
    assert_eq!(spec["session"]["gap"], "30m");
    assert_eq!(spec["session"]["maxPageNumber"], 300);
    assert_eq!(spec["history"]["ttl"], "168h");
}
