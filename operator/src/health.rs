//! What `/healthz` and `/readyz` answer. A replica is *ready* when it can do its job: as the
//! leader once the controllers' caches have synced, as a standby as soon as it takes part in the
//! leader election (it must be ready, or a rolling update of the operator Deployment would never
//! finish). Only state, no I/O.

use std::sync::atomic::{AtomicU8, Ordering};

/// Where this replica is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Connecting to the API server; not ready.
    Starting = 0,
    /// Waiting for the leader lease; ready.
    Standby = 1,
    /// Leading, caches still filling; not ready.
    Syncing = 2,
    /// Leading with synced caches; ready.
    Leading = 3,
    /// Shutting down; not ready, so no traffic is sent here.
    Stopping = 4,
}

/// The shared readiness state.
#[derive(Debug)]
pub struct Health {
    phase: AtomicU8,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            phase: AtomicU8::new(Phase::Starting as u8),
        }
    }
}

impl Health {
    /// Moves to `phase`.
    pub fn set(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::SeqCst);
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::SeqCst) {
            1 => Phase::Standby,
            2 => Phase::Syncing,
            3 => Phase::Leading,
            4 => Phase::Stopping,
            _ => Phase::Starting,
        }
    }

    /// Whether `/readyz` answers 200.
    pub fn ready(&self) -> bool {
        matches!(self.phase(), Phase::Standby | Phase::Leading)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_as_standby_or_synced_leader_only() {
        let health = Health::default();
        assert!(!health.ready());
        for (phase, ready) in [
            (Phase::Standby, true),
            (Phase::Syncing, false),
            (Phase::Leading, true),
            (Phase::Stopping, false),
        ] {
            health.set(phase);
            assert_eq!(health.phase(), phase);
            assert_eq!(health.ready(), ready, "{phase:?}");
        }
    }
}
