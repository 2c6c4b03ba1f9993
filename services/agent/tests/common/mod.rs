//! What the eBPF tests share: they need root and BTF (CI runs as root) and
//! some outside programs. Where those are missing the test is skipped with
//! a message saying why; under CI=true that is a failure.

#![allow(
    dead_code,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::disallowed_methods
)]

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    process::Child,
    time::{Duration, Instant},
};

use vigil_agent::ebpf::{
    L7Tracer, Support,
    l7::{Protocol, Side},
    probe,
};

fn ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// A started tracer, or None (with the reason printed) where eBPF cannot
/// run here.
pub fn started<T>(start: impl FnOnce() -> Result<T, String>) -> Option<T> {
    if let Support::Unavailable(reason) = probe() {
        assert!(!ci(), "CI runs as root with BTF, yet: {reason}");
        eprintln!("SKIPPED: eBPF unavailable here: {reason}");
        return None;
    }
    match start() {
        Ok(tracer) => Some(tracer),
        Err(reason) => {
            assert!(!ci(), "CI must load the eBPF programs: {reason}");
            eprintln!("SKIPPED: {reason}");
            None
        }
    }
}

/// Whether an outside program the test drives is installed.
pub fn installed(program: &str) -> bool {
    let ok = std::process::Command::new(program)
        .arg("--version")
        .output()
        .is_ok();
    if !ok {
        assert!(
            !ci(),
            "CI must have {program}: scripts/install-deps.sh installs it"
        );
        eprintln!("SKIPPED: {program} is not installed (scripts/install-deps.sh installs it)");
    }
    ok
}

/// A server process the test started, killed when the test ends.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_listening(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Requests counted on the client side towards `server`, whatever the
/// client process (redis-cli is one per run).
pub fn client_count(t: &L7Tracer, server: SocketAddr, p: Protocol, op: &str, status: &str) -> u64 {
    t.stats
        .requests
        .iter()
        .filter(|(k, _)| {
            k.side == Side::Client
                && k.destination == Some(server)
                && k.protocol == p
                && k.operation == op
                && k.status == status
        })
        .map(|(_, c)| c.requests)
        .sum()
}

pub fn settle(t: &mut L7Tracer, done: impl Fn(&L7Tracer) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        t.drain();
        if done(t) || Instant::now() > deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
