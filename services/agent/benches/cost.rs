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

mod common;

use common::{bpf_run_time, bpf_stats, cpu_seconds, env, rss_mib};
use vigil_agent::ebpf::{L7_SYSCALLS, L7Tracer, TCP_PROGRAMS, TcpTracer};

/// The agent's programs, as the kernel names them.
fn agent_programs() -> Vec<&'static str> {
    TCP_PROGRAMS
        .iter()
        .map(|(p, _, _)| *p)
        .chain(L7_SYSCALLS.iter().copied())
        .collect()
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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

    bpf_stats(true);
    let mut tcp = match TcpTracer::start() {
        Ok(t) => t,
        Err(reason) => return println!("  eBPF unavailable: {reason}"),
    };
    let mut l7 = L7Tracer::start().unwrap();
    let (bpf0, _) = bpf_run_time(&agent_programs());
    let cpu0 = cpu_seconds();
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
    let agent_cpu = cpu_seconds() - cpu0;
    let (bpf1, runs) = bpf_run_time(&agent_programs());
    bpf_stats(false);
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
        rss_mib("VmHWM:")
    );
}
