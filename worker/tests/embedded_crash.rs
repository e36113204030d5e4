#![allow(clippy::unwrap_used)]
//! What the embedded history store promises across a crash: every write that returned before a
//! `sync` (the stream loop syncs before committing source offsets) is there after the process is
//! SIGKILLed and the store reopened — commits between syncs skip the fsync, so this is the
//! guarantee that keeps committed offsets from pointing past lost history.
//!
//! The test runs this same binary again as a child (the ignored `crash_child` test), which
//! writes, syncs, writes more, reports on stdout and waits; the parent kills it with SIGKILL at
//! that point and checks the directory.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use sessionizer_worker::history::metrics::{BackendLabel, HistoryMetrics};
use sessionizer_worker::history::{Codec, EmbeddedStore, HistoryStore};

/// Set by the parent: the child's store directory.
const CHILD_DIR: &str = "SESSIONIZER_CRASH_CHILD_DIR";
const SYNCED: usize = 200;
const TTL: Duration = Duration::from_secs(3600);

fn open(dir: &Path) -> EmbeddedStore {
    let metrics = HistoryMetrics::unregistered().for_backend(BackendLabel::embedded);
    EmbeddedStore::open(dir, Codec::zstd(3), metrics).unwrap()
}

fn value(n: usize) -> Vec<u8> {
    format!("session list {n} ").repeat(20).into_bytes()
}

#[tokio::test]
#[ignore = "the child process of synced_writes_survive_a_sigkill"]
async fn crash_child() {
    let dir = std::env::var_os(CHILD_DIR).expect("run by synced_writes_survive_a_sigkill");
    let store = open(Path::new(&dir));
    for n in 0..SYNCED {
        store
            .put(&format!("synced-{n}"), &value(n), TTL)
            .await
            .unwrap();
    }
    store.sync().await.unwrap();
    println!("synced");
    for n in 0..SYNCED {
        store
            .put(&format!("unsynced-{n}"), &value(n), TTL)
            .await
            .unwrap();
    }
    println!("written");
    // Wait to be killed: the parent never closes our stdin.
    let mut rest = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut rest);
}

#[tokio::test]
async fn synced_writes_survive_a_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["crash_child", "--exact", "--ignored", "--nocapture"])
        .env(CHILD_DIR, dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    while !seen.iter().any(|l| l == "written") {
        match received.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => seen.push(line),
            Err(error) => {
                let _ = child.kill();
                panic!("the child never reported its writes ({error}); it said {seen:?}");
            }
        }
    }
    assert!(seen.iter().any(|l| l == "synced"), "{seen:?}");
    // SIGKILL: no destructor, no final sync.
    child.kill().unwrap();
    child.wait().unwrap();

    let store = open(dir.path());
    for n in 0..SYNCED {
        let got = store.get(&format!("synced-{n}")).await.unwrap();
        assert_eq!(got, Some(value(n)), "synced-{n} lost in the crash");
    }
    // Writes after the last sync may or may not have survived (the OS may have written them);
    // whatever is there must be intact.
    let mut kept = 0;
    for n in 0..SYNCED {
        if let Some(got) = store.get(&format!("unsynced-{n}")).await.unwrap() {
            assert_eq!(got, value(n));
            kept += 1;
        }
    }
    eprintln!("{kept} of {SYNCED} unsynced writes survived the crash");
}
