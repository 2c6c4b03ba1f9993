//! Requests and responses seen by `bpf/l7.bpf.c` on tracked sockets: the
//! first bytes of each, the process, the side (client or server), the
//! destination of client sockets and the latency measured in the kernel.
//! Protocols told from those bytes: HTTP/1.x, Redis, Memcached, Postgres,
//! MySQL/MariaDB and DNS. Labels come from bounded sets only (methods,
//! command names, SQL verbs, query types, result codes), never from paths,
//! keys or query text.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

/// `struct l7_event` of `bpf/l7.bpf.c`.
pub const EVENT_SIZE: usize = 600;
/// Bytes kept of a request and of a response (`REQ_PREFIX`, `RESP_PREFIX`).
pub const REQUEST_PREFIX: usize = 512;
pub const RESPONSE_PREFIX: usize = 16;
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
    /// When the request began, in the kernel's monotonic clock.
    pub start_ns: u64,
    /// The process's name, NUL-padded.
    pub comm: [u8; 16],
    pub latency_ns: u64,
    /// The request's first bytes (zero after `request_len`).
    pub request: [u8; REQUEST_PREFIX],
    pub request_len: usize,
    pub response: [u8; RESPONSE_PREFIX],
}

fn u16_ne(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

fn u32_ne(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_ne(b: &[u8], at: usize) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&b[at..at + 8]);
    u64::from_ne_bytes(raw)
}

const REQUEST_AT: usize = 72;

pub fn parse(b: &[u8]) -> Option<Exchange> {
    if b.len() != EVENT_SIZE {
        return None;
    }
    let side = match u32_ne(b, 24) {
        ROLE_CLIENT => Side::Client,
        ROLE_SERVER => Side::Server,
        _ => return None,
    };
    // The port comes from a sockaddr: network byte order.
    let port = u16::from_be_bytes([b[30], b[31]]);
    let destination = match u16_ne(b, 28) {
        2 => Some(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(b[32], b[33], b[34], b[35])),
            port,
        )),
        10 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&b[32..48]);
            let v6 = Ipv6Addr::from(octets);
            Some(SocketAddr::new(
                v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
                port,
            ))
        }
        _ => None,
    };
    let request_len = (u32_ne(b, 64) as usize).min(REQUEST_PREFIX);
    let mut comm = [0u8; 16];
    comm.copy_from_slice(&b[48..64]);
    let mut request = [0u8; REQUEST_PREFIX];
    request[..request_len].copy_from_slice(&b[REQUEST_AT..REQUEST_AT + request_len]);
    let mut response = [0u8; RESPONSE_PREFIX];
    response.copy_from_slice(&b[REQUEST_AT + REQUEST_PREFIX..EVENT_SIZE]);
    Some(Exchange {
        pid: u32_ne(b, 16),
        side,
        destination,
        start_ns: u64_ne(b, 0),
        latency_ns: u64_ne(b, 8),
        comm,
        request,
        request_len,
        response,
    })
}

/// `struct sock_info` of `bpf/l7.bpf.c`.
pub const SOCK_INFO_SIZE: usize = 40;

