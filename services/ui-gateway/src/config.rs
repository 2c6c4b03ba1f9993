use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde::Deserialize;
use vigil_runtime::{
    auth::{Role, Secret, is_valid_project_name, resolve_api_key, resolve_secret},
    config::{ConfigError, HttpServerConfig, Validate, key, positive},
};

/// `[ui_gateway]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UiGatewayConfig {
    /// The web UI; default 127.0.0.1:7480.
    pub http: HttpServerConfig,
    /// The query API's gRPC address.
    pub query_endpoint: String,
    /// The alerting worker's gRPC address.
    pub alerting_endpoint: String,
    /// The heartbeat monitor's gRPC address, if the UI shows its checks.
    pub heartbeat_endpoint: Option<String>,
    /// The projects the UI shows; a user sees those they hold a role in.
    pub projects: Vec<String>,
    /// The gateway key (one of `[access] gateway_keys`) the gateway presents
    /// to query and alerting when it acts for a user. Prefer
    /// `gateway_key_file` (a mounted secret) outside of tests.
    pub gateway_key: Secret,
    pub gateway_key_file: Option<PathBuf>,
    /// Processes listed per host, busiest first.
    pub processes_per_host: u32,
    /// Longest wait for a backend call.
    #[serde(with = "humantime_serde")]
    pub backend_timeout: Duration,
    /// API calls per second per signed-in user (429 beyond), and the burst.
    /// Sign-in attempts are limited per address to the same budget.
    pub rate_per_user: u32,
    pub burst_per_user: u32,
    /// Who may sign in, and what they may do.
    pub auth: AuthConfig,
}

impl Default for UiGatewayConfig {
    fn default() -> Self {
        Self {
            http: HttpServerConfig::on(SocketAddr::from(([127, 0, 0, 1], 7480))),
            query_endpoint: "127.0.0.1:7410".into(),
            alerting_endpoint: "127.0.0.1:7420".into(),
            heartbeat_endpoint: None,
            projects: vec!["default".into()],
            gateway_key: Secret::default(),
            gateway_key_file: None,
            processes_per_host: 15,
            backend_timeout: Duration::from_secs(10),
            rate_per_user: 50,
            burst_per_user: 200,
            auth: AuthConfig::default(),
        }
    }
}

/// How users sign in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// OpenID Connect: authorization code flow with PKCE.
    Oidc,
    /// An authenticating proxy in front (oauth2-proxy) names the user in
    /// headers; believed only from `forward_auth.trusted_proxies`.
    ForwardAuth,
    /// One shared login token (what `vigil up` prints): its holder is an
    /// admin of every project. For a single machine.
    Token,
    /// No sign-in: everyone who reaches the gateway gets `anonymous_role`.
    /// Only behind an outer gate.
    Anonymous,
}

/// `[ui_gateway.auth]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub mode: AuthMode,
    /// Key material for session and CSRF cookies (at least 32 characters;
    /// encrypted and authenticated with AES-256-GCM). Keep it across
    /// restarts and replicas, or every session ends.
    pub session_secret: Secret,
    pub session_secret_file: Option<PathBuf>,
    /// How long a session lasts without signing in again.
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
    /// Cookies only over HTTPS. Turn off only for plain-HTTP local use.
    pub secure_cookies: bool,
    /// The address users reach the gateway at, e.g. `https://vigil.example.com`:
    /// the OIDC redirect URL is built on it and cross-origin state changes
    /// are refused against it. Default: the listen address over http.
    pub public_url: Option<String>,
    /// `mode = "token"`: the login token.
    pub login_token: Secret,
    pub login_token_file: Option<PathBuf>,
    /// `mode = "anonymous"`: the role everyone gets in every project.
    pub anonymous_role: Option<Role>,
    pub oidc: OidcConfig,
    pub forward_auth: ForwardAuthConfig,
    /// Who holds which role in which project (OIDC and forward-auth users).
    pub roles: Vec<RoleGrant>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            mode: AuthMode::Token,
            session_secret: Secret::default(),
            session_secret_file: None,
            session_ttl: Duration::from_secs(12 * 3600),
            secure_cookies: true,
            public_url: None,
            login_token: Secret::default(),
            login_token_file: None,
            anonymous_role: None,
            oidc: OidcConfig::default(),
            forward_auth: ForwardAuthConfig::default(),
            roles: Vec::new(),
        }
    }
}

