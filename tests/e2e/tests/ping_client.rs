//! `vigil ping`, the client for cron jobs and backups, against the real
//! `vigil-heartbeat` binary: a wrapped command's output passes through and
//! its exit status becomes the job's and the check's; a failing job takes
//! the check down (one notification at a webhook), a bare ping brings it
//! back; a ping the monitor refuses never changes the job's outcome.

use std::time::Duration;

use vigil_e2e::{
    curl_with, eventually, free_port, json, run_to_end, start, wait_healthy, webhook_receiver,
};

const UUID: &str = "3f2a9c1e-5b7d-4e8f-a1c2-d3e4f5a6b7c8";
const KEY: &str = "ping-client-key-0123456789";

/// A GET of the monitor's API v3 with its key.
fn api(http: u16, path: &str) -> (u16, String) {
    curl_with(
        &["-H", &format!("X-Api-Key: {KEY}")],
        &format!("http://127.0.0.1:{http}/api/v3/{path}"),
    )
}

fn status(http: u16) -> String {
    let (_, body) = api(http, "checks/");
    json(&body)["checks"][0]["status"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

#[test]
fn wrapped_jobs_report_their_exit_status() {
    let dir = tempfile::tempdir().expect("dir");
    let (http, grpc) = (free_port(), free_port());
    let (hook, notified) = webhook_receiver();
    let config = dir.path().join("heartbeat.toml");
    std::fs::write(
        &config,
        format!(
            r#"
data_dir = "{data}"
[heartbeat]
api_key = "{KEY}"
[heartbeat.http]
listen = "127.0.0.1:{http}"
[heartbeat.grpc]
listen = "127.0.0.1:{grpc}"
[[heartbeat.checks]]
name = "backup"
uuid = "{UUID}"
period = "1h"
[[heartbeat.integrations]]
name = "hook"
webhook = {{ url = "http://127.0.0.1:{hook}/hook" }}
"#,
            data = dir.path().join("data").display()
        ),
    )
    .expect("config");
    let config = config.display().to_string();
    let mut monitor = start(dir.path(), "vigil-heartbeat", &["--config", &config], &[]);
    wait_healthy(
        &mut monitor,
        &format!("http://127.0.0.1:{http}/readyz"),
        Duration::from_secs(30),
    );
    let url = format!("http://127.0.0.1:{http}/ping/{UUID}");
    let ping = |args: &[&str]| {
        let mut all = vec!["ping", url.as_str()];
        all.extend_from_slice(args);
        run_to_end(dir.path(), "vigil", &all, &[], Duration::from_secs(60))
    };

    // A job that succeeds: its output passes through, the check is up.
    let (code, out, _) = ping(&["--", "sh", "-c", "echo backup done; exit 0"]);
    assert!(code.success(), "{code}");
    assert!(out.contains("backup done"), "{out}");
    assert_eq!(status(http), "up");

    // A job that fails with 3: the job exits 3, the check is down at once,
    // and the webhook hears it once.
    let (code, _, err) = ping(&["--", "sh", "-c", "echo disk full >&2; exit 3"]);
    assert_eq!(code.code(), Some(3), "the job's own status");
    assert!(err.contains("disk full"), "{err}");
    assert_eq!(status(http), "down");
    let down = eventually(Duration::from_secs(15), "the down notification", || {
        notified.lock().expect("lock").first().cloned()
    });
    assert_eq!(down["kind"], "trigger", "{down}");
    assert!(
        down["text"].as_str().unwrap_or("").contains("failure"),
        "{down}"
    );
    // The monitor kept the run: start, then the failure with its exit
    // status, the run's duration and the output's tail as the body.
    let (_, body) = api(http, &format!("checks/{UUID}/pings/"));
    let pings = json(&body);
    let last = &pings["pings"][0];
    assert_eq!(last["type"], "fail", "{pings}");
    assert_eq!(last["exitstatus"], 3, "{pings}");
    assert_eq!(
        last["ua"].as_str().map(|u| u.starts_with("vigil-ping")),
        Some(true),
        "{pings}"
    );
    assert!(
        last["duration"].as_f64().is_some(),
        "a finished run has a duration: {pings}"
    );
    assert_eq!(pings["pings"][1]["type"], "start", "{pings}");
    let body_url = last["body_url"].as_str().expect("the output is kept");
    let (code, tail) = curl_with(&["-H", &format!("X-Api-Key: {KEY}")], body_url);
    assert_eq!(code, 200);
    assert!(tail.contains("disk full"), "{tail}");

    // A command that cannot run: 127, and the check hears it.
    let (code, _, err) = ping(&["--", "/nonexistent/job"]);
    assert_eq!(code.code(), Some(127));
    assert!(err.contains("cannot run"), "{err}");

    // A bare ping: success, up again (one resolve).
    let (code, _, _) = ping(&[]);
    assert!(code.success());
    assert_eq!(status(http), "up");
    eventually(Duration::from_secs(15), "the resolve", || {
        (notified.lock().expect("lock").len() >= 2).then_some(())
    });
    let kinds: Vec<String> = notified
        .lock()
        .expect("lock")
        .iter()
        .map(|n| n["kind"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(kinds, ["trigger", "resolve"]);

    // The monitor refusing a ping (unknown check) never fails the job.
    let unknown = format!("http://127.0.0.1:{http}/ping/00000000-0000-4000-8000-000000000000");
    let (code, _, err) = run_to_end(
        dir.path(),
        "vigil",
        &["ping", &unknown, "--", "true"],
        &[],
        Duration::from_secs(60),
    );
    assert!(code.success(), "{code}: {err}");
    assert!(err.contains("404"), "says why: {err}");

    // A mistyped URL is a usage error: the job does not run.
    let marker = dir.path().join("ran");
    let touch = format!("touch {}", marker.display());
    let (code, _, err) = run_to_end(
        dir.path(),
        "vigil",
        &["ping", "monitor.example/ping/x", "--", "sh", "-c", &touch],
        &[],
        Duration::from_secs(60),
    );
    assert_eq!(code.code(), Some(2), "{err}");
    assert!(err.contains("is not a ping URL"), "{err}");
    assert!(!marker.exists(), "the job did not run");
}
