//! The body each target expects, built from a notification. Pure functions,
//! checked against the targets' documented formats in the tests.

use serde_json::{Map, Value, json};

use crate::message::{Kind, Notification, Severity, truncate};

/// Slack mrkdwn needs `&`, `<` and `>` escaped.
fn mrkdwn_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn emoji(n: &Notification) -> &'static str {
    match (n.kind, n.severity) {
        (Kind::Resolve, _) => ":large_green_circle:",
        (Kind::Deployment, _) => ":rocket:",
        (Kind::Test, _) => ":white_check_mark:",
        (Kind::Trigger, Severity::Critical) => ":red_circle:",
        (Kind::Trigger, _) => ":large_orange_circle:",
    }
}

/// The facts shown under the text: the caller's fields, the hint, times.
fn facts(n: &Notification) -> Vec<(String, String)> {
    let mut facts = vec![
        ("Project".to_owned(), n.project.clone()),
        ("Subject".to_owned(), n.subject.clone()),
        ("Severity".to_owned(), n.severity.as_str().to_owned()),
    ];
    if let Some(hint) = &n.hint {
        facts.push(("Likely cause".to_owned(), hint.clone()));
    }
    facts.extend(n.fields.iter().map(|f| (f.name.clone(), f.value.clone())));
    facts.push(("Started".to_owned(), Notification::rfc3339(n.started_at_ms)));
    if let Some(end) = n.resolved_at_ms {
        facts.push(("Resolved".to_owned(), Notification::rfc3339(end)));
    }
    facts
}

/// Slack incoming webhook: Block Kit blocks, and `text` as the fallback
/// shown in notifications. Limits: header 150 characters, section text
/// 3000, 10 fields of 2000, 50 blocks.
pub fn slack(n: &Notification) -> Value {
    let headline = format!("{} {}", emoji(n), n.headline());
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": truncate(&n.headline(), 150), "emoji": true}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": truncate(&mrkdwn_escape(&n.text), 3000)}}),
    ];
    let fields: Vec<Value> = facts(n)
        .into_iter()
        .take(10)
        .map(|(k, v)| {
            json!({"type": "mrkdwn", "text": truncate(&format!("*{}*\n{}", mrkdwn_escape(&k), mrkdwn_escape(&v)), 2000)})
        })
        .collect();
    if !fields.is_empty() {
        blocks.push(json!({"type": "section", "fields": fields}));
    }
    let mut context = format!("{} · {}", mrkdwn_escape(&n.source), n.category);
    if let Some(url) = &n.url {
        context.push_str(&format!(" · <{url}|Open in Vigil>"));
    }
    blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": truncate(&context, 3000)}]}));
    json!({
        "text": truncate(&mrkdwn_escape(&headline), 3000),
        "blocks": blocks,
    })
}

fn pagerduty_severity(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "critical",
        Severity::Warning => "warning",
        Severity::Info => "info",
    }
}

fn details(n: &Notification) -> Value {
    let mut map = Map::new();
    map.insert("text".into(), Value::String(n.text.clone()));
    for (k, v) in facts(n) {
        map.insert(k, Value::String(v));
    }
    Value::Object(map)
}

/// PagerDuty Events API v2 (`/v2/enqueue`): a trigger, or a resolve of the
/// same `dedup_key`.
pub fn pagerduty_event(n: &Notification, routing_key: &str, action: Kind) -> Value {
    let dedup_key = truncate(&n.key, 255);
    if action == Kind::Resolve {
        return json!({
            "routing_key": routing_key,
            "event_action": "resolve",
            "dedup_key": dedup_key,
        });
    }
    let mut event = json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup_key,
        "payload": {
            "summary": truncate(&n.title, 1024),
            "source": truncate(&n.subject, 255),
            "severity": pagerduty_severity(n.severity),
            "timestamp": Notification::rfc3339(n.started_at_ms),
            "component": n.subject,
            "group": n.project,
            "class": n.category,
            "custom_details": details(n),
        },
        "client": "Vigil",
    });
    if let Some(url) = &n.url {
        event["client_url"] = json!(url);
        event["links"] = json!([{"href": url, "text": "Open in Vigil"}]);
    }
    event
}

