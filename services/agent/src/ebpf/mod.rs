//! The agent's eBPF collectors and what this machine allows them. Programs
//! are C with CO-RE (`bpf/*.bpf.c`), compiled by clang in `build.rs` and
//! loaded with aya against the running kernel's BTF. Without root, BTF or
//! clang at build time, the agent says why and keeps its /proc collectors.
//!
//! Today: the TCP lifecycle ([`tcp`]) from `sock:inet_sock_set_state` and
//! `tcp:tcp_retransmit_skb`, and HTTP/1.x requests ([`l7`]) from the
//! connect/accept/read/write/sendto/recvfrom/close syscall tracepoints.

pub mod l7;
pub mod profile;
pub mod tcp;

use std::{collections::HashMap, fmt, path::Path};

/// Where the kernel publishes its BTF, which CO-RE programs need.
pub const BTF_PATH: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Support {
    /// Root and BTF are there; eBPF programs could load.
    Available,
    Unavailable(String),
}

impl fmt::Display for Support {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Available => f.write_str("eBPF possible here (root, BTF)"),
            Self::Unavailable(reason) => write!(f, "eBPF unavailable: {reason}; using /proc"),
        }
    }
}

/// Checks privileges and BTF.
pub fn probe() -> Support {
    match procfs::process::Process::myself().and_then(|p| p.status()) {
        Ok(status) if status.euid != 0 => {
            return Support::Unavailable(format!("not running as root (euid {})", status.euid));
        }
        Ok(_) => {}
        Err(e) => return Support::Unavailable(format!("cannot read own credentials: {e}")),
    }
    if !Path::new(BTF_PATH).exists() {
        return Support::Unavailable(format!("the kernel has no BTF at {BTF_PATH}"));
    }
    Support::Available
}

/// What the agent will collect here, for `vigil up`'s summary.
pub fn status() -> String {
    match probe() {
        Support::Unavailable(reason) => format!("eBPF unavailable: {reason}; using /proc"),
        Support::Available if cfg!(vigil_ebpf) => {
            "eBPF (root, BTF): TCP connects, accepts, retransmits; HTTP (also over OpenSSL TLS), Redis, Memcached, Postgres, MySQL, DNS requests; HTTP spans; /proc and cgroups for resources".to_owned()
        }
        Support::Available => format!(
            "eBPF unavailable: {}; using /proc",
            env!("AGENT_EBPF_BUILD_MISSING")
        ),
    }
}

/// Where tracepoints are found; the agent mounts tracefs there when it is
/// missing (aya's attach fails with "tracefs not found" otherwise).
pub const TRACEFS: &str = "/sys/kernel/tracing";

/// Mounts tracefs at [`TRACEFS`] unless it is there already.
pub fn ensure_tracefs() -> Result<(), String> {
    if Path::new(TRACEFS).join("events").is_dir() {
        return Ok(());
    }
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tracefs", "nodev", TRACEFS])
        .output()
        .map_err(|e| format!("tracefs is not mounted at {TRACEFS} and `mount` cannot run: {e}"))?;
    if !mounted.status.success() {
        return Err(format!(
            "tracefs is not mounted at {TRACEFS} and mounting it failed: {}",
            String::from_utf8_lossy(&mounted.stderr).trim()
        ));
    }
    Ok(())
}

/// `tcp.bpf.c`'s programs: (program, tracepoint category, tracepoint).
pub const TCP_PROGRAMS: &[(&str, &str, &str)] = &[
    ("inet_sock_set_state", "sock", "inet_sock_set_state"),
    ("tcp_retransmit_skb", "tcp", "tcp_retransmit_skb"),
    ("mark_victim", "oom", "mark_victim"),
];

