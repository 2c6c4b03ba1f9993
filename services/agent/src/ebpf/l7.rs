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
pub enum Protocol {
    Http,
    Redis,
    Memcached,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Redis => "redis",
            Self::Memcached => "memcached",
        }
    }
}

/// Redis commands counted by name; others count as `other`, so that a
/// client cannot make up label values.
const REDIS_COMMANDS: &[&str] = &[
    "GET", "SET", "DEL", "EXISTS", "EXPIRE", "TTL", "INCR", "DECR", "INCRBY", "MGET", "MSET",
    "HGET", "HSET", "HGETALL", "HDEL", "LPUSH", "RPUSH", "LPOP", "RPOP", "LRANGE", "SADD", "SREM",
    "SMEMBERS", "ZADD", "ZRANGE", "ZREM", "PING", "AUTH", "SELECT", "INFO", "KEYS", "SCAN",
    "PUBLISH", "EVAL", "EVALSHA", "MULTI", "EXEC", "SETEX", "GETSET", "APPEND",
];

/// A Redis (RESP) request: `*<n>\r\n$<len>\r\n<COMMAND>`; the reply is
/// an error when it starts with `-`.
fn redis(e: &Exchange) -> Option<(&'static str, &'static str)> {
    let r = &e.request;
    if r[0] != b'*' {
        return None;
    }
    let after_count = r.iter().position(|&b| b == b'\n')? + 1;
    if r.get(after_count) != Some(&b'$') {
        return None;
    }
    let name_start = after_count + r[after_count..].iter().position(|&b| b == b'\n')? + 1;
    let name: Vec<u8> = r[name_start..]
        .iter()
        .take_while(|b| b.is_ascii_alphabetic())
        .map(u8::to_ascii_uppercase)
        .collect();
    if name.is_empty() {
        return None;
    }
    if !matches!(
        e.response[0],
        b'+' | b'-' | b':' | b'$' | b'*' | b'_' | b'#' | b',' | b'%' | b'~'
    ) {
        return None;
    }
    let command = REDIS_COMMANDS
        .iter()
        .find(|c| c.as_bytes() == name.as_slice())
        .copied()
        .unwrap_or("other");
    let status = if e.response[0] == b'-' { "error" } else { "ok" };
    Some((command, status))
}

const MEMCACHED_COMMANDS: &[&str] = &[
    "get",
    "gets",
    "set",
    "add",
    "replace",
    "append",
    "prepend",
    "cas",
    "delete",
    "incr",
    "decr",
    "touch",
    "gat",
    "gats",
    "flush_all",
    "version",
    "stats",
];

/// A Memcached text-protocol request (`get key`, `set key 0 0 5`, …); the
/// reply is an error for `ERROR`, `CLIENT_ERROR`, `SERVER_ERROR`.
fn memcached(e: &Exchange) -> Option<(&'static str, &'static str)> {
    let word: Vec<u8> = e
        .request
        .iter()
        .take_while(|b| b.is_ascii_lowercase() || **b == b'_')
        .copied()
        .collect();
    let command = MEMCACHED_COMMANDS
        .iter()
        .find(|c| c.as_bytes() == word.as_slice())?;
    if !matches!(e.request.get(word.len()), Some(b' ' | b'\r')) {
        return None;
    }
    let r = &e.response;
    let known = [
        &b"VALUE"[..],
        b"END",
        b"STORED",
        b"NOT_STORED",
        b"EXISTS",
        b"NOT_FOUND",
        b"DELETED",
        b"TOUCHED",
        b"OK",
        b"VERSION",
        b"STAT",
        b"ERROR",
        b"CLIENT_ERROR",
        b"SERVER_ERROR",
    ];
    if !known.iter().any(|k| r.starts_with(k)) && !r[0].is_ascii_digit() {
        return None;
    }
    let status = if r.starts_with(b"ERROR")
        || r.starts_with(b"CLIENT_ERROR")
        || r.starts_with(b"SERVER_ERROR")
    {
        "error"
    } else {
        "ok"
    };
    Some((command, status))
}

