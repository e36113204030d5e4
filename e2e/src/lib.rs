//! The local environment Sessionizer is built and proven on: a real Kubernetes control plane
//! (etcd, kube-apiserver, kube-controller-manager built from the official Go modules), our node
//! agent that runs Pods as local processes, Apache Kafka in KRaft mode, an S3 server (MinIO) and
//! the Aerospike wire-protocol test server — all on loopback, all torn down with their owner.
//!
//! Tests and the demo share this library; the `sessionizer-env` binary drives it from the
//! command line. It must never talk to anything but this machine's loopback addresses.

pub mod aerospike;
pub mod control_plane;
pub mod crds;
pub mod env;
pub mod error;
pub mod install;
pub mod kafka;
pub mod kubeconfig;
pub mod net;
pub mod node_agent;
pub mod pki;
pub mod process;
pub mod s3;
pub mod smoke;
pub mod story;
pub mod tools;
pub mod wait;

pub use env::{Env, EnvConfig};
pub use error::{Error, Result};