/// `l7.bpf.c`'s programs, each on the `syscalls` tracepoint of its name.
pub const L7_SYSCALLS: &[&str] = &[
    "sys_enter_connect",
    "sys_exit_connect",
    "sys_exit_accept",
    "sys_exit_accept4",
    "sys_enter_close",
    "sys_enter_dup",
    "sys_exit_dup",
    "sys_enter_dup2",
    "sys_exit_dup2",
    "sys_enter_dup3",
    "sys_exit_dup3",
    "sys_enter_fcntl",
    "sys_exit_fcntl",
    "sys_enter_write",
    "sys_exit_write",
    "sys_enter_read",
    "sys_exit_read",
    "sys_enter_sendto",
    "sys_exit_sendto",
    "sys_enter_recvfrom",
    "sys_exit_recvfrom",
    "sys_enter_writev",
    "sys_exit_writev",
    "sys_enter_readv",
    "sys_exit_readv",
    "sys_enter_sendmsg",
    "sys_exit_sendmsg",
    "sys_enter_recvmsg",
    "sys_exit_recvmsg",
    "sys_enter_sendmmsg",
    "sys_exit_sendmmsg",
    "sys_enter_recvmmsg",
    "sys_exit_recvmmsg",
];

/// Programs loaded and attached, with the ring buffer they fill.
#[cfg(vigil_ebpf)]
struct Attached {
    ebpf: aya::Ebpf,
    events: aya::maps::RingBuf<aya::maps::MapData>,
}

/// Loads `object` against the kernel's BTF, attaches each (program,
/// category, tracepoint) and takes the ring buffer `ring`.
#[cfg(vigil_ebpf)]
fn attach(object: &[u8], programs: &[(&str, &str, &str)], ring: &str) -> Result<Attached, String> {
    if let Support::Unavailable(reason) = probe() {
        return Err(reason);
    }
    ensure_tracefs()?;
    let btf = aya::Btf::from_sys_fs().map_err(|e| format!("cannot read kernel BTF: {e}"))?;
    // Task storage (per-thread syscall state) is not a map aya reads;
    // only the programs use it.
    let mut ebpf = aya::EbpfLoader::new()
        .btf(Some(&btf))
        .allow_unsupported_maps()
        .load(object)
        .map_err(|e| format!("cannot load eBPF programs: {e}"))?;
    for (program, category, name) in programs {
        let tracepoint: &mut aya::programs::TracePoint = ebpf
            .program_mut(program)
            .ok_or_else(|| format!("program {program} missing from the object"))?
            .try_into()
            .map_err(|e| format!("program {program}: {e}"))?;
        tracepoint
            .load()
            .map_err(|e| format!("cannot load {program}: {e}"))?;
        tracepoint
            .attach(category, name)
            .map_err(|e| format!("cannot attach to {category}:{name}: {e}"))?;
    }
    let events = ebpf
        .take_map(ring)
        .ok_or_else(|| format!("ring buffer `{ring}` missing from the object"))?;
    let events =
        aya::maps::RingBuf::try_from(events).map_err(|e| format!("ring buffer `{ring}`: {e}"))?;
    Ok(Attached { ebpf, events })
}

/// Where distributions put OpenSSL 3 and 1.1.
pub const OPENSSL_LIBRARIES: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/libssl.so.3",
    "/usr/lib/x86_64-linux-gnu/libssl.so.1.1",
    "/usr/lib64/libssl.so.3",
    "/usr/lib64/libssl.so.1.1",
    "/usr/lib/libssl.so.3",
    "/usr/lib/libssl.so.1.1",
];

/// (program, function, uretprobe) attached in every OpenSSL library.
const OPENSSL_PROBES: &[(&str, &str)] = &[
    ("ssl_enter", "SSL_write"),
    ("ssl_enter", "SSL_read"),
    ("ssl_ex_enter", "SSL_write_ex"),
    ("ssl_ex_enter", "SSL_read_ex"),
    ("ssl_write_return", "SSL_write"),
    ("ssl_write_return", "SSL_write_ex"),
    ("ssl_read_return", "SSL_read"),
    ("ssl_read_return", "SSL_read_ex"),
];

