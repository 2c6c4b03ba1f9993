//! Integrations built from configuration, and one delivery attempt each.

use std::{num::NonZeroU32, time::Duration};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use lettre::{
    AsyncSmtpTransport, AsyncTransport, Tokio1Executor,
    message::{Mailbox, header::ContentType},
    transport::smtp::authentication::Credentials,
};
use vigil_runtime::{
    auth::Secret,
    config::{ConfigError, key},
};

use crate::{
    config::{
        IntegrationConfig, SmtpSecurity, WebhookUrlConfig, http_url, resolve_secret, validate_all,
    },
    message::{Kind, Notification},
    payload,
};

/// Why one attempt failed. Never holds a secret: URLs are cut from
/// transport errors, and secrets are not echoed by the targets' errors.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    pub message: String,
    /// Worth trying again (timeouts, 5xx, 429, connection failures).
    pub retryable: bool,
    /// What the target asked for (`Retry-After`).
    pub retry_after: Option<Duration>,
}

impl SendError {
    fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
            retry_after: None,
        }
    }
    fn transient(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
            retry_after: None,
        }
    }
}

enum Target {
    Slack {
        url: Secret,
    },
    PagerDuty {
        routing_key: Secret,
        url: String,
    },
    Teams {
        url: Secret,
    },
    Opsgenie {
        api_key: Secret,
        url: String,
    },
    Email {
        transport: AsyncSmtpTransport<Tokio1Executor>,
        from: Mailbox,
        to: Vec<Mailbox>,
    },
    Webhook {
        url: Secret,
        headers: http::HeaderMap,
        content_type: String,
        templates: minijinja::Environment<'static>,
    },
}

/// One configured destination.
pub struct Integration {
    pub name: String,
    pub config: IntegrationConfig,
    target: Target,
    limiter: DefaultDirectRateLimiter,
}

impl std::fmt::Debug for Integration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Integration")
            .field("name", &self.name)
            .field("target", &self.config.target())
            .finish_non_exhaustive()
    }
}

/// A URL that is a secret (it carries a token): resolved, then checked.
fn secret_url(
    prefix: &str,
    field: &str,
    inline: &Secret,
    file: Option<&std::path::Path>,
) -> Result<Secret, ConfigError> {
    let url = resolve_secret(prefix, field, inline, file)?;
    http_url(prefix, field, &url.0)?;
    Ok(url)
}

const TEMPLATE_KINDS: [(&str, Kind); 4] = [
    ("trigger", Kind::Trigger),
    ("resolve", Kind::Resolve),
    ("deployment", Kind::Deployment),
    ("test", Kind::Test),
];

/// The `json` filter: any value as JSON text, quoted and escaped.
fn json_filter(value: minijinja::Value) -> Result<String, minijinja::Error> {
    serde_json::to_string(&value)
        .map_err(|e| minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e.to_string()))
}

fn webhook_templates(
    prefix: &str,
    c: &crate::config::WebhookConfig,
) -> Result<minijinja::Environment<'static>, ConfigError> {
    let mut env = minijinja::Environment::new();
    env.add_filter("json", json_filter);
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    for (name, kind) in TEMPLATE_KINDS {
        let specific = match kind {
            Kind::Trigger => c.trigger_template.as_ref(),
            Kind::Resolve => c.resolve_template.as_ref(),
            Kind::Deployment => c.deployment_template.as_ref(),
            Kind::Test => None,
        };
        let Some(source) = specific.or(c.template.as_ref()) else {
            continue;
        };
        let field = match specific {
            Some(_) => format!("{name}_template"),
            None => "template".to_owned(),
        };
        env.add_template_owned(name, source.clone())
            .map_err(|e| ConfigError::invalid(key(prefix, &field), e.to_string()))?;
    }
    Ok(env)
}

