//! The TCP tracer against real kernel events (root and BTF; CI runs as
//! root): connects that succeed, connects refused by a closed port, accepts
//! and closes, counted exactly for this test's own process.

#![allow(clippy::unwrap_used, clippy::print_stderr, clippy::disallowed_methods)]

mod common;

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
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
