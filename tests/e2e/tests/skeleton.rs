//! The walking skeleton, end to end, with the real binaries:
//! agent → ingest → store → query → UI page; an inspection incident;
//! heartbeat up → late → down; split mode; bad configuration.

use std::{path::Path, sync::Mutex, time::Duration};

use vigil_e2e::{
    BINARIES, Running, UiSession, curl, curl_with, eventually, free_port, hostname, http_get,
    http_post, json, pause, run_to_end, start, wait_healthy, webhook_receiver,
};

const API_KEY: &str = "e2e-key-0123456789abcdef";
const GATEWAY_KEY: &str = "e2e-gateway-key-0123456789";
const LOGIN_TOKEN: &str = "e2e-login-token-0123456789";
const HEARTBEAT_KEY: &str = "e2e-heartbeat-key-0123456789";
const CHECK_UUID: &str = "0b8f1c0e-7d3a-4c55-9a61-5f2e8d7c9b10";

struct Ports {
    ingest_grpc: u16,
    ingest_http: u16,
    query_grpc: u16,
    query_http: u16,
    alerting_grpc: u16,
    alerting_http: u16,
    ui: u16,
    heartbeat_http: u16,
    heartbeat_grpc: u16,
    agent_http: u16,
}

impl Ports {
    fn new() -> Self {
        Self {
            ingest_grpc: free_port(),
            ingest_http: free_port(),
            query_grpc: free_port(),
            query_http: free_port(),
            alerting_grpc: free_port(),
            alerting_http: free_port(),
            ui: free_port(),
            heartbeat_http: free_port(),
            heartbeat_grpc: free_port(),
            agent_http: free_port(),
        }
    }
}

/// One configuration file for the whole suite, as a user would write it:
/// fast intervals, a memory threshold of 0% so the inspection must fire,
/// and a heartbeat check with a 2 s period and 1 s grace.
fn write_config(dir: &Path, p: &Ports, hook: u16) -> String {
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
query_endpoint = "127.0.0.1:{query_grpc}"
api_key = "{API_KEY}"
interval = "1s"
[alerting.grpc]
listen = "127.0.0.1:{alerting_grpc}"
[alerting.http]
listen = "127.0.0.1:{alerting_http}"
[alerting.inspections.node_memory]
threshold = 0.0
critical = 100.0
for = "0s"

[access]
gateway_keys = ["{GATEWAY_KEY}"]

[ui_gateway]
processes_per_host = 1000
gateway_key = "{GATEWAY_KEY}"
query_endpoint = "127.0.0.1:{query_grpc}"
alerting_endpoint = "127.0.0.1:{alerting_grpc}"
heartbeat_endpoint = "127.0.0.1:{heartbeat_grpc}"
[ui_gateway.http]
listen = "127.0.0.1:{ui}"
[ui_gateway.auth]
login_token = "{LOGIN_TOKEN}"
session_secret = "e2e-session-secret-0123456789abcdef0123"

[heartbeat]
api_key = "{HEARTBEAT_KEY}"
[heartbeat.http]
listen = "127.0.0.1:{heartbeat_http}"
[heartbeat.grpc]
listen = "127.0.0.1:{heartbeat_grpc}"
[[heartbeat.checks]]
name = "nightly backup"
uuid = "{CHECK_UUID}"
period = "2s"
grace = "1s"
[[heartbeat.integrations]]
name = "hook"
webhook = {{ url = "http://127.0.0.1:{hook}/hook" }}

[agent]
ingest_endpoint = "127.0.0.1:{ingest_grpc}"
api_key = "{API_KEY}"
interval = "1s"
max_processes = 1000
[agent.http]
listen = "127.0.0.1:{agent_http}"
"#,
        data = dir.join("data").display(),
        ingest_grpc = p.ingest_grpc,
        ingest_http = p.ingest_http,
        query_grpc = p.query_grpc,
        query_http = p.query_http,
        alerting_grpc = p.alerting_grpc,
        alerting_http = p.alerting_http,
        ui = p.ui,
        heartbeat_http = p.heartbeat_http,
        heartbeat_grpc = p.heartbeat_grpc,
        agent_http = p.agent_http,
    );
    let path = dir.join("vigil.toml");
    std::fs::write(&path, text).expect("config written");
    path.display().to_string()
}