impl Integration {
    fn build(prefix: &str, config: &IntegrationConfig) -> Result<Self, ConfigError> {
        let webhook_url = |target: &str, c: &WebhookUrlConfig| {
            let p = key(prefix, target);
            secret_url(
                &p,
                "webhook_url",
                &c.webhook_url,
                c.webhook_url_file.as_deref(),
            )
        };
        let target = if let Some(c) = &config.slack {
            Target::Slack {
                url: webhook_url("slack", c)?,
            }
        } else if let Some(c) = &config.pagerduty {
            let p = key(prefix, "pagerduty");
            Target::PagerDuty {
                routing_key: resolve_secret(
                    &p,
                    "routing_key",
                    &c.routing_key,
                    c.routing_key_file.as_deref(),
                )?,
                url: c.url.clone(),
            }
        } else if let Some(c) = &config.teams {
            Target::Teams {
                url: webhook_url("teams", c)?,
            }
        } else if let Some(c) = &config.opsgenie {
            let p = key(prefix, "opsgenie");
            Target::Opsgenie {
                api_key: resolve_secret(&p, "api_key", &c.api_key, c.api_key_file.as_deref())?,
                url: c.url.trim_end_matches('/').to_owned(),
            }
        } else if let Some(c) = &config.email {
            let p = key(prefix, "email");
            let builder = match c.security {
                SmtpSecurity::Starttls => {
                    AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&c.host)
                }
                SmtpSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&c.host),
                SmtpSecurity::None => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(
                    &c.host,
                )),
            }
            .map_err(|e| ConfigError::invalid(key(&p, "host"), e.to_string()))?;
            let mut builder = builder.port(c.port).timeout(Some(config.timeout));
            if let Some(user) = &c.username {
                let password =
                    resolve_secret(&p, "password", &c.password, c.password_file.as_deref())?;
                builder = builder.credentials(Credentials::new(user.clone(), password.0));
            }
            let mailbox = |field: &str, a: &str| {
                a.parse::<Mailbox>().map_err(|_| {
                    ConfigError::invalid(key(&p, field), format!("{a:?} is not an email address"))
                })
            };
            Target::Email {
                transport: builder.build(),
                from: mailbox("from", &c.from)?,
                to: c
                    .to
                    .iter()
                    .map(|a| mailbox("to", a))
                    .collect::<Result<_, _>>()?,
            }
        } else if let Some(c) = &config.webhook {
            let p = key(prefix, "webhook");
            let url = secret_url(&p, "url", &c.url, c.url_file.as_deref())?;
            let mut headers = http::HeaderMap::new();
            for (name, value) in &c.headers {
                let name = http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                    ConfigError::invalid(
                        key(&p, "headers"),
                        format!("{name:?} is not a header name"),
                    )
                })?;
                let mut value = http::HeaderValue::from_str(&value.0).map_err(|_| {
                    ConfigError::invalid(
                        key(&p, "headers"),
                        format!("the value of {name} is not a header value"),
                    )
                })?;
                value.set_sensitive(true);
                headers.insert(name, value);
            }
            Target::Webhook {
                url,
                headers,
                content_type: c.content_type.clone(),
                templates: webhook_templates(&p, c)?,
            }
        } else {
            return Err(ConfigError::invalid(
                prefix,
                "set exactly one of slack, pagerduty, teams, opsgenie, email, webhook",
            ));
        };
        let per_minute = NonZeroU32::new(config.rate_per_minute).unwrap_or(NonZeroU32::MIN);
        Ok(Self {
            name: config.name.clone(),
            config: config.clone(),
            target,
            limiter: RateLimiter::direct(Quota::per_minute(per_minute)),
        })
    }

    /// Whether the rate limit lets one more notification go now.
    pub fn try_acquire(&self) -> bool {
        self.limiter.check().is_ok()
    }

    /// Whether this integration takes `n`.
    pub fn routes(&self, n: &Notification) -> bool {
        self.config.routes(n.kind, &n.category, n.severity)
    }

    /// One attempt to deliver `n`.
    pub async fn send(&self, client: &reqwest::Client, n: &Notification) -> Result<(), SendError> {
        let timeout = self.config.timeout;
        match &self.target {
            Target::Slack { url } => {
                post_json(client, &url.0, &[], &payload::slack(n), timeout).await
            }
            Target::Teams { url } => {
                post_json(client, &url.0, &[], &payload::teams(n), timeout).await
            }
            Target::PagerDuty { routing_key, url } => {
                let key = &routing_key.0;
                let event = |action| (url.clone(), payload::pagerduty_event(n, key, action));
                let requests = match n.kind {
                    Kind::Trigger | Kind::Resolve => vec![event(n.kind)],
                    Kind::Deployment => vec![(
                        url.replace("/v2/enqueue", "/v2/change/enqueue"),
                        payload::pagerduty_change(n, key),
                    )],
                    // A test opens and closes an event of its own.
                    Kind::Test => vec![event(Kind::Trigger), event(Kind::Resolve)],
                };
                post_all(client, &[], requests, timeout).await
            }
            Target::Opsgenie { api_key, url } => {
                let auth = format!("GenieKey {}", api_key.0);
                let create = || (format!("{url}/v2/alerts"), payload::opsgenie_create(n));
                let close = || {
                    let alias = percent_encode(&crate::message::truncate(&n.key, 512));
                    (
                        format!("{url}/v2/alerts/{alias}/close?identifierType=alias"),
                        payload::opsgenie_close(n),
                    )
                };
                let requests = match n.kind {
                    Kind::Trigger => vec![create()],
                    Kind::Resolve => vec![close()],
                    Kind::Test => vec![create(), close()],
                    // Refused in configuration: an alert nobody closes.
                    Kind::Deployment => {
                        return Err(SendError::permanent("Opsgenie takes no deployment notices"));
                    }
                };
                post_all(
                    client,
                    &[("authorization", auth.as_str())],
                    requests,
                    timeout,
                )
                .await
            }
            Target::Email {
                transport,
                from,
                to,
            } => {
                let (subject, body) = payload::email(n);
                let mut message = lettre::Message::builder()
                    .from(from.clone())
                    .subject(subject);
                for mailbox in to {
                    message = message.to(mailbox.clone());
                }
                let message = message
                    .header(ContentType::TEXT_PLAIN)
                    .body(body)
                    .map_err(|e| SendError::permanent(format!("cannot build the email: {e}")))?;
                match transport.send(message).await {
                    Ok(_) => Ok(()),
                    Err(e) if e.is_permanent() => Err(SendError::permanent(format!("SMTP: {e}"))),
                    Err(e) => Err(SendError::transient(format!("SMTP: {e}"))),
                }
            }
            Target::Webhook {
                url,
                headers,
                content_type,
                templates,
            } => {
                let body = render_webhook(templates, n)?;
                let request = client
                    .post(&url.0)
                    .timeout(timeout)
                    .headers(headers.clone())
                    .header(http::header::CONTENT_TYPE, content_type)
                    .body(body);
                finish(request.send().await).await
            }
        }
    }
}

