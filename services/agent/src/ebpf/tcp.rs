//! The TCP lifecycle seen by `bpf/tcp.bpf.c`: connects (and how long they
//! took), failed connects, accepts, closes, retransmits, per process and
//! destination. Events come from the kernel through a ring buffer; this
//! module parses them and keeps the counts the agent ships as metrics.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

/// Event kinds, as `bpf/tcp.bpf.c` numbers them.
const EVENT_CONNECT: u32 = 1;
const EVENT_CONNECT_FAILED: u32 = 2;
const EVENT_ACCEPT: u32 = 3;
const EVENT_CLOSE: u32 = 4;
const EVENT_RETRANSMIT: u32 = 5;
const EVENT_OOM_KILL: u32 = 6;

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// `struct event` of `bpf/tcp.bpf.c`: 72 bytes, native (little) endian.
pub const EVENT_SIZE: usize = 72;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Connect,
    ConnectFailed,
    Accept,
    Close,
    Retransmit,
    /// The OOM killer chose `pid`.
    OomKill,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    pub kind: Kind,
    /// The process that connected; 0 when not known (accepted sockets).
    pub pid: u32,
    pub source: SocketAddr,
    pub destination: SocketAddr,
    /// Connect: the handshake; close: how long the connection lived.
    pub duration_ns: u64,
    /// Retransmit: the segments sent again (a GSO packet holds several).
    pub segments: u16,
    pub sock: u64,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&b[at..at + 8]);
    u64::from_ne_bytes(raw)
}

fn address(family: u16, raw: &[u8], port: u16) -> Option<SocketAddr> {
    let ip = match family {
        AF_INET => IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3])),
        AF_INET6 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&raw[..16]);
            let v6 = Ipv6Addr::from(octets);
            // IPv4 peers of dual-stack sockets show up mapped.
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Parses one ring buffer record; `None` for a record of another size or
/// an unknown kind or family.
pub fn parse(b: &[u8]) -> Option<Event> {
    if b.len() != EVENT_SIZE {
        return None;
    }
    let kind = match u32_at(b, 24) {
        EVENT_CONNECT => Kind::Connect,
        EVENT_CONNECT_FAILED => Kind::ConnectFailed,
        EVENT_ACCEPT => Kind::Accept,
        EVENT_CLOSE => Kind::Close,
        EVENT_RETRANSMIT => Kind::Retransmit,
        EVENT_OOM_KILL => Kind::OomKill,
        _ => return None,
    };
    let family = u16_at(b, 32);
    Some(Event {
        kind,
        pid: u32_at(b, 28),
        source: address(family, &b[40..56], u16_at(b, 34))?,
        destination: address(family, &b[56..72], u16_at(b, 36))?,
        duration_ns: u64_at(b, 8),
        segments: u16_at(b, 38),
        sock: u64_at(b, 16),
    })
}

/// Counts per (process, destination) of outgoing connections.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outgoing {
    pub successful_connects: u64,
    pub failed_connects: u64,
    /// Summed handshake time of successful connects.
    pub connect_time_ns: u64,
    pub active: u64,
    pub retransmits: u64,
}

/// Victims remembered for attribution between two shipments.
pub const MAX_OOM_VICTIMS: usize = 1024;

/// What the TCP tracer has seen since the agent started.
#[derive(Debug, Default)]
pub struct TcpStats {
    /// (pid, destination) → counts.
    pub outgoing: HashMap<(u32, SocketAddr), Outgoing>,
    /// Accepted connections per local listening address.
    pub accepts: HashMap<SocketAddr, u64>,
    /// Retransmits on sockets whose connecting process is not known.
    pub retransmits_unattributed: u64,
    /// Processes the OOM killer chose, oldest first (at most
    /// [`MAX_OOM_VICTIMS`] kept; the count goes on).
    pub oom_victims: std::collections::VecDeque<u32>,
    pub oom_kills: u64,
    /// Established sockets seen, to attribute closes and retransmits.
    open: HashMap<u64, (u32, SocketAddr)>,
}

impl TcpStats {
    /// Forgets processes that are gone and have no connection open: their
    /// counts were shipped for the last time.
    pub fn forget_exited(&mut self, alive: impl Fn(u32) -> bool) {
        self.outgoing
            .retain(|(pid, _), o| *pid == 0 || o.active > 0 || alive(*pid));
    }

