//! Who this worker is within its job: its ordinal among the job's replicas, how many replicas
//! there are, its Pod name and the IP its Pod was given. The operator passes these through the
//! environment (see [`crate::config`]); this module reads and checks them once, at startup, so
//! the rest of the worker can rely on `ordinal < replicas`.
//!
//! The key groups a worker owns follow from its identity alone ([`Identity::key_groups`]), which
//! is why a restore works at any parallelism without a shuffle.

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;

use crate::config::{ENV_ORDINAL, ENV_POD_IP, ENV_POD_NAME, ENV_REPLICAS, HTTP_PORT, WorkerConfig};

/// This worker's place in its job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// Pod name (`POD_NAME`), if the worker runs in a Pod.
    pub pod_name: Option<String>,
    /// Pod IP (`POD_IP`), if the worker runs in a Pod.
    pub pod_ip: Option<IpAddr>,
    /// Index of this worker, `0..replicas`.
    pub ordinal: u32,
    /// Number of workers of the job.
    pub replicas: u32,
}

/// Why the environment does not describe a valid worker.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// A variable is set but is not what it must be.
    #[error("environment variable {name}={value:?}: {reason}")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What it must be.
        reason: &'static str,
    },
    /// `spec.parallelism` is not positive and `SESSIONIZER_REPLICAS` is unset.
    #[error("spec.parallelism is {0}; it must be at least 1")]
    Parallelism(i32),
    /// The ordinal is not below the replica count.
    #[error("ordinal {ordinal} is out of range for {replicas} replicas")]
    OrdinalOutOfRange {
        /// The ordinal.
        ordinal: u32,
        /// The replica count.
        replicas: u32,
    },
}

impl Identity {
    /// Reads the identity from the process environment.
    pub fn from_env(config: &WorkerConfig) -> Result<Self, IdentityError> {
        Self::from_lookup(config, |name| std::env::var(name).ok())
    }

    /// Reads the identity through `lookup` (a variable set to the empty string counts as unset,
    /// as an unresolvable downward-API field leaves it):
    /// - `replicas`: `SESSIONIZER_REPLICAS`, else `spec.parallelism`;
    /// - `ordinal`: `SESSIONIZER_ORDINAL`, else the numeric suffix of `POD_NAME` (a StatefulSet
    ///   Pod is `<name>-<ordinal>`), else 0.
    pub fn from_lookup(
        config: &WorkerConfig,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, IdentityError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let pod_name = get(ENV_POD_NAME);
        let pod_ip = get(ENV_POD_IP)
            .map(|value| {
                value.trim().parse().map_err(|_| IdentityError::Invalid {
                    name: ENV_POD_IP,
                    value,
                    reason: "not an IP address",
                })
            })
            .transpose()?;
        let replicas = match get(ENV_REPLICAS) {
            Some(value) => match value.trim().parse::<u32>() {
                Ok(n) if n >= 1 => n,
                _ => {
                    return Err(IdentityError::Invalid {
                        name: ENV_REPLICAS,
                        value,
                        reason: "must be a whole number of at least 1",
                    });
                }
            },
            None => u32::try_from(config.spec.parallelism)
                .ok()
                .filter(|n| *n >= 1)
                .ok_or(IdentityError::Parallelism(config.spec.parallelism))?,
        };
        let ordinal = match get(ENV_ORDINAL) {
            Some(value) => value
                .trim()
                .parse::<u32>()
                .map_err(|_| IdentityError::Invalid {
                    name: ENV_ORDINAL,
                    value,
                    reason: "must be a whole number",
                })?,
            None => pod_name.as_deref().and_then(ordinal_suffix).unwrap_or(0),
        };
        if ordinal >= replicas {
            return Err(IdentityError::OrdinalOutOfRange { ordinal, replicas });
        }
        Ok(Self {
            pod_name,
            pod_ip,
            ordinal,
            replicas,
        })
    }

    /// Where the HTTP server listens unless `--http-addr` says otherwise: the Pod IP (so each
    /// Pod of the local environment, which share one network namespace, has its own port 8080),
    /// or every interface outside a Pod.
    pub fn default_http_addr(&self) -> SocketAddr {
        let ip = self
            .pod_ip
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        SocketAddr::new(ip, HTTP_PORT)
    }