/// Signs in at the UI with the login token (token mode, the default).
fn ui_session(p: &Ports) -> UiSession {
    let ui = format!("http://127.0.0.1:{}", p.ui);
    let (status, _) = http_get(&format!("{ui}/api/v1/hosts")).expect("UI answers");
    assert_eq!(status, 401, "nothing without signing in");
    assert!(
        UiSession::sign_in(&ui, "wrong-token-0123456789").is_none(),
        "a wrong token is refused"
    );
    UiSession::sign_in(&ui, LOGIN_TOKEN).expect("signed in with the login token")
}

/// The UI lists this host with live figures and the given process.
fn assert_ui_shows_host(p: &Ports, pid: u32) {
    let session = ui_session(p);
    let node = hostname();
    let (status, page) = session.get("/").expect("the UI page");
    assert_eq!(status, 200);
    assert!(page.contains("/assets/app.js"), "{page}");
    let hosts = eventually(
        Duration::from_secs(30),
        "the UI listing this host and process",
        || {
            let (status, body) = session.get("/api/v1/hosts")?;
            let hosts = json(&body);
            (status == 200
                && hosts["hosts"].as_array()?.iter().any(|h| {
                    h["node"] == node.as_str()
                        // CPU needs two collections; processes may show after one.
                        && h["cpu_usage_ratio"].is_number()
                        && h["processes"]
                            .as_array()
                            .is_some_and(|ps| ps.iter().any(|x| x["pid"] == pid))
                }))
            .then_some(hosts)
        },
    );
    let host = hosts["hosts"]
        .as_array()
        .and_then(|h| h.iter().find(|h| h["node"] == node.as_str()))
        .unwrap_or_else(|| panic!("this host in {hosts}"));
    let total = host["memory_total_bytes"].as_f64().expect("memory total");
    let available = host["memory_available_bytes"]
        .as_f64()
        .expect("memory available");
    assert!(total > available && available > 0.0, "{host}");
    let cpu = host["cpu_usage_ratio"]
        .as_f64()
        .expect("cpu ratio after two collections");
    assert!((0.0..=1.0).contains(&cpu), "{host}");
    // Cross-check with the kernel: MemTotal in /proc/meminfo, in bytes.
    let meminfo = std::fs::read_to_string("/proc/meminfo").expect("meminfo");
    let kib: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .expect("MemTotal");
    assert_eq!(total, kib * 1024.0, "memory total matches /proc/meminfo");
    let process = host["processes"]
        .as_array()
        .and_then(|ps| ps.iter().find(|x| x["pid"] == pid))
        .unwrap_or_else(|| panic!("process {pid} in {host}"));
    assert!(
        process["memory_rss_bytes"].as_f64().unwrap_or(0.0) > 0.0,
        "{process}"
    );
}

/// The memory inspection (threshold 0%) opens an incident, seen through the UI.
fn assert_incident_opened(p: &Ports) {
    let session = ui_session(p);
    let incident = eventually(Duration::from_secs(30), "a node_memory incident", || {
        let (status, body) = session.get("/api/v1/incidents")?;
        if status != 200 {
            return None;
        }
        json(&body)["incidents"]
            .as_array()?
            .iter()
            .find(|i| i["inspection"] == "node_memory" && i["state"] == "INCIDENT_STATE_OPEN")
            .cloned()
    });
    assert_eq!(incident["subject"], format!("node/{}", hostname()));
    assert!(
        incident["summary"]
            .as_str()
            .unwrap_or("")
            .contains("(threshold 0%)"),
        "{incident}"
    );
    // The same through the browser API, as the UI asks for it.
    let (status, listed) = session
        .rpc("alerting", "ListIncidents", &serde_json::json!({}))
        .expect("ListIncidents");
    assert_eq!(status, 200, "{listed}");
    assert!(
        listed["incidents"]
            .as_array()
            .is_some_and(|l| l.iter().any(|i| i["id"] == incident["id"])),
        "{listed}"
    );
}

