//! Redis and Memcached requests seen from syscall tracepoints against
//! ground truth (root and BTF; CI runs as root): Debian's redis-server
//! driven by the real redis-cli, Debian's memcached driven by this test
//! over its text protocol. Counted on the client and on the server side.

#![allow(clippy::unwrap_used, clippy::print_stderr, clippy::disallowed_methods)]

mod common;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    process::{Command, Stdio},
    time::Duration,
};

use common::{Killed, client_count, free_port, settle};
use vigil_agent::ebpf::{
    L7Tracer,
    l7::{Protocol, Side},
};

/// A redis-server of the test's own on a free loopback port, without
/// persistence, killed when the test ends.
struct Redis {
    server: Killed,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Self {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let (server, addr) = common::serve(
            Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .current_dir(dir.path()),
            port,
        );
        Self {
            server,
            addr,
            _dir: dir,
        }
    }
}

#[test]
fn redis_commands_and_errors_match_ground_truth() {
    if !common::installed("redis-server") || !common::installed("redis-cli") {
        return;
    }
    let Some(mut t) = common::started(L7Tracer::start) else {
        return;
    };
    let server = Redis::start();
    let addr = server.addr;
    // 10 SET, 5 GET, 3 INCR of a non-number (errors), one redis-cli run.
    let mut script = String::new();
    for i in 0..10 {
        script += &format!("SET key{i} value{i}\n");
    }
    for i in 0..5 {
        script += &format!("GET key{i}\n");
    }
    for _ in 0..3 {
        script += "INCR key0\n";
    }
    let mut cli = Command::new("redis-cli")
        .args(["-p", &addr.port().to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    cli.stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let output = cli.wait_with_output().unwrap();
    let replies = String::from_utf8_lossy(&output.stdout);
    assert_eq!(replies.matches("OK").count(), 10, "{replies}");
    assert_eq!(replies.matches("ERR").count(), 3, "{replies}");
    let redis_pid = server.server.0.id();
    let server_count = |t: &L7Tracer, op, status| {
        t.stats
            .count(redis_pid, Side::Server, None, Protocol::Redis, op, status)
    };
    settle(&mut t, |t| {
        server_count(t, "INCR", "error") >= 3
            && client_count(t, addr, Protocol::Redis, "INCR", "error") >= 3
    });
    let seen: Vec<_> = t
        .stats
        .requests
        .iter()
        .filter(|(k, _)| k.protocol == Protocol::Redis)
        .collect();
    eprintln!("redis: {seen:?}, unparsed {}", t.stats.unparsed);
    for (op, status, n) in [("SET", "ok", 10), ("GET", "ok", 5), ("INCR", "error", 3)] {
        assert_eq!(
            client_count(&t, addr, Protocol::Redis, op, status),
            n,
            "client {op} {status}"
        );
        assert_eq!(server_count(&t, op, status), n, "server {op} {status}");
    }
}

#[test]
fn memcached_commands_and_errors_match_ground_truth() {
    if !common::installed("memcached") {
        return;
    }
    let Some(mut t) = common::started(L7Tracer::start) else {
        return;
    };
    let port = free_port();
    let (server, addr) = common::serve(
        Command::new("memcached").args([
            "-p",
            &port.to_string(),
            "-U",
            "0",
            "-l",
            "127.0.0.1",
            "-u",
            "root",
        ]),
        port,
    );
    // One socket for both directions.
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut ask = |request: &str, until: &str| -> String {
        stream.write_all(request.as_bytes()).unwrap();
        let mut reply = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).unwrap();
            assert!(n > 0, "memcached closed the connection");
            reply.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&reply);
            if text.contains(until) || text.contains("ERROR") {
                return text.into_owned();
            }
        }
    };
    for i in 0..6 {
        assert!(ask(&format!("set key{i} 0 0 5\r\nhello\r\n"), "STORED").starts_with("STORED"));
    }
    for i in 0..4 {
        assert!(ask(&format!("get key{i}\r\n"), "END").starts_with("VALUE"));
    }
    for _ in 0..2 {
        assert!(ask("incr key0 1\r\n", "CLIENT_ERROR").contains("CLIENT_ERROR"));
    }
    let me = std::process::id();
    let mc_pid = server.0.id();
    settle(&mut t, |t| {
        t.stats.count(
            mc_pid,
            Side::Server,
            None,
            Protocol::Memcached,
            "incr",
            "error",
        ) >= 2
    });
    for (op, status, n) in [("set", "ok", 6), ("get", "ok", 4), ("incr", "error", 2)] {
        assert_eq!(
            t.stats.count(
                me,
                Side::Client,
                Some(addr),
                Protocol::Memcached,
                op,
                status
            ),
            n,
            "client {op} {status}"
        );
        assert_eq!(
            t.stats
                .count(mc_pid, Side::Server, None, Protocol::Memcached, op, status),
            n,
            "server {op} {status}"
        );
    }
}