/// What an exchange was: protocol, operation and status, all from bounded
/// sets (methods, command names, codes), never from free text.
pub fn classify(e: &Exchange) -> Option<(Protocol, &'static str, String)> {
    if let Some((method, status)) = http(e) {
        return Some((Protocol::Http, method, status.to_string()));
    }
    if let Some((command, status)) = redis(e) {
        return Some((Protocol::Redis, command, status.to_owned()));
    }
    if let Some((command, status)) = memcached(e) {
        return Some((Protocol::Memcached, command, status.to_owned()));
    }
    None
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct L7Key {
    pub pid: u32,
    pub side: Side,
    pub destination: Option<SocketAddr>,
    pub protocol: Protocol,
    pub operation: &'static str,
    pub status: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub requests: u64,
    pub latency_ns: u64,
}

#[derive(Debug, Default)]
pub struct L7Stats {
    pub requests: HashMap<L7Key, Counts>,
    /// Exchanges whose bytes were not a protocol parsed yet.
    pub unparsed: u64,
}

impl L7Stats {
    pub fn record(&mut self, e: &Exchange) {
        match classify(e) {
            Some((protocol, operation, status)) => {
                let key = L7Key {
                    pid: e.pid,
                    side: e.side,
                    destination: e.destination.filter(|_| e.side == Side::Client),
                    protocol,
                    operation,
                    status,
                };
                let c = self.requests.entry(key).or_default();
                c.requests += 1;
                c.latency_ns = c.latency_ns.saturating_add(e.latency_ns);
            }
            None => self.unparsed += 1,
        }
    }

    /// Requests counted for a (pid, side, destination, protocol, operation,
    /// status); 0 when none.
    pub fn count(
        &self,
        pid: u32,
        side: Side,
        destination: Option<SocketAddr>,
        protocol: Protocol,
        operation: &str,
        status: &str,
    ) -> u64 {
        self.requests
            .iter()
            .filter(|(k, _)| {
                k.pid == pid
                    && k.side == side
                    && k.destination == destination
                    && k.protocol == protocol
                    && k.operation == operation
                    && k.status == status
            })
            .map(|(_, c)| c.requests)
            .sum()
    }

    pub fn forget_exited(&mut self, alive: impl Fn(u32) -> bool) {
        self.requests.retain(|k, _| alive(k.pid));
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
    fn exchanges_are_classified_and_counted() {
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
            (ROLE_CLIENT, b"*1\r\n$4\r\nPING\r\n", b"+PONG\r\n"),
            (ROLE_CLIENT, b"*2\r\n$3\r\nget\r\n$1", b"$-1\r\n"),
            (ROLE_CLIENT, b"*1\r\n$7\r\nMADEUPX", b"-ERR unknown com"),
            (ROLE_CLIENT, b"get user:1\r\n", b"END\r\n"),
            (ROLE_CLIENT, b"set k 0 0 5\r\nhel", b"STORED\r\n"),
            (ROLE_CLIENT, b"bogus\r\n", b"ERROR\r\n"),
            (ROLE_CLIENT, b"GETX / HTTP/1.1\r", b"HTTP/1.1 200 OK\r"),
        ] {
            stats.record(&parse(&raw(role, req, resp)).unwrap());
        }
        let dest = Some("127.0.0.1:8080".parse().unwrap());
        let c = |side, destination, protocol, op, status| {
            stats.count(42, side, destination, protocol, op, status)
        };
        assert_eq!(c(Side::Client, dest, Protocol::Http, "GET", "200"), 2);
        assert_eq!(c(Side::Client, dest, Protocol::Http, "POST", "503"), 1);
        assert_eq!(c(Side::Server, None, Protocol::Http, "GET", "404"), 1);
        assert_eq!(c(Side::Client, dest, Protocol::Redis, "PING", "ok"), 1);
        assert_eq!(c(Side::Client, dest, Protocol::Redis, "GET", "ok"), 1);
        assert_eq!(c(Side::Client, dest, Protocol::Redis, "other", "error"), 1);
        assert_eq!(c(Side::Client, dest, Protocol::Memcached, "get", "ok"), 1);
        assert_eq!(c(Side::Client, dest, Protocol::Memcached, "set", "ok"), 1);
        assert_eq!(
            stats.unparsed, 2,
            "an unknown memcached verb and a made-up method"
        );
        let latency: u64 = stats
            .requests
            .iter()
            .filter(|(k, _)| k.protocol == Protocol::Http && k.status == "200")
            .map(|(_, c)| c.latency_ns)
            .sum();
        assert_eq!(latency, 4_000_000);
        assert!(parse(&[0u8; 3]).is_none());
    }
}
