//! Container resources read from real cgroups (root; CI runs as root): a
//! cgroup made to look like a Docker container's, with a CPU quota of 0.2
//! cores and a 64 MiB memory limit, running a Python process that touches
//! 40 MiB and burns CPU. Ground truth: the limits the test set, the CPU
//! time the process reports for itself (os.times), the memory it
//! touched, a replacement process (one restart) and an allocation over
//! the limit (one OOM kill, the process ends by SIGKILL).

#![allow(clippy::unwrap_used, clippy::print_stderr, clippy::disallowed_methods)]

mod common;

use std::{
    io::{BufRead, BufReader},
    os::unix::process::ExitStatusExt,
    path::Path,
    process::{Child, Command, Stdio},
};

use vigil_agent::{
    cgroup::Owner,
    resources::{OwnerUsage, ResourceCollector},
};

const MIB: f64 = (1 << 20) as f64;

fn spawn_in(cgroup: &common::Cgroup, python: &str) -> Child {
    Command::new("sh")
        .args([
            "-c",
            &format!("{}exec python3 -c '{python}'", cgroup.enter()),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

fn ours(collector: &mut ResourceCollector, id: &str) -> OwnerUsage {
    let all = collector.collect();
    all.iter()
        .find(|o| matches!(&o.owner, Owner::Container { id: i, .. } if i == id))
        .cloned()
        .unwrap_or_else(|| panic!("container {id} not among {} owners", all.len()))
}

/// Touches 40 MiB, burns CPU for 1.5 s of wall time, reports its own CPU
/// seconds, then waits for stdin to close.
const WORKER: &str = "
import os, sys, time
x = bytearray(40 << 20)
for i in range(0, len(x), 4096):
    x[i] = 1
end = time.time() + 1.5
n = 0
while time.time() < end:
    n += 1
t = os.times()
print(t.user + t.system, flush=True)
sys.stdin.read()
";

#[test]
fn cpu_memory_limits_restarts_and_oom_kills_match_ground_truth() {
    let id: String = (0..4)
        .map(|_| format!("{:016x}", rand::random::<u64>()))
        .collect();
    let Some(cgroup) = common::Cgroup::create(
        &format!("vigil-res-{}/docker-{id}.scope", std::process::id()),
        Some((20_000, 100_000)),
        Some(64 << 20),
    ) else {
        return;
    };
    let mut collector = ResourceCollector::new(Path::new("/proc"), Path::new("/sys/fs/cgroup"));

    let mut worker = spawn_in(&cgroup, WORKER);
    let mut line = String::new();
    BufReader::new(worker.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let own_cpu: f64 = line.trim().parse().unwrap();
    let first = ours(&mut collector, &id);
    let u = &first.usage;
    eprintln!("worker CPU {own_cpu:.3} s; collected {first:?}");
    assert_eq!(u.cpu_limit_cores, Some(0.2));
    assert_eq!(u.memory_limit_bytes, Some(64.0 * MIB));
    let cpu = u.cpu_seconds.unwrap();
    // The cgroup also ran the shell and Python's start-up before the
    // process measured itself: a little more, never less.
    assert!(
        cpu >= own_cpu - 0.01 && cpu <= own_cpu + 0.3,
        "cgroup CPU {cpu} vs the process's own {own_cpu}"
    );
    // 1.5 s of wall time at 0.2 cores: throttled most of the time.
    assert!(u.throttled_seconds.unwrap() > 0.5, "{u:?}");
    let rss = u.memory_rss_bytes.unwrap();
    assert!((40.0 * MIB..=64.0 * MIB).contains(&rss), "RSS {rss}");
    assert_eq!(first.restarts, 0);
    assert_eq!(u.oom_kills.unwrap_or(0.0), 0.0);

    // Replaced by a new process: one restart.
    drop(worker.stdin.take());
    worker.wait().unwrap();
    let mut second = spawn_in(
        &cgroup,
        "import sys; print(1, flush=True); sys.stdin.read()",
    );
    BufReader::new(second.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(ours(&mut collector, &id).restarts, 1);

    // Over the limit: the kernel kills it, and the cgroup counts it.
    let mut hog = spawn_in(&cgroup, "x = bytearray(256 << 20)");
    let status = hog.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "OOM-killed: {status:?}");
    let after = ours(&mut collector, &id);
    assert_eq!(after.usage.oom_kills, Some(1.0), "{after:?}");
    drop(second.stdin.take());
    second.wait().unwrap();
}
