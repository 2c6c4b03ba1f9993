//! The alerting path end to end, through the real agent (eBPF, so root):
//! loadgen → frontend → backend, three real processes. Stopping backend
//! makes frontend's connects fail and its requests answer 502, so its
//! availability SLO burns: one incident, whose root-cause hint names
//! backend, and exactly one trigger at a local webhook receiver. The whole
//! suite is restarted in the middle of the incident (nothing is sent
//! twice); starting backend again brings exactly one resolve.
#![allow(clippy::print_stderr)]

use std::{path::Path, sync::Mutex, time::Duration};

use vigil_e2e::{
    Running, UiSession,
    apps::{Apps, is_root},
    eventually, free_port, json, pause, start, wait_healthy, webhook_receiver,
};

const API_KEY: &str = "e2e-key-0123456789abcdef";
const LOGIN_TOKEN: &str = "e2e-login-token-0123456789";

fn kinds(bodies: &Mutex<Vec<serde_json::Value>>, kind: &str) -> Vec<serde_json::Value> {
    bodies
        .lock()
        .expect("lock")
        .iter()
        .filter(|b| b["kind"] == kind)
        .cloned()
        .collect()
}

fn write_config(dir: &Path, ports: &[u16; 9], hook: u16) -> String {
    let [
        ingest_grpc,
        ingest_http,
        query_grpc,
        query_http,
        alerting_grpc,
        alerting_http,
        ui,
        heartbeat,
        agent,
    ] = ports;
    let text = format!(
        r#"
data_dir = "{data}"
[[projects]]
name = "default"
api_keys = ["{API_KEY}"]
[ingest.grpc]
listen = "127.0.0.1:{ingest_grpc}"
[ingest.http]
listen = "127.0.0.1:{ingest_http}"
[query.grpc]
listen = "127.0.0.1:{query_grpc}"
[query.http]
listen = "127.0.0.1:{query_http}"
[alerting]
interval = "1s"
[alerting.grpc]
listen = "127.0.0.1:{alerting_grpc}"
[alerting.http]
listen = "127.0.0.1:{alerting_http}"
# Page on the fast burn only (1 h and 5 min over 14.4x); the slow pair
# would keep the incident open long after this short test's errors.
[alerting.inspections.slo_availability]
threshold = 1000
keep_firing_for = "2s"
[[alerting.integrations]]
name = "hook"
categories = ["slo"]
webhook = {{ url = "http://127.0.0.1:{hook}/hook" }}
[ui_gateway]
[ui_gateway.http]
listen = "127.0.0.1:{ui}"
[ui_gateway.auth]
login_token = "{LOGIN_TOKEN}"
[heartbeat.http]
listen = "127.0.0.1:{heartbeat}"
[heartbeat.grpc]
listen = "127.0.0.1:{heartbeat_grpc}"
[agent]
interval = "1s"
max_processes = 1000
[agent.http]
listen = "127.0.0.1:{agent}"
"#,
        data = dir.join("data").display(),
        heartbeat_grpc = free_port(),
    );
    let path = dir.join("vigil.toml");
    std::fs::write(&path, text).expect("config written");
    path.display().to_string()
}

fn start_vigil(dir: &Path, config: &str, ui: u16, alerting_http: u16) -> Running {
    let mut vigil = start(dir, "vigil", &["up", "--config", config], &[]);
    wait_healthy(
        &mut vigil,
        &format!("http://127.0.0.1:{ui}/healthz"),
        Duration::from_secs(60),
    );
    wait_healthy(
        &mut vigil,
        &format!("http://127.0.0.1:{alerting_http}/readyz"),
        Duration::from_secs(30),
    );
    vigil
}

#[test]
fn a_stopped_upstream_opens_one_incident_naming_it_and_resolves_once() {
    if !is_root() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI runs as root"
        );
        eprintln!(
            "SKIPPED a_stopped_upstream_opens_one_incident_naming_it_and_resolves_once: the agent's eBPF needs root"
        );
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let (hook, bodies) = webhook_receiver();
    let ports: [u16; 9] = std::array::from_fn(|_| free_port());
    let config = write_config(dir.path(), &ports, hook);
    let (ui, alerting_http) = (ports[6], ports[5]);
    let mut vigil = start_vigil(dir.path(), &config, ui, alerting_http);

    let apps = Apps::new(dir.path());
    let start_backend = || apps.backend();
    let backend = start_backend();
    let _frontend = apps.frontend();
    let _loadgen = apps.loadgen();

    // Healthy traffic first, so that the failure is a change.
    pause(Duration::from_secs(15));
    assert!(
        kinds(&bodies, "trigger").is_empty(),
        "nothing fires while healthy: {:?}",
        bodies.lock().expect("lock")
    );
    drop(backend); // stops it

    let trigger = eventually(Duration::from_secs(90), "a trigger at the webhook", || {
        kinds(&bodies, "trigger").into_iter().next()
    });
    eprintln!("trigger: {trigger}");
    assert_eq!(trigger["subject"], "frontend", "{trigger}");
    assert_eq!(trigger["category"], "slo", "{trigger}");
    assert_eq!(trigger["severity"], "critical", "{trigger}");
    let hint = trigger["hint"].as_str().unwrap_or_default();
    assert!(
        hint.contains("frontend → backend"),
        "the hint names the stopped server: {trigger}"
    );

    // The worker restarts mid-incident (the whole suite, same data).
    assert!(
        vigil
            .terminate(Duration::from_secs(20))
            .is_some_and(|s| s.success()),
        "{}",
        vigil.stderr_text()
    );
    let mut vigil = start_vigil(dir.path(), &config, ui, alerting_http);
    pause(Duration::from_secs(5));
    assert_eq!(
        kinds(&bodies, "trigger").len(),
        1,
        "not sent again after the restart"
    );

    // The UI lists the open incident with the hint, and the failed connects.
    let session = UiSession::sign_in(&format!("http://127.0.0.1:{ui}"), LOGIN_TOKEN)
        .expect("signed in at the UI");
    let (_, incidents) = session.get("/api/v1/incidents").expect("incidents");
    let incidents = json(&incidents);
    let list = incidents["incidents"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let open_slo: Vec<_> = list
        .iter()
        .filter(|i| {
            i["inspection"] == "slo_availability"
                && i["subject"] == "frontend"
                && i["state"] == "INCIDENT_STATE_OPEN"
        })
        .collect();
    assert_eq!(open_slo.len(), 1, "one incident: {incidents}");
    assert!(
        list.iter().any(|i| i["inspection"] == "failed_connects"
            && i["summary"].as_str().unwrap_or("").contains("backend")),
        "{incidents}"
    );

    let backend = start_backend();
    let resolve = eventually(Duration::from_secs(240), "a resolve at the webhook", || {
        kinds(&bodies, "resolve").into_iter().next()
    });
    eprintln!("resolve: {resolve}");
    assert_eq!(
        resolve["key"], trigger["key"],
        "the resolve closes the trigger's incident"
    );
    pause(Duration::from_secs(5));
    assert_eq!(kinds(&bodies, "trigger").len(), 1, "exactly one trigger");
    assert_eq!(kinds(&bodies, "resolve").len(), 1, "exactly one resolve");
    drop(backend);
    assert!(
        vigil
            .terminate(Duration::from_secs(20))
            .is_some_and(|s| s.success()),
        "{}",
        vigil.stderr_text()
    );
}
