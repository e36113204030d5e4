//! Crash recovery on the real control plane: the worker Pod of a job is killed with SIGKILL at
//! several points of a stream the load generator produces (as a Deployment); each time the node
//! agent restarts its container and the worker restores from the newest checkpoint in the S3
//! server. The production topic must end with exactly the oracle's final sessions — nothing lost,
//! nothing counted twice ([`sessionizer_e2e::story::killed_worker_story`]).

use sessionizer_e2e::story::killed_worker_story;

use crate::support::env;

#[tokio::test]
async fn a_worker_killed_at_several_points_loses_and_double_counts_nothing() {
    let report = killed_worker_story(env(), "worker-kill", 3, |line| eprintln!("{line}"))
        .await
        .unwrap();
    eprintln!("{report:?}");
    assert_eq!(report.kills, 3);
    assert!(report.sessions > 100 && report.production_records >= report.sessions);
}