/// The `sockets` map entry for a connection opened before the agent
/// started, as the programs would have made it at connect() or accept().
pub fn sock_info(c: &crate::listen::OpenConnection) -> [u8; SOCK_INFO_SIZE] {
    let mut b = [0u8; SOCK_INFO_SIZE];
    // opened_ns (0..8) stays 0: not known.
    let role = if c.server { ROLE_SERVER } else { ROLE_CLIENT };
    b[8..12].copy_from_slice(&role.to_ne_bytes());
    b[14..16].copy_from_slice(&c.peer.port().to_be_bytes());
    match c.peer.ip() {
        IpAddr::V4(v4) => {
            b[12..14].copy_from_slice(&2u16.to_ne_bytes());
            b[16..20].copy_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            b[12..14].copy_from_slice(&10u16.to_ne_bytes());
            b[16..32].copy_from_slice(&v6.octets());
        }
    }
    b
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
    Postgres,
    Mysql,
    Dns,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Redis => "redis",
            Self::Memcached => "memcached",
            Self::Postgres => "postgres",
            Self::Mysql => "mysql",
            Self::Dns => "dns",
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

/// SQL statements counted by their first keyword; others are `other`.
const SQL_VERBS: &[&str] = &[
    "SELECT", "INSERT", "UPDATE", "DELETE", "WITH", "BEGIN", "START", "COMMIT", "ROLLBACK",
    "CREATE", "DROP", "ALTER", "TRUNCATE", "SET", "SHOW", "COPY", "EXPLAIN", "CALL", "REPLACE",
    "USE", "LOCK", "GRANT", "VACUUM", "ANALYZE",
];

/// The first keyword of an SQL text (after blanks), as a bounded label.
fn sql_verb(text: &[u8]) -> &'static str {
    let word: Vec<u8> = text
        .iter()
        .skip_while(|b| b.is_ascii_whitespace() || **b == b'(')
        .take_while(|b| b.is_ascii_alphabetic())
        .map(u8::to_ascii_uppercase)
        .collect();
    SQL_VERBS
        .iter()
        .find(|v| v.as_bytes() == word.as_slice())
        .copied()
        .unwrap_or("other")
}

