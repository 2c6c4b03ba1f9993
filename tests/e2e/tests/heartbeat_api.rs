//! The heartbeat monitor as healthchecks.io users meet it, against the real
//! `vigil-heartbeat` binary with real `curl`: ping URLs and their exact
//! answers, slug pings with `?create=1`, run ids and durations, ping bodies
//! cut at the limit; the management API v3 with read-write and read-only
//! keys, its check, ping and flip objects checked field by field against
//! healthchecks.io's documentation (docs/api.md); pause and resume;
//! badges; the Prometheus endpoint; `vigil.heartbeat.v1` over gRPC with
//! roles; an external probe whose failure reaches a webhook.

#![allow(clippy::unwrap_used)]

use std::{collections::BTreeSet, path::Path, time::Duration};

use serde_json::{Value, json};
use vigil_e2e::{Running, curl_with, eventually, free_port, start, wait_healthy, webhook_receiver};

const RW: &str = "hb-read-write-key-0123456789";
const RO: &str = "hb-read-only-key-0123456789";
const PING_KEY: &str = "hb-ping-key-0123456789";
const GATEWAY: &str = "hb-gateway-key-0123456789";
const DECLARED: &str = "1d4c7a2e-9b3f-4e6a-8c5d-7f1e2a3b4c5d";

struct Monitor {
    _running: Running,
    http: u16,
    grpc: u16,
}

impl Monitor {
    fn start(dir: &Path, hook: u16) -> Self {
        let (http, grpc, closed) = (free_port(), free_port(), free_port());
        let config = dir.join("heartbeat.toml");
        std::fs::write(
            &config,
            format!(
                r#"
data_dir = "{data}"
[access]
gateway_keys = ["{GATEWAY}"]
[heartbeat]
api_key = "{RW}"
read_only_api_key = "{RO}"
ping_key = "{PING_KEY}"
[heartbeat.http]
listen = "127.0.0.1:{http}"
[heartbeat.grpc]
listen = "127.0.0.1:{grpc}"
[[heartbeat.checks]]
name = "declared job"
uuid = "{DECLARED}"
period = "1h"
tags = "prod"
[[heartbeat.probes]]
name = "closed port"
tcp = {{ address = "127.0.0.1:{closed}" }}
interval = "1s"
timeout = "1s"
retries = 0
[[heartbeat.integrations]]
name = "hook"
webhook = {{ url = "http://127.0.0.1:{hook}/hook" }}
"#,
                data = dir.join("data").display()
            ),
        )
        .unwrap();
        let mut running = start(
            dir,
            "vigil-heartbeat",
            &["--config", &config.display().to_string()],
            &[],
        );
        wait_healthy(
            &mut running,
            &format!("http://127.0.0.1:{http}/readyz"),
            Duration::from_secs(30),
        );
        Self {
            _running: running,
            http,
            grpc,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }

    /// curl with a key (or none) and extra arguments.
    fn call(&self, key: Option<&str>, args: &[&str], path: &str) -> (u16, Value) {
        let header = key.map(|k| format!("X-Api-Key: {k}"));
        let mut all: Vec<&str> = Vec::new();
        if let Some(h) = &header {
            all.extend(["-H", h.as_str()]);
        }
        all.extend(args);
        let (code, body) = curl_with(&all, &self.url(path));
        let value = serde_json::from_str(&body).unwrap_or(Value::String(body));
        (code, value)
    }

    fn post(&self, key: Option<&str>, path: &str, body: &Value) -> (u16, Value) {
        let body = body.to_string();
        self.call(
            key,
            &[
                "-X",
                "POST",
                "-H",
                "Content-Type: application/json",
                "--data",
                &body,
            ],
            path,
        )
    }

    fn ping(&self, path: &str, args: &[&str]) -> (u16, String) {
        curl_with(args, &self.url(path))
    }
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

/// The fields every check object has (docs/api.md, "Get a single check",
/// plus `subject`/`subject_fail`, which the server always sends).
const COMMON: &[&str] = &[
    "name",
    "slug",
    "tags",
    "desc",
    "grace",
    "n_pings",
    "status",
    "started",
    "last_ping",
    "next_ping",
    "manual_resume",
    "methods",
    "subject",
    "subject_fail",
    "start_kw",
    "success_kw",
    "failure_kw",
    "filter_subject",
    "filter_body",
    "filter_http_body",
    "filter_default_fail",
    "badge_url",
];
const READ_WRITE: &[&str] = &[
    "uuid",
    "ping_url",
    "update_url",
    "pause_url",
    "resume_url",
    "channels",
];

fn expect_fields(check: &Value, access: &[&str], schedule: &[&str], extra: &[&str]) {
    let mut want = set(COMMON);
    want.extend(set(access));
    want.extend(set(schedule));
    want.extend(set(extra));
    assert_eq!(keys(check), want, "{check:#}");
}

/// An ISO 8601 time as healthchecks.io writes it: seconds, `+00:00`.
fn is_iso_seconds(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        s.len() == 25 && s.ends_with("+00:00") && s.parse::<jiff::Timestamp>().is_ok()
    })
}

