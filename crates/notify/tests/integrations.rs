//! Every integration against a local receiver, each payload checked against
//! its target's documented format; email through a real SMTP server
//! (aiosmtpd). Also retries, rate limits, ordering, durability and secrets.
#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::{
    net::SocketAddr,
    path::Path,
    process::{Child, Command},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode, Uri},
    response::IntoResponse,
};
use serde_json::Value;
use vigil_notify::{
    Dispatcher, Field, IntegrationConfig, Kind, Notification, Notifier, Outbox, RetryPolicy,
    Severity,
};

#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// A scripted answer: a status and an optional Retry-After.
type Step = (StatusCode, Option<&'static str>);

/// An HTTP receiver that records every request and answers with the next
/// scripted status (then 202).
#[derive(Clone, Default)]
struct Receiver {
    received: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<Vec<Step>>>,
}

async fn record(
    State(r): State<Receiver>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    r.received.lock().unwrap().push(Received {
        path: uri.to_string(),
        headers,
        body,
    });
    let next = {
        let mut script = r.script.lock().unwrap();
        if script.is_empty() {
            None
        } else {
            Some(script.remove(0))
        }
    };
    match next {
        Some((status, retry_after)) => {
            let mut h = HeaderMap::new();
            if let Some(s) = retry_after {
                h.insert("retry-after", s.parse().unwrap());
            }
            (status, h, "{\"status\":\"scripted\"}").into_response()
        }
        None => (
            StatusCode::ACCEPTED,
            "{\"status\":\"success\",\"message\":\"Event processed\"}",
        )
            .into_response(),
    }
}

impl Receiver {
    async fn start() -> (Self, SocketAddr) {
        let r = Receiver::default();
        let app = Router::new().fallback(record).with_state(r.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (r, addr)
    }
    fn take(&self) -> Vec<Received> {
        std::mem::take(&mut self.received.lock().unwrap())
    }
    fn script(&self, steps: &[Step]) {
        self.script.lock().unwrap().extend_from_slice(steps);
    }
}

fn notification(kind: Kind) -> Notification {
    Notification {
        kind,
        key: "vigil/default/slo_availability/orders".into(),
        project: "default".into(),
        category: "slo".into(),
        severity: Severity::Critical,
        title: "orders: availability SLO burning 20.1x <fast> & \"quoted\"".into(),
        text: "5.0% of requests failed over the last 5 min (objective 99%).\nSecond line.".into(),
        subject: "orders".into(),
        source: "vigil-alerting".into(),
        hint: Some(
            "orders → postgres: connection failures began 40 s before the SLO breach".into(),
        ),
        fields: vec![
            Field::new("Burn rate (1h)", "20.1x"),
            Field::new("Burn rate (5m)", "22.4x"),
        ],
        started_at_ms: 1_700_000_000_000,
        resolved_at_ms: (kind == Kind::Resolve).then_some(1_700_000_600_000),
        url: Some("https://vigil.example.com/incidents/abc".into()),
    }
}

fn integration(toml: &str) -> IntegrationConfig {
    let value: toml::Value = toml::from_str(toml).expect("valid TOML");
    value.try_into().expect("a valid integration")
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{pointer} is a string in {v}"))
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

/// Slack Block Kit as documented: `text` fallback; at most 50 blocks; a
/// header holds plain_text of at most 150 characters; a section holds
/// text (at most 3000) or at most 10 fields (each at most 2000); a context
/// at most 10 elements.
fn check_slack(v: &Value) {
    assert!(!str_at(v, "/text").is_empty());
    let blocks = v["blocks"].as_array().expect("blocks");
    assert!(!blocks.is_empty() && blocks.len() <= 50);
    for block in blocks {
        match str_at(block, "/type") {
            "header" => {
                assert_eq!(str_at(block, "/text/type"), "plain_text");
                assert!(chars(str_at(block, "/text/text")) <= 150);
            }
            "section" => {
                if let Some(text) = block.get("text") {
                    assert!(matches!(str_at(text, "/type"), "mrkdwn" | "plain_text"));
                    assert!(chars(str_at(text, "/text")) <= 3000);
                } else {
                    let fields = block["fields"].as_array().expect("text or fields");
                    assert!(!fields.is_empty() && fields.len() <= 10);
                    for f in fields {
                        assert!(chars(str_at(f, "/text")) <= 2000);
                    }
                }
            }
            "context" => {
                let elements = block["elements"].as_array().expect("elements");
                assert!(!elements.is_empty() && elements.len() <= 10);
            }
            other => panic!("unexpected block type {other}"),
        }
    }
    // mrkdwn control characters are escaped.
    let text = serde_json::to_string(v).unwrap();
    assert!(text.contains("&lt;fast&gt; &amp;"), "{text}");
}

/// PagerDuty Events API v2 as documented.
fn check_pagerduty(v: &Value, routing_key: &str, action: &str) {
    assert_eq!(str_at(v, "/routing_key"), routing_key);
    assert_eq!(str_at(v, "/event_action"), action);
    let dedup = str_at(v, "/dedup_key");
    assert!(!dedup.is_empty() && chars(dedup) <= 255);
    if action == "trigger" {
        let summary = str_at(v, "/payload/summary");
        assert!(!summary.is_empty() && chars(summary) <= 1024);
        assert!(!str_at(v, "/payload/source").is_empty());
        assert!(matches!(
            str_at(v, "/payload/severity"),
            "critical" | "error" | "warning" | "info"
        ));
        chrono::DateTime::parse_from_rfc3339(str_at(v, "/payload/timestamp")).expect("ISO 8601");
        assert!(v["payload"]["custom_details"].is_object());
    } else {
        assert!(v.get("payload").is_none(), "a resolve carries no payload");
    }
}

/// A Teams workflow message carrying one Adaptive Card.
fn check_teams(v: &Value) {
    assert_eq!(str_at(v, "/type"), "message");
    let attachments = v["attachments"].as_array().expect("attachments");
    assert_eq!(attachments.len(), 1);
    assert_eq!(
        str_at(&attachments[0], "/contentType"),
        "application/vnd.microsoft.card.adaptive"
    );
    let card = &attachments[0]["content"];
    assert_eq!(str_at(card, "/type"), "AdaptiveCard");
    assert!(str_at(card, "/version").starts_with("1."));
    for element in card["body"].as_array().expect("body") {
        match str_at(element, "/type") {
            "TextBlock" => assert!(!str_at(element, "/text").is_empty()),
            "FactSet" => {
                for fact in element["facts"].as_array().expect("facts") {
                    str_at(fact, "/title");
                    str_at(fact, "/value");
                }
            }
            other => panic!("unexpected element {other}"),
        }
    }
    for action in card["actions"].as_array().into_iter().flatten() {
        assert_eq!(str_at(action, "/type"), "Action.OpenUrl");
        str_at(action, "/url");
    }
}

/// Opsgenie create-alert body as documented.
fn check_opsgenie_create(v: &Value) {
    let message = str_at(v, "/message");
    assert!(!message.is_empty() && chars(message) <= 130);
    assert!(chars(str_at(v, "/alias")) <= 512);
    assert!(chars(str_at(v, "/description")) <= 15000);
    assert!(matches!(
        str_at(v, "/priority"),
        "P1" | "P2" | "P3" | "P4" | "P5"
    ));
    for tag in v["tags"].as_array().expect("tags") {
        assert!(chars(tag.as_str().expect("tag")) <= 50);
    }
    for (_, value) in v["details"].as_object().expect("details") {
        assert!(value.is_string(), "details are strings");
    }
}

async fn notifier(configs: &[IntegrationConfig]) -> Arc<Notifier> {
    Arc::new(Notifier::new("alerting.integrations", configs, "vigil-alerting").expect("valid"))
}

#[tokio::test]
async fn http_integrations_send_documented_payloads() {
    let (rx, addr) = Receiver::start().await;
    let routing_key = "R0123456789abcdef0123456789abcd";
    let configs = [
        integration(&format!(
            "name = \"slack\"\nslack = {{ webhook_url = \"http://{addr}/services/T0/B0/secret-slack-token\" }}"
        )),
        integration(&format!(
            "name = \"pd\"\npagerduty = {{ routing_key = \"{routing_key}\", url = \"http://{addr}/v2/enqueue\" }}"
        )),
        integration(&format!(
            "name = \"teams\"\nteams = {{ webhook_url = \"http://{addr}/workflows/teams-secret\" }}"
        )),
        integration(&format!(
            "name = \"og\"\nopsgenie = {{ api_key = \"og-secret-key\", url = \"http://{addr}/\" }}"
        )),
    ];
    let notifier = notifier(&configs).await;
    for kind in [Kind::Trigger, Kind::Resolve] {
        let n = notification(kind);
        for name in ["slack", "pd", "teams", "og"] {
            notifier
                .send(name, &n)
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
    let got = rx.take();
    assert_eq!(got.len(), 8, "{got:?}");
    let by_path = |prefix: &str| -> Vec<&Received> {
        got.iter().filter(|r| r.path.starts_with(prefix)).collect()
    };

    let slack = by_path("/services/");
    assert_eq!(slack.len(), 2);
    for r in &slack {
        assert_eq!(r.headers["content-type"], "application/json");
        check_slack(&r.json());
    }
    assert!(str_at(&slack[0].json(), "/text").contains("FIRING"));
    assert!(str_at(&slack[1].json(), "/text").contains("RESOLVED"));

    let pd = by_path("/v2/enqueue");
    assert_eq!(pd.len(), 2);
    check_pagerduty(&pd[0].json(), routing_key, "trigger");
    check_pagerduty(&pd[1].json(), routing_key, "resolve");
    assert_eq!(
        pd[0].json()["dedup_key"],
        pd[1].json()["dedup_key"],
        "resolve closes what trigger opened"
    );
    assert_eq!(str_at(&pd[0].json(), "/payload/severity"), "critical");

    let teams = by_path("/workflows/");
    assert_eq!(teams.len(), 2);
    for r in &teams {
        check_teams(&r.json());
    }

    let og = by_path("/v2/alerts");
    assert_eq!(og.len(), 2);
    assert_eq!(og[0].path, "/v2/alerts");
    assert_eq!(og[0].headers["authorization"], "GenieKey og-secret-key");
    check_opsgenie_create(&og[0].json());
    assert_eq!(str_at(&og[0].json(), "/priority"), "P1");
    assert_eq!(
        og[1].path,
        "/v2/alerts/vigil%2Fdefault%2Fslo_availability%2Forders/close?identifierType=alias"
    );
    assert_eq!(og[1].headers["authorization"], "GenieKey og-secret-key");
    assert!(str_at(&og[1].json(), "/note").starts_with("Resolved"));
}

#[tokio::test]
async fn pagerduty_deployments_are_change_events_and_tests_open_and_close() {
    let (rx, addr) = Receiver::start().await;
    let configs = [integration(&format!(
        "name = \"pd\"\ndeployments = true\npagerduty = {{ routing_key = \"k\", url = \"http://{addr}/v2/enqueue\" }}"
    ))];
    let notifier = notifier(&configs).await;
    notifier
        .send("pd", &notification(Kind::Deployment))
        .await
        .unwrap();
    notifier
        .test("pd", "default", 1_700_000_000_000)
        .await
        .unwrap();
    let got = rx.take();
    let paths: Vec<&str> = got.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["/v2/change/enqueue", "/v2/enqueue", "/v2/enqueue"]);
    let change = got[0].json();
    assert!(!str_at(&change, "/payload/summary").is_empty());
    assert!(change.get("event_action").is_none());
    check_pagerduty(&got[1].json(), "k", "trigger");
    check_pagerduty(&got[2].json(), "k", "resolve");
}

#[tokio::test]
async fn webhook_templates_escape_with_the_json_filter() {
    let (rx, addr) = Receiver::start().await;
    let template = r#"{"state": {{ n.kind|json }}, "title": {{ n.title|json }}, "app": {{ n.subject|json }}, "hint": {{ n.hint|json }}, "fields": {{ n.fields|json }}}"#;
    let configs = [
        integration(&format!(
            "name = \"hook\"\nwebhook = {{ url = \"http://{addr}/hook\", headers = {{ x-token = \"hook-secret\" }}, template = '{template}', resolve_template = '{{\"resolved\": {{{{ n.key|json }}}}, \"at\": {{{{ n.resolved_at|json }}}}}}' }}"
        )),
        integration(&format!(
            "name = \"plain\"\nwebhook = {{ url = \"http://{addr}/plain\" }}"
        )),
    ];
    let notifier = notifier(&configs).await;
    let trigger = notification(Kind::Trigger);
    notifier.send("hook", &trigger).await.unwrap();
    notifier
        .send("hook", &notification(Kind::Resolve))
        .await
        .unwrap();
    notifier.send("plain", &trigger).await.unwrap();
    let got = rx.take();
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].headers["x-token"], "hook-secret");
    let body = got[0].json();
    assert_eq!(body["state"], "trigger");
    assert_eq!(
        body["title"],
        trigger.title.as_str(),
        "quotes and <> survive"
    );
    assert_eq!(body["app"], "orders");
    assert_eq!(body["fields"][0]["name"], "Burn rate (1h)");
    let resolved = got[1].json();
    assert_eq!(resolved["resolved"], trigger.key.as_str());
    assert_eq!(resolved["at"], "2023-11-14T22:23:20.000Z");
    let plain = got[2].json();
    assert_eq!(plain["kind"], "trigger");
    assert_eq!(plain["title"], trigger.title.as_str());
    assert_eq!(plain["started_at"], "2023-11-14T22:13:20.000Z");
}

#[tokio::test]
async fn bad_templates_and_settings_are_refused_naming_the_key() {
    let cases = [
        (
            "name = \"h\"\nwebhook = { url = \"http://x/\", template = \"{{ n.title \" }",
            "alerting.integrations[0].webhook.template",
        ),
        (
            "name = \"h\"\nwebhook = { url = \"ftp://x/\" }",
            "alerting.integrations[0].webhook.url",
        ),
        (
            "name = \"h\"\nslack = { webhook_url = \"\" }",
            "alerting.integrations[0].slack.webhook_url",
        ),
        ("name = \"h\"", "alerting.integrations[0]"),
        (
            "name = \"h\"\nslack = { webhook_url = \"http://x\" }\nteams = { webhook_url = \"http://x\" }",
            "alerting.integrations[0]",
        ),
        (
            "name = \"h\"\nemail = { host = \"smtp\", from = \"not an address\", to = [\"a@b.c\"] }",
            "alerting.integrations[0].email.from",
        ),
        (
            "name = \"h\"\ndeployments = true\nopsgenie = { api_key = \"k\" }",
            "alerting.integrations[0].deployments",
        ),
        (
            "name = \"h\"\nrate_per_minute = 0\nslack = { webhook_url = \"http://x\" }",
            "alerting.integrations[0].rate_per_minute",
        ),
        (
            "name = \"h\"\nslack = { webhook_url_file = \"/nonexistent/slack\" }",
            "alerting.integrations[0].slack.webhook_url_file",
        ),
    ];
    for (toml, key) in cases {
        let err =
            Notifier::new("alerting.integrations", &[integration(toml)], "t").expect_err(toml);
        let text = err.to_string();
        assert!(text.contains(key), "{toml}: {text}");
    }
    let twice = [
        integration("name = \"h\"\nslack = { webhook_url = \"http://x\" }"),
        integration("name = \"h\"\nslack = { webhook_url = \"http://x\" }"),
    ];
    let err = Notifier::new("alerting.integrations", &twice, "t").expect_err("duplicate");
    assert!(err.to_string().contains("used twice"), "{err}");
}

#[tokio::test]
async fn secrets_stay_out_of_errors_and_debug_output() {
    // Nothing listens on port 9 of this address: the connection fails.
    let configs = [integration(
        "name = \"slack\"\nslack = { webhook_url = \"http://127.0.0.1:9/services/T0/B0/very-secret-token\" }",
    )];
    let notifier = notifier(&configs).await;
    let err = notifier
        .send("slack", &notification(Kind::Trigger))
        .await
        .expect_err("refused");
    assert!(err.retryable, "a refused connection is worth a retry");
    assert!(
        !err.message.contains("very-secret-token"),
        "{}",
        err.message
    );
    let debug = format!("{notifier:?} {configs:?}");
    assert!(!debug.contains("very-secret-token"), "{debug}");
}

#[tokio::test]
async fn routing_by_category_and_severity() {
    let configs = [
        integration(
            "name = \"slo-only\"\ncategories = [\"slo\"]\nslack = { webhook_url = \"http://x\" }",
        ),
        integration(
            "name = \"critical\"\nmin_severity = \"critical\"\nslack = { webhook_url = \"http://x\" }",
        ),
        integration(
            "name = \"all\"\nmin_severity = \"info\"\ndeployments = true\nslack = { webhook_url = \"http://x\" }",
        ),
    ];
    let notifier = notifier(&configs).await;
    let mut n = notification(Kind::Trigger);
    n.severity = Severity::Warning;
    assert_eq!(notifier.route(&n), ["slo-only", "all"]);
    n.category = "memory".into();
    n.severity = Severity::Critical;
    assert_eq!(notifier.route(&n), ["critical", "all"]);
    n.severity = Severity::Info;
    assert_eq!(notifier.route(&n), ["all"]);
    n.kind = Kind::Deployment;
    assert_eq!(notifier.route(&n), ["all"]);
}

fn outbox(dir: &Path) -> (Arc<redb::Database>, Outbox) {
    let db = Arc::new(redb::Database::create(dir.join("outbox.redb")).unwrap());
    let outbox = Outbox::open(db.clone()).unwrap();
    (db, outbox)
}

fn enqueue(db: &redb::Database, n: &Notification, to: &[&str], now: i64) {
    let txn = db.begin_write().unwrap();
    let names: Vec<String> = to.iter().map(|s| (*s).to_owned()).collect();
    Outbox::enqueue(&txn, n, &names, now).unwrap();
    txn.commit().unwrap();
}

/// A webhook integration (`settings` added to its entry) with a receiver,
/// an outbox in a temporary redb file, and a dispatcher.
struct Queue {
    rx: Receiver,
    db: Arc<redb::Database>,
    outbox: Outbox,
    dispatcher: Dispatcher,
    _dir: tempfile::TempDir,
}

async fn queue(settings: &str) -> Queue {
    let (rx, addr) = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (db, outbox) = outbox(dir.path());
    let configs = [integration(&format!(
        "name = \"hook\"\n{settings}webhook = {{ url = \"http://{addr}/hook\" }}"
    ))];
    let dispatcher = Dispatcher::new(
        outbox.clone(),
        notifier(&configs).await,
        RetryPolicy::default(),
    );
    Queue {
        rx,
        db,
        outbox,
        dispatcher,
        _dir: dir,
    }
}

#[tokio::test]
async fn retries_with_backoff_and_keeps_trigger_before_resolve() {
    let Queue {
        rx,
        db,
        outbox,
        dispatcher,
        _dir,
    } = queue("").await;
    enqueue(&db, &notification(Kind::Trigger), &["hook"], 0);
    enqueue(&db, &notification(Kind::Resolve), &["hook"], 0);
    // 503, then 429 asking for 7 s, then success.
    rx.script(&[
        (StatusCode::SERVICE_UNAVAILABLE, None),
        (StatusCode::TOO_MANY_REQUESTS, Some("7")),
    ]);

    let pass = dispatcher.pass(10_000).await.unwrap();
    assert_eq!((pass.delivered, pass.failed), (0, 1));
    assert_eq!(pass.next_due_ms, Some(11_000), "first retry after 1 s");
    assert_eq!(rx.take().len(), 1, "the resolve waits behind its trigger");

    let pass = dispatcher.pass(10_500).await.unwrap();
    assert_eq!((pass.delivered, pass.failed), (0, 0), "not due yet");
    assert!(rx.take().is_empty());

    let pass = dispatcher.pass(11_000).await.unwrap();
    assert_eq!(pass.failed, 1);
    assert_eq!(pass.next_due_ms, Some(18_000), "Retry-After is honoured");
    rx.take();

    let pass = dispatcher.pass(18_000).await.unwrap();
    assert_eq!(pass.delivered, 2);
    let got = rx.take();
    let kinds: Vec<String> = got
        .iter()
        .map(|r| r.json()["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["trigger", "resolve"]);
    assert!(outbox.entries().unwrap().is_empty());
}

#[tokio::test]
async fn refused_notifications_are_dropped_and_the_queue_goes_on() {
    let Queue {
        rx,
        db,
        outbox,
        dispatcher,
        _dir,
    } = queue("").await;
    let mut other = notification(Kind::Trigger);
    other.key = "another".into();
    enqueue(
        &db,
        &notification(Kind::Trigger),
        &["hook", "removed-since"],
        0,
    );
    enqueue(&db, &other, &["hook"], 0);
    rx.script(&[(StatusCode::BAD_REQUEST, None)]);
    let pass = dispatcher.pass(0).await.unwrap();
    assert_eq!(
        (pass.delivered, pass.dropped),
        (1, 2),
        "400 and an unknown integration drop; the next goes"
    );
    assert!(outbox.entries().unwrap().is_empty());
    assert_eq!(rx.take().len(), 2);
}

#[tokio::test]
async fn the_rate_limit_holds_notifications_back_without_losing_them() {
    let Queue {
        rx,
        db,
        outbox,
        dispatcher,
        _dir,
    } = queue("rate_per_minute = 2\n").await;
    for i in 0..5 {
        let mut n = notification(Kind::Trigger);
        n.key = format!("k{i}");
        enqueue(&db, &n, &["hook"], 0);
    }
    let pass = dispatcher.pass(0).await.unwrap();
    assert_eq!(pass.delivered, 2, "a burst of two per minute");
    assert_eq!(outbox.entries().unwrap().len(), 3, "the rest wait");
    assert_eq!(rx.take().len(), 2);
}

#[tokio::test]
async fn queued_notifications_survive_a_restart() {
    let (rx, addr) = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let configs = [integration(&format!(
        "name = \"hook\"\nwebhook = {{ url = \"http://{addr}/hook\" }}"
    ))];
    {
        let (db, _outbox) = outbox(dir.path());
        enqueue(&db, &notification(Kind::Trigger), &["hook"], 0);
    }
    let (_db, outbox) = outbox(dir.path());
    let dispatcher = Dispatcher::new(
        outbox.clone(),
        notifier(&configs).await,
        RetryPolicy::default(),
    );
    assert_eq!(dispatcher.pass(0).await.unwrap().delivered, 1);
    assert_eq!(dispatcher.pass(1).await.unwrap().delivered, 0, "sent once");
    assert_eq!(rx.take().len(), 1);
}

struct Smtp(Child);
impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn email_reaches_a_real_smtp_server() {
    let available = Command::new("python3")
        .args(["-c", "import aiosmtpd"])
        .status()
        .is_ok_and(|s| s.success());
    if !available {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must have aiosmtpd: scripts/install-deps.sh installs it"
        );
        eprintln!(
            "SKIPPED email_reaches_a_real_smtp_server: python3 -m aiosmtpd is not installed (scripts/install-deps.sh installs it)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("mail");
    let port = free_port();
    let _smtp = Smtp(
        Command::new("python3")
            .args([
                "-m",
                "aiosmtpd",
                "-n",
                "-l",
                &format!("127.0.0.1:{port}"),
                "-c",
                "aiosmtpd.handlers.Mailbox",
            ])
            .arg(&maildir)
            .spawn()
            .expect("aiosmtpd starts"),
    );
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let configs = [integration(&format!(
        "name = \"mail\"\nemail = {{ host = \"127.0.0.1\", port = {port}, security = \"none\", from = \"Vigil <vigil@example.com>\", to = [\"oncall@example.com\", \"Team <team@example.com>\"] }}"
    ))];
    let notifier = notifier(&configs).await;
    notifier
        .send("mail", &notification(Kind::Trigger))
        .await
        .expect("delivered");
    notifier
        .test("mail", "default", 1_700_000_000_000)
        .await
        .expect("delivered");
    let mut messages = Vec::new();
    for _ in 0..50 {
        messages = std::fs::read_dir(maildir.join("new"))
            .map(|d| {
                d.flatten()
                    .map(|e| std::fs::read_to_string(e.path()).unwrap())
                    .collect()
            })
            .unwrap_or_default();
        if messages.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(messages.len(), 2, "two messages in the maildir");
    let trigger = messages
        .iter()
        .find(|m| m.contains("FIRING"))
        .expect("the trigger");
    assert!(
        trigger.contains("From: Vigil <vigil@example.com>"),
        "{trigger}"
    );
    assert!(trigger.contains("oncall@example.com") && trigger.contains("team@example.com"));
    assert!(
        trigger.contains("Subject: [FIRING] orders: availability SLO burning"),
        "{trigger}"
    );
    assert!(trigger.contains("Likely cause: orders"), "{trigger}");
    assert!(trigger.contains("Content-Type: text/plain"), "{trigger}");
    assert!(messages.iter().any(|m| m.contains("Subject: [TEST]")));
}
