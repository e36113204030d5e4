//! Checkpoint ids: `chk-<Unix epoch milliseconds, zero-padded to 13 digits>`, so sorting ids as
//! strings sorts them by time (13 digits last until the year 2286).
//!
//! Periodic checkpoints take the id of the interval boundary they belong to, which every worker
//! of a job computes alike, so one checkpoint's files from all workers share a directory. Pure:
//! the caller passes the time.

/// What every checkpoint id starts with.
pub const PREFIX: &str = "chk-";
/// Digits of the millisecond part.
pub const DIGITS: usize = 13;

/// The id of a checkpoint taken at `epoch_ms` (negative times clamp to 0).
pub fn id_at(epoch_ms: i64) -> String {
    format!("{PREFIX}{:0width$}", epoch_ms.max(0), width = DIGITS)
}

/// The id of the periodic checkpoint for `now_ms`: the start of its interval,
/// `floor(now / interval) * interval`. A zero interval counts as one millisecond.
pub fn periodic_id(now_ms: i64, interval_ms: i64) -> String {
    let interval = interval_ms.max(1);
    id_at(now_ms.max(0) / interval * interval)
}

/// The id of a final (stop) checkpoint written at `now_ms`: the time itself, so it sorts after
/// every periodic checkpoint taken before it.
pub fn final_id(now_ms: i64) -> String {
    id_at(now_ms)
}

/// The time an id stands for, if `id` is a well-formed checkpoint id.
pub fn millis_of(id: &str) -> Option<i64> {
    let digits = id.strip_prefix(PREFIX)?;
    if digits.len() != DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// True when `id` is a well-formed checkpoint id (anything else below a job's base is never
/// touched).
pub fn is_checkpoint_id(id: &str) -> bool {
    millis_of(id).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_zero_padded_and_sort_by_time() {
        assert_eq!(id_at(42), "chk-0000000000042");
        assert_eq!(id_at(-5), "chk-0000000000000");
        let earlier = id_at(999_999_999_999);
        let later = id_at(1_000_000_000_000);
        assert!(earlier < later, "{earlier} < {later}");
        assert_eq!(millis_of(&later), Some(1_000_000_000_000));
    }

    #[test]
    fn periodic_ids_are_interval_boundaries_shared_by_every_worker() {
        let interval = 300_000;
        let a = periodic_id(1_763_776_812_345, interval);
        let b = periodic_id(1_763_776_999_999, interval);
        assert_eq!(a, b);
        assert_eq!(a, "chk-1763776800000");
        assert_ne!(periodic_id(1_763_777_100_000, interval), a);
        assert_eq!(periodic_id(7, 0), id_at(7), "zero interval");
    }

    #[test]
    fn only_well_formed_ids_are_recognized() {
        assert!(is_checkpoint_id("chk-1763776800000"));
        for bad in [
            "chk-42",
            "chk-17637768000001",
            "chk-17637768x0000",
            "kg-00001",
            "",
        ] {
            assert!(!is_checkpoint_id(bad), "{bad}");
        }
        assert!(final_id(1_763_776_800_001) > periodic_id(1_763_776_800_001, 60_000));
    }
}