/// Attaches the OpenSSL uprobes to every OpenSSL library of the host (each
/// file once, however many paths lead to it). Not finding one is not an
/// error: TLS traffic is then not seen, and the reason says so.
#[cfg(vigil_ebpf)]
fn attach_openssl(ebpf: &mut aya::Ebpf) -> Result<Vec<std::path::PathBuf>, String> {
    let mut libraries: Vec<std::path::PathBuf> = OPENSSL_LIBRARIES
        .iter()
        .filter_map(|p| std::fs::canonicalize(p).ok())
        .collect();
    libraries.sort();
    libraries.dedup();
    if libraries.is_empty() {
        return Err(format!("no OpenSSL library in {OPENSSL_LIBRARIES:?}"));
    }
    for (program, _) in OPENSSL_PROBES {
        let probe: &mut aya::programs::UProbe = ebpf
            .program_mut(program)
            .ok_or_else(|| format!("program {program} missing from the object"))?
            .try_into()
            .map_err(|e| format!("program {program}: {e}"))?;
        if probe.fd().is_err() {
            probe
                .load()
                .map_err(|e| format!("cannot load {program}: {e}"))?;
        }
    }
    let mut attached = Vec::new();
    for library in libraries {
        // All of a library's probes or none: an entry probe without its
        // return probe would leave a call open forever.
        let mut links = Vec::new();
        let mut failure = None;
        for (program, function) in OPENSSL_PROBES {
            let probe: &mut aya::programs::UProbe = ebpf
                .program_mut(program)
                .ok_or_else(|| format!("program {program} missing"))?
                .try_into()
                .map_err(|e| format!("program {program}: {e}"))?;
            match probe.attach(
                *function,
                &library,
                aya::programs::uprobe::UProbeScope::AllProcesses,
            ) {
                Ok(link) => links.push((*program, link)),
                Err(e) => {
                    failure = Some(format!("{function}: {e}"));
                    break;
                }
            }
        }
        match failure {
            None => attached.push(library),
            Some(reason) => {
                tracing::warn!(library = %library.display(), reason, "cannot probe OpenSSL there");
                for (program, link) in links {
                    let probe: Option<&mut aya::programs::UProbe> =
                        ebpf.program_mut(program).and_then(|p| p.try_into().ok());
                    if let Some(probe) = probe {
                        let _ = probe.detach(link);
                    }
                }
            }
        }
    }
    if attached.is_empty() {
        return Err("the OpenSSL probes could not be attached".to_owned());
    }
    Ok(attached)
}

/// Reads every waiting record; the number read.
#[cfg(vigil_ebpf)]
fn drain_into(attached: &mut Attached, mut record: impl FnMut(&[u8])) -> usize {
    let mut read = 0;
    while let Some(item) = attached.events.next() {
        record(&item);
        read += 1;
    }
    read
}

/// The TCP lifecycle tracer: programs attached, events drained into
/// [`tcp::TcpStats`] by [`TcpTracer::drain`].
pub struct TcpTracer {
    #[cfg(vigil_ebpf)]
    attached: Attached,
    pub stats: tcp::TcpStats,
    /// Records of an unexpected shape (a program and agent out of step).
    pub malformed: u64,
}

impl TcpTracer {
    /// Loads and attaches the TCP programs; the error says why not.
    pub fn start() -> Result<Self, String> {
        #[cfg(vigil_ebpf)]
        {
            let attached = attach(
                aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tcp.bpf.o")),
                TCP_PROGRAMS,
                "events",
            )?;
            Ok(Self {
                attached,
                stats: tcp::TcpStats::default(),
                malformed: 0,
            })
        }
        #[cfg(not(vigil_ebpf))]
        Err(env!("AGENT_EBPF_BUILD_MISSING").to_owned())
    }

    /// Moves every event waiting in the ring buffer into the stats.
    pub fn drain(&mut self) -> usize {
        #[cfg(vigil_ebpf)]
        {
            let (stats, malformed) = (&mut self.stats, &mut self.malformed);
            drain_into(&mut self.attached, |record| match tcp::parse(record) {
                Some(event) => stats.record(&event),
                None => *malformed += 1,
            })
        }
        #[cfg(not(vigil_ebpf))]
        0
    }
}

/// The L7 tracer: request/response pairs on tracked sockets, drained into
/// [`l7::L7Stats`].
pub struct L7Tracer {
    #[cfg(vigil_ebpf)]
    attached: Attached,
    pub stats: l7::L7Stats,
    pub malformed: u64,
    /// The OpenSSL libraries whose plaintext is seen, or why none is.
    pub tls: Result<Vec<std::path::PathBuf>, String>,
}

impl L7Tracer {
    /// Loads and attaches the L7 programs; the error says why not.
    pub fn start() -> Result<Self, String> {
        Self::start_in(std::path::Path::new("/proc"))
    }

