//! HTTPS requests seen in plaintext through OpenSSL uprobes (root and BTF;
//! CI runs as root): Python's http.server behind TLS (OpenSSL 3 through
//! Python's ssl module: SSL_read_ex/SSL_write_ex) and the real curl as the
//! client (SSL_read/SSL_write), with a certificate made by the openssl
//! command for this test. N requests with known statuses are counted
//! exactly on both sides: the ciphertext of the same sockets is not
//! counted again.

#![allow(clippy::unwrap_used, clippy::print_stderr, clippy::disallowed_methods)]

mod common;

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{client_count, free_port, settle};
use vigil_agent::ebpf::{
    L7Tracer,
    l7::{Protocol, Side},
};

const HTTPS_SERVER: &str = r#"
import http.server, ssl, sys
port, cert, key = sys.argv[1:4]
httpd = http.server.HTTPServer(("127.0.0.1", int(port)), http.server.SimpleHTTPRequestHandler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
httpd.serve_forever()
"#;

const FOUND: u64 = 6;
const MISSING: u64 = 3;

#[test]
fn https_requests_match_ground_truth_on_both_sides() {
    for program in ["curl", "openssl", "python3"] {
        if !common::installed(program) {
            return;
        }
    }
    let Some(mut t) = common::started(L7Tracer::start) else {
        return;
    };
    if let Err(reason) = &t.tls {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must see TLS: {reason}"
        );
        eprintln!("SKIPPED: {reason}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(made.success(), "openssl req");
    std::fs::write(dir.path().join("index.txt"), "hello").unwrap();
    let port = free_port();
    let (server, addr) = common::serve(
        Command::new("python3")
            .args(["-c", HTTPS_SERVER, &port.to_string()])
            .arg(&cert)
            .arg(&key)
            .current_dir(dir.path()),
        port,
    );
    let curl = |path: &str| -> u16 {
        let out = Command::new("curl")
            .args([
                "-sk",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "10",
            ])
            .arg(format!("https://127.0.0.1:{port}{path}"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0)
    };
    // wait_listening's probe connections carried no TLS: not requests.
    let deadline = Instant::now() + Duration::from_secs(10);
    while curl("/index.txt") != 200 {
        assert!(
            Instant::now() < deadline,
            "the HTTPS server does not answer"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for _ in 1..FOUND {
        assert_eq!(curl("/index.txt"), 200);
    }
    for _ in 0..MISSING {
        assert_eq!(curl("/missing"), 404);
    }
    let python = server.0.id();
    let server_count = |t: &L7Tracer, status| {
        t.stats
            .count(python, Side::Server, None, Protocol::Http, "GET", status)
    };
    settle(&mut t, |t| {
        server_count(t, "404") >= MISSING
            && client_count(t, addr, Protocol::Http, "GET", "404") >= MISSING
    });
    let seen: Vec<_> = t
        .stats
        .requests
        .iter()
        .filter(|(k, _)| k.pid == python || k.destination == Some(addr))
        .collect();
    eprintln!("TLS via {:?}: {seen:?}", t.tls);
    for (status, n) in [("200", FOUND), ("404", MISSING)] {
        assert_eq!(
            client_count(&t, addr, Protocol::Http, "GET", status),
            n,
            "client {status}"
        );
        assert_eq!(server_count(&t, status), n, "server {status}");
    }
    let unparsed_to_server = t
        .stats
        .requests
        .keys()
        .filter(|k| k.destination == Some(addr) && k.protocol != Protocol::Http)
        .count();
    assert_eq!(unparsed_to_server, 0);
}