#[test]
fn healthchecks_io_clients_work_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let (hook, notified) = webhook_receiver();
    let started = std::time::Instant::now();
    let m = Monitor::start(dir.path(), hook);
    eprintln!("monitor up after {:?}", started.elapsed());

    // ---- keys: healthchecks.io's statuses and messages
    let (code, body) = m.call(None, &[], "/api/v3/checks/");
    assert_eq!((code, body), (401, json!({"error": "missing api key"})));
    let (code, body) = m.call(Some("not-the-key-0123456789"), &[], "/api/v3/checks/");
    assert_eq!((code, body), (401, json!({"error": "wrong api key"})));
    let (code, body) = m.post(Some(RO), "/api/v3/checks/", &json!({"name": "x"}));
    assert_eq!(
        (code, body),
        (401, json!({"error": "wrong api key"})),
        "a read-only key cannot write"
    );
    let (code, body) = m.call(
        Some(RW),
        &["-X", "POST", "--data", "{not json"],
        "/api/v3/checks/",
    );
    assert_eq!(
        (code, body),
        (400, json!({"error": "could not parse request body"}))
    );

    // ---- create a simple check (docs: "Create a new check")
    let (code, created) = m.post(
        Some(RW),
        "/api/v3/checks/",
        &json!({"name": "Backups", "tags": "prod www", "timeout": 3600, "grace": 60}),
    );
    assert_eq!(code, 201, "{created}");
    expect_fields(&created, READ_WRITE, &["timeout"], &[]);
    let uuid = created["uuid"].as_str().unwrap().to_owned();
    assert_eq!(created["name"], "Backups");
    assert_eq!(created["slug"], "");
    assert_eq!(created["tags"], "prod www");
    assert_eq!(created["timeout"], 3600);
    assert_eq!(created["grace"], 60);
    assert_eq!(created["n_pings"], 0);
    assert_eq!(created["status"], "new");
    assert_eq!(created["started"], false);
    assert_eq!(created["last_ping"], Value::Null);
    assert_eq!(created["next_ping"], Value::Null);
    assert_eq!(created["methods"], "");
    assert_eq!(created["ping_url"], m.url(&format!("/ping/{uuid}")));
    assert_eq!(
        created["update_url"],
        m.url(&format!("/api/v3/checks/{uuid}"))
    );
    assert_eq!(
        created["pause_url"],
        m.url(&format!("/api/v3/checks/{uuid}/pause"))
    );
    assert_eq!(
        created["resume_url"],
        m.url(&format!("/api/v3/checks/{uuid}/resume"))
    );

    // `unique`: the same name returns (and updates) the existing check, 200.
    let (code, again) = m.post(
        Some(RW),
        "/api/v3/checks/",
        &json!({"name": "Backups", "desc": "nightly", "unique": ["name"]}),
    );
    assert_eq!(code, 200, "{again}");
    assert_eq!(again["uuid"], uuid.as_str());
    assert_eq!(again["desc"], "nightly");

    // Validation, in healthchecks.io's words.
    for (body, message) in [
        (
            json!({"timeout": 30}),
            "json validation error: timeout is too small",
        ),
        (
            json!({"timeout": "60"}),
            "json validation error: timeout is not a number",
        ),
        (
            json!({"grace": 40_000_000}),
            "json validation error: grace is too large",
        ),
        (
            json!({"slug": "Bad Slug"}),
            "json validation error: slug does not match pattern",
        ),
        (
            json!({"tz": "Mars/Olympus"}),
            "json validation error: tz is not a valid timezone",
        ),
        (
            json!({"schedule": "every day"}),
            "json validation error: schedule is not a valid cron or OnCalendar expression",
        ),
        (
            json!({"methods": "PUT"}),
            "json validation error: methods has unexpected value",
        ),
        (
            json!({"name": 5}),
            "json validation error: name is not a string",
        ),
        (json!([1]), "json validation error: value is not an object"),
    ] {
        let (code, got) = m.post(Some(RW), "/api/v3/checks/", &body);
        assert_eq!((code, got), (400, json!({"error": message})), "{body}");
    }
    let (code, got) = m.post(
        Some(RW),
        "/api/v3/checks/",
        &json!({"channels": "pagerduty"}),
    );
    assert_eq!(code, 400);
    assert!(
        got["error"].as_str().unwrap().contains("not supported"),
        "features we lack are refused, not ignored: {got}"
    );

    // A nameless check is fine (as there); a `unique` match with a declared
    // check returns it unchanged.
    let (code, nameless) = m.post(Some(RW), "/api/v3/checks/", &json!({}));
    assert_eq!(
        (code, nameless["name"].clone(), nameless["timeout"].clone()),
        (201, json!(""), json!(86400))
    );
    let nameless_uuid = nameless["uuid"].as_str().unwrap().to_owned();
    let (code, declared) = m.post(
        Some(RW),
        "/api/v3/checks/",
        &json!({"name": "declared job", "desc": "changed?", "unique": ["name"]}),
    );
    assert_eq!(
        (code, declared["uuid"].clone(), declared["desc"].clone()),
        (200, json!(DECLARED), json!(""))
    );
    let (code, _) = m.call(
        Some(RW),
        &["-X", "DELETE"],
        &format!("/api/v3/checks/{nameless_uuid}"),
    );
    assert_eq!(code, 200);

    // ---- a cron check: schedule and tz instead of timeout
    let (code, cron) = m.post(
        Some(RW),
        "/api/v3/checks/",
        &json!({"name": "Database Backup", "slug": "database-backup", "schedule": "15 5 * * *", "tz": "Europe/Riga", "grace": 1200}),
    );
    assert_eq!(code, 201, "{cron}");
    expect_fields(&cron, READ_WRITE, &["schedule", "tz"], &[]);
    assert_eq!(
        (cron["schedule"].clone(), cron["tz"].clone()),
        (json!("15 5 * * *"), json!("Europe/Riga"))
    );

    // ---- pings with curl: exact answers
    let (code, body) = m.ping(&format!("/ping/{uuid}"), &[]);
    assert_eq!((code, body.as_str()), (200, "OK"));
    let (code, body) = m.ping("/ping/00000000-0000-4000-8000-000000000000", &[]);
    assert_eq!((code, body.as_str()), (404, "not found"));
    let (code, body) = m.ping(&format!("/ping/{uuid}/256"), &[]);
    assert_eq!((code, body.as_str()), (400, "invalid url format"));
    let (code, body) = m.ping(&format!("/ping/{uuid}/start?rid=nope"), &[]);
    assert_eq!((code, body.as_str()), (400, "invalid uuid format"));
    // HEAD is a ping too.
    let (code, _) = m.ping(&format!("/ping/{uuid}/log"), &["-I"]);
    assert_eq!(code, 200);
    // A run with a run id: start, then success; it gets a duration.
    let rid = "123e4567-e89b-12d3-a456-426614174000";
    assert_eq!(m.ping(&format!("/ping/{uuid}/start?rid={rid}"), &[]).0, 200);
    vigil_e2e::pause(Duration::from_millis(1200));
    assert_eq!(m.ping(&format!("/ping/{uuid}/0?rid={rid}"), &[]).0, 200);
    let (_, check) = m.call(Some(RW), &[], &format!("/api/v3/checks/{uuid}"));
    expect_fields(&check, READ_WRITE, &["timeout"], &["last_duration"]);
    assert_eq!(check["last_duration"], 1, "{check}");
    assert_eq!(check["started"], false);
    // A 20 kB body: the first 10,000 bytes are kept, the ping is flagged.
    let big = "x".repeat(20_000);
    let (code, _) = m.ping(&format!("/ping/{uuid}/fail"), &["--data-binary", &big]);
    assert_eq!(code, 200);
    // A job's whole output piped in (900 kB, under http.max_body_bytes):
    // read as it comes, cut, still a ping.
    let output = dir.path().join("output.txt");
    std::fs::write(&output, "y".repeat(900_000)).unwrap();
    let (code, body) = m.ping(
        &format!("/ping/{uuid}/log"),
        &["--data-binary", &format!("@{}", output.display())],
    );
    assert_eq!((code, body.as_str()), (200, "OK"));
    let headers = m
        .ping(
            &format!("/ping/{uuid}"),
            &["-s", "-D", "-", "-o", "/dev/null"],
        )
        .1;
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("ping-body-limit: 10000"),
        "{headers}"
    );

    // ---- the ping log (docs: "Get a list of check's logged pings")
    let (code, pings) = m.call(Some(RW), &[], &format!("/api/v3/checks/{uuid}/pings/"));
    assert_eq!(code, 200);
    let list = pings["pings"].as_array().unwrap();
    let types: Vec<&str> = list.iter().map(|p| p["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "success", "log", "fail", "success", "start", "log", "success"
        ],
        "newest first"
    );
    let ns: Vec<u64> = list.iter().map(|p| p["n"].as_u64().unwrap()).collect();
    assert_eq!(ns, [7, 6, 5, 4, 3, 2, 1]);
    assert_eq!(list[1]["body_truncated"], true);
    let base_fields = [
        "type",
        "date",
        "n",
        "scheme",
        "remote_addr",
        "method",
        "ua",
        "rid",
        "body_url",
    ];
    assert_eq!(
        keys(&list[4]),
        set(&base_fields),
        "a start has no duration: {}",
        list[4]
    );
    let finished = &list[3];
    let mut with_duration = set(&base_fields);
    with_duration.extend(set(&["duration", "exitstatus"]));
    assert_eq!(keys(finished), with_duration, "{finished}");
    assert_eq!(finished["rid"], rid);
    assert!(finished["duration"].as_f64().unwrap() >= 1.0, "{finished}");
    assert_eq!(finished["method"], "GET");
    assert_eq!(finished["scheme"], "http");
    assert_eq!(finished["remote_addr"], "127.0.0.1");
    assert!(
        finished["ua"].as_str().unwrap().starts_with("curl/"),
        "{finished}"
    );
    let date = finished["date"].as_str().unwrap();
    assert!(
        date.ends_with("+00:00") && date.len() == 32,
        "microseconds: {date}"
    );
    assert_eq!(list[5]["method"], "HEAD");
    let failed = &list[2];
    assert_eq!(failed["method"], "POST");
    assert_eq!(failed["body_truncated"], true);
    let (code, body) = curl_with(
        &["-H", &format!("X-Api-Key: {RW}")],
        failed["body_url"].as_str().unwrap(),
    );
    assert_eq!((code, body.len()), (200, 10_000), "cut at ping_body_limit");
    let (code, _) = m.call(Some(RO), &[], &format!("/api/v3/checks/{uuid}/pings/"));
    assert_eq!(code, 401, "ping bodies are for read-write keys");

    // ---- the check now: up, last ping, next ping; the pings after the
    // run had no start, so no last duration (as healthchecks.io)
    let (_, check) = m.call(Some(RW), &[], &format!("/api/v3/checks/{uuid}"));
    expect_fields(&check, READ_WRITE, &["timeout"], &[]);
    assert_eq!(check["status"], "up");
    assert_eq!(check["n_pings"], 7);
    assert!(is_iso_seconds(&check["last_ping"]), "{check}");
    assert!(is_iso_seconds(&check["next_ping"]), "{check}");

    // ---- a read-only key: unique_key instead of the secrets
    let (code, listed) = m.call(Some(RO), &[], "/api/v3/checks/?tag=prod&tag=www");
    assert_eq!(code, 200);
    let listed = listed["checks"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "both tags needed");
    expect_fields(&listed[0], &["unique_key"], &["timeout"], &[]);
    let unique_key = listed[0]["unique_key"].as_str().unwrap().to_owned();
    assert_eq!(unique_key.len(), 40);
    let (code, by_key) = m.call(Some(RO), &[], &format!("/api/v3/checks/{unique_key}"));
    assert_eq!((code, by_key["name"].clone()), (200, json!("Backups")));
    let (_, by_slug) = m.call(Some(RO), &[], "/api/v3/checks/?slug=database-backup");
    assert_eq!(by_slug["checks"].as_array().unwrap().len(), 1);

    // ---- slug pings: the ping key, ?create=1
    let (code, body) = m.ping(&format!("/ping/{PING_KEY}/nightly-report"), &[]);
    assert_eq!((code, body.as_str()), (404, "not found"));
    let (code, body) = m.ping(
        &format!("/ping/{PING_KEY}/nightly-report/start?create=1"),
        &[],
    );
    assert_eq!((code, body.as_str()), (201, "Created"));
    let (code, body) = m.ping(&format!("/ping/{PING_KEY}/nightly-report?create=1"), &[]);
    assert_eq!((code, body.as_str()), (200, "OK"));
    let (code, _) = m.ping("/ping/not-the-ping-key-0123/nightly-report", &[]);
    assert_eq!(code, 404);
    let (code, body) = m.ping(&format!("/ping/{PING_KEY}/Nightly"), &[]);
    assert_eq!((code, body.as_str()), (400, "invalid url format"));
    let (_, made) = m.call(Some(RW), &[], "/api/v3/checks/?slug=nightly-report");
    let made = &made["checks"][0];
    assert_eq!(
        (made["timeout"].clone(), made["grace"].clone()),
        (json!(86400), json!(3600))
    );
    assert_eq!(made["status"], "up");

    // ---- pause, ping, manual resume, resume
    let (code, paused) = m.post(
        Some(RW),
        &format!("/api/v3/checks/{uuid}/pause"),
        &json!({}),
    );
    assert_eq!((code, paused["status"].clone()), (200, json!("paused")));
    assert_eq!(m.ping(&format!("/ping/{uuid}"), &[]).0, 200);
    let (_, check) = m.call(Some(RW), &[], &format!("/api/v3/checks/{uuid}"));
    assert_eq!(check["status"], "up", "a ping resumes a paused check");
    let (code, _) = m.post(
        Some(RW),
        &format!("/api/v3/checks/{uuid}"),
        &json!({"manual_resume": true}),
    );
    assert_eq!(code, 200);
    m.post(
        Some(RW),
        &format!("/api/v3/checks/{uuid}/pause"),
        &json!({}),
    );
    assert_eq!(m.ping(&format!("/ping/{uuid}"), &[]).0, 200);
    let (_, check) = m.call(Some(RW), &[], &format!("/api/v3/checks/{uuid}"));
    assert_eq!(
        check["status"], "paused",
        "manual_resume: pings do not resume"
    );
    let (_, pings) = m.call(Some(RW), &[], &format!("/api/v3/checks/{uuid}/pings/"));
    assert_eq!(pings["pings"][0]["type"], "ign");
    let (code, resumed) = m.post(
        Some(RW),
        &format!("/api/v3/checks/{uuid}/resume"),
        &json!({}),
    );
    assert_eq!(
        (
            code,
            resumed["status"].clone(),
            resumed["last_ping"].clone()
        ),
        (200, json!("new"), Value::Null)
    );
    let (code, body) = m.post(
        Some(RW),
        &format!("/api/v3/checks/{uuid}/resume"),
        &json!({}),
    );
    assert_eq!((code, body), (409, json!("check is not paused")));

    // ---- update keeps what it is not given
    let (code, updated) = m.post(
        Some(RW),
        &format!("/api/v3/checks/{uuid}"),
        &json!({"timeout": 120}),
    );
    assert_eq!(code, 200);
    assert_eq!(
        (
            updated["timeout"].clone(),
            updated["name"].clone(),
            updated["tags"].clone()
        ),
        (json!(120), json!("Backups"), json!("prod www"))
    );
    let (code, cronned) = m.post(
        Some(RW),
        &format!("/api/v3/checks/{uuid}"),
        &json!({"schedule": "0 * * * *"}),
    );
    assert_eq!(code, 200);
    expect_fields(&cronned, READ_WRITE, &["schedule", "tz"], &[]);
    // A declared check is the configuration's.
    let (code, body) = m.post(
        Some(RW),
        &format!("/api/v3/checks/{DECLARED}"),
        &json!({"name": "x"}),
    );
    assert_eq!(code, 403, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("heartbeat.checks"),
        "{body}"
    );

    // ---- flips (docs: "Get a list of check's status changes")
    m.ping(&format!("/ping/{uuid}/fail"), &[]);
    m.ping(&format!("/ping/{uuid}"), &[]);
    let (code, flips) = m.call(
        Some(RO),
        &[],
        &format!("/api/v3/checks/{unique_key}/flips/"),
    );
    assert_eq!(code, 200);
    let flips = flips["flips"].as_array().unwrap();
    assert!(flips.len() >= 3, "{flips:?}");
    assert_eq!(keys(&flips[0]), set(&["timestamp", "up"]));
    assert_eq!(
        (flips[0]["up"].clone(), flips[1]["up"].clone()),
        (json!(1), json!(0))
    );
    assert!(is_iso_seconds(&flips[0]["timestamp"]));
    let (code, _) = m.call(
        Some(RO),
        &[],
        &format!("/api/v3/checks/{unique_key}/flips/?seconds=abc"),
    );
    assert_eq!(code, 400);
    let (_, recent) = m.call(
        Some(RO),
        &[],
        &format!("/api/v3/checks/{unique_key}/flips/?start=4102444800"),
    );
    assert_eq!(recent["flips"], json!([]), "none after 2100");

    // ---- badges
    let (code, svg) = m.ping(&format!("/b/2/{unique_key}.svg"), &[]);
    assert_eq!(code, 200);
    assert!(
        svg.starts_with("<svg") && svg.contains(">up<") && svg.contains("Backups"),
        "{svg}"
    );
    let (_, badge) = m.call(None, &[], &format!("/b/3/{unique_key}.json"));
    assert_eq!(
        badge,
        json!({"status": "up", "total": 1, "grace": 0, "down": 0})
    );
    let (_, shields) = m.call(None, &[], &format!("/b/2/{unique_key}.shields"));
    assert_eq!(shields["schemaVersion"], 1);
    assert_eq!(
        m.ping("/b/2/0000000000000000000000000000000000000000.svg", &[])
            .0,
        404
    );

    // ---- Prometheus, with the read-only key only
    let (code, text) = m.ping(&format!("/projects/default/metrics/{RO}"), &[]);
    assert_eq!(code, 200);
    assert!(
        text.contains(&format!(
            "hc_check_up{{name=\"Backups\", tags=\"prod www\", unique_key=\"{unique_key}\"}} 1"
        )),
        "{text}"
    );
    assert!(text.contains("hc_tag_up{tag=\"www\"} 1"), "{text}");
    assert!(text.contains("hc_checks_total 5"), "{text}");
    assert!(!text.contains(&uuid), "no ping secrets in metrics");
    let (code, _) = m.ping(&format!("/projects/default/metrics/{RW}"), &[]);
    assert_eq!(code, 403);
    let (code, _) = m.ping(
        "/projects/default/metrics/",
        &["-H", &format!("Authorization: Bearer {RO}")],
    );
    assert_eq!(code, 200);

    // ---- the probe of a closed port: down, and the webhook hears why
    let down = eventually(
        Duration::from_secs(20),
        "the probe's down notification",
        || {
            notified
                .lock()
                .unwrap()
                .iter()
                .find(|n| n["title"] == "closed port is DOWN")
                .cloned()
        },
    );
    assert!(
        down.to_string().contains("cannot connect to 127.0.0.1:"),
        "the reason travels: {down}"
    );
    let probe_uuid = m.call(Some(RW), &[], "/api/v3/checks/").1["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "closed port")
        .unwrap()["uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        m.ping(&format!("/ping/{probe_uuid}"), &[]),
        (404, "not found".to_owned()),
        "nobody outside can ping a probe's check"
    );

    // ---- delete
    let (code, deleted) = m.call(
        Some(RW),
        &["-X", "DELETE"],
        &format!("/api/v3/checks/{uuid}"),
    );
    assert_eq!((code, deleted["name"].clone()), (200, json!("Backups")));
    let (code, _) = m.call(Some(RW), &[], &format!("/api/v3/checks/{uuid}"));
    assert_eq!(code, 404);

    grpc_api(&m);
}

