//! What the agent's eBPF collectors cost per observed request: Debian's
//! nginx serves a small file on loopback and Debian's wrk loads it, first
//! without the agent's programs, then with them (TCP and L7 tracers loaded
//! and drained every 100 ms, as the agent runs them). Prints, per request:
//! the agent's user+system CPU, the eBPF programs' run time
//! (`kernel.bpf_stats_enabled`), their sum; wrk's p50/p99 latency with and
//! without; the agent process's peak RSS. Needs root; figures only.
//!
//! ```sh
//! cargo bench -p vigil-agent --bench cost      # DURATION=10 CONNECTIONS=8 THREADS=2
//! RATE=5000 cargo bench -p vigil-agent --bench cost   # a fixed rate instead of flat out
//! ```
//!
//! With RATE, each connection waits `CONNECTIONS * 1000 / RATE` ms between
//! requests (wrk's `delay()`), so the rate is at most RATE and the p99
//! compares the same load with and without the agent.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::disallowed_methods)]

use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use vigil_agent::ebpf::{L7_SYSCALLS, L7Tracer, TCP_PROGRAMS, TcpTracer};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// CPU seconds this process has used (user + system).
fn own_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = stat.rsplit_once(')').unwrap().1;
    let f: Vec<&str> = after.split_whitespace().collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Summed run time (ns) and runs of the agent's loaded programs (the
/// kernel keeps 15 characters of a program's name).
fn bpf_run_time() -> (u64, u64) {
    let names: Vec<&str> = TCP_PROGRAMS
        .iter()
        .map(|(p, _, _)| *p)
        .chain(L7_SYSCALLS.iter().copied())
        .collect();
    let out = Command::new("bpftool")
        .args(["prog", "show", "-j"])
        .output()
        .unwrap();
    let progs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let mut total = (0, 0);
    for p in progs.as_array().into_iter().flatten() {
        let name = p["name"].as_str().unwrap_or("");
        if names
            .iter()
            .any(|n| n.starts_with(name) && !name.is_empty())
        {
            total.0 += p["run_time_ns"].as_u64().unwrap_or(0);
            total.1 += p["run_cnt"].as_u64().unwrap_or(0);
        }
    }
    total
}

struct Wrk {
    requests: u64,
    p50_ms: f64,
    p99_ms: f64,
}

fn wrk(url: &str, duration: u64, connections: u64, threads: u64, script: Option<&str>) -> Wrk {
    let mut command = Command::new("wrk");
    command.args([
        "-t",
        &threads.to_string(),
        "-c",
        &connections.to_string(),
        "-d",
        &format!("{duration}s"),
        "--latency",
    ]);
    if let Some(script) = script {
        command.args(["-s", script]);
    }
    let out = command.arg(url).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let ms = |label: &str| -> f64 {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(label))
            .unwrap_or("");
        let v = line.split_whitespace().nth(1).unwrap_or("0ms");
        let (num, unit) = v.split_at(v.find(|c: char| c.is_alphabetic()).unwrap_or(v.len()));
        let n: f64 = num.parse().unwrap_or(0.0);
        match unit {
            "us" => n / 1000.0,
            "s" => n * 1000.0,
            _ => n,
        }
    };
    let requests = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    Wrk {
        requests,
        p50_ms: ms("50%"),
        p99_ms: ms("99%"),
    }
}

fn main() {
    let duration = env("DURATION", 10);
    let rate = env("RATE", 0);
    let connections = env("CONNECTIONS", if rate > 0 { 50 } else { 8 });
    let threads = env("THREADS", 2);
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.html"), "hello from nginx\n").unwrap();
    let conf = dir.path().join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{ access_log off; client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};\n\
             server {{ listen 127.0.0.1:{port}; root {d}; }} }}\n",
            d = dir.path().display()
        ),
    )
    .unwrap();
    let _nginx = Killed(
        Command::new("nginx")
            .args([
                "-c",
                &conf.display().to_string(),
                "-p",
                &dir.path().display().to_string(),
            ])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(500));
    let url = format!("http://127.0.0.1:{port}/index.html");
    let script = (rate > 0).then(|| {
        let path = dir.path().join("rate.lua");
        let delay_ms = (connections * 1000 / rate).max(1);
        std::fs::write(&path, format!("function delay() return {delay_ms} end\n")).unwrap();
        path.display().to_string()
    });
    println!(
        "agent cost: nginx on loopback, wrk -t{threads} -c{connections} -d{duration}s{}, {} cores",
        if rate > 0 {
            format!(" at most {rate} requests/s")
        } else {
            String::new()
        },
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let without = wrk(&url, duration, connections, threads, script.as_deref());
    println!(
        "  without the agent: {:.0} requests/s, p50 {:.3} ms, p99 {:.3} ms",
        without.requests as f64 / duration as f64,
        without.p50_ms,
        without.p99_ms
    );

    let _ = Command::new("sysctl")
        .args(["-q", "-w", "kernel.bpf_stats_enabled=1"])
        .status();
    let mut tcp = match TcpTracer::start() {
        Ok(t) => t,
        Err(reason) => return println!("  eBPF unavailable: {reason}"),
    };
    let mut l7 = L7Tracer::start().unwrap();
    let (bpf0, _) = bpf_run_time();
    let cpu0 = own_cpu_seconds();
    let url2 = url.clone();
    let script2 = script.clone();
    let load =
        std::thread::spawn(move || wrk(&url2, duration, connections, threads, script2.as_deref()));
    let start = Instant::now();
    while !load.is_finished() {
        tcp.drain();
        l7.drain();
        std::thread::sleep(Duration::from_millis(100));
    }
    tcp.drain();
    l7.drain();
    let with = load.join().unwrap();
    let agent_cpu = own_cpu_seconds() - cpu0;
    let (bpf1, runs) = bpf_run_time();
    let _ = Command::new("sysctl")
        .args(["-q", "-w", "kernel.bpf_stats_enabled=0"])
        .status();
    let seen: u64 = l7
        .stats
        .requests
        .iter()
        .filter(|(k, _)| k.destination.is_some_and(|d| d.port() == port))
        .map(|(_, c)| c.requests)
        .sum();
    let requests = with.requests.max(1) as f64;
    let bpf_s = (bpf1 - bpf0) as f64 / 1e9;
    println!(
        "  with the agent:    {:.0} requests/s, p50 {:.3} ms, p99 {:.3} ms ({:.1} s)",
        with.requests as f64 / duration as f64,
        with.p50_ms,
        with.p99_ms,
        start.elapsed().as_secs_f64()
    );
    println!(
        "  per request: agent CPU {:.2} µs + eBPF {:.2} µs = {:.2} µs ({runs} program runs); \
         the agent counted {seen} of wrk's {} requests on the client side; agent peak RSS {:.0} MiB",
        agent_cpu * 1e6 / requests,
        bpf_s * 1e6 / requests,
        (agent_cpu + bpf_s) * 1e6 / requests,
        with.requests,
        peak_rss_mib()
    );
}
