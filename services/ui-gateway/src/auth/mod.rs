//! Who is calling, and what they may do: sign-in (OpenID Connect, a trusted
//! forward-auth proxy, the local login token, or anonymous), sessions in
//! encrypted cookies, CSRF checks on every state-changing call, and roles
//! per project from the role grants.

pub mod oidc;
pub mod session;

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
};

use axum::http::{HeaderMap, HeaderValue, header};
use ipnet::IpNet;
use serde::Serialize;
use sha2::{Digest, Sha256};
use vigil_runtime::{auth::Role, config::ConfigError};

use self::{
    oidc::{Oidc, OidcError, SignedIn},
    session::{Cookies, CsrfCookie, Flow, Method, Session, random_token, same_token},
};
use crate::config::{AuthConfig, AuthMode, UiGatewayConfig};

/// How long a sign-in may take at the provider.
const FLOW_TTL_MS: i64 = 10 * 60 * 1000;
/// Longest user, email or group name kept.
const MAX_NAME: usize = 256;
/// Most groups read from a forward-auth header.
const MAX_GROUPS: usize = 256;

/// `scheme://host[:port]` of a URL, for comparing with `Origin`.
pub fn origin_of(url: &str) -> Result<String, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(format!("{url:?} is not an http(s) URL with a host"));
    }
    Ok(parsed.origin().ascii_serialization())
}

/// An address (`10.0.0.1`) or network (`10.0.0.0/8`).
pub fn parse_network(text: &str) -> Result<IpNet, String> {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{text:?} is not an address or network (e.g. 10.0.0.0/8)"))
}

/// A signed-in user, with a role per project they may see.
#[derive(Debug, Clone, Serialize)]
pub struct Principal {
    pub subject: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub method: Method,
    pub roles: BTreeMap<String, Role>,
    /// What `x-csrf-token` must carry on state-changing calls.
    pub csrf: String,
    #[serde(skip)]
    pub set_cookies: Vec<HeaderValue>,
}

impl Principal {
    /// The role in `project`, if any.
    pub fn role_in(&self, project: &str) -> Option<Role> {
        self.roles.get(project).copied()
    }

    /// How the user is named to the backends (audit, acknowledgements).
    pub fn display(&self) -> String {
        self.email
            .clone()
            .or_else(|| self.name.clone())
            .unwrap_or_else(|| self.subject.clone())
    }
}

/// Why a request has no principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unauthenticated {
    /// Nobody is signed in (or the session ended): sign in.
    SignIn(String),
}

/// The gateway's sign-in state.
pub struct Auth {
    cookies: Cookies,
    session_ttl_ms: i64,
    /// Where users reach the gateway: the OIDC redirect base, and the one
    /// origin allowed to change state.
    public_origin: String,
    /// Without a public URL, on loopback: the port any loopback name may
    /// use as the origin.
    loopback_port: Option<u16>,
    pub oidc: Option<Oidc>,
    login_token_digest: Option<[u8; 32]>,
    trusted: Vec<IpNet>,
    config: AuthConfig,
    projects: Vec<String>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("mode", &self.config.mode)
            .field("public_origin", &self.public_origin)
            .finish_non_exhaustive()
    }
}

