//! The BalancedAssignment verdict: do the source partitions (key groups) divide evenly among the
//! workers? Worker `i` of `p` owns the contiguous key groups `[i*P/p, (i+1)*P/p)`, so unless
//! `P % p == 0` some workers carry more keys than others for the job's whole life (the key-group
//! skew trap). Pure: the partition counts come in from [`super::kafka`].

use std::collections::BTreeSet;

use super::kafka::{LookupError, PartitionCounts};

/// A condition's status, reason and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// `True`, `False` or `Unknown`.
    pub status: &'static str,
    /// CamelCase reason.
    pub reason: &'static str,
    /// What a person reads.
    pub message: String,
}

/// The verdict for `topics` read by `parallelism` workers, given what Kafka said.
pub fn balanced_assignment(topics: &[&str], parallelism: i32, counts: &PartitionCounts) -> Verdict {
    let counts = match counts {
        Ok(counts) => counts,
        Err(error) => {
            let reason = match error {
                LookupError::Credentials(_) => "KafkaCredentialsUnavailable",
                LookupError::Unreachable { .. } | LookupError::Task(_) => "KafkaUnreachable",
            };
            return Verdict {
                status: "Unknown",
                reason,
                message: error.to_string(),
            };
        }
    };
    let missing: Vec<&str> = topics
        .iter()
        .copied()
        .filter(|topic| !counts.contains_key(*topic))
        .collect();
    if !missing.is_empty() {
        return Verdict {
            status: "Unknown",
            reason: "SourceTopicMissing",
            message: format!(
                "source topic(s) {} do not exist in Kafka (yet)",
                missing.join(", ")
            ),
        };
    }
    let distinct: BTreeSet<i32> = topics.iter().map(|topic| counts[*topic]).collect();
    if distinct.len() > 1 {
        let listing: Vec<String> = topics
            .iter()
            .map(|topic| format!("{topic} has {}", counts[*topic]))
            .collect();
        return Verdict {
            status: "False",
            reason: "PartitionCountMismatch",
            message: format!(
                "source topics are not co-partitioned: {}; every source topic needs the same number of partitions (partition n of each topic is key group n)",
                listing.join(", ")
            ),
        };
    }
    let Some(&partitions) = distinct.first() else {
        return Verdict {
            status: "Unknown",
            reason: "NoSourceTopics",
            message: "the job has no source topics".to_owned(),
        };
    };
    let workers = parallelism.max(1);
    if partitions % workers == 0 {
        return Verdict {
            status: "True",
            reason: "EvenKeyGroups",
            message: format!(
                "{partitions} partitions over {workers} workers: each worker owns {} key groups",
                partitions / workers
            ),
        };
    }
    Verdict {
        status: "False",
        reason: "UnevenKeyGroups",
        message: format!(
            "{partitions} partitions over {workers} workers: workers own {} key groups; choose a parallelism that divides {partitions} ({})",
            shares(partitions, workers),
            or_list(&divisors(partitions))
        ),
    }
}

/// How many key groups each worker owns, largest first: `6/5/5`. Summarized beyond 8 workers.
fn shares(partitions: i32, workers: i32) -> String {
    let bound = |i: i64| i * i64::from(partitions) / i64::from(workers);
    let mut shares: Vec<i64> = (0..i64::from(workers))
        .map(|i| bound(i + 1) - bound(i))
        .collect();
    shares.sort_unstable_by(|a, b| b.cmp(a));
    if shares.len() <= 8 {
        return shares
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join("/");
    }
    let high = shares[0];
    let low = shares[shares.len() - 1];
    let with_high = shares.iter().filter(|s| **s == high).count();
    format!(
        "{high} ({with_high} workers) or {low} ({} workers)",
        shares.len() - with_high
    )
}

fn divisors(n: i32) -> Vec<i32> {
    (1..=n).filter(|d| n % d == 0).collect()
}

