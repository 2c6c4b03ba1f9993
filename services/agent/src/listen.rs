//! Which process listens on which TCP address of this node, from
//! `/proc/net/tcp{,6}` (sockets in LISTEN) and the processes' fds (whose
//! socket inode it is). Used to report listening ports per application and
//! to name the application behind a destination on this node.

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
};

const TCP_ESTABLISHED: &str = "01";
const TCP_LISTEN: &str = "0A";

/// A `/proc/net/tcp` address: little-endian hex words, then the port.
fn parse_address(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(
            u32::from_str_radix(ip, 16).ok()?.swap_bytes(),
        )),
        32 => {
            let mut octets = [0u8; 16];
            for (i, word) in octets.chunks_mut(4).enumerate() {
                let w = u32::from_str_radix(&ip[8 * i..8 * i + 8], 16).ok()?;
                word.copy_from_slice(&w.to_le_bytes());
            }
            let v6 = Ipv6Addr::from(octets);
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Sockets in `state` in a `/proc/net/tcp` file: (local, remote, inode).
fn sockets(table: &str, state: &str) -> Vec<(SocketAddr, SocketAddr, u64)> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.get(3) != Some(&state) {
                return None;
            }
            Some((
                parse_address(f.get(1)?)?,
                parse_address(f.get(2)?)?,
                f.get(9)?.parse().ok()?,
            ))
        })
        .collect()
}

/// Listening sockets in a `/proc/net/tcp` file: (address, inode).
pub fn listening(table: &str) -> Vec<(SocketAddr, u64)> {
    sockets(table, TCP_LISTEN)
        .into_iter()
        .map(|(local, _, inode)| (local, inode))
        .collect()
}

/// A connection that was open before the agent started: the eBPF programs
/// never saw its connect() or accept(), so the agent tells them about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenConnection {
    pub pid: u32,
    pub fd: u32,
    /// Accepted on a listening port of the process's node (else connected).
    pub server: bool,
    pub peer: SocketAddr,
}

