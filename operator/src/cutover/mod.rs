//! The SessionJobCutover controller: replaces a running SessionJob by the one side-running to
//! replace it, in staged steps persisted in the cutover's status (seed 000, "plug it in").
//!
//! [`machine`] (pure) decides the stages; [`stages`] does each stage's idempotent work;
//! [`reconcile`] persists and publishes; [`directive`] (pure) tells the SessionJob reconcile what
//! a cutover asks of a job (hold it stopped, flip its sink, retire it); [`drain`] (pure) judges
//! the workers' offsets. This module never writes a SessionJob (spec or status): the SessionJob
//! reconcile derives a job's state from the cutovers that name it.

pub mod directive;
pub mod drain;
pub mod machine;
pub mod producers;
pub mod reconcile;
pub mod stages;

use kube::Client;
use kube::runtime::{Controller, watcher};
use sessionizer_crds::SessionJobCutover;

use crate::session_job::Scope;

/// A SessionJobCutover controller for `scope`. Running cutovers poll (their jobs and workers
/// change without touching them), so no other kind is watched.
pub fn controller(client: &Client, scope: &Scope) -> Controller<SessionJobCutover> {
    Controller::new(
        scope.api::<SessionJobCutover>(client),
        watcher::Config::default(),
    )
}
