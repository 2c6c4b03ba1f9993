//! An ingest server in the test process, on free loopback ports, writing
//! into a fresh redb store; and the rules for tests that need outside
//! programs (skip with a message locally, fail under CI=true).

#![allow(dead_code, clippy::unwrap_used, clippy::print_stderr)]

use std::{net::SocketAddr, net::TcpListener, sync::Arc, time::Duration};

use vigil_ingest::IngestConfig;
use vigil_runtime::{
    Shutdown,
    auth::{ApiKeys, ProjectConfig},
};
use vigil_storage::{TelemetryStore, redb::RedbStore};

pub const KEY: &str = "test-key-0123456789abcdef";
pub const PROJECT: &str = "p1";

pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

pub struct Ingest {
    pub config: IngestConfig,
    pub store: Arc<dyn TelemetryStore>,
    pub shutdown: Shutdown,
    pub server: tokio::task::JoinHandle<Result<(), vigil_ingest::IngestError>>,
    _dir: tempfile::TempDir,
}

impl Ingest {
    pub async fn start(tune: impl Fn(&mut IngestConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn TelemetryStore> =
            Arc::new(RedbStore::open(&dir.path().join("t.redb")).unwrap());
        Self::start_on(store, dir, tune).await
    }

    pub async fn start_on(
        store: Arc<dyn TelemetryStore>,
        dir: tempfile::TempDir,
        tune: impl Fn(&mut IngestConfig),
    ) -> Self {
        // A port picked free can be taken by a parallel test before ingest
        // binds it: then start over on other ports.
        for _attempt in 0..5 {
            let mut config = IngestConfig::default();
            config.grpc.listen = free_addr();
            config.http.listen = free_addr();
            tune(&mut config);
            let keys = ApiKeys::new(&[ProjectConfig {
                name: PROJECT.into(),
                api_keys: vec![KEY.into()],
                api_keys_file: None,
            }])
            .unwrap();
            let shutdown = Shutdown::new();
            let server = tokio::spawn(vigil_ingest::run(
                config.clone(),
                store.clone(),
                keys,
                shutdown.clone(),
            ));
            let ready = format!("{}/readyz", http_url(&config));
            let mut up = false;
            for _ in 0..500 {
                let ready = ready.clone();
                up = tokio::task::spawn_blocking(move || {
                    ureq::get(&ready).call().is_ok_and(|r| r.status() == 200)
                })
                .await
                .unwrap();
                if up || server.is_finished() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if up {
                return Self {
                    config,
                    store,
                    shutdown,
                    server,
                    _dir: dir,
                };
            }
            match server.await.unwrap() {
                Err(e) if e.to_string().contains("cannot listen") => {
                    eprintln!("ingest could not bind ({e}); trying other ports");
                }
                Err(e) => panic!("ingest stopped: {e}"),
                Ok(()) => panic!("ingest stopped without an error"),
            }
        }
        panic!("ingest could not bind free ports in 5 attempts");
    }

    pub fn http_url(&self) -> String {
        http_url(&self.config)
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.config.grpc.listen)
    }
}

fn http_url(config: &IngestConfig) -> String {
    format!("http://{}", config.http.listen)
}

/// Whether an outside program this test needs is here. Under CI=true a
/// missing one is a failure (scripts/install-deps.sh installs it);
/// elsewhere the test is skipped with a message saying what is missing.
pub fn have(what: &str, present: bool) -> bool {
    if present {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI must run this test but {what} is missing: run scripts/install-deps.sh"
    );
    eprintln!("SKIPPED: {what} is not installed (scripts/install-deps.sh installs it)");
    false
}

pub fn python_has(module: &str) -> bool {
    std::process::Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

pub fn now_ms() -> i64 {
    vigil_runtime::time::now_ms()
}