fn u32_be(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Postgres frontend/backend protocol v3. Requests: a simple query
/// (`Q`, length, text) or the Parse of the extended protocol (`P`,
/// length, statement name, text). The reply's first message tells the
/// status: `E` (ErrorResponse) is an error. An error raised after rows
/// started to stream is beyond the bytes kept and counts as ok.
fn postgres(e: &Exchange) -> Option<(&'static str, &'static str)> {
    let r = &e.request;
    let length = u32_be(r, 1)?;
    // Messages are far smaller than 1 GiB; the top byte is zero.
    if !(5..1 << 30).contains(&length) {
        return None;
    }
    let text = match r[0] {
        b'Q' => &r[5..],
        b'P' => {
            let name_end = r[5..].iter().position(|&b| b == 0)?;
            &r[5 + name_end + 1..]
        }
        _ => return None,
    };
    let reply = &e.response;
    let reply_length = u32_be(reply, 1)?;
    if !(4..1 << 30).contains(&reply_length)
        || !matches!(
            reply[0],
            b'T' | b'C' | b'E' | b'I' | b'N' | b'1' | b'2' | b'n' | b't' | b'D' | b'S' | b'Z'
        )
    {
        return None;
    }
    let status = if reply[0] == b'E' { "error" } else { "ok" };
    Some((sql_verb(text), status))
}

/// MySQL/MariaDB client/server protocol: a command packet (3-byte
/// length, sequence 0, command byte) answered by a packet with sequence
/// 1 whose first byte is OK (0x00), ERR (0xff), or a result set's column
/// count.
fn mysql(e: &Exchange) -> Option<(&'static str, &'static str)> {
    let r = &e.request;
    let length = u32::from_le_bytes([r[0], r[1], r[2], 0]);
    if length == 0 || r[3] != 0 {
        return None;
    }
    let operation = match r[4] {
        0x03 => sql_verb(&r[5..]),
        0x16 => "PREPARE",
        0x17 => "EXECUTE",
        0x0e => "PING",
        0x02 => "USE",
        _ => return None,
    };
    let reply = &e.response;
    let reply_length = u32::from_le_bytes([reply[0], reply[1], reply[2], 0]);
    if reply_length == 0 || reply[3] != 1 {
        return None;
    }
    let status = match reply[4] {
        0xff => "error",
        0x00 | 0x01..=0xfb | 0xfe => "ok",
        _ => return None,
    };
    Some((operation, status))
}

const DNS_TYPES: &[(u16, &str)] = &[
    (1, "A"),
    (2, "NS"),
    (5, "CNAME"),
    (6, "SOA"),
    (12, "PTR"),
    (15, "MX"),
    (16, "TXT"),
    (28, "AAAA"),
    (33, "SRV"),
    (65, "HTTPS"),
    (255, "ANY"),
];

const DNS_RCODES: &[&str] = &[
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED",
];

/// A DNS query and its answer (over UDP, or over TCP after the 2-byte
/// length): the question's type and the answer's result code. The answer
/// must carry the query's id with the response bit set.
fn dns(e: &Exchange) -> Option<(&'static str, &'static str)> {
    [0usize, 2].into_iter().find_map(|at| {
        let q = e.request.get(at..e.request_len)?;
        let a = e.response.get(at..)?;
        if q.len() < 12 || a.len() < 4 || q[..2] != a[..2] {
            return None;
        }
        // Query: QR=0, opcode 0 (QUERY), one question. Answer: QR=1.
        if q[2] & 0xf8 != 0 || u16::from_be_bytes([q[4], q[5]]) != 1 || a[2] & 0x80 == 0 {
            return None;
        }
        // The question's name: labels up to the root label, then the type.
        let mut i = 12;
        loop {
            let len = usize::from(*q.get(i)?);
            if len == 0 {
                break;
            }
            if len > 63 {
                return None;
            }
            i += len + 1;
        }
        let qtype = u16::from_be_bytes([*q.get(i + 1)?, *q.get(i + 2)?]);
        let operation = DNS_TYPES
            .iter()
            .find(|(t, _)| *t == qtype)
            .map_or("other", |(_, name)| name);
        let status = DNS_RCODES
            .get(usize::from(a[3] & 0x0f))
            .copied()
            .unwrap_or("other");
        Some((operation, status))
    })
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
    if let Some((verb, status)) = postgres(e) {
        return Some((Protocol::Postgres, verb, status.to_owned()));
    }
    if let Some((operation, status)) = mysql(e) {
        return Some((Protocol::Mysql, operation, status.to_owned()));
    }
    if let Some((qtype, rcode)) = dns(e) {
        return Some((Protocol::Dns, qtype, rcode.to_owned()));
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

/// Upper bounds (seconds) of the latency histogram's buckets: Prometheus'
/// default buckets. A last, unbounded bucket is implied.
pub const LATENCY_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub requests: u64,
    pub latency_ns: u64,
    /// Requests per latency bucket (not cumulative); index
    /// `LATENCY_BUCKETS.len()` holds those slower than the last bound.
    pub buckets: [u64; LATENCY_BUCKETS.len() + 1],
}

impl Counts {
    pub fn add(&mut self, latency_ns: u64) {
        self.requests += 1;
        self.latency_ns = self.latency_ns.saturating_add(latency_ns);
        let seconds = latency_ns as f64 / 1e9;
        let bucket = LATENCY_BUCKETS.partition_point(|bound| *bound < seconds);
        self.buckets[bucket] += 1;
    }

    pub fn merge(&mut self, other: &Counts) {
        self.requests += other.requests;
        self.latency_ns = self.latency_ns.saturating_add(other.latency_ns);
        for (a, b) in self.buckets.iter_mut().zip(other.buckets) {
            *a += b;
        }
    }
}

#[derive(Debug, Default)]
pub struct L7Stats {
    pub requests: HashMap<L7Key, Counts>,
    /// Exchanges whose bytes were not a protocol parsed yet.
    pub unparsed: u64,
    /// HTTP exchanges waiting to be shipped as spans (at most
    /// [`MAX_PENDING_SPANS`]).
    pub spans: Vec<HttpSpan>,
    /// HTTP exchanges not kept as spans because that many were waiting.
    pub spans_dropped: u64,
}

/// Spans kept between two shipments; more are counted and dropped.
pub const MAX_PENDING_SPANS: usize = 20_000;

/// A W3C trace context (`traceparent: 00-<trace>-<parent>-<flags>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub parent_id: [u8; 8],
    pub sampled: bool,
}

/// One HTTP exchange, to become a span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSpan {
    pub pid: u32,
    pub side: Side,
    pub destination: Option<SocketAddr>,
    /// The process's name when the request was seen.
    pub process: String,
    /// Monotonic clock.
    pub start_ns: u64,
    pub latency_ns: u64,
    pub method: &'static str,
    pub status: u16,
    /// The request path without its query (at most 256 bytes).
    pub path: String,
    pub parent: Option<TraceParent>,
}