fn or_list(values: &[i32]) -> String {
    match values {
        [] => String::new(),
        [one] => one.to_string(),
        [init @ .., last] => format!(
            "{} or {last}",
            init.iter()
                .map(i32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn counts(pairs: &[(&str, i32)]) -> PartitionCounts {
        Ok(pairs
            .iter()
            .map(|(topic, n)| ((*topic).to_owned(), *n))
            .collect::<BTreeMap<_, _>>())
    }

    #[test]
    fn sixteen_partitions_over_three_workers_is_the_skew_trap() {
        let verdict = balanced_assignment(&["pageviews"], 3, &counts(&[("pageviews", 16)]));
        assert_eq!(verdict.status, "False");
        assert_eq!(verdict.reason, "UnevenKeyGroups");
        assert_eq!(
            verdict.message,
            "16 partitions over 3 workers: workers own 6/5/5 key groups; choose a parallelism that divides 16 (1, 2, 4, 8 or 16)"
        );
    }

    #[test]
    fn twelve_partitions_over_four_workers_is_balanced() {
        let verdict = balanced_assignment(
            &["pageviews", "transactions"],
            4,
            &counts(&[("pageviews", 12), ("transactions", 12)]),
        );
        assert_eq!(verdict.status, "True");
        assert_eq!(verdict.reason, "EvenKeyGroups");
        assert_eq!(
            verdict.message,
            "12 partitions over 4 workers: each worker owns 3 key groups"
        );
    }

    #[test]
    fn mismatched_partition_counts_are_not_co_partitioned() {
        let verdict = balanced_assignment(
            &["pageviews", "transactions"],
            4,
            &counts(&[("pageviews", 16), ("transactions", 12)]),
        );
        assert_eq!(verdict.status, "False");
        assert_eq!(verdict.reason, "PartitionCountMismatch");
        assert!(
            verdict
                .message
                .contains("pageviews has 16, transactions has 12"),
            "{}",
            verdict.message
        );
    }

    #[test]
    fn unreachable_kafka_is_unknown() {
        let verdict = balanced_assignment(
            &["pageviews"],
            4,
            &Err(LookupError::Unreachable {
                bootstrap_servers: "kafka-0.kafka:9092".into(),
                message: "Local: Broker transport failure".into(),
            }),
        );
        assert_eq!(verdict.status, "Unknown");
        assert_eq!(verdict.reason, "KafkaUnreachable");
        assert!(verdict.message.contains("kafka-0.kafka:9092"));
    }

    #[test]
    fn unreadable_credentials_are_unknown_with_their_own_reason() {
        let verdict = balanced_assignment(
            &["pageviews"],
            4,
            &Err(LookupError::Credentials(
                "reading Secret kafka-user: secrets \"kafka-user\" not found (404)".into(),
            )),
        );
        assert_eq!(verdict.status, "Unknown");
        assert_eq!(verdict.reason, "KafkaCredentialsUnavailable");
        assert!(verdict.message.contains("kafka-user"));
    }

    #[test]
    fn missing_topic_is_unknown() {
        let verdict = balanced_assignment(
            &["pageviews", "transactions"],
            4,
            &counts(&[("pageviews", 16)]),
        );
        assert_eq!(verdict.status, "Unknown");
        assert_eq!(verdict.reason, "SourceTopicMissing");
        assert!(verdict.message.contains("transactions"));
    }

    #[test]
    fn more_workers_than_partitions_leaves_some_idle() {
        let verdict = balanced_assignment(&["pageviews"], 4, &counts(&[("pageviews", 3)]));
        assert_eq!(verdict.status, "False");
        assert!(
            verdict.message.contains("workers own 1/1/1/0 key groups"),
            "{}",
            verdict.message
        );
        assert!(verdict.message.ends_with("(1 or 3)"), "{}", verdict.message);
    }

    #[test]
    fn many_workers_are_summarized() {
        let verdict = balanced_assignment(&["pageviews"], 10, &counts(&[("pageviews", 64)]));
        assert!(
            verdict
                .message
                .contains("workers own 7 (4 workers) or 6 (6 workers) key groups"),
            "{}",
            verdict.message
        );
    }

    #[test]
    fn shares_match_the_workers_contiguous_ranges() {
        // Worker i owns [i*P/p, (i+1)*P/p): 16 over 3 is 0..5, 5..10, 10..16.
        assert_eq!(shares(16, 3), "6/5/5");
        assert_eq!(shares(12, 4), "3/3/3/3");
    }
}
