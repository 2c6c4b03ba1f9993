//! Requests and responses seen by `bpf/l7.bpf.c` on tracked sockets: the
//! first bytes of each, the process, the side (client or server), the
//! destination of client sockets and the latency measured in the kernel.
//! Today the protocol parsed is HTTP/1.x (method and status; no paths, so
//! no unbounded labels).

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

/// `struct l7_event` of `bpf/l7.bpf.c`.
pub const EVENT_SIZE: usize = 72;
const PREFIX: usize = 16;
const ROLE_CLIENT: u32 = 1;
const ROLE_SERVER: u32 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    Client,
    Server,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Server => "server",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    pub pid: u32,
    pub side: Side,
    /// Where a client socket was connected to.
    pub destination: Option<SocketAddr>,
    pub latency_ns: u64,
    pub request: [u8; PREFIX],
    pub response: [u8; PREFIX],
}

fn u16_ne(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

fn u32_ne(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub fn parse(b: &[u8]) -> Option<Exchange> {
    if b.len() != EVENT_SIZE {
        return None;
    }
    let mut latency = [0u8; 8];
    latency.copy_from_slice(&b[0..8]);
    let side = match u32_ne(b, 16) {
        ROLE_CLIENT => Side::Client,
        ROLE_SERVER => Side::Server,
        _ => return None,
    };
    // The port comes from a sockaddr: network byte order.
    let port = u16::from_be_bytes([b[22], b[23]]);
    let destination = match u16_ne(b, 20) {
        2 => Some(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(b[24], b[25], b[26], b[27])),
            port,
        )),
        10 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&b[24..40]);
            let v6 = Ipv6Addr::from(octets);
            Some(SocketAddr::new(
                v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
                port,
            ))
        }
        _ => None,
    };
    let mut request = [0u8; PREFIX];
    request.copy_from_slice(&b[40..56]);
    let mut response = [0u8; PREFIX];
    response.copy_from_slice(&b[56..72]);
    Some(Exchange {
        pid: u32_ne(b, 8),
        side,
        destination,
        latency_ns: u64::from_ne_bytes(latency),
        request,
        response,
    })
}

const METHODS: &[&str] = &[
    "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE",
];

/// An HTTP/1.x exchange: the method and the status code.
pub fn http(exchange: &Exchange) -> Option<(&'static str, u16)> {
    let method = METHODS.iter().find(|m| {
        exchange.request.starts_with(m.as_bytes()) && exchange.request.get(m.len()) == Some(&b' ')
    })?;
    let r = &exchange.response;
    if !(r.starts_with(b"HTTP/1.0 ") || r.starts_with(b"HTTP/1.1 ")) {
        return None;
    }
    let digits = &r[9..12];
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let status = digits
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    Some((method, status))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HttpKey {
    pub pid: u32,
    pub side: Side,
    pub destination: Option<SocketAddr>,
    pub method: &'static str,
    pub status: u16,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub requests: u64,
    pub latency_ns: u64,
}

#[derive(Debug, Default)]
pub struct L7Stats {
    pub http: HashMap<HttpKey, Counts>,
    /// Exchanges whose bytes were not a protocol parsed yet.
    pub unparsed: u64,
}

impl L7Stats {
    pub fn record(&mut self, e: &Exchange) {
        match http(e) {
            Some((method, status)) => {
                let key = HttpKey {
                    pid: e.pid,
                    side: e.side,
                    destination: e.destination.filter(|_| e.side == Side::Client),
                    method,
                    status,
                };
                let c = self.http.entry(key).or_default();
                c.requests += 1;
                c.latency_ns = c.latency_ns.saturating_add(e.latency_ns);
            }
            None => self.unparsed += 1,
        }
    }

    pub fn forget_exited(&mut self, alive: impl Fn(u32) -> bool) {
        self.http.retain(|k, _| alive(k.pid));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(role: u32, request: &[u8], response: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; EVENT_SIZE];
        b[0..8].copy_from_slice(&2_000_000u64.to_ne_bytes());
        b[8..12].copy_from_slice(&42u32.to_ne_bytes());
        b[16..20].copy_from_slice(&role.to_ne_bytes());
        b[20..22].copy_from_slice(&2u16.to_ne_bytes());
        b[22..24].copy_from_slice(&8080u16.to_be_bytes());
        b[24..28].copy_from_slice(&[127, 0, 0, 1]);
        b[40..40 + request.len()].copy_from_slice(request);
        b[56..56 + response.len()].copy_from_slice(response);
        b
    }

    #[test]
    fn http_exchanges_are_counted_by_method_and_status() {
        let mut stats = L7Stats::default();
        for (role, req, resp) in [
            (
                ROLE_CLIENT,
                &b"GET /a HTTP/1.1\r"[..],
                &b"HTTP/1.1 200 OK\r"[..],
            ),
            (ROLE_CLIENT, b"GET /b HTTP/1.1\r", b"HTTP/1.1 200 OK\r"),
            (ROLE_CLIENT, b"POST /c HTTP/1.1", b"HTTP/1.0 503 Ser"),
            (ROLE_SERVER, b"GET /a HTTP/1.1\r", b"HTTP/1.1 404 Not"),
            (ROLE_CLIENT, b"GETX / HTTP/1.1\r", b"HTTP/1.1 200 OK\r"),
            (ROLE_CLIENT, b"*1\r\n$4\r\nPING\r\n", b"HTTP/1.1 200 OK\r"),
        ] {
            stats.record(&parse(&raw(role, req, resp)).unwrap());
        }
        let dest = Some("127.0.0.1:8080".parse().unwrap());
        let key = |side, destination, method, status| HttpKey {
            pid: 42,
            side,
            destination,
            method,
            status,
        };
        assert_eq!(
            stats.http[&key(Side::Client, dest, "GET", 200)],
            Counts {
                requests: 2,
                latency_ns: 4_000_000
            }
        );
        assert_eq!(
            stats.http[&key(Side::Client, dest, "POST", 503)].requests,
            1
        );
        assert_eq!(stats.http[&key(Side::Server, None, "GET", 404)].requests, 1);
        assert_eq!(stats.unparsed, 2);
        assert!(parse(&[0u8; 3]).is_none());
    }
}