/// `vigil.heartbeat.v1`: keys map to roles; viewers never see ping secrets.
fn grpc_api(m: &Monitor) {
    use tonic::{Code, Request};
    use vigil_proto::heartbeat::v1::{
        self as pb, heartbeat_service_client::HeartbeatServiceClient,
    };
    use vigil_runtime::auth::{BearerAuth, Role, assert_caller};

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", m.grpc))
                .unwrap()
                .connect()
                .await
                .unwrap();
        let client = |key: &str| {
            HeartbeatServiceClient::with_interceptor(channel.clone(), BearerAuth::new(key).unwrap())
        };
        let e = HeartbeatServiceClient::new(channel.clone())
            .list_checks(pb::ListChecksRequest::default())
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);

        let viewer = client(RO)
            .list_checks(pb::ListChecksRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert!(
            viewer
                .checks
                .iter()
                .all(|c| c.uuid.is_empty() && c.last_message.is_empty()),
            "no ping secrets or failure output for viewers"
        );
        let probe = viewer
            .checks
            .iter()
            .find(|c| c.name == "closed port")
            .unwrap();
        assert_eq!(probe.origin, pb::CheckOrigin::Probe as i32);
        let editor = client(RW)
            .get_check(pb::GetCheckRequest {
                id: probe.unique_key.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(editor.last_message.contains("cannot connect"), "{editor:?}");
        let declared = viewer
            .checks
            .iter()
            .find(|c| c.name == "declared job")
            .unwrap();
        assert_eq!(declared.origin, pb::CheckOrigin::Config as i32);
        assert_eq!(declared.status, pb::CheckStatus::New as i32);

        let made = client(RW)
            .create_check(pb::CreateCheckRequest {
                spec: Some(pb::CheckSpec {
                    name: "grpc job".into(),
                    period_ms: 600_000,
                    grace_ms: 60_000,
                    ..Default::default()
                }),
                unique: vec!["name".into()],
            })
            .await
            .unwrap()
            .into_inner();
        assert!(made.created);
        let check = made.check.unwrap();
        assert_eq!(check.period_ms, 600_000);
        let e = client(RW)
            .resume_check(pb::GetCheckRequest {
                id: check.uuid.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(
            (e.code(), e.message()),
            (Code::FailedPrecondition, "check is not paused")
        );
        let e = client(RO)
            .pause_check(pb::GetCheckRequest {
                id: check.uuid.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "viewers cannot pause");

        // A UI gateway acts for its users with their roles.
        let mut as_viewer = Request::new(pb::GetCheckRequest {
            id: check.unique_key.clone(),
        });
        assert_caller(&mut as_viewer, "default", Role::Viewer, "vera").unwrap();
        let e = client(GATEWAY).pause_check(as_viewer).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);
        let mut as_editor = Request::new(pb::GetCheckRequest {
            id: check.unique_key.clone(),
        });
        assert_caller(&mut as_editor, "default", Role::Editor, "ed").unwrap();
        let paused = client(GATEWAY)
            .pause_check(as_editor)
            .await
            .unwrap()
            .into_inner();
        assert_eq!(paused.status, pb::CheckStatus::Paused as i32);
        let mut other = Request::new(pb::ListChecksRequest::default());
        assert_caller(&mut other, "elsewhere", Role::Admin, "x").unwrap();
        let e = client(GATEWAY).list_checks(other).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);

        let flips = client(RO)
            .list_flips(pb::GetCheckRequest {
                id: check.unique_key.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(flips.flips.is_empty());
        let e = client(RW)
            .update_check(pb::UpdateCheckRequest {
                id: check.uuid.clone(),
                spec: Some(pb::CheckSpec {
                    schedule: "61 * * * *".into(),
                    ..Default::default()
                }),
                fields: vec!["schedule".into()],
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    });
}
