//! `[[<service>.integrations]]`: where notifications go. Each entry names one
//! target (exactly one of `slack`, `pagerduty`, `teams`, `opsgenie`, `email`,
//! `webhook`) and the notifications it takes. Secrets can come from files
//! (`*_file`, e.g. a mounted Kubernetes secret) and are never logged.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use serde::Deserialize;
use vigil_runtime::{
    auth::Secret,
    config::{ConfigError, Validate, key, nonzero_duration},
};

use crate::message::{Kind, Severity};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntegrationConfig {
    /// Unique among the integrations; used in logs, metrics and the API.
    pub name: String,
    pub slack: Option<WebhookUrlConfig>,
    pub pagerduty: Option<PagerDutyConfig>,
    pub teams: Option<WebhookUrlConfig>,
    pub opsgenie: Option<OpsgenieConfig>,
    pub email: Option<EmailConfig>,
    pub webhook: Option<WebhookConfig>,
    /// Only these categories (empty: all), e.g. `["slo", "memory"]`.
    #[serde(default)]
    pub categories: Vec<String>,
    /// Only notifications at least this severe; default `warning`.
    #[serde(default = "default_min_severity")]
    pub min_severity: Severity,
    /// Also deployments (the webhook and Slack are the usual places).
    #[serde(default)]
    pub deployments: bool,
    /// At most this many notifications per minute; the rest wait their turn.
    #[serde(default = "default_rate")]
    pub rate_per_minute: u32,
    /// Per attempt.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_min_severity() -> Severity {
    Severity::Warning
}
fn default_rate() -> u32 {
    30
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

/// A target reached by a secret URL: a Slack incoming webhook (Block Kit
/// message with a mrkdwn fallback), or a Microsoft Teams "workflow" (Power
/// Automate) webhook (an Adaptive Card).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookUrlConfig {
    /// e.g. `https://hooks.slack.com/services/…`: a secret.
    #[serde(default)]
    pub webhook_url: Secret,
    pub webhook_url_file: Option<PathBuf>,
}

/// PagerDuty Events API v2.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagerDutyConfig {
    /// The integration (routing) key of a PagerDuty service.
    #[serde(default)]
    pub routing_key: Secret,
    pub routing_key_file: Option<PathBuf>,
    #[serde(default = "default_pagerduty_url")]
    pub url: String,
}

fn default_pagerduty_url() -> String {
    "https://events.pagerduty.com/v2/enqueue".into()
}

/// Opsgenie Alert API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpsgenieConfig {
    /// An API integration's key, sent as `Authorization: GenieKey <key>`.
    #[serde(default)]
    pub api_key: Secret,
    pub api_key_file: Option<PathBuf>,
    /// `https://api.eu.opsgenie.com` for the EU instance.
    #[serde(default = "default_opsgenie_url")]
    pub url: String,
}

fn default_opsgenie_url() -> String {
    "https://api.opsgenie.com".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS (port 587); refused if the
    /// server cannot.
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only for a relay on the same host or network.
    None,
}

/// Email over SMTP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    pub host: String,
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    #[serde(default = "default_smtp_security")]
    pub security: SmtpSecurity,
    pub username: Option<String>,
    #[serde(default)]
    pub password: Secret,
    pub password_file: Option<PathBuf>,
    /// e.g. `Vigil <vigil@example.com>`.
    pub from: String,
    pub to: Vec<String>,
}

fn default_smtp_port() -> u16 {
    587
}
fn default_smtp_security() -> SmtpSecurity {
    SmtpSecurity::Starttls
}

/// Any HTTP endpoint; the body is a minijinja template.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Can carry a token: treated as a secret.
    #[serde(default)]
    pub url: Secret,
    pub url_file: Option<PathBuf>,
    /// Extra headers, e.g. `Authorization`; values are secrets.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    #[serde(default = "default_content_type")]
    pub content_type: String,
    /// The body for triggers, resolutions, deployments and tests; each
    /// defaults to `template`, which defaults to Vigil's JSON document.
    /// The notification is `n` (see docs/notifications.md); the `json`
    /// filter writes a value as JSON (quoted and escaped).
    pub template: Option<String>,
    pub trigger_template: Option<String>,
    pub resolve_template: Option<String>,
    pub deployment_template: Option<String>,
}

fn default_content_type() -> String {
    "application/json".into()
}