fn hex_bytes<const N: usize>(text: &[u8]) -> Option<[u8; N]> {
    if text.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in text.chunks(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

/// The `traceparent` header of an HTTP/1.x request, if it has a valid one
/// within the bytes kept (version 00; ids not all zero).
pub fn traceparent(request: &[u8]) -> Option<TraceParent> {
    let headers_end = request
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(request.len());
    request[..headers_end]
        .split(|b| *b == b'\n')
        .skip(1)
        .find_map(|line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let colon = line.iter().position(|b| *b == b':')?;
            if !line[..colon].eq_ignore_ascii_case(b"traceparent") {
                return None;
            }
            let value = line[colon + 1..].trim_ascii();
            let mut fields = value.split(|b| *b == b'-');
            let (version, trace, parent, flags) = (
                fields.next()?,
                fields.next()?,
                fields.next()?,
                fields.next()?,
            );
            if version != b"00" || fields.next().is_some() {
                return None;
            }
            let trace_id = hex_bytes::<16>(trace).filter(|t| *t != [0; 16])?;
            let parent_id = hex_bytes::<8>(parent).filter(|p| *p != [0; 8])?;
            let [flags] = hex_bytes::<1>(flags)?;
            Some(TraceParent {
                trace_id,
                parent_id,
                sampled: flags & 1 == 1,
            })
        })
}

/// The path of an HTTP/1.x request line, without the query.
fn http_path(request: &[u8]) -> String {
    let line_end = request
        .iter()
        .position(|b| *b == b'\r' || *b == b'\n')
        .unwrap_or(request.len());
    let target = request[..line_end]
        .split(|b| *b == b' ')
        .nth(1)
        .unwrap_or_default();
    let path = target.split(|b| *b == b'?').next().unwrap_or_default();
    String::from_utf8_lossy(&path[..path.len().min(256)]).into_owned()
}

impl L7Stats {
    pub fn record(&mut self, e: &Exchange) {
        match classify(e) {
            Some((protocol, operation, status)) => {
                if protocol == Protocol::Http {
                    if self.spans.len() < MAX_PENDING_SPANS {
                        let request = &e.request[..e.request_len];
                        self.spans.push(HttpSpan {
                            pid: e.pid,
                            side: e.side,
                            destination: e.destination,
                            process: String::from_utf8_lossy(
                                e.comm.split(|b| *b == 0).next().unwrap_or_default(),
                            )
                            .into_owned(),
                            start_ns: e.start_ns,
                            latency_ns: e.latency_ns,
                            method: operation,
                            status: status.parse().unwrap_or(0),
                            path: http_path(request),
                            parent: traceparent(request),
                        });
                    } else {
                        self.spans_dropped += 1;
                    }
                }
                let key = L7Key {
                    pid: e.pid,
                    side: e.side,
                    destination: e.destination.filter(|_| e.side == Side::Client),
                    protocol,
                    operation,
                    status,
                };
                self.requests.entry(key).or_default().add(e.latency_ns);
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

    #[test]
    fn latency_lands_in_its_bucket() {
        let mut c = Counts::default();
        for ms in [1, 5, 6, 300, 20_000] {
            c.add(ms * 1_000_000);
        }
        // <=0.005: 1 ms and 5 ms (bounds are inclusive); <=0.01: 6 ms;
        // <=0.5: 300 ms; beyond 10 s: 20 s.
        assert_eq!(c.buckets[0], 2);
        assert_eq!(c.buckets[1], 1);
        assert_eq!(c.buckets[6], 1);
        assert_eq!(c.buckets[LATENCY_BUCKETS.len()], 1);
        assert_eq!(c.requests, 5);
    }

    fn raw(role: u32, request: &[u8], response: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; EVENT_SIZE];
        b[0..8].copy_from_slice(&7_000u64.to_ne_bytes());
        b[8..16].copy_from_slice(&2_000_000u64.to_ne_bytes());
        b[16..20].copy_from_slice(&42u32.to_ne_bytes());
        b[24..28].copy_from_slice(&role.to_ne_bytes());
        b[28..30].copy_from_slice(&2u16.to_ne_bytes());
        b[30..32].copy_from_slice(&8080u16.to_be_bytes());
        b[32..36].copy_from_slice(&[127, 0, 0, 1]);
        b[48..54].copy_from_slice(b"nginx\0");
        b[64..68].copy_from_slice(&(request.len() as u32).to_ne_bytes());
        b[REQUEST_AT..REQUEST_AT + request.len()].copy_from_slice(request);
        // Bytes after the request's length are stale, not the request's.
        b[REQUEST_AT + request.len()..REQUEST_AT + REQUEST_PREFIX].fill(b'Z');
        let at = REQUEST_AT + REQUEST_PREFIX;
        b[at..at + response.len()].copy_from_slice(response);
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
        let e = parse(&raw(
            ROLE_CLIENT,
            b"GET / HTTP/1.1\r\n",
            b"HTTP/1.1 200 OK\r",
        ))
        .unwrap();
        assert_eq!((e.request_len, e.start_ns), (16, 7_000));
        assert_eq!(&e.comm[..6], b"nginx\0");
        assert!(
            e.request[16..].iter().all(|b| *b == 0),
            "stale bytes cleared"
        );
    }

    fn classify_bytes(request: &[u8], response: &[u8]) -> Option<(Protocol, &'static str, String)> {
        let raw = raw(
            ROLE_CLIENT,
            &request[..request.len().min(REQUEST_PREFIX)],
            &response[..response.len().min(RESPONSE_PREFIX)],
        );
        classify(&parse(&raw).unwrap())
    }

    fn pg(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![kind];
        m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    fn my(seq: u8, payload: &[u8]) -> Vec<u8> {
        let mut m = (payload.len() as u32).to_le_bytes()[..3].to_vec();
        m.push(seq);
        m.extend_from_slice(payload);
        m
    }

    fn dns_query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
        let mut m = id.to_be_bytes().to_vec();
        m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        for label in name.split('.') {
            m.push(label.len() as u8);
            m.extend_from_slice(label.as_bytes());
        }
        m.push(0);
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&[0, 1]);
        m
    }

    #[test]
    fn postgres_mysql_and_dns_are_told_apart() {
        let ok = Some((Protocol::Postgres, "SELECT", "ok".to_owned()));
        assert_eq!(
            classify_bytes(&pg(b'Q', b"select 1\0"), &pg(b'T', b"\0\x01?column?")),
            ok
        );
        assert_eq!(
            classify_bytes(
                &pg(b'Q', b"  INSERT INTO t VALUES (1)\0"),
                &pg(b'E', b"SERROR\0")
            ),
            Some((Protocol::Postgres, "INSERT", "error".to_owned()))
        );
        assert_eq!(
            classify_bytes(&pg(b'P', b"s1\0UPDATE t SET a=1\0"), &pg(b'1', b"")),
            Some((Protocol::Postgres, "UPDATE", "ok".to_owned()))
        );
        // The startup message is not a query.
        let startup = [0, 0, 0, 8, 0, 3, 0, 0];
        assert_eq!(classify_bytes(&startup, &pg(b'R', &[0, 0, 0, 0])), None);

        assert_eq!(
            classify_bytes(&my(0, b"\x03SELECT 1"), &my(1, b"\x01")),
            Some((Protocol::Mysql, "SELECT", "ok".to_owned()))
        );
        assert_eq!(
            classify_bytes(
                &my(0, b"\x03delete from nope"),
                &my(1, b"\xff\x7a\x04#42S02")
            ),
            Some((Protocol::Mysql, "DELETE", "error".to_owned()))
        );
        assert_eq!(
            classify_bytes(&my(0, b"\x0e"), &my(1, b"\x00\x00\x00")),
            Some((Protocol::Mysql, "PING", "ok".to_owned()))
        );
        // The handshake response (sequence 1) is not a command.
        assert_eq!(
            classify_bytes(&my(1, b"\x85\xa6\xff\x01"), &my(2, b"\x00")),
            None
        );

        let query = dns_query(0xbeef, "ok.test", 28);
        let mut answer = query.clone();
        answer[2] = 0x85;
        answer[3] = 0x80;
        assert_eq!(
            classify_bytes(&query, &answer),
            Some((Protocol::Dns, "AAAA", "NOERROR".to_owned()))
        );
        answer[3] = 0x83;
        assert_eq!(
            classify_bytes(&query, &answer),
            Some((Protocol::Dns, "AAAA", "NXDOMAIN".to_owned()))
        );
        // Over TCP: a 2-byte length first.
        let mut tcp_query = (query.len() as u16).to_be_bytes().to_vec();
        tcp_query.extend_from_slice(&query);
        let mut tcp_answer = (answer.len() as u16).to_be_bytes().to_vec();
        tcp_answer.extend_from_slice(&answer);
        assert_eq!(
            classify_bytes(&tcp_query, &tcp_answer),
            Some((Protocol::Dns, "AAAA", "NXDOMAIN".to_owned()))
        );
        // An answer with another id is not this query's.
        answer[0] ^= 1;
        assert_eq!(classify_bytes(&query, &answer), None);
        // Long names fit in the bytes kept; cut-off ones are not counted.
        let long = dns_query(7, &["x".repeat(63), "y".repeat(63)].join("."), 1);
        let mut long_answer = long.clone();
        long_answer[2] = 0x81;
        assert_eq!(
            classify_bytes(&long, &long_answer),
            Some((Protocol::Dns, "A", "NOERROR".to_owned()))
        );
        assert_eq!(classify_bytes(&long[..100], &long_answer), None);
        assert_eq!(classify_bytes(&long[..5], &long_answer), None);
    }

    /// Kernel bytes are whatever the process sent: no input may panic.
    #[test]
    fn arbitrary_bytes_never_panic() {
        let seeds: [&[u8]; 6] = [
            b"GET / HTTP/1.1\r\n",
            b"*2\r\n$3\r\nGET\r\n",
            b"get k\r\n",
            &pg(b'Q', b"select 1\0"),
            &my(0, b"\x03select 1"),
            &dns_query(1, "a.b", 1),
        ];
        for i in 0..200_000u32 {
            let mut request = seeds[i as usize % seeds.len()].to_vec();
            let len = rand::random_range(0..=REQUEST_PREFIX.min(request.len() + 8));
            request.resize(len, 0);
            for _ in 0..rand::random_range(0..4) {
                if !request.is_empty() {
                    let at = rand::random_range(0..request.len());
                    request[at] = rand::random();
                }
            }
            let response: Vec<u8> = (0..rand::random_range(0..=RESPONSE_PREFIX))
                .map(|_| rand::random())
                .collect();
            let mut raw = raw(ROLE_CLIENT, &request, &response);
            // The header too: lengths beyond the buffer, odd roles and
            // families.
            if i % 7 == 0 {
                let at = rand::random_range(0..REQUEST_AT);
                raw[at] = rand::random();
            }
            if let Some(e) = parse(&raw) {
                assert!(e.request_len <= REQUEST_PREFIX);
                let _ = classify(&e);
            }
        }
    }

    #[test]
    fn traceparent_and_path_are_read_from_the_request() {
        let t = "0af7651916cd43dd8448eb211c80319c";
        let p = "b7ad6b7169203331";
        let request = format!(
            "GET /api/orders?id=7 HTTP/1.1\r\nHost: shop\r\nTraceParent: 00-{t}-{p}-01\r\n\r\n"
        );
        let found = traceparent(request.as_bytes()).unwrap();
        assert_eq!(hex(&found.trace_id), t);
        assert_eq!(hex(&found.parent_id), p);
        assert!(found.sampled);
        assert_eq!(http_path(request.as_bytes()), "/api/orders");
        for bad in [
            format!("GET / HTTP/1.1\r\ntraceparent: 01-{t}-{p}-01\r\n\r\n"),
            format!(
                "GET / HTTP/1.1\r\ntraceparent: 00-{}-{p}-01\r\n\r\n",
                "0".repeat(32)
            ),
            format!("GET / HTTP/1.1\r\ntraceparent: 00-{t}-{p}\r\n\r\n"),
            format!("GET / HTTP/1.1\r\ntraceparent: 00-{t}-xyz-01\r\n\r\n"),
            // In the body, not a header.
            format!("POST / HTTP/1.1\r\n\r\ntraceparent: 00-{t}-{p}-01\r\n"),
        ] {
            assert_eq!(traceparent(bad.as_bytes()), None, "{bad}");
        }
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}
