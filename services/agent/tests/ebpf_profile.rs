//! CPU profiles end to end (root and BTF; CI runs as root): a C program
//! compiled by this test (clang, with frame pointers) spends its time in a
//! function with a known name; the agent (in this process) samples every
//! CPU at 99 Hz, symbolizes the stacks and ships them to an in-process
//! ingest; the profile read back from the store has that function as the
//! leaf of its heaviest stack, under `main`.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod common;

use std::{process::Command, time::Duration};

use vigil_agent::{AgentConfig, config::ProfilingConfig};
use vigil_runtime::Shutdown;
use vigil_storage::ProfileQuery;

const PROGRAM: &str = r#"
#include <time.h>
volatile unsigned long sink;
__attribute__((noinline)) void vigil_hot_function(void) {
    for (unsigned long i = 0; i < 100000; i++) sink += i * i;
}
__attribute__((noinline)) void vigil_cold_function(void) {
    for (unsigned long i = 0; i < 1000; i++) sink += i;
}
int main(void) {
    time_t end = time(0) + 6;
    while (time(0) < end) {
        vigil_hot_function();
        vigil_cold_function();
    }
    return 0;
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hot_function_tops_its_profile() {
    if !common::installed("clang") {
        return;
    }
    if common::started(vigil_agent::ebpf::Profiler::start).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("hot.c");
    let binary = dir.path().join("vigil-hot");
    std::fs::write(&source, PROGRAM).unwrap();
    let built = Command::new("clang")
        .args(["-O1", "-g", "-fno-omit-frame-pointer", "-o"])
        .arg(&binary)
        .arg(&source)
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );

    let ingest = common::Ingest::start(None);
    let stop = Shutdown::new();
    let agent = tokio::spawn(vigil_agent::run(
        AgentConfig {
            ebpf: true,
            profiling: ProfilingConfig {
                enabled: true,
                window: Duration::from_secs(2),
            },
            ..common::agent_config(dir.path(), ingest.config.grpc.listen)
        },
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut hot = common::Killed(Command::new(&binary).spawn().unwrap());
    let pid = hot.0.id().to_string();

    let query = ProfileQuery {
        start_ns: 0,
        end_ns: i64::MAX,
        profile_type: "cpu".into(),
        service: None,
        resource: vec![("pid".into(), pid.clone())],
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let stacks = loop {
        let stacks = ingest.store.merge_profiles("p1", &query).await.unwrap();
        let samples: u64 = stacks.iter().map(|s| s.value).sum();
        // About 99 a second while it runs: wait for 3 s worth.
        if samples >= 250 || tokio::time::Instant::now() > deadline {
            break stacks;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let _ = hot.0.wait();
    stop.trigger();
    agent.await.unwrap().unwrap();
    ingest.stop().await;
    for s in stacks.iter().take(5) {
        eprintln!("{:>5} {}", s.value, s.frames.join(";"));
    }
    let total: u64 = stacks.iter().map(|s| s.value).sum();
    assert!(
        total >= 250,
        "{total} samples of a process that burnt 3 s and more"
    );
    let top = &stacks[0];
    assert_eq!(
        top.frames.last().map(String::as_str),
        Some("vigil_hot_function"),
        "the heaviest stack ends in the hot function"
    );
    let main_at = top.frames.iter().position(|f| f == "main").unwrap();
    assert_eq!(top.frames[main_at + 1], "vigil_hot_function");
    let hot_samples: u64 = stacks
        .iter()
        .filter(|s| s.frames.last().is_some_and(|f| f == "vigil_hot_function"))
        .map(|s| s.value)
        .sum();
    assert!(
        hot_samples * 10 >= total * 9,
        "the hot function has most samples: {hot_samples} of {total}"
    );
}