/// What Grafana does: PromQL through the query service's Prometheus API,
/// answered from what the real agent shipped; without a key, 401.
fn assert_prometheus_api(p: &Ports) {
    let url = format!(
        "http://127.0.0.1:{}/api/v1/query?query=sum(host_cpu_cores)",
        p.query_http
    );
    eventually(
        Duration::from_secs(30),
        "host_cpu_cores through the Prometheus API",
        || {
            let out = std::process::Command::new("curl")
                .args(["-sS", "--max-time", "10", "-H"])
                .arg(format!("x-api-key: {API_KEY}"))
                .arg(&url)
                .output()
                .ok()?;
            let body = json(&String::from_utf8_lossy(&out.stdout));
            let cores: f64 = body["data"]["result"][0]["value"][1]
                .as_str()?
                .parse()
                .ok()?;
            (body["status"] == "success" && cores >= 1.0).then_some(())
        },
    );
    let (status, body) = curl(&url);
    assert_eq!(status, 401, "{body}");
}

fn check_status(p: &Ports) -> String {
    let (status, body) = curl_with(
        &["-H", &format!("X-Api-Key: {HEARTBEAT_KEY}")],
        &format!("http://127.0.0.1:{}/api/v3/checks/", p.heartbeat_http),
    );
    assert_eq!(status, 200, "{body}");
    let checks = json(&body);
    checks["checks"][0]["status"]
        .as_str()
        .expect("a status")
        .to_owned()
}

