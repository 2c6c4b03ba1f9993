//! The web UI in a real browser, signed in through a real OpenID provider:
//! npm `oidc-provider` (a certified OP) started by this test, Debian's
//! Chromium driven by `playwright-core` (tests/browser/ui.mjs). The data is
//! real too: the agent (eBPF, so root) watches loadgen → frontend → backend
//! in the same test. The script checks each page against that data, saves
//! a screenshot of each under target/browser-artifacts/, has a viewer find
//! the editor actions refused, and signs out through the provider.
#![allow(clippy::print_stderr)]

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use vigil_e2e::{
    apps::{Apps, Proc, is_root},
    eventually, free_port, pause, start, wait_healthy, webhook_receiver, workspace_root,
};

const API_KEY: &str = "e2e-key-0123456789abcdef";
const CLIENT_ID: &str = "vigil-ui";
const CLIENT_SECRET: &str = "browser-test-client-secret-0123";
const CHROMIUM: &str = "/usr/bin/chromium";

/// Why the browser test cannot run here, if it cannot.
fn missing() -> Option<String> {
    if !is_root() {
        return Some("the agent's eBPF needs root".into());
    }
    if !Path::new(CHROMIUM).exists() {
        return Some(format!(
            "{CHROMIUM} is missing (scripts/install-deps.sh installs chromium)"
        ));
    }
    if !workspace_root()
        .join("tests/browser/node_modules/playwright-core")
        .exists()
    {
        return Some(
            "tests/browser/node_modules is missing (scripts/install-deps.sh runs npm ci there)"
                .into(),
        );
    }
    None
}

fn write_config(dir: &Path, ui: u16, issuer: &str, hook: u16) -> String {
    let p: [u16; 9] = std::array::from_fn(|_| free_port());
    let text = format!(
        r#"
data_dir = "{data}"
[[projects]]
name = "default"
api_keys = ["{API_KEY}"]
[ingest.grpc]
listen = "127.0.0.1:{}"
[ingest.http]
listen = "127.0.0.1:{}"
[query.grpc]
listen = "127.0.0.1:{}"
[query.http]
listen = "127.0.0.1:{}"
[alerting]
interval = "2s"
[alerting.grpc]
listen = "127.0.0.1:{}"
[alerting.http]
listen = "127.0.0.1:{}"
[[alerting.integrations]]
name = "hook"
webhook = {{ url = "http://127.0.0.1:{hook}/hook" }}
[ui_gateway.http]
listen = "127.0.0.1:{ui}"
[ui_gateway.auth]
mode = "oidc"
public_url = "http://127.0.0.1:{ui}"
secure_cookies = false
[ui_gateway.auth.oidc]
issuer = "{issuer}"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
scopes = ["openid", "email", "profile", "groups"]
[[ui_gateway.auth.roles]]
project = "default"
role = "editor"
groups = ["sre"]
[[ui_gateway.auth.roles]]
project = "default"
role = "viewer"
groups = ["viewers"]
[heartbeat.http]
listen = "127.0.0.1:{}"
[heartbeat.grpc]
listen = "127.0.0.1:{}"
[[heartbeat.checks]]
name = "nightly backup"
uuid = "0b8f1c0e-7d3a-4c55-9a61-5f2e8d7c9b10"
period = "1h"
grace = "10m"
[agent]
interval = "2s"
max_processes = 1000
[agent.profiling]
enabled = true
window = "5s"
[agent.logs]
journal = false
files = ["{logs}"]
[agent.http]
listen = "127.0.0.1:{}"
"#,
        p[0],
        p[1],
        p[2],
        p[3],
        p[4],
        p[5],
        p[6],
        p[7],
        p[8],
        data = dir.join("data").display(),
        logs = dir.join("frontend.log").display(),
    );
    let path = dir.join("vigil.toml");
    std::fs::write(&path, text).expect("config written");
    path.display().to_string()
}

#[test]
fn the_ui_in_chromium_signed_in_through_a_real_openid_provider() {
    if let Some(why) = missing() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must run the browser test: {why}"
        );
        eprintln!("SKIPPED the browser test: {why}");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let browser_dir = workspace_root().join("tests/browser");
    let (ui, op) = (free_port(), free_port());

    // The OpenID provider.
    let mut provider = Command::new("node");
    provider
        .current_dir(&browser_dir)
        .args([
            "provider.mjs",
            &op.to_string(),
            CLIENT_ID,
            CLIENT_SECRET,
            &format!("http://127.0.0.1:{ui}/auth/callback"),
            &format!("http://127.0.0.1:{ui}/auth/signed-out"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _provider = Proc::spawn(&mut provider);
    let issuer = format!("http://localhost:{op}");
    eventually(Duration::from_secs(30), "the OpenID provider", || {
        std::net::TcpStream::connect(("127.0.0.1", op)).ok()
    });

    let (hook, _) = webhook_receiver();
    let config = write_config(dir.path(), ui, &issuer, hook);
    let mut vigil = start(dir.path(), "vigil", &["up", "--config", &config], &[]);
    wait_healthy(
        &mut vigil,
        &format!("http://127.0.0.1:{ui}/readyz"),
        Duration::from_secs(60),
    );

    // Real traffic for the agent to see: spans, the map, RED and profiles.
    let apps = Apps::new(dir.path());
    let _backend = apps.backend();
    let _frontend = apps.frontend();
    let _loadgen = apps.loadgen();
    pause(Duration::from_secs(20));

    let artifacts: PathBuf = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from)
        .join("browser-artifacts");
    std::fs::create_dir_all(&artifacts).expect("artifacts dir");
    let out = Command::new("node")
        .current_dir(&browser_dir)
        .arg("ui.mjs")
        .env("BASE", format!("http://127.0.0.1:{ui}"))
        .env("ARTIFACTS", &artifacts)
        .env("APP", "frontend")
        .env("UPSTREAM", "backend")
        .env("CHROMIUM", CHROMIUM)
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "the browser checks failed (screenshots in {}); vigil stderr tail:\n{}",
        artifacts.display(),
        vigil
            .stderr_text()
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(stdout.contains("ok - a viewer's test-notification button is disabled"));
    let shots = std::fs::read_dir(&artifacts).expect("artifacts").count();
    assert!(shots >= 14, "a screenshot of every page ({shots})");
    vigil.assert_alive();
}
