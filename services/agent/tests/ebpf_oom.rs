//! An OOM kill seen from `oom:mark_victim` (root and BTF; CI runs as root):
//! a Python process in a memory cgroup limited to 32 MiB allocates 256 MiB
//! and is killed by the kernel; the tracer names its pid.

#![allow(clippy::unwrap_used, clippy::print_stderr, clippy::disallowed_methods)]

mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use vigil_agent::ebpf::TcpTracer;

/// A memory cgroup of its own (v1 `memory` hierarchy or v2), removed on drop.
struct Cgroup(PathBuf);

impl Cgroup {
    fn create(limit: u64) -> Self {
        let name = format!("vigil-oom-test-{}", std::process::id());
        let v1 = Path::new("/sys/fs/cgroup/memory");
        let dir = if v1.join("memory.limit_in_bytes").exists() {
            let dir = v1.join(&name);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("memory.limit_in_bytes"), limit.to_string()).unwrap();
            dir
        } else {
            let dir = Path::new("/sys/fs/cgroup").join(&name);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("memory.max"), limit.to_string()).unwrap();
            std::fs::write(dir.join("memory.swap.max"), "0").ok();
            dir
        };
        Self(dir)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn an_oom_kill_names_its_victim() {
    let Some(mut tracer) = common::started(TcpTracer::start) else {
        return;
    };
    let cgroup = Cgroup::create(32 << 20);
    // The shell moves itself into the cgroup, then becomes Python.
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec python3 -c 'x = bytearray(256 << 20); print(len(x))'",
        cgroup.0.display()
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