    /// Like [`L7Tracer::start`], finding the connections already open in
    /// `proc_root` (the host's /proc when the agent runs in a container).
    pub fn start_in(proc_root: &std::path::Path) -> Result<Self, String> {
        #[cfg(vigil_ebpf)]
        {
            let programs: Vec<(&str, &str, &str)> = L7_SYSCALLS
                .iter()
                .map(|name| (*name, "syscalls", *name))
                .collect();
            let mut attached = attach(
                aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/l7.bpf.o")),
                &programs,
                "l7_events",
            )?;
            let tls = attach_openssl(&mut attached.ebpf);
            // Connections opened before now (pools, keep-alive): the
            // programs never saw their connect() or accept().
            let mut sockets: aya::maps::HashMap<_, u64, [u8; l7::SOCK_INFO_SIZE]> =
                aya::maps::HashMap::try_from(
                    attached
                        .ebpf
                        .map_mut("sockets")
                        .ok_or("map `sockets` missing from the object")?,
                )
                .map_err(|e| format!("map `sockets`: {e}"))?;
            for c in crate::listen::open_connections(proc_root) {
                let key = u64::from(c.pid) << 32 | u64::from(c.fd);
                // Already there: connected or accepted since the attach.
                if sockets.get(&key, 0).is_err() {
                    let _ = sockets.insert(key, l7::sock_info(&c), 0);
                }
            }
            Ok(Self {
                attached,
                stats: l7::L7Stats::default(),
                malformed: 0,
                tls,
            })
        }
        #[cfg(not(vigil_ebpf))]
        {
            let _ = proc_root;
            Err(env!("AGENT_EBPF_BUILD_MISSING").to_owned())
        }
    }

    pub fn drain(&mut self) -> usize {
        #[cfg(vigil_ebpf)]
        {
            let (stats, malformed) = (&mut self.stats, &mut self.malformed);
            drain_into(&mut self.attached, |record| match l7::parse(record) {
                Some(exchange) => stats.record(&exchange),
                None => *malformed += 1,
            })
        }
        #[cfg(not(vigil_ebpf))]
        0
    }
}

/// The CPU profiler: samples every CPU at [`profile::SAMPLE_HZ`] and
/// returns symbolized stacks per process each time it is read.
pub struct Profiler {
    #[cfg(vigil_ebpf)]
    _ebpf: aya::Ebpf,
    /// The two pairs of (samples, stacks); the kernel writes the one
    /// `generation` names.
    #[cfg(vigil_ebpf)]
    pairs: [(SampleMap, aya::maps::StackTraceMap<aya::maps::MapData>); 2],
    #[cfg(vigil_ebpf)]
    generation: aya::maps::Array<aya::maps::MapData, u32>,
    #[cfg(vigil_ebpf)]
    current: u32,
}

#[cfg(vigil_ebpf)]
type SampleMap = aya::maps::HashMap<aya::maps::MapData, [u8; profile::KEY_SIZE], u64>;

