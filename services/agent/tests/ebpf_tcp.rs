//! The TCP tracer against real kernel events (root and BTF; CI runs as
//! root): connects that succeed, connects refused by a closed port, accepts
//! and closes, counted exactly for this test's own process; retransmits
//! under induced loss against the kernel's own count for the socket.

#![allow(clippy::unwrap_used, clippy::print_stderr, clippy::disallowed_methods)]

mod common;

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use vigil_agent::ebpf::TcpTracer;

const SUCCESSFUL: u64 = 25;
const REFUSED: u64 = 7;

#[test]
fn connects_failures_and_accepts_match_ground_truth() {
    let Some(mut tracer) = common::started(TcpTracer::start) else {
        return;
    };
    let me = std::process::id();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let open: SocketAddr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        for _ in 0..SUCCESSFUL {
            let (stream, _) = listener.accept().unwrap();
            drop(stream);
        }
    });
    let closed: SocketAddr = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    for _ in 0..SUCCESSFUL {
        drop(TcpStream::connect(open).unwrap());
    }
    for _ in 0..REFUSED {
        let error = TcpStream::connect(closed).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused);
    }
    server.join().unwrap();
    // Events are drained on the agent's timer; here, until the counts
    // settle (closes arrive after the last accept).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        tracer.drain();
        let stats = &tracer.stats;
        let done = stats
            .outgoing
            .get(&(me, open))
            .is_some_and(|o| o.successful_connects >= SUCCESSFUL && o.active == 0)
            && stats
                .outgoing
                .get(&(me, closed))
                .is_some_and(|o| o.failed_connects >= REFUSED);
        if done || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let stats = &tracer.stats;
    let to_open = stats.outgoing.get(&(me, open)).cloned().unwrap_or_default();
    let to_closed = stats
        .outgoing
        .get(&(me, closed))
        .cloned()
        .unwrap_or_default();
    eprintln!("to {open}: {to_open:?}; to {closed}: {to_closed:?}");
    assert_eq!(
        to_open.successful_connects, SUCCESSFUL,
        "successful connects"
    );
    assert_eq!(to_open.failed_connects, 0);
    assert_eq!(to_open.active, 0, "every connection closed");
    assert!(to_open.connect_time_ns > 0, "handshakes take time");
    assert_eq!(to_closed.failed_connects, REFUSED, "refused connects");
    assert_eq!(to_closed.successful_connects, 0);
    assert_eq!(
        stats.accepts.get(&open).copied(),
        Some(SUCCESSFUL),
        "accepts on the listener"
    );
    assert_eq!(tracer.malformed, 0);
}

/// Two network namespaces joined by a veth pair, deleted at the end.
struct Namespaces {
    client: String,
    server: String,
}

impl Namespaces {
    fn create() -> Self {
        let id = std::process::id();
        let this = Self {
            client: format!("vigil-rt-c{id}"),
            server: format!("vigil-rt-s{id}"),
        };
        let (c, s) = (this.client.as_str(), this.server.as_str());
        for args in [
            vec!["netns", "add", c],
            vec!["netns", "add", s],
            vec![
                "link", "add", "va", "netns", c, "type", "veth", "peer", "name", "vb", "netns", s,
            ],
            vec!["-n", c, "addr", "add", "10.213.0.1/30", "dev", "va"],
            vec!["-n", s, "addr", "add", "10.213.0.2/30", "dev", "vb"],
            vec!["-n", c, "link", "set", "va", "up"],
            vec!["-n", s, "link", "set", "vb", "up"],
            vec!["-n", s, "link", "set", "lo", "up"],
        ] {
            run("ip", &args);
        }
        // One segment per packet, so that one drop is one retransmitted
        // segment.
        for (ns, dev) in [(c, "va"), (s, "vb")] {
            run(
                "ip",
                &[
                    "netns", "exec", ns, "ethtool", "-K", dev, "tso", "off", "gso", "off", "gro",
                    "off",
                ],
            );
        }
        this
    }

    fn exec(&self, ns: &str, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, program]).args(args);
        c
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in [&self.client, &self.server] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Reads everything sent to port 9000, once.
const SINK: &str = r#"
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("10.213.0.2", 9000))
s.listen(1)
print("listening", flush=True)
c, _ = s.accept()
while c.recv(65536):
    pass
"#;

/// Sends 4 MiB, waits until all of it is acknowledged, then prints its
/// pid, the unacknowledged segments (0), and the kernel's count of
/// segments retransmitted in the namespace (RetransSegs of
/// /proc/net/snmp; this is its only connection) before closing.
/// TCP_INFO's total_retrans is not the truth here: it also counts
/// attempts that sent nothing (the tracepoint's `err`).
const SENDER: &str = r#"
import os, socket, struct, time
s = socket.create_connection(("10.213.0.2", 9000), timeout=60)
s.sendall(b"x" * (4 << 20))
deadline = time.time() + 60
while True:
    info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 232)
    unacked = struct.unpack_from("I", info, 24)[0]
    if unacked == 0 or time.time() > deadline:
        break
    time.sleep(0.05)
tcp = [l.split() for l in open("/proc/net/snmp") if l.startswith("Tcp:")]
retrans_segs = int(tcp[1][tcp[0].index("RetransSegs")])
print(os.getpid(), unacked, retrans_segs, flush=True)
s.close()
"#;

#[test]
fn retransmits_under_loss_match_the_kernels_count() {
    for program in ["ip", "nft", "ethtool", "python3"] {
        if !common::installed(program) {
            return;
        }
    }
    let Some(mut tracer) = common::started(TcpTracer::start) else {
        return;
    };
    let ns = Namespaces::create();
    // Drop one in ten data segments (not SYNs or bare ACKs) arriving at
    // the server: the sender retransmits them.
    let mut nft = ns
        .exec(&ns.server, "nft", &["-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        &mut nft.stdin.take().unwrap(),
        b"table inet vigil_loss {\n chain input {\n  type filter hook input priority 0; policy accept;\n  \
          tcp dport 9000 ip length > 200 numgen random mod 10 < 1 drop\n }\n}\n",
    )
    .unwrap();
    assert!(nft.wait().unwrap().success(), "nft rules");
    let mut sink = common::Killed(
        ns.exec(&ns.server, "python3", &["-c", SINK])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(sink.0.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "listening");
    let sent = ns
        .exec(&ns.client, "python3", &["-c", SENDER])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&sent.stdout);
    assert!(
        sent.status.success(),
        "sender: {report} {}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let fields: Vec<u64> = report
        .split_whitespace()
        .map(|f| f.parse().unwrap())
        .collect();
    let (pid, unacked, kernel_retransmits) = (fields[0] as u32, fields[1], fields[2]);
    assert_eq!(unacked, 0, "all data acknowledged");
    assert!(kernel_retransmits > 0, "the loss caused retransmits");
    let destination: SocketAddr = "10.213.0.2:9000".parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let counted = loop {
        tracer.drain();
        let counted = tracer
            .stats
            .outgoing
            .get(&(pid, destination))
            .map_or(0, |o| o.retransmits);
        if counted >= kernel_retransmits || Instant::now() > deadline {
            break counted;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!(
        "retransmitted segments: kernel (RetransSegs) {kernel_retransmits}, counted {counted}"
    );
    assert_eq!(counted, kernel_retransmits);
}
