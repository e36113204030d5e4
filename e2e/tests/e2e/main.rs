//! End-to-end tests against the real local environment. One test binary, so every test shares one
//! environment ([`Env::shared`]): a control plane, node agent, Kafka and S3 server started once per
//! run. Tests isolate themselves by namespace, topic and bucket names.

// A test binary: a failed unwrap is a failed test, with the value in the message.
#![allow(clippy::unwrap_used)]

mod chart;
mod checkpoint_retention;
mod crd_validation;
mod cutover;
mod cutover_oracle;
mod history_store;
mod live_ttl;
mod node_agent;
mod operator;
mod smoke_kubernetes;
mod smoke_rbac;
mod smoke_streams;
mod support;
mod worker_kill;