/// New → ping → up → (pings stop) → late → down; unknown checks are 404.
/// Each flip between up and down reaches the webhook once.
fn assert_heartbeat_up_then_down(p: &Ports, notified: &Mutex<Vec<serde_json::Value>>) {
    let base = format!("http://127.0.0.1:{}", p.heartbeat_http);
    assert_eq!(check_status(p), "new");
    let (status, body) = curl(&format!("{base}/ping/{CHECK_UUID}"));
    assert_eq!((status, body.trim()), (200, "OK"));
    assert_eq!(check_status(p), "up");
    let (status, _) =
        http_post(&format!("{base}/ping/00000000-0000-4000-8000-000000000000")).expect("ping");
    assert_eq!(status, 404, "unknown check");
    let (status, body) = http_get(&format!("{base}/ping/not-a-uuid")).expect("ping");
    assert_eq!(
        (status, body.as_str()),
        (404, "not found"),
        "malformed uuid"
    );
    eventually(Duration::from_secs(10), "the check to go late", || {
        (check_status(p) == "grace").then_some(())
    });
    eventually(Duration::from_secs(10), "the check to go down", || {
        (check_status(p) == "down").then_some(())
    });
    let down = eventually(Duration::from_secs(10), "the down notification", || {
        notified.lock().expect("lock").first().cloned()
    });
    assert_eq!(down["kind"], "trigger", "{down}");
    assert_eq!(down["subject"], "nightly backup", "{down}");
    assert!(
        down["text"].as_str().unwrap_or("").contains("was due at"),
        "names how late: {down}"
    );
    // A ping brings it back; a failure signal takes it down at once.
    assert_eq!(
        http_post(&format!("{base}/ping/{CHECK_UUID}/0"))
            .expect("ping")
            .0,
        200
    );
    assert_eq!(check_status(p), "up");
    assert_eq!(
        http_post(&format!("{base}/ping/{CHECK_UUID}/fail"))
            .expect("ping")
            .0,
        200
    );
    assert_eq!(check_status(p), "down");
    // Down, up, down: three flips, each announced exactly once.
    let kinds = |n: &Mutex<Vec<serde_json::Value>>| -> Vec<String> {
        n.lock()
            .expect("lock")
            .iter()
            .map(|b| b["kind"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    eventually(Duration::from_secs(10), "three flip notifications", || {
        (kinds(notified).len() >= 3).then_some(())
    });
    pause(Duration::from_secs(3));
    assert_eq!(kinds(notified), ["trigger", "resolve", "trigger"]);
}

fn stop_cleanly(running: &mut Running) {
    let status = running
        .terminate(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("{} did not stop within 20 s of SIGTERM", running.name));
    assert!(
        status.success(),
        "{} exited with {status} after SIGTERM\nstderr:\n{}",
        running.name,
        running.stderr_text()
    );
}

#[test]
fn monolith_walking_skeleton() {
    let dir = tempfile::tempdir().expect("temp dir");
    let p = Ports::new();
    let (hook, notified) = webhook_receiver();
    let config = write_config(dir.path(), &p, hook);
    let mut vigil = start(dir.path(), "vigil", &["up", "--config", &config], &[]);
    wait_healthy(
        &mut vigil,
        &format!("http://127.0.0.1:{}/healthz", p.ui),
        Duration::from_secs(60),
    );
    for port in [
        p.ingest_http,
        p.query_http,
        p.alerting_http,
        p.heartbeat_http,
        p.agent_http,
    ] {
        wait_healthy(
            &mut vigil,
            &format!("http://127.0.0.1:{port}/readyz"),
            Duration::from_secs(10),
        );
    }
    let summary = eventually(Duration::from_secs(10), "the start-up summary", || {
        let out = vigil.stdout_text();
        out.contains("Press Ctrl-C").then_some(out)
    });
    assert!(
        summary.contains(&format!("http://127.0.0.1:{}/", p.ui)),
        "{summary}"
    );
    assert!(summary.contains("Data:"), "{summary}");
    assert!(
        summary.contains("/proc"),
        "says how the agent collects: {summary}"
    );

    assert!(summary.contains("Prometheus API"), "{summary}");

    assert_ui_shows_host(&p, vigil.pid());
    assert_prometheus_api(&p);
    assert_incident_opened(&p);
    assert_heartbeat_up_then_down(&p, &notified);

    // Each service exposes its own Prometheus metrics.
    let (status, metrics) =
        http_get(&format!("http://127.0.0.1:{}/metrics", p.ingest_http)).expect("metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("vigil_ingest_stored_items_total{protocol=\"agent\",signal=\"metrics\"}"),
        "{metrics}"
    );
    assert!(
        !vigil.stderr_text().contains(API_KEY),
        "the API key never reaches the logs"
    );

    stop_cleanly(&mut vigil);
    assert!(vigil.stdout_text().contains("vigil stopped cleanly"));
}

#[test]
fn monolith_generates_and_prints_an_api_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ui = free_port();
    let env = [
        ("VIGIL_UI_GATEWAY__HTTP__LISTEN", format!("127.0.0.1:{ui}")),
        (
            "VIGIL_INGEST__GRPC__LISTEN",
            format!("127.0.0.1:{}", free_port()),
        ),
        (
            "VIGIL_INGEST__HTTP__LISTEN",
            format!("127.0.0.1:{}", free_port()),
        ),
        (
            "VIGIL_QUERY__GRPC__LISTEN",
            format!("127.0.0.1:{}", free_port()),
        ),
        (
            "VIGIL_QUERY__HTTP__LISTEN",
            format!("127.0.0.1:{}", free_port()),
        ),
        (
            "VIGIL_ALERTING__GRPC__LISTEN",
            format!("127.0.0.1:{}", free_port()),
        ),
        (
            "VIGIL_ALERTING__HTTP__LISTEN",
            format!("127.0.0.1:{}", free_port()),
        ),
        (
            "VIGIL_HEARTBEAT__HTTP__LISTEN",
            format!("127.0.0.1:{}", free_port()),
        ),
        (
            "VIGIL_HEARTBEAT__GRPC__LISTEN",
            format!("127.0.0.1:{}", free_port()),
        ),
        (
            "VIGIL_AGENT__HTTP__LISTEN",
            format!("127.0.0.1:{}", free_port()),
        ),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let data = dir.path().join("data");
    let data_arg = data.display().to_string();
    let mut vigil = start(dir.path(), "vigil", &["up", "--data-dir", &data_arg], &env);
    let out = eventually(Duration::from_secs(60), "the start-up summary", || {
        vigil.assert_alive();
        let out = vigil.stdout_text();
        out.contains("Press Ctrl-C").then_some(out)
    });
    let key = std::fs::read_to_string(data.join("api-key")).expect("key saved");
    let key = key.trim();
    assert!(key.starts_with("vgl_") && out.contains(key), "{out}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("api-key"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the key file is private");
    }
    // The UI link carries the generated login token in its fragment, and
    // the token signs in; it is kept private in the data directory.
    let token = std::fs::read_to_string(data.join("ui-login-token")).expect("token saved");
    let token = token.trim();
    assert!(
        out.contains(&format!("http://127.0.0.1:{ui}/auth/login#token={token}")),
        "{out}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("ui-login-token"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the token file is private");
    }
    let session = UiSession::sign_in(&format!("http://127.0.0.1:{ui}"), token)
        .expect("the printed token signs in");
    let (status, me) = session.get("/api/v1/session").expect("session");
    assert_eq!(status, 200);
    assert!(
        me.contains("\"admin\""),
        "the token holder is an admin: {me}"
    );
    stop_cleanly(&mut vigil);
    // The same key on the next start.
    let mut again = start(dir.path(), "vigil", &["up", "--data-dir", &data_arg], &env);
    let out = eventually(Duration::from_secs(60), "the second summary", || {
        again.assert_alive();
        let out = again.stdout_text();
        out.contains("Press Ctrl-C").then_some(out)
    });
    assert!(out.contains(key), "key kept across restarts: {out}");
    stop_cleanly(&mut again);
}

#[test]
fn split_mode() {
    let dir = tempfile::tempdir().expect("temp dir");
    let p = Ports::new();
    let (hook, notified) = webhook_receiver();
    let config = write_config(dir.path(), &p, hook);

    // redb is single-process: ingest or query alone must refuse it.
    for binary in ["vigil-ingest", "vigil-query"] {
        let (status, _, stderr) = run_to_end(
            dir.path(),
            binary,
            &["--config", &config],
            &[],
            Duration::from_secs(30),
        );
        assert!(!status.success(), "{binary} must refuse redb alone");
        assert!(
            stderr.contains("cannot run on its own with the embedded redb backend")
                && stderr.contains("vigil up"),
            "{binary}: {stderr}"
        );
    }

    // Fully split on ClickHouse when a server is there (scripts/test.sh
    // starts one; CI must have it). Without one, ingest and query share one
    // process on redb and everything else is still split.
    let clickhouse = std::env::var("CLICKHOUSE_TEST_URL")
        .ok()
        .filter(|u| !u.is_empty());
    assert!(
        clickhouse.is_some() || std::env::var("CI").as_deref() != Ok("true"),
        "CI must run split mode on ClickHouse: scripts/test.sh sets CLICKHOUSE_TEST_URL"
    );
    let database = format!("vigil_e2e_{}", p.ingest_grpc);
    let mut storage: Vec<Running> = match &clickhouse {
        Some(url) => {
            let env = [
                ("VIGIL_STORAGE__BACKEND", "clickhouse"),
                ("VIGIL_STORAGE__CLICKHOUSE__URL", url.as_str()),
                ("VIGIL_STORAGE__CLICKHOUSE__DATABASE", database.as_str()),
            ];
            vec![
                start(dir.path(), "vigil-ingest", &["--config", &config], &env),
                start(dir.path(), "vigil-query", &["--config", &config], &env),
            ]
        }
        None => {
            eprintln!(
                "split mode without ClickHouse (CLICKHOUSE_TEST_URL unset): ingest and query share `vigil up --only ingest,query`"
            );
            vec![start(
                dir.path(),
                "vigil",
                &["up", "--config", &config, "--only", "ingest,query"],
                &[],
            )]
        }
    };
    let last = storage.len() - 1;
    wait_healthy(
        &mut storage[0],
        &format!("http://127.0.0.1:{}/readyz", p.ingest_http),
        Duration::from_secs(60),
    );
    wait_healthy(
        &mut storage[last],
        &format!("http://127.0.0.1:{}/readyz", p.query_http),
        Duration::from_secs(30),
    );
    let mut others: Vec<(Running, u16)> = [
        ("vigil-alerting", p.alerting_http),
        ("vigil-ui-gateway", p.ui),
        ("vigil-heartbeat", p.heartbeat_http),
        ("vigil-agent", p.agent_http),
    ]
    .into_iter()
    .map(|(binary, port)| (start(dir.path(), binary, &["--config", &config], &[]), port))
    .collect();
    for (running, port) in &mut others {
        wait_healthy(
            running,
            &format!("http://127.0.0.1:{port}/readyz"),
            Duration::from_secs(30),
        );
    }
    let agent_pid = others[3].0.pid();
    assert_ui_shows_host(&p, agent_pid);
    assert_prometheus_api(&p);
    assert_incident_opened(&p);
    assert_heartbeat_up_then_down(&p, &notified);

    for (running, _) in &mut others {
        stop_cleanly(running);
    }
    for running in &mut storage {
        stop_cleanly(running);
    }
    if let Some(url) = clickhouse {
        let _ = http_post(&format!(
            "{url}/?query=DROP%20DATABASE%20IF%20EXISTS%20{database}"
        ));
    }
}

#[test]
fn bad_configuration_stops_start_up_naming_the_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Each binary checks the sections it reads; `vigil` checks them all.
    for (binary, section) in [
        ("vigil-ingest", "ingest.grpc"),
        ("vigil-query", "query.http"),
        ("vigil-alerting", "alerting.inspections.node_cpu"),
        ("vigil-agent", "agent"),
        ("vigil-heartbeat", "heartbeat"),
        ("vigil-ui-gateway", "ui_gateway"),
        ("vigil", "storage.redb"),
    ] {
        let path = dir.path().join(format!("{binary}.toml"));
        std::fs::write(&path, format!("[{section}]\nlisen = \"127.0.0.1:1\"\n")).expect("write");
        let path = path.display().to_string();
        let args: Vec<&str> = if binary == "vigil" {
            vec!["up", "--config", &path]
        } else {
            vec!["--config", &path]
        };
        let (status, _, stderr) =
            run_to_end(dir.path(), binary, &args, &[], Duration::from_secs(30));
        assert_eq!(status.code(), Some(2), "{binary}: {stderr}");
        assert!(
            stderr.contains(&format!("`{section}.lisen`")),
            "{binary}: {stderr}"
        );
    }
    let bad_field = dir.path().join("bad.toml");
    std::fs::write(&bad_field, "[ingest.grpc]\nlisen = \"127.0.0.1:1\"\n").expect("write");
    let bad_field = bad_field.display().to_string();
    let (status, _, stderr) = run_to_end(
        dir.path(),
        "vigil",
        &["up", "--config", &bad_field],
        &[],
        Duration::from_secs(30),
    );
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("`ingest.grpc.lisen`"), "{stderr}");

    // From the environment: a bad value, and an unknown section.
    let (status, _, stderr) = run_to_end(
        dir.path(),
        "vigil",
        &["check-config"],
        &[("VIGIL_QUERY__GRPC__LISTEN", "not-an-address")],
        Duration::from_secs(30),
    );
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("`query.grpc.listen`"), "{stderr}");
    let (status, _, stderr) = run_to_end(
        dir.path(),
        "vigil-heartbeat",
        &[],
        &[("VIGIL_HEARTBAET__EVALUATE_EVERY", "1s")],
        Duration::from_secs(30),
    );
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("VIGIL_HEARTBAET"), "{stderr}");

    // A value that parses but is not acceptable.
    let (status, _, stderr) = run_to_end(
        dir.path(),
        "vigil",
        &["check-config"],
        &[("VIGIL_ALERTING__INSPECTIONS__NODE_CPU__THRESHOLD", "-5")],
        Duration::from_secs(30),
    );
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("`alerting.inspections.node_cpu.threshold`"),
        "{stderr}"
    );
}

#[test]
fn every_binary_has_help_and_version() {
    let dir = tempfile::tempdir().expect("temp dir");
    for binary in BINARIES {
        let (status, stdout, stderr) = run_to_end(
            dir.path(),
            binary,
            &["--help"],
            &[],
            Duration::from_secs(30),
        );
        assert!(status.success(), "{binary} --help: {stderr}");
        let text = if *binary == "vigil" {
            let (_, up_help, _) = run_to_end(
                dir.path(),
                binary,
                &["up", "--help"],
                &[],
                Duration::from_secs(30),
            );
            up_help
        } else {
            stdout
        };
        assert!(text.contains("--config"), "{binary}: {text}");
        let (status, stdout, _) = run_to_end(
            dir.path(),
            binary,
            &["--version"],
            &[],
            Duration::from_secs(30),
        );
        assert!(
            status.success() && stdout.contains(env!("CARGO_PKG_VERSION")),
            "{binary}: {stdout}"
        );
    }
}
