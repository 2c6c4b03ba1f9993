//! What the eBPF tests share: they need root and BTF (CI runs as root) and
//! some outside programs. Where those are missing the test is skipped with
//! a message saying why; under CI=true that is a failure.

#![allow(
    dead_code,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::disallowed_methods
)]

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::Child,
    time::{Duration, Instant},
};

use vigil_agent::ebpf::{
    L7Tracer, Support,
    l7::{Protocol, Side},
    probe,
};

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

/// A server process the test started, killed when the test ends.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts a server that is to listen on 127.0.0.1:`port` (its output
/// discarded) and waits until it does.
pub fn serve(command: &mut std::process::Command, port: u16) -> (Killed, SocketAddr) {
    let server = Killed(
        command
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_listening(addr);
    (server, addr)
}

pub fn wait_listening(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Requests counted on the client side towards `server`, whatever the
/// client process (redis-cli is one per run).
pub fn client_count(t: &L7Tracer, server: SocketAddr, p: Protocol, op: &str, status: &str) -> u64 {
    t.stats
        .requests
        .iter()
        .filter(|(k, _)| {
            k.side == Side::Client
                && k.destination == Some(server)
                && k.protocol == p
                && k.operation == op
                && k.status == status
        })
        .map(|(_, c)| c.requests)
        .sum()
}

pub fn settle(t: &mut L7Tracer, done: impl Fn(&L7Tracer) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        t.drain();
        if done(t) || Instant::now() > deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Cgroups of the test's own (v1: one per controller; v2: one), with a CPU
/// quota and a memory limit when asked, removed on drop. `relative` may
/// be nested (`a/docker-<id>.scope`) to look like a runtime's path.
pub struct Cgroup {
    /// The leaf directories, one per hierarchy.
    pub dirs: Vec<PathBuf>,
    created: Vec<PathBuf>,
}

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

impl Cgroup {
    /// None (with the reason printed) where cgroups cannot be made here:
    /// that needs root, which CI has.
    pub fn create(relative: &str, cpu: Option<(u64, u64)>, memory: Option<u64>) -> Option<Self> {
        let root = Path::new(CGROUP_ROOT);
        let v1 = root.join("memory/memory.limit_in_bytes").exists();
        let bases: Vec<PathBuf> = if v1 {
            ["cpu", "cpuacct", "memory"]
                .iter()
                .map(|c| root.join(c))
                .collect()
        } else {
            vec![root.to_owned()]
        };
        let mut this = Self {
            dirs: Vec::new(),
            created: Vec::new(),
        };
        for base in &bases {
            let mut dir = base.clone();
            for part in relative.split('/') {
                dir = dir.join(part);
                if !dir.exists() {
                    if let Err(e) = std::fs::create_dir(&dir) {
                        assert!(
                            !ci(),
                            "CI runs as root, yet cannot create {}: {e}",
                            dir.display()
                        );
                        eprintln!(
                            "SKIPPED: cannot create cgroup {} (needs root): {e}",
                            dir.display()
                        );
                        return None;
                    }
                    this.created.push(dir.clone());
                }
            }
            this.dirs.push(dir);
        }
        let write = |dir: &Path, file: &str, value: String| {
            std::fs::write(dir.join(file), &value)
                .unwrap_or_else(|e| panic!("{}/{file} = {value}: {e}", dir.display()));
        };
        if v1 {
            if let Some((quota, period)) = cpu {
                write(&this.dirs[0], "cpu.cfs_period_us", period.to_string());
                write(&this.dirs[0], "cpu.cfs_quota_us", quota.to_string());
            }
            if let Some(limit) = memory {
                write(&this.dirs[2], "memory.limit_in_bytes", limit.to_string());
            }
        } else {
            if let Some((quota, period)) = cpu {
                write(&this.dirs[0], "cpu.max", format!("{quota} {period}"));
            }
            if let Some(limit) = memory {
                write(&this.dirs[0], "memory.max", limit.to_string());
                let _ = std::fs::write(this.dirs[0].join("memory.swap.max"), "0");
            }
        }
        Some(this)
    }

    /// A shell prefix that moves the shell into every hierarchy of this
    /// cgroup (then `exec` the program).
    pub fn enter(&self) -> String {
        self.dirs
            .iter()
            .map(|d| format!("echo $$ > {}/cgroup.procs && ", d.display()))
            .collect()
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for dir in self.created.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

pub const INGEST_KEY: &str = "agent-test-key-0123456789abcdef";

/// An ingest server in the test process on free loopback ports, writing to
/// a fresh redb store; project `p1`, key [`INGEST_KEY`].
pub struct Ingest {
    pub store: std::sync::Arc<dyn vigil_storage::TelemetryStore>,
    pub config: vigil_ingest::IngestConfig,
    pub stop: vigil_runtime::Shutdown,
    pub server: tokio::task::JoinHandle<Result<(), vigil_ingest::IngestError>>,
    _dir: tempfile::TempDir,
}

pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

impl Ingest {
    /// Starts serving on `grpc` (a free address when None).
    pub fn start(grpc: Option<SocketAddr>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store: std::sync::Arc<dyn vigil_storage::TelemetryStore> = std::sync::Arc::new(
            vigil_storage::redb::RedbStore::open(&dir.path().join("t.redb")).unwrap(),
        );
        let mut config = vigil_ingest::IngestConfig::default();
        config.grpc.listen = grpc.unwrap_or_else(free_addr);
        config.http.listen = free_addr();
        let keys = vigil_runtime::auth::ApiKeys::new(&[vigil_runtime::auth::ProjectConfig {
            name: "p1".into(),
            api_keys: vec![INGEST_KEY.into()],
            api_keys_file: None,
        }])
        .unwrap();
        let stop = vigil_runtime::Shutdown::new();
        let server = tokio::spawn(vigil_ingest::run(
            config.clone(),
            store.clone(),
            keys,
            stop.clone(),
        ));
        Self {
            store,
            config,
            stop,
            server,
            _dir: dir,
        }
    }

    /// Stops the server and waits for it.
    pub async fn stop(self) {
        self.stop.trigger();
        self.server.await.unwrap().unwrap();
    }
}

/// An agent for an in-process test: pushes to `ingest_grpc` with
/// [`INGEST_KEY`], spools under `dir`, collects every 500 ms. eBPF, the
/// host's logs and profiling are off: each test turns on what it is about.
pub fn agent_config(dir: &Path, ingest_grpc: SocketAddr) -> vigil_agent::AgentConfig {
    vigil_agent::AgentConfig {
        ingest_endpoint: ingest_grpc.to_string(),
        api_key: INGEST_KEY.into(),
        interval: Duration::from_millis(500),
        spool_dir: Some(dir.join("spool")),
        ebpf: false,
        http: vigil_runtime::config::HttpServerConfig::on(free_addr()),
        logs: vigil_agent::logs::LogsConfig {
            pods_dir: dir.join("no-pods"),
            docker_dir: dir.join("no-docker"),
            journal: false,
            ..vigil_agent::logs::LogsConfig::default()
        },
        profiling: vigil_agent::config::ProfilingConfig {
            enabled: false,
            ..vigil_agent::config::ProfilingConfig::default()
        },
        ..vigil_agent::AgentConfig::default()
    }
}