    pub fn record(&mut self, e: &Event) {
        match e.kind {
            Kind::Connect => {
                let o = self.outgoing.entry((e.pid, e.destination)).or_default();
                o.successful_connects += 1;
                o.connect_time_ns = o.connect_time_ns.saturating_add(e.duration_ns);
                o.active += 1;
                self.open.insert(e.sock, (e.pid, e.destination));
            }
            Kind::ConnectFailed => {
                self.outgoing
                    .entry((e.pid, e.destination))
                    .or_default()
                    .failed_connects += 1;
            }
            Kind::Accept => {
                *self.accepts.entry(e.source).or_default() += 1;
            }
            Kind::Close => {
                if let Some(key) = self.open.remove(&e.sock)
                    && let Some(o) = self.outgoing.get_mut(&key)
                {
                    o.active = o.active.saturating_sub(1);
                }
            }
            Kind::OomKill => {
                self.oom_kills += 1;
                if self.oom_victims.len() == MAX_OOM_VICTIMS {
                    self.oom_victims.pop_front();
                }
                self.oom_victims.push_back(e.pid);
            }
            Kind::Retransmit => match self.open.get(&e.sock) {
                Some(key) => {
                    if let Some(o) = self.outgoing.get_mut(key) {
                        o.retransmits += u64::from(e.segments);
                    }
                }
                None => self.retransmits_unattributed += u64::from(e.segments),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(kind: u32, pid: u32, family: u16, sport: u16, dport: u16, sock: u64) -> Vec<u8> {
        let mut b = vec![0u8; EVENT_SIZE];
        b[8..16].copy_from_slice(&1_500u64.to_ne_bytes());
        b[16..24].copy_from_slice(&sock.to_ne_bytes());
        b[24..28].copy_from_slice(&kind.to_ne_bytes());
        b[28..32].copy_from_slice(&pid.to_ne_bytes());
        b[32..34].copy_from_slice(&family.to_ne_bytes());
        b[34..36].copy_from_slice(&sport.to_ne_bytes());
        b[36..38].copy_from_slice(&dport.to_ne_bytes());
        b[40..44].copy_from_slice(&[10, 0, 0, 1]);
        b[56..60].copy_from_slice(&[10, 0, 0, 2]);
        b
    }

    fn segments(mut b: Vec<u8>, n: u16) -> Vec<u8> {
        b[38..40].copy_from_slice(&n.to_ne_bytes());
        b
    }

    #[test]
    fn events_parse_and_count() {
        let mut stats = TcpStats::default();
        let dest: SocketAddr = "10.0.0.2:5432".parse().unwrap();
        for record in [
            raw(EVENT_CONNECT, 7, AF_INET, 40000, 5432, 1),
            raw(EVENT_CONNECT, 7, AF_INET, 40001, 5432, 2),
            raw(EVENT_CONNECT_FAILED, 7, AF_INET, 40002, 5432, 3),
            segments(raw(EVENT_RETRANSMIT, 0, AF_INET, 40000, 5432, 1), 3),
            raw(EVENT_CLOSE, 7, AF_INET, 40000, 5432, 1),
            raw(EVENT_ACCEPT, 0, AF_INET, 8080, 51000, 9),
            segments(raw(EVENT_RETRANSMIT, 0, AF_INET, 1, 2, 99), 1),
            raw(EVENT_OOM_KILL, 77, AF_INET, 0, 0, 0),
        ] {
            stats.record(&parse(&record).unwrap());
        }
        let o = &stats.outgoing[&(7, dest)];
        assert_eq!(
            (
                o.successful_connects,
                o.failed_connects,
                o.active,
                o.retransmits
            ),
            (2, 1, 1, 3)
        );
        assert_eq!(o.connect_time_ns, 3_000);
        assert_eq!(stats.accepts[&"10.0.0.1:8080".parse().unwrap()], 1);
        assert_eq!(stats.retransmits_unattributed, 1);
        assert_eq!((stats.oom_kills, stats.oom_victims.front()), (1, Some(&77)));
        assert!(parse(&[0u8; 10]).is_none());
        assert!(parse(&raw(42, 1, AF_INET, 1, 1, 1)).is_none());
        assert!(parse(&raw(EVENT_CONNECT, 1, 99, 1, 1, 1)).is_none());
    }

    #[test]
    fn mapped_ipv6_is_ipv4() {
        let mut b = raw(EVENT_CONNECT, 1, AF_INET6, 1, 80, 1);
        b[56..72].copy_from_slice(&Ipv4Addr::new(127, 0, 0, 1).to_ipv6_mapped().octets());
        let e = parse(&b).unwrap();
        assert_eq!(e.destination, "127.0.0.1:80".parse().unwrap());
    }
}
