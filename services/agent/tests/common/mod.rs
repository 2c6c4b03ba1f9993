//! What the eBPF tests share: they need root and BTF (CI runs as root) and
//! some outside programs. Where those are missing the test is skipped with
//! a message saying why; under CI=true that is a failure.

#![allow(dead_code, clippy::print_stderr)]

use vigil_agent::ebpf::{Support, probe};

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