/// The webhook body: the kind's template, or the default JSON document.
pub fn render_webhook(
    templates: &minijinja::Environment<'static>,
    n: &Notification,
) -> Result<String, SendError> {
    let context = payload::webhook_default(n);
    match templates.get_template(n.kind.as_str()) {
        Ok(template) => template
            .render(minijinja::context! { n => minijinja::Value::from(minijinja::value::Serde(&context)) })
            .map_err(|e| SendError::permanent(format!("the webhook template failed: {e}"))),
        Err(_) => Ok(context.to_string()),
    }
}

fn percent_encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

async fn post_json(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
    body: &serde_json::Value,
    timeout: Duration,
) -> Result<(), SendError> {
    let mut request = client.post(url).timeout(timeout).json(body);
    for (name, value) in headers {
        let mut value = http::HeaderValue::from_str(value).map_err(|_| {
            SendError::permanent(format!("a {name} header cannot hold the configured secret"))
        })?;
        value.set_sensitive(true);
        request = request.header(*name, value);
    }
    finish(request.send().await).await
}

/// Posts each (URL, body) in turn, stopping at the first failure.
async fn post_all(
    client: &reqwest::Client,
    headers: &[(&str, &str)],
    requests: Vec<(String, serde_json::Value)>,
    timeout: Duration,
) -> Result<(), SendError> {
    for (url, body) in requests {
        post_json(client, &url, headers, &body, timeout).await?;
    }
    Ok(())
}

/// Classifies a response: 2xx is done; 408, 429 and 5xx are worth a retry.
async fn finish(result: Result<reqwest::Response, reqwest::Error>) -> Result<(), SendError> {
    let response = match result {
        Ok(r) => r,
        // Transport errors name the URL, which can hold a secret.
        Err(e) => return Err(SendError::transient(e.without_url().to_string())),
    };
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let retry_after = response
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = response.text().await.unwrap_or_default();
    let message = format!(
        "HTTP {status}: {}",
        crate::message::truncate(body.trim(), 300)
    );
    let retryable = status.is_server_error()
        || status == http::StatusCode::TOO_MANY_REQUESTS
        || status == http::StatusCode::REQUEST_TIMEOUT;
    Err(SendError {
        message,
        retryable,
        retry_after,
    })
}

/// Every configured integration, and the HTTP client they share.
pub struct Notifier {
    client: reqwest::Client,
    integrations: Vec<Integration>,
    source: String,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("integrations", &self.integrations)
            .finish_non_exhaustive()
    }
}

impl Notifier {
    /// Builds the integrations (reading secret files). `prefix` names the
    /// configuration list in errors, e.g. `alerting.integrations`; `source`
    /// names the sender in notifications.
    pub fn new(
        prefix: &str,
        configs: &[IntegrationConfig],
        source: &str,
    ) -> Result<Self, ConfigError> {
        validate_all(prefix, configs)?;
        let client =
            vigil_runtime::http_client::build(concat!("vigil/", env!("CARGO_PKG_VERSION")))
                .map_err(|e| ConfigError::invalid(prefix, e))?;
        let integrations = configs
            .iter()
            .enumerate()
            .map(|(i, c)| Integration::build(&format!("{prefix}[{i}]"), c))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            client,
            integrations,
            source: source.to_owned(),
        })
    }

    pub fn integrations(&self) -> &[Integration] {
        &self.integrations
    }

    pub fn get(&self, name: &str) -> Option<&Integration> {
        self.integrations.iter().find(|i| i.name == name)
    }

    /// The names of the integrations that take `n`.
    pub fn route(&self, n: &Notification) -> Vec<String> {
        self.integrations
            .iter()
            .filter(|i| i.routes(n))
            .map(|i| i.name.clone())
            .collect()
    }

    /// One attempt through the named integration.
    pub async fn send(&self, name: &str, n: &Notification) -> Result<(), SendError> {
        let integration = self
            .get(name)
            .ok_or_else(|| SendError::permanent(format!("no integration is named {name:?}")))?;
        integration.send(&self.client, n).await
    }

    /// Sends a test notification through the named integration now,
    /// bypassing routing and the rate limit.
    pub async fn test(&self, name: &str, project: &str, now_ms: i64) -> Result<(), SendError> {
        let n = Notification::test(project, &self.source, name, now_ms);
        self.send(name, &n).await
    }

    pub fn source(&self) -> &str {
        &self.source
    }
}