/// `[ui_gateway.auth.oidc]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OidcConfig {
    /// The provider's issuer URL; `/.well-known/openid-configuration` is
    /// read under it.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub client_secret_file: Option<PathBuf>,
    pub scopes: Vec<String>,
    /// The claim holding the user's groups; a dotted path reaches into
    /// objects (`realm_access.roles`).
    pub groups_claim: String,
    /// How often the provider's metadata and signing keys are read again
    /// (they are also read again when a token names an unknown key).
    #[serde(with = "humantime_serde")]
    pub refresh_metadata_every: Duration,
}

impl Default for OidcConfig {
    fn default() -> Self {
        Self {
            issuer: String::new(),
            client_id: String::new(),
            client_secret: Secret::default(),
            client_secret_file: None,
            scopes: vec!["openid".into(), "email".into(), "profile".into()],
            groups_claim: "groups".into(),
            refresh_metadata_every: Duration::from_secs(3600),
        }
    }
}

/// `[ui_gateway.auth.forward_auth]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForwardAuthConfig {
    /// Addresses or networks (`10.0.0.0/8`) of the proxies whose headers are
    /// believed. Headers from anyone else are ignored.
    pub trusted_proxies: Vec<String>,
    pub user_header: String,
    pub email_header: String,
    /// Comma-separated groups.
    pub groups_header: String,
}

impl Default for ForwardAuthConfig {
    fn default() -> Self {
        Self {
            trusted_proxies: Vec::new(),
            user_header: "X-Forwarded-User".into(),
            email_header: "X-Forwarded-Email".into(),
            groups_header: "X-Forwarded-Groups".into(),
        }
    }
}

/// `[[ui_gateway.auth.roles]]`: a role in a project for users matching any
/// of `users` (subject or email), `groups`, or everyone signed in.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleGrant {
    /// A project, or `*` for every project the gateway shows.
    pub project: String,
    pub role: Role,
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub everyone: bool,
}

impl UiGatewayConfig {
    /// The gateway key sent to query and alerting.
    pub fn resolve_gateway_key(&self) -> Result<String, ConfigError> {
        resolve_api_key(
            "ui_gateway.gateway_key",
            &self.gateway_key.0,
            self.gateway_key_file.as_deref(),
        )
    }
}

/// Shortest session secret accepted.
pub const MIN_SESSION_SECRET: usize = 32;

impl AuthConfig {
    pub fn resolve_session_secret(&self) -> Result<String, ConfigError> {
        let secret = resolve_secret(
            "ui_gateway.auth.session_secret",
            &self.session_secret.0,
            self.session_secret_file.as_deref(),
        )?;
        if secret.len() < MIN_SESSION_SECRET {
            return Err(ConfigError::invalid(
                "ui_gateway.auth.session_secret",
                format!("needs at least {MIN_SESSION_SECRET} characters"),
            ));
        }
        Ok(secret)
    }

    pub fn resolve_login_token(&self) -> Result<String, ConfigError> {
        let token = resolve_api_key(
            "ui_gateway.auth.login_token",
            &self.login_token.0,
            self.login_token_file.as_deref(),
        )?;
        if token.len() < 16 {
            return Err(ConfigError::invalid(
                "ui_gateway.auth.login_token",
                "needs at least 16 characters",
            ));
        }
        Ok(token)
    }
}

