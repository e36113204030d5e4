//! Setting a `metav1.Condition` in a status list the Kubernetes way: one entry per type, and
//! `lastTransitionTime` kept unless the condition's status flips, so a reconcile that changes
//! nothing writes nothing. Pure; the time of "now" is passed in.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// A condition without its bookkeeping fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired<'a> {
    /// `type`.
    pub type_: &'a str,
    /// `True`, `False` or `Unknown`.
    pub status: &'a str,
    /// CamelCase reason.
    pub reason: &'a str,
    /// What a person reads.
    pub message: &'a str,
}

/// Sets `desired` in `conditions` for `generation`. A new condition, or one whose status changed,
/// gets `now` as `lastTransitionTime`; otherwise the previous time stays.
pub fn set(
    conditions: &mut Vec<Condition>,
    desired: Desired<'_>,
    generation: Option<i64>,
    now: &Time,
) {
    let position = conditions.iter().position(|c| c.type_ == desired.type_);
    let last_transition_time = match position.map(|i| &conditions[i]) {
        Some(previous) if previous.status == desired.status => {
            previous.last_transition_time.clone()
        }
        _ => now.clone(),
    };
    let condition = Condition {
        type_: desired.type_.to_owned(),
        status: desired.status.to_owned(),
        reason: desired.reason.to_owned(),
        message: desired.message.to_owned(),
        observed_generation: generation,
        last_transition_time,
    };
    match position {
        Some(i) => conditions[i] = condition,
        None => conditions.push(condition),
    }
}

/// The status of the condition of `type_`, if present.
pub fn status_of<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a str> {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.as_str())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;

    use super::*;

    fn at(second: i64) -> Time {
        Time(Timestamp::from_second(second).unwrap())
    }

    fn ready(status: &'static str, message: &'static str) -> Desired<'static> {
        Desired {
            type_: "Ready",
            status,
            reason: "Test",
            message,
        }
    }

    #[test]
    fn new_condition_gets_now() {
        let mut conditions = Vec::new();
        set(&mut conditions, ready("False", "0/1"), Some(1), &at(100));
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].last_transition_time, at(100));
        assert_eq!(conditions[0].observed_generation, Some(1));
    }

    #[test]
    fn unchanged_status_keeps_the_transition_time() {
        let mut conditions = Vec::new();
        set(&mut conditions, ready("False", "0/2"), Some(1), &at(100));
        set(&mut conditions, ready("False", "1/2"), Some(2), &at(200));
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].last_transition_time, at(100));
        assert_eq!(conditions[0].message, "1/2");
        assert_eq!(conditions[0].observed_generation, Some(2));
    }

    #[test]
    fn flipped_status_gets_a_new_transition_time() {
        let mut conditions = Vec::new();
        set(&mut conditions, ready("False", "0/2"), Some(1), &at(100));
        set(&mut conditions, ready("True", "2/2"), Some(1), &at(300));
        assert_eq!(conditions[0].last_transition_time, at(300));
        assert_eq!(status_of(&conditions, "Ready"), Some("True"));
    }
}