/// PagerDuty change event (`/v2/change/enqueue`), for deployments.
pub fn pagerduty_change(n: &Notification, routing_key: &str) -> Value {
    json!({
        "routing_key": routing_key,
        "payload": {
            "summary": truncate(&n.title, 1024),
            "timestamp": Notification::rfc3339(n.started_at_ms),
            "source": truncate(&n.subject, 255),
            "custom_details": details(n),
        },
    })
}

/// Microsoft Teams workflow webhook: a message with one Adaptive Card.
pub fn teams(n: &Notification) -> Value {
    let color = match (n.kind, n.severity) {
        (Kind::Resolve | Kind::Test, _) => "Good",
        (Kind::Deployment, _) => "Accent",
        (Kind::Trigger, Severity::Critical) => "Attention",
        (Kind::Trigger, _) => "Warning",
    };
    let facts: Vec<Value> = facts(n)
        .into_iter()
        .map(|(title, value)| json!({"title": title, "value": value}))
        .collect();
    let mut card = json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            {"type": "TextBlock", "text": n.headline(), "weight": "Bolder", "size": "Medium", "color": color, "wrap": true},
            {"type": "TextBlock", "text": n.text, "wrap": true},
            {"type": "FactSet", "facts": facts},
        ],
    });
    if let Some(url) = &n.url {
        card["actions"] = json!([{"type": "Action.OpenUrl", "title": "Open in Vigil", "url": url}]);
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": card,
        }],
    })
}

/// Opsgenie priority: P1 is the most urgent.
fn opsgenie_priority(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "P1",
        Severity::Warning => "P3",
        Severity::Info => "P5",
    }
}

/// Opsgenie `POST /v2/alerts`. Limits: message 130 characters, alias 512,
/// description 15000, tag 50, detail values 8000.
pub fn opsgenie_create(n: &Notification) -> Value {
    let mut description = n.text.clone();
    if let Some(hint) = &n.hint {
        description.push_str("\n\nLikely cause: ");
        description.push_str(hint);
    }
    if let Some(url) = &n.url {
        description.push_str("\n\n");
        description.push_str(url);
    }
    let details: Map<String, Value> = facts(n)
        .into_iter()
        .map(|(k, v)| (k, Value::String(truncate(&v, 8000))))
        .collect();
    let tags: Vec<String> = [n.project.as_str(), &n.category, n.severity.as_str()]
        .iter()
        .map(|t| truncate(t, 50))
        .collect();
    json!({
        "message": truncate(&n.title, 130),
        "alias": truncate(&n.key, 512),
        "description": truncate(&description, 15000),
        "priority": opsgenie_priority(n.severity),
        "source": n.source,
        "entity": truncate(&n.subject, 512),
        "tags": tags,
        "details": details,
    })
}

/// Opsgenie `POST /v2/alerts/{alias}/close?identifierType=alias`.
pub fn opsgenie_close(n: &Notification) -> Value {
    json!({
        "source": n.source,
        "note": truncate(&format!("Resolved: {}", n.title), 25000),
    })
}

/// Email: (subject, plain-text body).
pub fn email(n: &Notification) -> (String, String) {
    let mut body = format!("{}\n\n{}\n\n", n.headline(), n.text);
    for (k, v) in facts(n) {
        body.push_str(&format!("{k}: {v}\n"));
    }
    if let Some(url) = &n.url {
        body.push_str(&format!("\n{url}\n"));
    }
    body.push_str(&format!("\n-- \nSent by {}.\n", n.source));
    (truncate(&n.headline(), 250), body)
}

/// The generic webhook's default body: the notification as JSON.
pub fn webhook_default(n: &Notification) -> Value {
    let mut v = serde_json::to_value(n).unwrap_or(Value::Null);
    v["headline"] = json!(n.headline());
    v["started_at"] = json!(Notification::rfc3339(n.started_at_ms));
    if let Some(end) = n.resolved_at_ms {
        v["resolved_at"] = json!(Notification::rfc3339(end));
    }
    v
}