/// Every established TCP connection of every process, with its fd and its
/// side: accepted when its local port is a listening port (on its address
/// or a wildcard), connected otherwise.
pub fn open_connections(proc_root: &Path) -> Vec<OpenConnection> {
    let mut established: HashMap<u64, (SocketAddr, SocketAddr)> = HashMap::new();
    let mut listening_on: Vec<SocketAddr> = Vec::new();
    for table in ["net/tcp", "net/tcp6"] {
        let text = std::fs::read_to_string(proc_root.join(table)).unwrap_or_default();
        for (local, remote, inode) in sockets(&text, TCP_ESTABLISHED) {
            established.insert(inode, (local, remote));
        }
        listening_on.extend(listening(&text).into_iter().map(|(a, _)| a));
    }
    let accepted = |local: SocketAddr| {
        listening_on
            .iter()
            .any(|l| l.port() == local.port() && (l.ip() == local.ip() || l.ip().is_unspecified()))
    };
    let mut out = Vec::new();
    for pid in std::fs::read_dir(proc_root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
    {
        let fds = proc_root.join(pid.to_string()).join("fd");
        for fd in std::fs::read_dir(fds).into_iter().flatten().flatten() {
            let Some(fd_number) = fd.file_name().to_str().and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let Some(inode) = socket_inode(&fd.path()) else {
                continue;
            };
            if let Some((local, remote)) = established.get(&inode) {
                out.push(OpenConnection {
                    pid,
                    fd: fd_number,
                    server: accepted(*local),
                    peer: *remote,
                });
            }
        }
    }
    out
}

/// The inode of the socket an fd link points to (`socket:[N]`).
fn socket_inode(fd: &Path) -> Option<u64> {
    std::fs::read_link(fd)
        .ok()?
        .to_str()?
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The node's own addresses, from `/proc/net/fib_trie` (v4 `host LOCAL`
/// entries) and `/proc/net/if_inet6`.
pub fn local_addresses(proc_root: &Path) -> HashSet<IpAddr> {
    let mut out = HashSet::new();
    let trie = std::fs::read_to_string(proc_root.join("net/fib_trie")).unwrap_or_default();
    let mut last: Option<IpAddr> = None;
    for line in trie.lines() {
        let line = line.trim_start_matches([' ', '|', '+', '-']).trim();
        if line.starts_with("/32 host LOCAL") {
            out.extend(last);
        }
        last = line.parse().ok();
    }
    let inet6 = std::fs::read_to_string(proc_root.join("net/if_inet6")).unwrap_or_default();
    for line in inet6.lines() {
        let Some(hex) = line.split_whitespace().next().filter(|h| h.len() == 32) else {
            continue;
        };
        if let Ok(bits) = u128::from_str_radix(hex, 16) {
            out.insert(IpAddr::V6(Ipv6Addr::from(bits)));
        }
    }
    out
}

/// Listening addresses and their processes, kept between collections:
/// only new listening sockets cost a walk over the processes' fds.
#[derive(Debug)]
pub struct Listeners {
    proc_root: PathBuf,
    /// inode → (address, pid).
    known: HashMap<u64, (SocketAddr, u32)>,
    /// Listening inodes no process holds (kernel listeners such as nfsd):
    /// not searched for again.
    unowned: HashSet<u64>,
    local: HashSet<IpAddr>,
}

impl Listeners {
    pub fn new(proc_root: &Path) -> Self {
        Self {
            proc_root: proc_root.to_owned(),
            known: HashMap::new(),
            unowned: HashSet::new(),
            local: HashSet::new(),
        }
    }

    /// Re-reads the listening sockets; returns (address, pid) pairs.
    pub fn refresh(&mut self) -> Vec<(SocketAddr, u32)> {
        let mut now: HashMap<u64, SocketAddr> = HashMap::new();
        for table in ["net/tcp", "net/tcp6"] {
            let text = std::fs::read_to_string(self.proc_root.join(table)).unwrap_or_default();
            now.extend(listening(&text).into_iter().map(|(a, i)| (i, a)));
        }
        self.known.retain(|inode, _| now.contains_key(inode));
        self.unowned.retain(|inode| now.contains_key(inode));
        let missing: HashSet<u64> = now
            .keys()
            .filter(|i| !self.known.contains_key(i) && !self.unowned.contains(i))
            .copied()
            .collect();
        if !missing.is_empty() {
            let owners = self.owners(&missing);
            for inode in missing {
                match owners.get(&inode) {
                    Some(pid) => {
                        self.known.insert(inode, (now[&inode], *pid));
                    }
                    None => {
                        self.unowned.insert(inode);
                    }
                }
            }
            self.local = local_addresses(&self.proc_root);
        }
        let mut out: Vec<_> = self.known.values().copied().collect();
        out.sort_unstable();
        out
    }

    /// Which process holds each of `inodes` (the first found, for a socket
    /// shared by a master and its workers: the lowest pid).
    fn owners(&self, inodes: &HashSet<u64>) -> HashMap<u64, u32> {
        let mut found = HashMap::new();
        let mut pids: Vec<u32> = std::fs::read_dir(&self.proc_root)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        pids.sort_unstable();
        for pid in pids {
            let fds = self.proc_root.join(pid.to_string()).join("fd");
            for fd in std::fs::read_dir(fds).into_iter().flatten().flatten() {
                if let Some(inode) = socket_inode(&fd.path()).filter(|i| inodes.contains(i)) {
                    found.entry(inode).or_insert(pid);
                }
            }
            if found.len() == inodes.len() {
                break;
            }
        }
        found
    }

    /// The process listening where `destination` points, if it is on this
    /// node: an exact listening address, or a wildcard one on the port
    /// when the destination is one of the node's addresses or loopback.
    pub fn owner_of(&self, destination: SocketAddr) -> Option<u32> {
        let ip = destination.ip();
        let here = ip.is_loopback() || self.local.contains(&ip);
        self.known
            .values()
            .filter(|(listen, _)| listen.port() == destination.port())
            .find(|(listen, _)| listen.ip() == ip || (here && listen.ip().is_unspecified()))
            .map(|(_, pid)| *pid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_tcp_lines_are_read() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   \
            0: 0100007F:15DF 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 473026 1 0 100 0 0 10 0\n   \
            1: 0100007F:8F3A 0100007F:15DF 01 00000000:00000000 00:00000000 00000000     0        0 473999 1 0 20 4 30 10 -1\n";
        assert_eq!(
            listening(v4),
            vec![("127.0.0.1:5599".parse().unwrap(), 473026)]
        );
        let v6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   \
            0: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1234 1 0 100 0 0 10 0\n   \
            1: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1235 1 0 100 0 0 10 0\n   \
            2: 0000000000000000FFFF00000100007F:1F91 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1236 1 0 100 0 0 10 0\n";
        assert_eq!(
            listening(v6),
            vec![
                ("[::]:80".parse().unwrap(), 1234),
                ("[::1]:8080".parse().unwrap(), 1235),
                ("127.0.0.1:8081".parse().unwrap(), 1236),
            ]
        );
    }

    #[test]
    fn this_process_is_found_listening() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let wildcard = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let wildcard_port = wildcard.local_addr().unwrap().port();
        let mut l = Listeners::new(Path::new("/proc"));
        let all = l.refresh();
        let me = std::process::id();
        assert!(all.contains(&(addr, me)), "{all:?}");
        assert_eq!(l.owner_of(addr), Some(me));
        let via_wildcard: SocketAddr = format!("127.0.0.1:{wildcard_port}").parse().unwrap();
        assert_eq!(l.owner_of(via_wildcard), Some(me));
        // Another host's address on that port is not this node's.
        let elsewhere: SocketAddr = format!("203.0.113.9:{wildcard_port}").parse().unwrap();
        assert_eq!(l.owner_of(elsewhere), None);
        drop(listener);
        assert!(!l.refresh().contains(&(addr, me)), "closed: forgotten");
    }

    #[test]
    fn open_connections_have_their_side() {
        use std::os::fd::AsRawFd;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let client = std::net::TcpStream::connect(addr).unwrap();
        let (server, _) = listener.accept().unwrap();
        let me = std::process::id();
        let mine: Vec<_> = open_connections(Path::new("/proc"))
            .into_iter()
            .filter(|c| c.pid == me)
            .collect();
        let find = |fd: i32| mine.iter().find(|c| c.fd == fd as u32).copied();
        let c = find(client.as_raw_fd()).expect("the client socket");
        assert!(!c.server);
        assert_eq!(c.peer, addr);
        let s = find(server.as_raw_fd()).expect("the accepted socket");
        assert!(s.server);
        assert_eq!(s.peer, client.local_addr().unwrap());
    }
}
