//! The Helm chart and the examples are valid Kubernetes objects by the API server's own strict
//! schema validation (unknown or misspelt fields are errors), not just well-formed YAML.

use sessionizer_e2e::install;

use crate::support::env;

async fn strictly_valid(namespace: &str, manifests: &str) {
    env()
        .kubectl(
            &[
                "apply",
                "--dry-run=server",
                "--validate=strict",
                "-n",
                namespace,
                "-f",
                "-",
            ],
            Some(manifests),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn the_rendered_chart_passes_strict_server_side_validation() {
    let env = env();
    sessionizer_e2e::crds::install(&env.client().await.unwrap())
        .await
        .unwrap();
    let namespace = env.namespace("chart").await.unwrap();
    let chart = install::chart_dir();
    let chart = chart.to_str().unwrap();
    let watch = format!("watchNamespaces={{{namespace}}}");
    for extra in [vec![], vec!["--set", watch.as_str()]] {
        let mut args = vec![
            "template",
            "sessionizer",
            chart,
            "--namespace",
            &namespace,
            "--kube-version",
            "v1.36.3",
        ];
        args.extend(extra);
        let rendered = env.helm(&args).await.unwrap();
        assert!(rendered.contains("kind: Deployment"), "{rendered}");
        strictly_valid(&namespace, &rendered).await;
    }
}

#[tokio::test]
async fn the_examples_pass_strict_server_side_validation() {
    let env = env();
    sessionizer_e2e::crds::install(&env.client().await.unwrap())
        .await
        .unwrap();
    let namespace = env.namespace("examples").await.unwrap();
    let values = [
        ("KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
        ("SOURCE_TOPIC", "pageviews"),
        ("AEROSPIKE_HOST", "127.0.0.1:3000"),
    ];
    for file in ["sessionjob.yaml", "sessionjob-aerospike.yaml"] {
        let manifest = install::example(file, &values).unwrap();
        assert!(
            !manifest.contains("${"),
            "{file} has an unfilled placeholder"
        );
        strictly_valid(&namespace, &manifest).await;
    }
}
