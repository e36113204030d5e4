//! Which key group a source message belongs to. A key group is a partition index of the source
//! topics (co-partitioned by session key), so routing is a lookup by topic and partition — no
//! hashing of keys, no shuffle. This module also checks the precondition that makes it valid:
//! every source topic has the same partition count.
//!
//! Pure: it must never talk to Kafka; the caller passes what the metadata said.

use std::ops::Range;

use super::StreamError;

/// Routes messages of the source topics to the worker's key groups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Router {
    topics: Vec<String>,
    key_groups: Range<u32>,
}

/// Where a message goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// Index of the topic in the source topic list.
    pub topic: usize,
    /// Index of the key group in the worker's range (0 = its first key group).
    pub slot: usize,
}

impl Router {
    /// A router for `topics` owning `key_groups`.
    pub fn new(topics: Vec<String>, key_groups: Range<u32>) -> Self {
        Self { topics, key_groups }
    }

    /// The source topics, in spec order.
    pub fn topics(&self) -> &[String] {
        &self.topics
    }

    /// The key groups this worker owns.
    pub fn key_groups(&self) -> Range<u32> {
        self.key_groups.clone()
    }

    /// How many key groups this worker owns.
    pub fn slots(&self) -> usize {
        self.key_groups.len()
    }

    /// The key group of slot `slot`.
    pub fn key_group(&self, slot: usize) -> u32 {
        self.key_groups.start + slot as u32
    }

    /// Every `(topic index, partition)` to assign, key group by key group.
    pub fn assignment(&self) -> Vec<(usize, i32)> {
        self.key_groups
            .clone()
            .flat_map(|kg| (0..self.topics.len()).map(move |t| (t, kg as i32)))
            .collect()
    }

    /// The route of a message from `topic` partition `partition`; `None` for a partition this
    /// worker does not own or a topic it does not read (never expected with a manual assignment).
    pub fn route(&self, topic: &str, partition: i32) -> Option<Route> {
        let topic = self.topics.iter().position(|t| t == topic)?;
        let kg = u32::try_from(partition).ok()?;
        self.key_groups.contains(&kg).then(|| Route {
            topic,
            slot: (kg - self.key_groups.start) as usize,
        })
    }
}

/// The common partition count of the source topics, from `(topic, partitions)` as the metadata
/// reported them; an error naming the topics when they differ or one has none.
pub fn common_partition_count(counts: &[(String, usize)]) -> Result<u32, StreamError> {
    let mut common: Option<usize> = None;
    for (topic, n) in counts {
        if *n == 0 {
            return Err(StreamError::Topic {
                topic: topic.clone(),
                message: "the topic does not exist or has no partitions".into(),
            });
        }
        match common {
            None => common = Some(*n),
            Some(c) if c == *n => {}
            Some(_) => {
                let listed: Vec<String> = counts.iter().map(|(t, n)| format!("{t}={n}")).collect();
                return Err(StreamError::PartitionMismatch(listed.join(", ")));
            }
        }
    }
    let n = common.ok_or_else(|| StreamError::Topic {
        topic: String::new(),
        message: "no source topics are configured".into(),
    })?;
    u32::try_from(n).map_err(|_| StreamError::Topic {
        topic: counts[0].0.clone(),
        message: format!("{n} partitions is too many"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router {
        Router::new(vec!["views".into(), "clicks".into()], 4..8)
    }

    #[test]
    fn routes_owned_partitions_of_every_topic_to_their_key_group() {
        let r = router();
        assert_eq!(r.route("views", 4), Some(Route { topic: 0, slot: 0 }));
        assert_eq!(r.route("clicks", 7), Some(Route { topic: 1, slot: 3 }));
        assert_eq!(r.key_group(3), 7);
        assert_eq!(r.slots(), 4);
    }

    #[test]
    fn refuses_what_it_does_not_own() {
        let r = router();
        assert_eq!(r.route("views", 3), None);
        assert_eq!(r.route("views", 8), None);
        assert_eq!(r.route("views", -1), None);
        assert_eq!(r.route("other", 5), None);
    }

    #[test]
    fn assigns_each_owned_partition_of_every_topic_once() {
        let a = Router::new(vec!["a".into(), "b".into()], 2..4).assignment();
        assert_eq!(a, vec![(0, 2), (1, 2), (0, 3), (1, 3)]);
        assert!(Router::new(vec!["a".into()], 0..0).assignment().is_empty());
    }

    #[test]
    fn source_topics_must_be_co_partitioned() {
        let ok = [("a".to_owned(), 12), ("b".to_owned(), 12)];
        assert_eq!(common_partition_count(&ok).unwrap(), 12);
        let err = common_partition_count(&[("a".to_owned(), 12), ("b".to_owned(), 6)]);
        let message = err.unwrap_err().to_string();
        assert!(message.contains("a=12, b=6"), "{message}");
        let missing = common_partition_count(&[("a".to_owned(), 0)]).unwrap_err();
        assert!(missing.to_string().contains("does not exist"), "{missing}");
        assert!(common_partition_count(&[]).is_err());
    }
}
