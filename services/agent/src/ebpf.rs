//! What eBPF this machine allows the agent. The eBPF collectors themselves
//! (TCP connections, L7 requests, profiles) are not built yet: until they
//! are, the agent says so and collects from /proc alone.

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
            Self::Available => f.write_str(
                "eBPF possible here (root, BTF), but no eBPF collector is built yet: using /proc",
            ),
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
        assert!(support.to_string().contains("/proc"));
    }
}