/// A connection opened before the tracer started (a pool's, a keep-alive
/// one) is followed from the first request after the start, on both sides.
#[test]
fn a_connection_open_before_the_start_is_followed() {
    if !common::installed("redis-server") {
        return;
    }
    if let vigil_agent::ebpf::Support::Unavailable(reason) = vigil_agent::ebpf::probe() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{reason}");
        eprintln!("SKIPPED: eBPF unavailable here: {reason}");
        return;
    }
    let server = Redis::start();
    let addr = server.addr;
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let ping = |stream: &mut TcpStream| {
        stream.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
        let mut reply = [0u8; 7];
        stream.read_exact(&mut reply).unwrap();
        assert_eq!(&reply, b"+PONG\r\n");
    };
    ping(&mut stream);
    let Some(mut t) = common::started(L7Tracer::start) else {
        return;
    };
    const PINGS: u64 = 5;
    for _ in 0..PINGS {
        ping(&mut stream);
    }
    let me = std::process::id();
    let redis_pid = server.server.0.id();
    let count = |t: &L7Tracer, pid, side, destination| {
        t.stats
            .count(pid, side, destination, Protocol::Redis, "PING", "ok")
    };
    settle(&mut t, |t| {
        count(t, me, Side::Client, Some(addr)) >= PINGS
            && count(t, redis_pid, Side::Server, None) >= PINGS
    });
    assert_eq!(
        count(&t, me, Side::Client, Some(addr)),
        PINGS,
        "client side"
    );
    assert_eq!(
        count(&t, redis_pid, Side::Server, None),
        PINGS,
        "server side"
    );
}

/// A duplicated socket fd (`try_clone`: fcntl F_DUPFD_CLOEXEC; and dup()
/// in Python) is the same connection: requests on it are counted.
#[test]
fn requests_on_a_duplicated_fd_are_counted() {
    if !common::installed("redis-server") || !common::installed("python3") {
        return;
    }
    let Some(mut t) = common::started(L7Tracer::start) else {
        return;
    };
    let _server = Redis::start();
    let addr = _server.addr;
    let original = TcpStream::connect(addr).unwrap();
    let mut clone = original.try_clone().unwrap();
    drop(original);
    clone
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    const PINGS: u64 = 4;
    for _ in 0..PINGS {
        clone.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
        let mut reply = [0u8; 7];
        clone.read_exact(&mut reply).unwrap();
    }
    // Python: os.dup() of a connected socket, requests through the copy.
    let script = format!(
        "import os, socket\n\
         s = socket.create_connection(('127.0.0.1', {}))\n\
         fd = os.dup(s.fileno())\n\
         s.close()\n\
         for _ in range(3):\n    os.write(fd, b'*1\\r\\n$4\\r\\nPING\\r\\n'); os.read(fd, 7)\n\
         print(os.getpid())\n",
        addr.port()
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let python: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let me = std::process::id();
    let count = |t: &L7Tracer, pid| {
        t.stats
            .count(pid, Side::Client, Some(addr), Protocol::Redis, "PING", "ok")
    };
    settle(&mut t, |t| count(t, me) >= PINGS && count(t, python) >= 3);
    assert_eq!(count(&t, me), PINGS, "through fcntl(F_DUPFD_CLOEXEC)");
    assert_eq!(count(&t, python), 3, "through dup()");
}
