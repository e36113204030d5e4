//! The signature feature end to end: [`sessionizer_e2e::story`] (load generator as producer,
//! old job, side-running new job, cutover under load) must end with the production topic's final
//! sessions equal to the oracle's — nothing lost, nothing duplicated — with the producers paused
//! for less than 30 s; the same when the operator is killed once in every stage in turn; and when
//! Draining times out, a rollback that leaves the old job on production with nothing lost.

use sessionizer_e2e::story::{Twist, cutover_story};

use crate::support::env;

#[tokio::test]
async fn a_cutover_under_continuous_load_loses_and_duplicates_nothing() {
    let report = cutover_story(env(), "cutover-oracle", Twist::None, |line| {
        eprintln!("{line}")
    })
    .await
    .unwrap();
    eprintln!("{report:?}");
    let pause = report
        .producer_pause_seconds
        .expect("the pause is measured");
    assert!(pause < 30.0, "the producers were paused {pause} s");
    assert!(report.sessions > 100 && report.production_records >= report.sessions);
}

#[tokio::test]
async fn the_operator_killed_in_every_stage_still_cuts_over_without_loss() {
    let report = cutover_story(
        env(),
        "cutover-kills",
        Twist::KillOperatorInEveryStage,
        |line| eprintln!("{line}"),
    )
    .await
    .unwrap();
    eprintln!("{report:?}");
    assert!(
        report.killed_in.len() >= 3,
        "killed in {:?}",
        report.killed_in
    );
}

#[tokio::test]
async fn a_draining_timeout_rolls_back_without_losing_anything() {
    let report = cutover_story(env(), "cutover-rollback", Twist::DrainingTimesOut, |line| {
        eprintln!("{line}")
    })
    .await
    .unwrap();
    eprintln!("{report:?}");
    assert!(report.sessions > 100 && report.production_records >= report.sessions);
}
