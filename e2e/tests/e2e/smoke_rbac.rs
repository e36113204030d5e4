//! RBAC is real: a service-account token is verified by the API server and authorized only for
//! what a Role grants it.

use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use sessionizer_e2e::{Error, kubeconfig, wait};

use crate::support::env;

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        ..ObjectMeta::default()
    }
}

async fn token_client(namespace: &str, account: &str) -> Client {
    let env = env();
    let admin = env.client().await.unwrap();
    let accounts: Api<ServiceAccount> = Api::namespaced(admin, namespace);
    accounts
        .create(
            &PostParams::default(),
            &ServiceAccount {
                metadata: meta(account),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    let issued = accounts
        .create_token_request(account, &PostParams::default(), &request)
        .await
        .unwrap();
    let token = issued.status.unwrap().token.unwrap();
    let path = env
        .run_dir()
        .join(format!("{namespace}-{account}.kubeconfig"));
    let control_plane = env.control_plane().unwrap();
    kubeconfig::write_with_token(
        &path,
        &control_plane.server,
        &control_plane.pki.ca_cert,
        account,
        &token,
    )
    .unwrap();
    kubeconfig::client(&path).await.unwrap()
}

#[tokio::test]
async fn a_service_account_token_without_rbac_rights_is_refused_until_a_role_grants_them() {
    let env = env();
    let namespace = env.namespace("rbac").await.unwrap();
    let client = token_client(&namespace, "nobody").await;
    let pods: Api<Pod> = Api::namespaced(client, &namespace);

    match pods.list(&Default::default()).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403, "{status:?}");
            assert!(
                status
                    .message
                    .contains(&format!("system:serviceaccount:{namespace}:nobody")),
                "the refusal names the service account: {}",
                status.message
            );
        }
        other => panic!("expected 403 Forbidden, got {other:?}"),
    }

    // The same token works once RBAC allows it: the refusal above was authorization, not a
    // broken token.
    let admin = env.client().await.unwrap();
    let roles: Api<Role> = Api::namespaced(admin.clone(), &namespace);
    let role = Role {
        metadata: meta("pod-reader"),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["pods".into()]),
            verbs: vec!["list".into()],
            ..PolicyRule::default()
        }]),
    };
    roles.create(&PostParams::default(), &role).await.unwrap();
    let bindings: Api<RoleBinding> = Api::namespaced(admin, &namespace);
    let binding = RoleBinding {
        metadata: meta("nobody-reads-pods"),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: "pod-reader".into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: "nobody".into(),
            namespace: Some(namespace.clone()),
            ..Subject::default()
        }]),
    };
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    wait::until(
        "the role binding to take effect",
        Duration::from_secs(30),
        || async {
            pods.list(&Default::default())
                .await
                .map(|_| Some(()))
                .map_err(|e| Error::Other(e.to_string()))
        },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_forged_token_is_rejected_as_unauthenticated() {
    let env = env();
    let control_plane = env.control_plane().unwrap();
    let path = env.run_dir().join("forged.kubeconfig");
    kubeconfig::write_with_token(
        &path,
        &control_plane.server,
        &control_plane.pki.ca_cert,
        "forger",
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06YWRtaW4ifQ.c2lnbmF0dXJl",
    )
    .unwrap();
    let client = kubeconfig::client(&path).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client, "default");
    match pods.list(&Default::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 401, "{status:?}"),
        other => panic!("expected 401 Unauthorized, got {other:?}"),
    }
}