fn clip(s: &str) -> String {
    let mut end = s.len().min(MAX_NAME);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

impl Auth {
    /// `listen`: the gateway's own address, the public URL's default.
    pub fn new(
        config: &UiGatewayConfig,
        listen: SocketAddr,
        http: reqwest::Client,
    ) -> Result<Self, ConfigError> {
        let auth = &config.auth;
        if auth.public_url.is_none() && !listen.ip().is_loopback() {
            return Err(ConfigError::invalid(
                "ui_gateway.auth.public_url",
                format!(
                    "is needed when the gateway listens on {listen} (not loopback): the address users reach it at, e.g. https://vigil.example.com"
                ),
            ));
        }
        let loopback_port = auth.public_url.is_none().then_some(listen.port());
        let public_url = auth
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{listen}"));
        let public_origin = origin_of(&public_url)
            .map_err(|e| ConfigError::invalid("ui_gateway.auth.public_url", e))?;
        let oidc = match auth.mode {
            AuthMode::Oidc => {
                let secret = match (&auth.oidc.client_secret.0, &auth.oidc.client_secret_file) {
                    (s, None) if s.is_empty() => None,
                    (s, file) => Some(vigil_runtime::auth::resolve_secret(
                        "ui_gateway.auth.oidc.client_secret",
                        s,
                        file.as_deref(),
                    )?),
                };
                Some(
                    Oidc::new(&auth.oidc, secret, &public_url, http)
                        .map_err(|e| ConfigError::invalid("ui_gateway.auth.oidc", e))?,
                )
            }
            _ => None,
        };
        let login_token_digest = match auth.mode {
            AuthMode::Token => Some(Sha256::digest(auth.resolve_login_token()?.as_bytes()).into()),
            _ => None,
        };
        let trusted = auth
            .forward_auth
            .trusted_proxies
            .iter()
            .map(|p| parse_network(p))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ConfigError::invalid("ui_gateway.auth.forward_auth.trusted_proxies", e))?;
        Ok(Self {
            cookies: Cookies::new(&auth.resolve_session_secret()?, auth.secure_cookies),
            session_ttl_ms: i64::try_from(auth.session_ttl.as_millis()).unwrap_or(i64::MAX),
            public_origin,
            loopback_port,
            oidc,
            login_token_digest,
            trusted,
            config: auth.clone(),
            projects: config.projects.clone(),
        })
    }

    pub fn mode(&self) -> AuthMode {
        self.config.mode
    }

    /// The roles of a user with these names and groups.
    fn roles_of(
        &self,
        method: Method,
        subject: &str,
        email: Option<&str>,
        groups: &[String],
    ) -> BTreeMap<String, Role> {
        let every = |role: Role| self.projects.iter().map(|p| (p.clone(), role)).collect();
        match method {
            Method::Token => return every(Role::Admin),
            Method::Anonymous => {
                return self.config.anonymous_role.map(every).unwrap_or_default();
            }
            Method::Oidc | Method::ForwardAuth => {}
        }
        let mut roles: BTreeMap<String, Role> = BTreeMap::new();
        for grant in &self.config.roles {
            let matches = grant.everyone
                || grant
                    .users
                    .iter()
                    .any(|u| u == subject || Some(u.as_str()) == email)
                || grant.groups.iter().any(|g| groups.contains(g));
            if !matches {
                continue;
            }
            let projects: Vec<&String> = if grant.project == "*" {
                self.projects.iter().collect()
            } else {
                self.projects
                    .iter()
                    .filter(|p| **p == grant.project)
                    .collect()
            };
            for p in projects {
                let r = roles.entry(p.clone()).or_insert(grant.role);
                *r = (*r).max(grant.role);
            }
        }
        roles
    }

    /// Groups that some grant names: the only ones worth keeping.
    fn relevant_groups(&self, groups: &[String]) -> Vec<String> {
        groups
            .iter()
            .filter(|g| self.config.roles.iter().any(|r| r.groups.contains(g)))
            .map(|g| clip(g))
            .collect()
    }

    fn principal_of(&self, s: &Session) -> Principal {
        Principal {
            roles: self.roles_of(s.method, &s.subject, s.email.as_deref(), &s.groups),
            subject: s.subject.clone(),
            name: s.name.clone(),
            email: s.email.clone(),
            method: s.method,
            csrf: s.csrf.clone(),
            set_cookies: Vec::new(),
        }
    }

    /// Who sent this request. A session near its access token's expiry is
    /// refreshed with the provider (and its cookie rewritten).
    pub async fn principal(
        &self,
        headers: &HeaderMap,
        peer: SocketAddr,
        now_ms: i64,
    ) -> Result<Principal, Unauthenticated> {
        match self.config.mode {
            AuthMode::ForwardAuth => return self.forwarded(headers, peer, now_ms),
            AuthMode::Anonymous => {
                return Ok(self.sessionless(
                    headers,
                    Method::Anonymous,
                    ("anonymous".into(), None),
                    Vec::new(),
                    now_ms,
                ));
            }
            AuthMode::Oidc | AuthMode::Token => {}
        }
        let session: Session = self
            .cookies
            .read(headers, session::SESSION, now_ms)
            .ok_or_else(|| Unauthenticated::SignIn("not signed in, or the session ended".into()))?;
        // A session opened another way (before the mode changed), or with a
        // login token that has since changed, is over.
        let current = match self.config.mode {
            AuthMode::Oidc => session.method == Method::Oidc,
            AuthMode::Token => {
                session.method == Method::Token && session.token_tag == self.token_tag()
            }
            AuthMode::ForwardAuth | AuthMode::Anonymous => false,
        };
        if !current {
            return Err(Unauthenticated::SignIn(
                "the session was opened under another sign-in setup: sign in again".into(),
            ));
        }
        let mut principal = self.principal_of(&session);
        if let (Some(oidc), Some(tokens)) = (&self.oidc, &session.oidc)
            && tokens.refresh_at_ms <= now_ms
        {
            match oidc.refresh(tokens, &session.subject, now_ms).await {
                Ok(signed_in) => {
                    let renewed = self.session_from(signed_in, session);
                    principal = self.principal_of(&renewed);
                    principal
                        .set_cookies
                        .extend(self.write_session(&renewed, now_ms));
                }
                Err(e) => {
                    tracing::info!(user = %principal.subject, error = %e, "session refresh refused: signing out");
                    return Err(Unauthenticated::SignIn(format!(
                        "the session could not be renewed: {e}"
                    )));
                }
            }
        }
        Ok(principal)
    }

    /// A forward-auth user, from headers believed only from a trusted proxy.
    fn forwarded(
        &self,
        headers: &HeaderMap,
        peer: SocketAddr,
        now_ms: i64,
    ) -> Result<Principal, Unauthenticated> {
        let peer_ip = match peer.ip() {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        if !self.trusted.iter().any(|n| n.contains(&peer_ip)) {
            tracing::debug!(%peer, "forward-auth headers ignored: not from a trusted proxy");
            return Err(Unauthenticated::SignIn(
                "sign in through the authenticating proxy".into(),
            ));
        }
        // The proxy sets these headers; a request carrying one twice (the
        // client's own beside the proxy's) is refused rather than guessed at.
        for name in [
            &self.config.forward_auth.user_header,
            &self.config.forward_auth.email_header,
            &self.config.forward_auth.groups_header,
        ] {
            if headers.get_all(name.as_str()).iter().count() > 1 {
                return Err(Unauthenticated::SignIn(format!(
                    "{name} was sent more than once: the proxy must replace, not append, it"
                )));
            }
        }
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
        };
        let Some(user) = header(&self.config.forward_auth.user_header)
            .or_else(|| header(&self.config.forward_auth.email_header))
        else {
            return Err(Unauthenticated::SignIn(format!(
                "the proxy sent no {} header",
                self.config.forward_auth.user_header
            )));
        };
        let groups: Vec<String> = header(&self.config.forward_auth.groups_header)
            .map(|g| {
                g.split(',')
                    .map(str::trim)
                    .filter(|g| !g.is_empty())
                    .take(MAX_GROUPS)
                    .map(clip)
                    .collect()
            })
            .unwrap_or_default();
        Ok(self.sessionless(
            headers,
            Method::ForwardAuth,
            (
                clip(user),
                header(&self.config.forward_auth.email_header).map(clip),
            ),
            groups,
            now_ms,
        ))
    }

    /// A user of a mode without session cookies (forward-auth, anonymous),
    /// named `(subject, email)`, with the CSRF cookie.
    fn sessionless(
        &self,
        headers: &HeaderMap,
        method: Method,
        (subject, email): (String, Option<String>),
        groups: Vec<String>,
        now_ms: i64,
    ) -> Principal {
        let (csrf, set) = self.csrf_cookie(headers, now_ms);
        let mut p = self.principal_of(&Session {
            name: Some(subject.clone()),
            subject,
            email,
            groups,
            method,
            issued_ms: now_ms,
            expires_ms: now_ms,
            csrf,
            oidc: None,
            token_tag: None,
        });
        p.set_cookies.extend(set);
        p
    }

    /// The CSRF token of a mode without sessions, from its cookie or new.
    fn csrf_cookie(&self, headers: &HeaderMap, now_ms: i64) -> (String, Option<HeaderValue>) {
        if let Some(c) = self
            .cookies
            .read::<CsrfCookie>(headers, session::CSRF, now_ms)
        {
            return (c.token, None);
        }
        let c = CsrfCookie {
            token: random_token(),
            expires_ms: now_ms.saturating_add(self.session_ttl_ms),
        };
        let set = self.cookies.write(session::CSRF, &c, now_ms);
        (c.token, set)
    }

    /// Refuses a state change (every POST route) without the principal's
    /// CSRF token, in `x-csrf-token` or, for a plain form, `form_token`, or
    /// sent from another origin.
    pub fn check_csrf(
        &self,
        principal: &Principal,
        headers: &HeaderMap,
        form_token: Option<&str>,
    ) -> Result<(), String> {
        if let Some(origin) = headers.get(header::ORIGIN)
            && !self.origin_allowed(origin.as_bytes())
        {
            return Err(format!(
                "cross-origin request refused: Origin {:?} is not {}",
                String::from_utf8_lossy(origin.as_bytes()),
                self.public_origin
            ));
        }
        let sent = form_token
            .or_else(|| headers.get("x-csrf-token").and_then(|v| v.to_str().ok()))
            .unwrap_or("");
        if sent.is_empty() || !same_token(sent, &principal.csrf) {
            return Err(
                "missing or wrong CSRF token: send the session's token in x-csrf-token".into(),
            );
        }
        Ok(())
    }

    /// Which login token is configured: a digest prefix, kept in the
    /// sessions it opens.
    fn token_tag(&self) -> Option<String> {
        self.login_token_digest.map(|d| hex_prefix(&d))
    }

    /// Whether a state change may come from `origin`: the public URL's, or
    /// with no public URL set, the listen port on any loopback name
    /// (127.0.0.1, localhost, [::1]).
    fn origin_allowed(&self, origin: &[u8]) -> bool {
        if origin == self.public_origin.as_bytes() {
            return true;
        }
        let Some(port) = self.loopback_port else {
            return false;
        };
        ["127.0.0.1", "localhost", "[::1]"]
            .iter()
            .any(|host| origin == format!("http://{host}:{port}").as_bytes())
    }

    /// Checks the login token (token mode), in constant time.
    pub fn token_matches(&self, token: &str) -> bool {
        use subtle::ConstantTimeEq;
        let Some(expected) = &self.login_token_digest else {
            return false;
        };
        let d: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
        bool::from(d.ct_eq(expected))
    }

    /// A new session for the token holder: `Set-Cookie`.
    pub fn token_session(&self, now_ms: i64) -> Option<HeaderValue> {
        let s = Session {
            subject: "local-admin".into(),
            name: Some("local admin".into()),
            email: None,
            groups: Vec::new(),
            method: Method::Token,
            issued_ms: now_ms,
            expires_ms: now_ms.saturating_add(self.session_ttl_ms),
            csrf: random_token(),
            oidc: None,
            token_tag: self.token_tag(),
        };
        self.write_session(&s, now_ms)
    }

    fn oidc(&self) -> Result<&Oidc, OidcError> {
        self.oidc
            .as_ref()
            .ok_or_else(|| OidcError::Refused("OpenID Connect is not set up".into()))
    }

    /// Starts an OIDC sign-in: the provider URL and the flow cookie.
    pub async fn begin_oidc(
        &self,
        return_to: &str,
        now_ms: i64,
    ) -> Result<(String, HeaderValue), OidcError> {
        let oidc = self.oidc()?;
        let (url, flow) = oidc
            .begin(safe_return(return_to), now_ms.saturating_add(FLOW_TTL_MS))
            .await?;
        let cookie = self
            .cookies
            .write(session::FLOW, &flow, now_ms)
            .ok_or_else(|| OidcError::Refused("cannot write the sign-in cookie".into()))?;
        Ok((url, cookie))
    }

    /// Completes an OIDC sign-in: checks `state` against the flow cookie,
    /// then the code and the ID token. Returns where to go and the session
    /// cookie.
    pub async fn complete_oidc(
        &self,
        headers: &HeaderMap,
        code: &str,
        state: &str,
        iss: Option<&str>,
        now_ms: i64,
    ) -> Result<(String, HeaderValue), OidcError> {
        let oidc = self.oidc()?;
        let flow: Flow = self
            .cookies
            .read(headers, session::FLOW, now_ms)
            .ok_or_else(|| {
                OidcError::Refused(
                    "no sign-in in progress in this browser, or it took over 10 minutes".into(),
                )
            })?;
        if !same_token(state, &flow.state) {
            return Err(OidcError::Refused(
                "the state does not match this browser's sign-in".into(),
            ));
        }
        // RFC 9207: a response naming another issuer is a mix-up attack.
        if let Some(iss) = iss
            && iss.trim_end_matches('/') != self.config.oidc.issuer.trim_end_matches('/')
        {
            return Err(OidcError::Refused(format!(
                "the response comes from issuer {iss:?}, not {:?}",
                self.config.oidc.issuer
            )));
        }
        let signed_in = oidc.complete(code.to_owned(), &flow, now_ms).await?;
        let session = self.session_from(
            signed_in,
            Session {
                subject: String::new(),
                name: None,
                email: None,
                groups: Vec::new(),
                method: Method::Oidc,
                issued_ms: now_ms,
                expires_ms: now_ms.saturating_add(self.session_ttl_ms),
                csrf: random_token(),
                oidc: None,
                token_tag: None,
            },
        );
        tracing::info!(user = %session.subject, email = ?session.email, "signed in with OpenID Connect");
        let cookie = self
            .write_session(&session, now_ms)
            .ok_or_else(|| OidcError::Refused("the session does not fit in a cookie".into()))?;
        Ok((flow.return_to, cookie))
    }

    /// `base` updated with what the provider said.
    fn session_from(&self, signed_in: SignedIn, base: Session) -> Session {
        let SignedIn { claims, tokens } = signed_in;
        Session {
            subject: clip(&claims.subject),
            name: claims.name.as_deref().map(clip).or(base.name),
            email: claims.email.as_deref().map(clip).or(base.email),
            // Groups the provider stated replace the old ones (a removal
            // takes effect at the next refresh); none stated keeps them.
            groups: match &claims.groups {
                Some(groups) => self.relevant_groups(groups),
                None => base.groups,
            },
            oidc: Some(tokens),
            ..base
        }
    }

    /// The session's `Set-Cookie`; without the ID token if it does not fit.
    fn write_session(&self, s: &Session, now_ms: i64) -> Option<HeaderValue> {
        self.cookies.write(session::SESSION, s, now_ms).or_else(|| {
            let mut smaller = s.clone();
            if let Some(t) = &mut smaller.oidc {
                t.id_token = None;
            }
            self.cookies.write(session::SESSION, &smaller, now_ms)
        })
    }

    /// Signs out: the cookie to clear, and where to send the browser (the
    /// provider's end-session endpoint, if any).
    pub async fn sign_out(&self, headers: &HeaderMap, now_ms: i64) -> (HeaderValue, String) {
        let clear = self.cookies.clear(session::SESSION);
        let session: Option<Session> = self.cookies.read(headers, session::SESSION, now_ms);
        let id_token = session
            .as_ref()
            .and_then(|s| s.oidc.as_ref())
            .and_then(|t| t.id_token.clone());
        let target = match &self.oidc {
            Some(oidc) => oidc.logout_url(id_token.as_deref()).await,
            None => None,
        };
        (clear, target.unwrap_or_else(|| "/auth/signed-out".into()))
    }

    /// Clears the sign-in flow cookie (after a callback, good or bad).
    pub fn clear_flow(&self) -> HeaderValue {
        self.cookies.clear(session::FLOW)
    }
}