impl Validate for UiGatewayConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        self.http.validate(&key(prefix, "http"))?;
        for (field, value) in [
            ("query_endpoint", &self.query_endpoint),
            ("alerting_endpoint", &self.alerting_endpoint),
        ] {
            if value.is_empty() {
                return Err(ConfigError::invalid(
                    key(prefix, field),
                    "must not be empty",
                ));
            }
        }
        if self.projects.is_empty() {
            return Err(ConfigError::invalid(
                key(prefix, "projects"),
                "name at least one project",
            ));
        }
        for (i, project) in self.projects.iter().enumerate() {
            if !is_valid_project_name(project) {
                return Err(ConfigError::invalid(
                    format!("{prefix}.projects[{i}]"),
                    format!("{project:?} is not a valid project name"),
                ));
            }
        }
        positive(
            prefix,
            "processes_per_host",
            self.processes_per_host as usize,
        )?;
        positive(prefix, "rate_per_user", self.rate_per_user as usize)?;
        positive(prefix, "burst_per_user", self.burst_per_user as usize)?;
        self.auth.validate(&key(prefix, "auth"))?;
        for (i, grant) in self.auth.roles.iter().enumerate() {
            if grant.project != "*" && !self.projects.contains(&grant.project) {
                return Err(ConfigError::invalid(
                    format!("{prefix}.auth.roles[{i}].project"),
                    format!(
                        "{:?} is not one of ui_gateway.projects ({})",
                        grant.project,
                        self.projects.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl Validate for AuthConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        if self.session_ttl < Duration::from_secs(60)
            || self.session_ttl > Duration::from_secs(30 * 86_400)
        {
            return Err(ConfigError::invalid(
                key(prefix, "session_ttl"),
                "must be between 1 minute and 30 days",
            ));
        }
        if let Some(url) = &self.public_url {
            crate::auth::origin_of(url)
                .map_err(|e| ConfigError::invalid(key(prefix, "public_url"), e))?;
        }
        match self.mode {
            AuthMode::Oidc => {
                let o = &self.oidc;
                if !(o.issuer.starts_with("https://") || o.issuer.starts_with("http://")) {
                    return Err(ConfigError::invalid(
                        key(prefix, "oidc.issuer"),
                        "set the provider's issuer URL (https://…)",
                    ));
                }
                if o.client_id.is_empty() {
                    return Err(ConfigError::invalid(
                        key(prefix, "oidc.client_id"),
                        "is needed with mode = \"oidc\"",
                    ));
                }
                if !o.scopes.iter().any(|s| s == "openid") {
                    return Err(ConfigError::invalid(
                        key(prefix, "oidc.scopes"),
                        "must include \"openid\"",
                    ));
                }
                if o.groups_claim.is_empty() {
                    return Err(ConfigError::invalid(
                        key(prefix, "oidc.groups_claim"),
                        "must not be empty",
                    ));
                }
            }
            AuthMode::ForwardAuth => {
                let f = &self.forward_auth;
                if f.trusted_proxies.is_empty() {
                    return Err(ConfigError::invalid(
                        key(prefix, "forward_auth.trusted_proxies"),
                        "name the proxies whose headers are believed (addresses or networks)",
                    ));
                }
                for (i, proxy) in f.trusted_proxies.iter().enumerate() {
                    crate::auth::parse_network(proxy).map_err(|e| {
                        ConfigError::invalid(
                            format!("{prefix}.forward_auth.trusted_proxies[{i}]"),
                            e,
                        )
                    })?;
                }
                for (field, name) in [
                    ("user_header", &f.user_header),
                    ("email_header", &f.email_header),
                    ("groups_header", &f.groups_header),
                ] {
                    if axum::http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                        return Err(ConfigError::invalid(
                            key(prefix, &format!("forward_auth.{field}")),
                            format!("{name:?} is not a header name"),
                        ));
                    }
                }
            }
            AuthMode::Token => {}
            AuthMode::Anonymous => {
                if self.anonymous_role.is_none() {
                    return Err(ConfigError::invalid(
                        key(prefix, "anonymous_role"),
                        "mode = \"anonymous\" needs the role everyone gets (viewer, editor or admin)",
                    ));
                }
            }
        }
        for (i, grant) in self.roles.iter().enumerate() {
            if !grant.everyone && grant.users.is_empty() && grant.groups.is_empty() {
                return Err(ConfigError::invalid(
                    format!("{prefix}.roles[{i}]"),
                    "grants to nobody: set users, groups or everyone = true",
                ));
            }
        }
        Ok(())
    }
}