    /// The key groups (source partition indexes) this worker owns when the source topics have
    /// `partitions` partitions: the contiguous range
    /// `ordinal * partitions / replicas .. (ordinal + 1) * partitions / replicas`. Ranges of all
    /// ordinals tile `0..partitions` exactly; they are equal in size only when `replicas` divides
    /// `partitions`.
    pub fn key_groups(&self, partitions: u32) -> Range<u32> {
        key_group_range(self.ordinal, self.replicas, partitions)
    }
}

/// The key groups worker `ordinal` of `replicas` owns among `partitions`; see
/// [`Identity::key_groups`]. `replicas` must be at least 1.
pub fn key_group_range(ordinal: u32, replicas: u32, partitions: u32) -> Range<u32> {
    let bound = |i: u32| {
        let value = u64::from(i) * u64::from(partitions) / u64::from(replicas.max(1));
        // Never above `partitions`, so the conversion cannot fail for a valid ordinal.
        u32::try_from(value.min(u64::from(partitions))).unwrap_or(partitions)
    };
    bound(ordinal)..bound(ordinal.saturating_add(1))
}

/// The ordinal at the end of a StatefulSet Pod name (`pageviews-3` → 3).
fn ordinal_suffix(pod_name: &str) -> Option<u32> {
    pod_name.rsplit_once('-')?.1.parse().ok()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::config::tests::sample_config;

    fn identity(vars: &[(&str, &str)]) -> Result<Identity, IdentityError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let mut config = sample_config();
        config.spec.parallelism = 4;
        Identity::from_lookup(&config, |name| vars.get(name).cloned())
    }

    #[test]
    fn reads_the_variables_the_operator_sets() {
        let id = identity(&[
            (ENV_POD_NAME, "pageviews-2"),
            (ENV_POD_IP, "127.0.3.7"),
            (ENV_ORDINAL, "1"),
            (ENV_REPLICAS, "3"),
        ])
        .unwrap();
        assert_eq!(id.pod_name.as_deref(), Some("pageviews-2"));
        assert_eq!(id.ordinal, 1, "the explicit ordinal wins over the name");
        assert_eq!(id.replicas, 3, "the environment wins over spec.parallelism");
        assert_eq!(id.default_http_addr(), "127.0.3.7:8080".parse().unwrap());
    }

    #[test]
    fn falls_back_to_the_pod_name_and_the_spec() {
        let id = identity(&[(ENV_POD_NAME, "pageviews-v2-3"), (ENV_ORDINAL, "")]).unwrap();
        assert_eq!((id.ordinal, id.replicas), (3, 4));
        assert_eq!(id.default_http_addr(), "0.0.0.0:8080".parse().unwrap());
        let outside_a_pod = identity(&[]).unwrap();
        assert_eq!((outside_a_pod.ordinal, outside_a_pod.replicas), (0, 4));
    }

    #[test]
    fn refuses_what_cannot_be_a_worker() {
        assert!(matches!(
            identity(&[(ENV_ORDINAL, "4")]),
            Err(IdentityError::OrdinalOutOfRange {
                ordinal: 4,
                replicas: 4
            })
        ));
        let err = identity(&[(ENV_REPLICAS, "0")]).unwrap_err();
        assert!(err.to_string().contains("SESSIONIZER_REPLICAS"), "{err}");
        let err = identity(&[(ENV_ORDINAL, "one")]).unwrap_err();
        assert!(err.to_string().contains("SESSIONIZER_ORDINAL"), "{err}");
        let err = identity(&[(ENV_POD_IP, "localhost")]).unwrap_err();
        assert!(err.to_string().contains("POD_IP"), "{err}");
    }

    #[test]
    fn key_group_ranges_tile_the_partitions() {
        assert_eq!(key_group_range(0, 4, 12), 0..3);
        assert_eq!(key_group_range(3, 4, 12), 9..12);
        for (replicas, partitions) in [(1, 1), (3, 10), (4, 12), (7, 5), (5, 0)] {
            let mut next = 0;
            for ordinal in 0..replicas {
                let range = key_group_range(ordinal, replicas, partitions);
                assert_eq!(range.start, next, "{ordinal}/{replicas} of {partitions}");
                next = range.end;
            }
            assert_eq!(next, partitions);
        }
    }
}