impl Profiler {
    /// Loads the program and attaches it to a software CPU clock on every
    /// online CPU; the error says why not.
    pub fn start() -> Result<Self, String> {
        #[cfg(vigil_ebpf)]
        {
            use aya::programs::perf_event::{
                PerfEvent, PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent,
            };
            if let Support::Unavailable(reason) = probe() {
                return Err(reason);
            }
            let btf =
                aya::Btf::from_sys_fs().map_err(|e| format!("cannot read kernel BTF: {e}"))?;
            let mut ebpf = aya::EbpfLoader::new()
                .btf(Some(&btf))
                .load(aya::include_bytes_aligned!(concat!(
                    env!("OUT_DIR"),
                    "/profile.bpf.o"
                )))
                .map_err(|e| format!("cannot load the profiler: {e}"))?;
            let program: &mut PerfEvent = ebpf
                .program_mut("cpu_sample")
                .ok_or("program cpu_sample missing from the object")?
                .try_into()
                .map_err(|e| format!("program cpu_sample: {e}"))?;
            program
                .load()
                .map_err(|e| format!("cannot load cpu_sample: {e}"))?;
            let cpus = aya::util::online_cpus().map_err(|(what, e)| format!("{what}: {e}"))?;
            for cpu in cpus {
                program
                    .attach(
                        PerfEventConfig::Software(SoftwareEvent::CpuClock),
                        PerfEventScope::AllProcessesOneCpu { cpu },
                        SamplePolicy::Frequency(profile::SAMPLE_HZ),
                        false,
                    )
                    .map_err(|e| format!("cannot sample CPU {cpu}: {e}"))?;
            }
            let take = |ebpf: &mut aya::Ebpf, name: &str| {
                ebpf.take_map(name)
                    .ok_or_else(|| format!("map `{name}` missing from the object"))
            };
            let mut pair = |n: u32| -> Result<_, String> {
                let samples = SampleMap::try_from(take(&mut ebpf, &format!("samples{n}"))?)
                    .map_err(|e| format!("map `samples{n}`: {e}"))?;
                let stacks =
                    aya::maps::StackTraceMap::try_from(take(&mut ebpf, &format!("stacks{n}"))?)
                        .map_err(|e| format!("map `stacks{n}`: {e}"))?;
                Ok((samples, stacks))
            };
            let pairs = [pair(0)?, pair(1)?];
            let generation = aya::maps::Array::try_from(take(&mut ebpf, "generation")?)
                .map_err(|e| format!("map `generation`: {e}"))?;
            Ok(Self {
                _ebpf: ebpf,
                pairs,
                generation,
                current: 0,
            })
        }
        #[cfg(not(vigil_ebpf))]
        Err(env!("AGENT_EBPF_BUILD_MISSING").to_owned())
    }

    /// The samples taken since the last read, symbolized per process; the
    /// kernel's maps are emptied for the next window. Blocks (10 ms, and
    /// symbolization): call it off the async runtime.
    pub fn collect(&mut self) -> Vec<profile::ProcessProfile> {
        #[cfg(vigil_ebpf)]
        {
            // Samples go to the other pair from now on; a sample being
            // written to this one finishes within microseconds.
            let idle = self.current as usize;
            self.current ^= 1;
            let _ = self.generation.set(0, self.current, 0);
            // The agent reads the profiler on a blocking thread.
            #[allow(clippy::disallowed_methods)]
            std::thread::sleep(std::time::Duration::from_millis(10));
            let (samples, stacks) = &mut self.pairs[idle];
            let counted: Vec<([u8; profile::KEY_SIZE], u64)> =
                samples.iter().filter_map(Result::ok).collect();
            let mut frames: HashMap<u32, Vec<u64>> = HashMap::new();
            let mut raw = Vec::with_capacity(counted.len());
            for (key, count) in &counted {
                let (pid, user, kernel) = profile::parse_key(key);
                let mut stack = |id: i32| -> Vec<u64> {
                    let Ok(id) = u32::try_from(id) else {
                        return Vec::new();
                    };
                    frames
                        .entry(id)
                        .or_insert_with(|| {
                            stacks
                                .get(&id, 0)
                                .map(|t| t.frames().iter().map(|f| f.ip).collect())
                                .unwrap_or_default()
                        })
                        .clone()
                };
                raw.push(profile::RawSample {
                    pid,
                    user: stack(user),
                    kernel: stack(kernel),
                    count: *count,
                });
            }
            // Empty the idle pair for its next turn: every sample key and
            // every stack, also those no sample key kept.
            for (key, _) in &counted {
                let _ = samples.remove(key);
            }
            let ids: Vec<u32> = stacks
                .iter()
                .filter_map(|r| r.ok().map(|(id, _)| id))
                .collect();
            for id in ids {
                let _ = stacks.remove(&id);
            }
            // A symbolizer per window: it is not Send, and the profiler is
            // read on a blocking thread.
            profile::profiles(&blazesym::symbolize::Symbolizer::new(), raw)
        }
        #[cfg(not(vigil_ebpf))]
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_matches_this_machine() {
        let euid = procfs::process::Process::myself()
            .unwrap()
            .status()
            .unwrap()
            .euid;
        let support = probe();
        if euid != 0 {
            assert!(
                matches!(&support, Support::Unavailable(r) if r.contains("not running as root"))
            );
        } else if Path::new(BTF_PATH).exists() {
            assert_eq!(support, Support::Available);
        }
        assert!(!support.to_string().is_empty());
    }
}
