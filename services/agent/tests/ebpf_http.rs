//! HTTP/1.x requests seen from syscall tracepoints against ground truth
//! (root and BTF; CI runs as root): this test sends N requests with known
//! statuses to Python's http.server and counts them on both sides — the
//! client (this process, with the destination) and the server (python).

#![allow(clippy::unwrap_used, clippy::print_stderr, clippy::disallowed_methods)]

mod common;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use vigil_agent::ebpf::{
    L7Tracer,
    l7::{Protocol, Side},
};

const FOUND: u64 = 20;
const MISSING: u64 = 8;

/// One request on its own connection, as `curl` would send it; the status.
fn get(server: SocketAddr, path: &str) -> u16 {
    let mut stream = TcpStream::connect(server).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {server}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response[9..12].parse().unwrap()
}

#[test]
fn http_requests_match_ground_truth_on_both_sides() {
    let Some(mut tracer) = common::started(L7Tracer::start) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.txt"), "hello").unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut python = Command::new("python3")
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(server).is_err() {
        assert!(Instant::now() < deadline, "http.server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    for _ in 0..FOUND {
        assert_eq!(get(server, "/index.txt"), 200);
    }
    for _ in 0..MISSING {
        assert_eq!(get(server, "/missing"), 404);
    }
    let me = std::process::id();
    let python_pid = python.id();
    let count = |tracer: &L7Tracer, pid, side, destination, status: u16| {
        tracer.stats.count(
            pid,
            side,
            destination,
            Protocol::Http,
            "GET",
            &status.to_string(),
        )
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        tracer.drain();
        let settled = count(&tracer, me, Side::Client, Some(server), 404) >= MISSING
            && count(&tracer, python_pid, Side::Server, None, 404) >= MISSING;
        if settled || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = python.kill();
    let _ = python.wait();
    let mine: Vec<_> = tracer
        .stats
        .requests
        .iter()
        .filter(|(k, _)| k.pid == me || k.pid == python_pid)
        .collect();
    eprintln!("{mine:#?}");
    assert_eq!(count(&tracer, me, Side::Client, Some(server), 200), FOUND);
    assert_eq!(count(&tracer, me, Side::Client, Some(server), 404), MISSING);
    // The first connect (the readiness probe) sent no request.
    assert_eq!(count(&tracer, python_pid, Side::Server, None, 200), FOUND);
    assert_eq!(count(&tracer, python_pid, Side::Server, None, 404), MISSING);
    let latency: u64 = tracer
        .stats
        .requests
        .iter()
        .filter(|(k, _)| k.pid == me && k.protocol == Protocol::Http && k.status == "200")
        .map(|(_, c)| c.latency_ns)
        .sum();
    let mean_ms = latency as f64 / FOUND as f64 / 1e6;
    assert!(
        mean_ms > 0.0 && mean_ms < 1_000.0,
        "mean latency {mean_ms} ms is plausible for loopback"
    );
    assert_eq!(tracer.malformed, 0);
}
