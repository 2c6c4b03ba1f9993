//! What the agent's benchmarks share: settings from the environment, this
//! process's CPU and memory, and the kernel's run-time figures of eBPF
//! programs.

#![allow(dead_code, clippy::unwrap_used)]

use std::process::Command;

/// A number from the environment, or `default`.
pub fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU seconds this process has used (user + system).
pub fn cpu_seconds() -> f64 {
    cpu_seconds_of("self")
}

/// CPU seconds process `pid` ("self" for this one) has used.
pub fn cpu_seconds_of(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
}

/// A memory figure of this process in MiB: `VmRSS:` (now) or `VmHWM:`
/// (peak).
pub fn rss_mib(field: &str) -> f64 {
    rss_mib_of("self", field)
}

/// [`rss_mib`] of process `pid`.
pub fn rss_mib_of(pid: &str, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Turns the kernel's eBPF run-time statistics on or off (they cost about
/// 80 ns per program run while on).
pub fn bpf_stats(on: bool) {
    let _ = Command::new("sysctl")
        .args([
            "-q",
            "-w",
            &format!("kernel.bpf_stats_enabled={}", u8::from(on)),
        ])
        .status();
}

/// Summed run time (ns) and runs of the loaded programs named `names`
/// (the kernel keeps 15 characters of a program's name).
pub fn bpf_run_time(names: &[&str]) -> (u64, u64) {
    let Ok(out) = Command::new("bpftool")
        .args(["prog", "show", "-j"])
        .output()
    else {
        return (0, 0);
    };
    let progs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let mut total = (0, 0);
    for p in progs.as_array().into_iter().flatten() {
        let name = p["name"].as_str().unwrap_or("");
        if !name.is_empty() && names.iter().any(|n| n.starts_with(name)) {
            total.0 += p["run_time_ns"].as_u64().unwrap_or(0);
            total.1 += p["run_cnt"].as_u64().unwrap_or(0);
        }
    }
    total
}