fn hex_prefix(digest: &[u8; 32]) -> String {
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// A path on this site to go back to after sign-in: anything else (another
/// host, `//evil`, a scheme) becomes `/`.
pub fn safe_return(return_to: &str) -> String {
    // No control characters (browsers drop a tab, turning "/\t/x" into
    // "//x") and no backslash (some read it as a slash).
    let ok = return_to.starts_with('/')
        && !return_to.starts_with("//")
        && !return_to
            .bytes()
            .any(|b| b < 0x20 || b == 0x7f || b == b'\\')
        && return_to.len() <= 2048;
    if ok { return_to.to_owned() } else { "/".into() }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn only_local_paths_are_returned_to() {
        assert_eq!(safe_return("/app/services?x=1"), "/app/services?x=1");
        for bad in [
            "//evil.example",
            "https://evil.example/",
            "/\\evil",
            "evil",
            "/a\r\nSet-Cookie: x",
        ] {
            assert_eq!(safe_return(bad), "/", "{bad}");
        }
    }

    fn auth(mode: AuthMode, token: &str) -> Auth {
        let mut c = UiGatewayConfig::default();
        c.auth.mode = mode;
        c.auth.session_secret = vigil_runtime::auth::Secret("s".repeat(40));
        c.auth.login_token = vigil_runtime::auth::Secret(token.into());
        c.auth.oidc.issuer = "https://sso.example".into();
        c.auth.oidc.client_id = "vigil".into();
        c.auth.forward_auth.trusted_proxies = vec!["127.0.0.1".into()];
        let http = vigil_runtime::http_client::build("test").unwrap();
        Auth::new(&c, "127.0.0.1:7480".parse().unwrap(), http).unwrap()
    }

    fn with_cookie(set: &HeaderValue) -> HeaderMap {
        let mut h = HeaderMap::new();
        let pair = set.to_str().unwrap().split(';').next().unwrap().to_owned();
        h.insert(header::COOKIE, pair.parse().unwrap());
        h
    }

    #[tokio::test]
    async fn sessions_end_when_the_mode_or_the_login_token_changes() {
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let token = auth(AuthMode::Token, "login-token-0123456789");
        let cookie = token.token_session(1_000).unwrap();
        let h = with_cookie(&cookie);
        let p = token.principal(&h, peer, 2_000).await.unwrap();
        assert_eq!(p.role_in("default"), Some(Role::Admin));
        // The same secret, the token changed: the old session is over.
        let changed = auth(AuthMode::Token, "another-token-0123456789");
        assert!(changed.principal(&h, peer, 2_000).await.is_err());
        // The same secret, now OIDC: a token session is no way in.
        let oidc = auth(AuthMode::Oidc, "login-token-0123456789");
        assert!(oidc.principal(&h, peer, 2_000).await.is_err());
    }

    #[tokio::test]
    async fn forward_auth_refuses_a_header_sent_twice() {
        let fa = auth(AuthMode::ForwardAuth, "login-token-0123456789");
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-user", "ada".parse().unwrap());
        assert!(fa.principal(&h, peer, 1).await.is_ok());
        h.append("x-forwarded-groups", "viewers".parse().unwrap());
        h.append("x-forwarded-groups", "admins".parse().unwrap());
        let Err(Unauthenticated::SignIn(why)) = fa.principal(&h, peer, 1).await else {
            panic!("a doubled header is refused");
        };
        assert!(why.contains("more than once"), "{why}");
        // And from an untrusted address nothing is believed.
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-user", "ada".parse().unwrap());
        assert!(
            fa.principal(&h, "10.0.0.9:5000".parse().unwrap(), 1)
                .await
                .is_err()
        );
    }

    #[test]
    fn state_changes_from_loopback_names_and_the_public_url_only() {
        let a = auth(AuthMode::Token, "login-token-0123456789");
        for ok in [
            "http://127.0.0.1:7480",
            "http://localhost:7480",
            "http://[::1]:7480",
        ] {
            assert!(a.origin_allowed(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "http://localhost:7481",
            "https://evil.example",
            "http://127.0.0.1.evil:7480",
        ] {
            assert!(!a.origin_allowed(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn networks_and_origins_parse() {
        assert!(
            parse_network("10.0.0.0/8")
                .unwrap()
                .contains(&"10.1.2.3".parse::<IpAddr>().unwrap())
        );
        assert!(
            parse_network("127.0.0.1")
                .unwrap()
                .contains(&"127.0.0.1".parse::<IpAddr>().unwrap())
        );
        assert!(parse_network("nope").is_err());
        assert_eq!(
            origin_of("https://vigil.example.com/x/").unwrap(),
            "https://vigil.example.com"
        );
        assert_eq!(
            origin_of("http://127.0.0.1:7480").unwrap(),
            "http://127.0.0.1:7480"
        );
        assert!(origin_of("ftp://x").is_err());
    }
}
