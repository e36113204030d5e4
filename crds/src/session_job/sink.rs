//! `spec.sink`: where closed sessions and rejected input go.
//!
//! The spec only names the topics and the mode a new job starts in. Which topic the job writes to
//! *now* is `status.effectiveSink`, changed only by the operator during a cutover, so the spec is
//! never rewritten (GitOps tools see no drift).

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::names::TopicName;

/// Output topics of the job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.deadLetterTopic) || self.deadLetterTopic != self.topic")
        .message("sink.deadLetterTopic must differ from sink.topic")
        .field_path(".deadLetterTopic"),
    validation = Rule::new("!has(self.quarantineTopic) || self.quarantineTopic != self.topic")
        .message("sink.quarantineTopic must differ from sink.topic")
        .field_path(".quarantineTopic"),
    validation = Rule::new("!has(self.quarantineTopic) || !has(self.deadLetterTopic) || self.quarantineTopic != self.deadLetterTopic")
        .message("sink.quarantineTopic must differ from sink.deadLetterTopic")
        .field_path(".quarantineTopic"),
    validation = Rule::new("self.initialMode != 'DeadLetter' || has(self.deadLetterTopic)")
        .message("sink.initialMode DeadLetter requires sink.deadLetterTopic")
        .field_path(".deadLetterTopic")
        .reason(Reason::FieldValueRequired),
)]
pub struct SinkSpec {
    /// Production topic: where closed sessions (and their later updates) are written once the job
    /// is live.
    pub topic: TopicName,
    /// Dead-letter topic: where a side-running job writes instead of `topic` until its cutover.
    /// Required when `initialMode` is `DeadLetter` (and so for every job with `sideRun`). Must
    /// differ from `topic` and `quarantineTopic`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_topic: Option<TopicName>,
    /// Quarantine topic: where input that fails the guards (undecodable, page number over
    /// `session.maxPageNumber`) is written with the reason. Unset: such input is dropped and only
    /// counted in metrics. Must differ from `topic` and `deadLetterTopic`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantine_topic: Option<TopicName>,
    /// Where a newly created job writes: `Production` (default) writes to `topic`; `DeadLetter`
    /// writes to `deadLetterTopic` until a cutover flips it. Jobs with `sideRun` must use
    /// `DeadLetter`. Only read when the job is created; later the effective sink is in status.
    #[serde(default)]
    pub initial_mode: SinkMode,
}

/// Which of the job's output topics it writes sessions to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum SinkMode {
    /// The production topic (`sink.topic`).
    #[default]
    Production,
    /// The dead-letter topic (`sink.deadLetterTopic`), used while side-running.
    DeadLetter,
}

impl SinkMode {
    /// The mode as it appears in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Production => "Production",
            Self::DeadLetter => "DeadLetter",
        }
    }
}

impl SinkSpec {
    /// The topic a given mode writes to; `None` for `DeadLetter` without a dead-letter topic
    /// (which the schema rejects).
    pub fn topic_for(&self, mode: SinkMode) -> Option<&TopicName> {
        match mode {
            SinkMode::Production => Some(&self.topic),
            SinkMode::DeadLetter => self.dead_letter_topic.as_ref(),
        }
    }
}
