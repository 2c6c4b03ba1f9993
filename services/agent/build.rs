//! Compiles the agent's eBPF programs (C with CO-RE, `bpf/*.bpf.c`) with
//! clang when it is installed; sets `cfg(vigil_ebpf)` when they were built.
//! Without clang the agent still builds and says at start why eBPF is off.

use std::{env, path::PathBuf, process::Command};

const PROGRAMS: &[&str] = &["tcp", "l7", "profile"];

fn main() {
    println!("cargo::rustc-check-cfg=cfg(vigil_ebpf)");
    println!("cargo::rerun-if-env-changed=VIGIL_CLANG");
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    let clang = env::var("VIGIL_CLANG").unwrap_or_else(|_| "clang".to_owned());
    let target_os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if target_os != "linux" {
        println!("cargo::rustc-env=AGENT_EBPF_BUILD_MISSING=not a Linux build");
        return;
    }
    for program in PROGRAMS {
        let source = format!("bpf/{program}.bpf.c");
        println!("cargo::rerun-if-changed={source}");
        let object = out.join(format!("{program}.bpf.o"));
        let built = Command::new(&clang)
            .args([
                "-g",
                "-O2",
                "-target",
                "bpf",
                "-D__TARGET_ARCH_x86",
                "-Wall",
                "-c",
            ])
            .arg(&source)
            .arg("-o")
            .arg(&object)
            .output();
        match built {
            Ok(o) if o.status.success() => {}
            Ok(o) => panic!(
                "clang failed on {source}:\n{}",
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => {
                println!(
                    "cargo::warning=eBPF programs not built: {clang} not found ({e}); \
                     scripts/install-deps.sh installs clang and libbpf-dev"
                );
                println!("cargo::rustc-env=AGENT_EBPF_BUILD_MISSING=built without clang");
                return;
            }
        }
    }
    println!("cargo::rustc-cfg=vigil_ebpf");
    println!("cargo::rustc-env=AGENT_EBPF_BUILD_MISSING=");
}
