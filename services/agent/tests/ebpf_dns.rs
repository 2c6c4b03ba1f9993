//! DNS queries seen from syscall tracepoints against ground truth (root and
//! BTF; CI runs as root): Debian's dnsmasq answering a local zone, queried
//! by the real dig (a connected UDP socket, sendmmsg out, recvmsg in). Each
//! query's type and the answer's result code, NXDOMAIN included, counted
//! on the client side towards the server.

#![allow(clippy::unwrap_used, clippy::print_stderr, clippy::disallowed_methods)]

mod common;

use std::{
    net::{SocketAddr, UdpSocket},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{Killed, client_count, settle};
use vigil_agent::ebpf::{L7Tracer, l7::Protocol};

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// dig's answer status (`NOERROR`, `NXDOMAIN`, …), from its header line.
fn dig(server: SocketAddr, name: &str, qtype: &str) -> String {
    let out = Command::new("dig")
        .args([
            &format!("@{}", server.ip()),
            "-p",
            &server.port().to_string(),
            "+tries=1",
            "+time=5",
            "+noedns",
            name,
            qtype,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.split("status: ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap_or_else(|| panic!("no answer from dig: {text}"))
        .to_owned()
}

#[test]
fn dns_queries_and_nxdomain_match_ground_truth() {
    if !common::installed("dnsmasq") || !common::installed("dig") {
        return;
    }
    let Some(mut t) = common::started(L7Tracer::start) else {
        return;
    };
    let port = free_udp_port();
    let server: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // Names under .test are answered here: ok.test has an address, any
    // other name is NXDOMAIN; nothing is forwarded.
    let _dnsmasq = Killed(
        Command::new("dnsmasq")
            .args([
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
                &format!("--port={port}"),
                "--address=/ok.test/10.1.2.3",
                "--local=/test/",
                "--pid-file=",
                "--user=root",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut answers = Vec::new();
    // The first answer also says the server is up.
    loop {
        let out = Command::new("dig")
            .args([
                "@127.0.0.1",
                "-p",
                &port.to_string(),
                "+tries=1",
                "+time=1",
                "ok.test",
            ])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout).contains("status: NOERROR") {
            answers.push(("A", "NOERROR".to_owned()));
            break;
        }
        assert!(Instant::now() < deadline, "dnsmasq does not answer");
        std::thread::sleep(Duration::from_millis(100));
    }
    for _ in 0..4 {
        answers.push(("A", dig(server, "ok.test", "A")));
    }
    for i in 0..3 {
        answers.push(("A", dig(server, &format!("missing{i}.test"), "A")));
    }
    for _ in 0..2 {
        answers.push(("AAAA", dig(server, "ok.test", "AAAA")));
    }
    let truth = |qtype: &str, status: &str| {
        answers
            .iter()
            .filter(|(q, s)| *q == qtype && s == status)
            .count() as u64
    };
    assert_eq!(truth("A", "NXDOMAIN"), 3, "{answers:?}");
    let counted = |t: &L7Tracer| -> u64 {
        t.stats
            .requests
            .iter()
            .filter(|(k, _)| k.protocol == Protocol::Dns && k.destination == Some(server))
            .map(|(_, c)| c.requests)
            .sum()
    };
    settle(&mut t, |t| counted(t) >= answers.len() as u64);
    let seen: Vec<_> = t
        .stats
        .requests
        .iter()
        .filter(|(k, _)| k.protocol == Protocol::Dns)
        .collect();
    eprintln!("dns: {seen:?}");
    assert_eq!(counted(&t), answers.len() as u64, "{answers:?}");
    let mut kinds: Vec<_> = answers.iter().map(|(q, s)| (*q, s.as_str())).collect();
    kinds.dedup();
    for (qtype, status) in kinds {
        assert_eq!(
            client_count(&t, server, Protocol::Dns, qtype, status),
            truth(qtype, status),
            "{qtype} {status}"
        );
    }
}