impl IntegrationConfig {
    /// Which target this entry configures, by its key.
    pub fn target(&self) -> Option<&'static str> {
        let set = [
            ("slack", self.slack.is_some()),
            ("pagerduty", self.pagerduty.is_some()),
            ("teams", self.teams.is_some()),
            ("opsgenie", self.opsgenie.is_some()),
            ("email", self.email.is_some()),
            ("webhook", self.webhook.is_some()),
        ];
        let mut chosen = set.iter().filter(|(_, on)| *on).map(|(name, _)| *name);
        match (chosen.next(), chosen.next()) {
            (Some(one), None) => Some(one),
            _ => None,
        }
    }

    /// Whether this integration takes `kind`/`category`/`severity`.
    pub fn routes(&self, kind: Kind, category: &str, severity: Severity) -> bool {
        match kind {
            Kind::Test => true,
            Kind::Deployment => self.deployments,
            Kind::Trigger | Kind::Resolve => {
                severity >= self.min_severity
                    && (self.categories.is_empty() || self.categories.iter().any(|c| c == category))
            }
        }
    }
}

pub(crate) fn http_url(prefix: &str, field: &str, url: &str) -> Result<(), ConfigError> {
    match url.split_once("://") {
        Some(("http" | "https", rest)) if !rest.is_empty() => Ok(()),
        // The URL can be a secret: never echo it.
        _ => Err(ConfigError::invalid(
            key(prefix, field),
            "must be an http:// or https:// URL",
        )),
    }
}

/// A secret: inline, or read from `file`. `field` names the inline key.
pub fn resolve_secret(
    prefix: &str,
    field: &str,
    inline: &Secret,
    file: Option<&std::path::Path>,
) -> Result<Secret, ConfigError> {
    vigil_runtime::auth::resolve_secret(&key(prefix, field), &inline.0, file).map(Secret)
}

impl Validate for IntegrationConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(ConfigError::invalid(
                key(prefix, "name"),
                "use letters, digits, '-', '_' and '.'",
            ));
        }
        if self.target().is_none() {
            return Err(ConfigError::invalid(
                prefix,
                "set exactly one of slack, pagerduty, teams, opsgenie, email, webhook",
            ));
        }
        if self.rate_per_minute == 0 {
            return Err(ConfigError::invalid(
                key(prefix, "rate_per_minute"),
                "must be at least 1",
            ));
        }
        nonzero_duration(prefix, "timeout", self.timeout)?;
        if let Some(c) = &self.pagerduty {
            http_url(&key(prefix, "pagerduty"), "url", &c.url)?;
        }
        if let Some(c) = &self.opsgenie {
            http_url(&key(prefix, "opsgenie"), "url", &c.url)?;
            if self.deployments {
                return Err(ConfigError::invalid(
                    key(prefix, "deployments"),
                    "Opsgenie takes no deployment notices (they would be alerts nobody closes)",
                ));
            }
        }
        if let Some(c) = &self.email {
            let p = key(prefix, "email");
            if c.host.is_empty() {
                return Err(ConfigError::invalid(key(&p, "host"), "must not be empty"));
            }
            if c.to.is_empty() {
                return Err(ConfigError::invalid(
                    key(&p, "to"),
                    "needs at least one address",
                ));
            }
            for (field, address) in
                std::iter::once(("from", &c.from)).chain(c.to.iter().map(|a| ("to", a)))
            {
                if address.parse::<lettre::message::Mailbox>().is_err() {
                    return Err(ConfigError::invalid(
                        key(&p, field),
                        format!("{address:?} is not an email address"),
                    ));
                }
            }
        }
        if let Some(c) = &self.webhook {
            let p = key(prefix, "webhook");
            for name in c.headers.keys() {
                if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                    return Err(ConfigError::invalid(
                        key(&p, "headers"),
                        format!("{name:?} is not a header name"),
                    ));
                }
            }
            if http::HeaderValue::from_str(&c.content_type).is_err() {
                return Err(ConfigError::invalid(
                    key(&p, "content_type"),
                    "not a header value",
                ));
            }
        }
        Ok(())
    }
}

/// Integration names must be unique.
pub fn validate_all(prefix: &str, integrations: &[IntegrationConfig]) -> Result<(), ConfigError> {
    let mut seen = std::collections::HashSet::new();
    for (i, integration) in integrations.iter().enumerate() {
        let p = format!("{prefix}[{i}]");
        integration.validate(&p)?;
        if !seen.insert(integration.name.as_str()) {
            return Err(ConfigError::invalid(
                key(&p, "name"),
                format!("{:?} is used twice", integration.name),
            ));
        }
    }
    Ok(())
}
