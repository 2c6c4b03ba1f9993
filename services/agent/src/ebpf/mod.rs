//! The agent's eBPF collectors and what this machine allows them. Programs
//! are C with CO-RE (`bpf/*.bpf.c`), compiled by clang in `build.rs` and
//! loaded with aya against the running kernel's BTF. Without root, BTF or
//! clang at build time, the agent says why and keeps its /proc collectors.
//!
//! Today: the TCP lifecycle ([`tcp`]) from `sock:inet_sock_set_state` and
//! `tcp:tcp_retransmit_skb`.

pub mod tcp;

use std::{fmt, path::Path};

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
            "eBPF (root, BTF): TCP connects, accepts, retransmits; /proc for resources".to_owned()
        }
        Support::Available => format!(
            "eBPF unavailable: {}; using /proc",
            env!("VIGIL_EBPF_MISSING")
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

/// The TCP lifecycle tracer: programs attached, events drained into
/// [`tcp::TcpStats`] by [`TcpTracer::drain`].
pub struct TcpTracer {
    #[cfg(vigil_ebpf)]
    _ebpf: aya::Ebpf,
    #[cfg(vigil_ebpf)]
    events: aya::maps::RingBuf<aya::maps::MapData>,
    pub stats: tcp::TcpStats,
    /// Records of an unexpected shape (a program and agent out of step).
    pub malformed: u64,
}

impl TcpTracer {
    /// Loads and attaches the TCP programs; the error says why not.
    #[cfg(vigil_ebpf)]
    pub fn start() -> Result<Self, String> {
        if let Support::Unavailable(reason) = probe() {
            return Err(reason);
        }
        ensure_tracefs()?;
        let btf = aya::Btf::from_sys_fs().map_err(|e| format!("cannot read kernel BTF: {e}"))?;
        let mut ebpf = aya::EbpfLoader::new()
            .btf(Some(&btf))
            .load(aya::include_bytes_aligned!(concat!(
                env!("OUT_DIR"),
                "/tcp.bpf.o"
            )))
            .map_err(|e| format!("cannot load the TCP programs: {e}"))?;
        for (program, category, name) in [
            ("inet_sock_set_state", "sock", "inet_sock_set_state"),
            ("tcp_retransmit_skb", "tcp", "tcp_retransmit_skb"),
        ] {
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
            .take_map("events")
            .ok_or("ring buffer `events` missing from the object")?;
        let events = aya::maps::RingBuf::try_from(events)
            .map_err(|e| format!("ring buffer `events`: {e}"))?;
        Ok(Self {
            _ebpf: ebpf,
            events,
            stats: tcp::TcpStats::default(),
            malformed: 0,
        })
    }

    #[cfg(not(vigil_ebpf))]
    pub fn start() -> Result<Self, String> {
        Err(env!("VIGIL_EBPF_MISSING").to_owned())
    }

    /// Moves every event waiting in the ring buffer into the stats; the
    /// number of events read.
    pub fn drain(&mut self) -> usize {
        #[cfg(vigil_ebpf)]
        {
            let mut read = 0;
            while let Some(record) = self.events.next() {
                match tcp::parse(&record) {
                    Some(event) => self.stats.record(&event),
                    None => self.malformed += 1,
                }
                read += 1;
            }
            read
        }
        #[cfg(not(vigil_ebpf))]
        0
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
