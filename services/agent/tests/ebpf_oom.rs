//! An OOM kill seen from `oom:mark_victim` (root and BTF; CI runs as root):
//! a Python process in a memory cgroup limited to 32 MiB allocates 256 MiB
//! and is killed by the kernel; the tracer names its pid.

#![allow(clippy::unwrap_used, clippy::print_stderr, clippy::disallowed_methods)]

mod common;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use vigil_agent::ebpf::TcpTracer;

#[test]
fn an_oom_kill_names_its_victim() {
    let Some(mut tracer) = common::started(TcpTracer::start) else {
        return;
    };
    let Some(cgroup) = common::Cgroup::create(
        &format!("vigil-oom-test-{}", std::process::id()),
        None,
        Some(32 << 20),
    ) else {
        return;
    };
    // The shell moves itself into the cgroup, then becomes Python.
    let script = format!(
        "{}exec python3 -c 'x = bytearray(256 << 20); print(len(x))'",
        cgroup.enter()
    );
    let mut child = Command::new("sh").args(["-c", &script]).spawn().unwrap();
    let victim = child.id();
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "the kernel killed it: {status:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !tracer.stats.oom_victims.contains(&victim) && Instant::now() < deadline {
        tracer.drain();
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "OOM kills seen: {}, victims {:?}",
        tracer.stats.oom_kills, tracer.stats.oom_victims
    );
    assert!(
        tracer.stats.oom_victims.contains(&victim),
        "victim {victim} named"
    );
}
