//! OpenID Connect sign-in with the `openidconnect` crate: discovery, the
//! authorization code flow with PKCE (S256), ID tokens checked for
//! signature, issuer, audience, expiry and nonce, refresh, and the
//! provider's end-session endpoint. The signing keys are read again when a
//! token names a key the gateway does not know (the provider rotated them),
//! at most once per [`JWKS_REFETCH_GAP`], and with the metadata every
//! `refresh_metadata_every`.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet, EndpointNotSet,
    EndpointSet, IssuerUrl, JsonWebKeySet, LogoutRequest, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, PkceCodeVerifier, PostLogoutRedirectUrl, ProviderMetadataWithLogout,
    RedirectUrl, RefreshToken, Scope, TokenResponse,
    core::{
        CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreErrorResponseType,
        CoreGenderClaim, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm, CoreRevocableToken,
        CoreRevocationErrorResponse, CoreTokenIntrospectionResponse, CoreTokenResponse,
    },
};
use tokio::sync::RwLock;
use vigil_runtime::error::error_chain;

use super::session::{Flow, OidcTokens};
use crate::config::OidcConfig;

/// Shortest time between two reads of the signing keys forced by an
/// unknown key id.
pub const JWKS_REFETCH_GAP: Duration = Duration::from_secs(10);
/// Largest response read from the provider.
const MAX_PROVIDER_RESPONSE: usize = 1 << 20;
/// How long a nonce is remembered as used (longer than a sign-in may take).
const NONCE_MEMORY: Duration = Duration::from_secs(15 * 60);
/// Nonces remembered at most; the oldest are forgotten first.
const MAX_NONCES: usize = 100_000;

type Client = openidconnect::Client<
    openidconnect::EmptyAdditionalClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    openidconnect::StandardErrorResponse<CoreErrorResponseType>,
    CoreTokenResponse,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// Why a sign-in failed. Shown to the user in plain words; the details go
/// to the log.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("the identity provider cannot be reached: {0}")]
    Provider(String),
    #[error("the sign-in was refused: {0}")]
    Refused(String),
}

/// What the provider says about a signed-in user.
#[derive(Debug, Clone, Default)]
pub struct Claims {
    pub subject: String,
    pub name: Option<String>,
    /// Only a verified email (`email_verified`): grants and audit records
    /// match on it, so an address a user merely typed must not count.
    pub email: Option<String>,
    /// None when neither the ID token nor userinfo was read for groups.
    pub groups: Option<Vec<String>>,
}

/// What a completed sign-in or refresh yields.
#[derive(Debug)]
pub struct SignedIn {
    pub claims: Claims,
    pub tokens: OidcTokens,
}

struct Provider {
    metadata: ProviderMetadataWithLogout,
    client: Client,
    read_at: Instant,
}

/// A relying party of one provider.
pub struct Oidc {
    config: OidcConfig,
    client_secret: Option<String>,
    redirect_url: RedirectUrl,
    post_logout_url: String,
    http: Http,
    provider: RwLock<Option<Arc<Provider>>>,
    last_jwks_read: Mutex<Option<Instant>>,
    /// Nonces already used, with when: a replayed ID token is refused.
    used_nonces: Mutex<HashMap<String, Instant>>,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oidc")
            .field("issuer", &self.config.issuer)
            .field("client_id", &self.config.client_id)
            .finish_non_exhaustive()
    }
}

/// The HTTP client the `openidconnect` crate calls: reqwest, no redirects
/// followed (the crate's advice against SSRF), bounded responses. A type of
/// its own (not a closure) so that its futures are `Send` for any borrow.
struct Http(reqwest::Client);

type HttpFuture<'c> = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = Result<openidconnect::HttpResponse, HttpError>>
            + Send
            + 'c,
    >,
>;

impl<'c> openidconnect::AsyncHttpClient<'c> for Http {
    type Error = HttpError;
    type Future = HttpFuture<'c>;

    fn call(&'c self, request: openidconnect::HttpRequest) -> Self::Future {
        Box::pin(send(&self.0, request))
    }
}

async fn send(
    http: &reqwest::Client,
    request: openidconnect::HttpRequest,
) -> Result<openidconnect::HttpResponse, HttpError> {
    let request = reqwest::Request::try_from(request).map_err(|e| HttpError(e.to_string()))?;
    let mut response = http
        .execute(request)
        .await
        .map_err(|e| HttpError(e.without_url().to_string()))?;
    let mut builder = openidconnect::http::Response::builder().status(response.status().as_u16());
    for (name, value) in response.headers() {
        builder = builder.header(name.as_str(), value.as_bytes());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| HttpError(e.without_url().to_string()))?
    {
        if body.len() + chunk.len() > MAX_PROVIDER_RESPONSE {
            return Err(HttpError(format!(
                "response over {MAX_PROVIDER_RESPONSE} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    builder.body(body).map_err(|e| HttpError(e.to_string()))
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(String);

impl Oidc {
    /// `public_url`: where users reach the gateway; the redirect URL is
    /// `<public_url>/auth/callback`.
    pub fn new(
        config: &OidcConfig,
        client_secret: Option<String>,
        public_url: &str,
        http: reqwest::Client,
    ) -> Result<Self, String> {
        let base = public_url.trim_end_matches('/');
        let redirect_url = RedirectUrl::new(format!("{base}/auth/callback"))
            .map_err(|e| format!("bad redirect URL: {e}"))?;
        IssuerUrl::new(config.issuer.clone()).map_err(|e| format!("bad issuer URL: {e}"))?;
        Ok(Self {
            config: config.clone(),
            client_secret,
            redirect_url,
            post_logout_url: format!("{base}/auth/signed-out"),
            http: Http(http),
            provider: RwLock::new(None),
            last_jwks_read: Mutex::new(None),
            used_nonces: Mutex::new(HashMap::new()),
        })
    }

    /// The provider's metadata, read when missing or older than
    /// `refresh_metadata_every`.
    async fn provider(&self) -> Result<Arc<Provider>, OidcError> {
        if let Some(p) = self.provider.read().await.as_ref()
            && p.read_at.elapsed() < self.config.refresh_metadata_every
        {
            return Ok(p.clone());
        }
        let fresh = Arc::new(self.discover().await?);
        *self.provider.write().await = Some(fresh.clone());
        Ok(fresh)
    }

    async fn discover(&self) -> Result<Provider, OidcError> {
        let issuer = IssuerUrl::new(self.config.issuer.clone())
            .map_err(|e| OidcError::Provider(e.to_string()))?;
        let metadata = ProviderMetadataWithLogout::discover_async(issuer, &self.http)
            .await
            .map_err(|e| OidcError::Provider(format!("discovery: {}", error_chain(&e))))?;
        tracing::info!(issuer = %self.config.issuer, keys = metadata.jwks().keys().len(), "OpenID provider metadata read");
        Ok(self.provider_from(metadata))
    }

    fn provider_from(&self, metadata: ProviderMetadataWithLogout) -> Provider {
        let client = Client::from_provider_metadata(
            metadata.clone(),
            ClientId::new(self.config.client_id.clone()),
            self.client_secret.clone().map(ClientSecret::new),
        )
        .set_redirect_uri(self.redirect_url.clone());
        Provider {
            metadata,
            client,
            read_at: Instant::now(),
        }
    }

    /// Reads the signing keys again (a token named an unknown key), unless
    /// that was done less than [`JWKS_REFETCH_GAP`] ago. Returns whether
    /// new keys were read.
    async fn reread_keys(&self, provider: &Provider) -> Result<bool, OidcError> {
        {
            let mut last = self
                .last_jwks_read
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|at| at.elapsed() < JWKS_REFETCH_GAP) {
                return Ok(false);
            }
            *last = Some(Instant::now());
        }
        let keys = JsonWebKeySet::fetch_async(provider.metadata.jwks_uri(), &self.http)
            .await
            .map_err(|e| OidcError::Provider(format!("signing keys: {}", error_chain(&e))))?;
        tracing::info!(
            keys = keys.keys().len(),
            "OpenID provider signing keys read again"
        );
        let metadata = provider.metadata.clone().set_jwks(keys);
        *self.provider.write().await = Some(Arc::new(self.provider_from(metadata)));
        Ok(true)
    }

    /// Starts a sign-in: the provider URL to send the browser to, and the
    /// flow to keep in a cookie until the callback.
    pub async fn begin(
        &self,
        return_to: String,
        expires_ms: i64,
    ) -> Result<(String, Flow), OidcError> {
        let provider = self.provider().await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = provider.client.authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        );
        for scope in self.config.scopes.iter().filter(|s| *s != "openid") {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = request.set_pkce_challenge(challenge).url();
        Ok((
            url.to_string(),
            Flow {
                state: state.secret().clone(),
                nonce: nonce.secret().clone(),
                pkce_verifier: verifier.secret().clone(),
                return_to,
                expires_ms,
            },
        ))
    }

    /// Completes a sign-in: `code` is exchanged with the PKCE verifier, and
    /// the ID token is checked (signature, issuer, audience, expiry, and the
    /// flow's nonce, which may be used once). The caller has checked
    /// `state` against the flow.
    pub async fn complete(
        &self,
        code: String,
        flow: &Flow,
        now_ms: i64,
    ) -> Result<SignedIn, OidcError> {
        let provider = self.provider().await?;
        let response = provider
            .client
            .exchange_code(AuthorizationCode::new(code))
            .map_err(|e| OidcError::Provider(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(flow.pkce_verifier.clone()))
            .request_async(&self.http)
            .await
            .map_err(|e| OidcError::Refused(format!("code exchange: {}", error_chain(&e))))?;
        let nonce = Nonce::new(flow.nonce.clone());
        let claims = self.verify(&provider, &response, Some(&nonce)).await?;
        let Some(mut claims) = claims else {
            return Err(OidcError::Refused("the provider sent no ID token".into()));
        };
        self.use_nonce(&flow.nonce)?;
        self.add_userinfo(&provider, &response, &mut claims).await;
        Ok(SignedIn {
            claims,
            tokens: tokens_of(&response, None, now_ms),
        })
    }

    /// Refreshes a session's tokens. A new ID token, if any, is checked
    /// like the first (without a nonce) and must name the same subject.
    pub async fn refresh(
        &self,
        tokens: &OidcTokens,
        subject: &str,
        now_ms: i64,
    ) -> Result<SignedIn, OidcError> {
        let Some(refresh_token) = &tokens.refresh_token else {
            return Err(OidcError::Refused(
                "the session has no refresh token".into(),
            ));
        };
        let provider = self.provider().await?;
        let refresh_token = RefreshToken::new(refresh_token.clone());
        let response = provider
            .client
            .exchange_refresh_token(&refresh_token)
            .map_err(|e| OidcError::Provider(e.to_string()))?
            .request_async(&self.http)
            .await
            .map_err(|e| OidcError::Refused(format!("refresh: {}", error_chain(&e))))?;
        let mut claims = self
            .verify(&provider, &response, None)
            .await?
            .unwrap_or_else(|| Claims {
                subject: subject.to_owned(),
                ..Claims::default()
            });
        if claims.subject != subject {
            return Err(OidcError::Refused(
                "the refreshed ID token names another user".into(),
            ));
        }
        self.add_userinfo(&provider, &response, &mut claims).await;
        Ok(SignedIn {
            claims,
            tokens: tokens_of(&response, Some(tokens), now_ms),
        })
    }

    /// The provider's end-session URL for signing out, if it has one.
    pub async fn logout_url(&self, id_token: Option<&str>) -> Option<String> {
        let provider = self.provider().await.ok()?;
        let endpoint = provider
            .metadata
            .additional_metadata()
            .end_session_endpoint
            .clone()?;
        let mut request = LogoutRequest::from(endpoint)
            .set_client_id(ClientId::new(self.config.client_id.clone()));
        if let Ok(url) = PostLogoutRedirectUrl::new(self.post_logout_url.clone()) {
            request = request.set_post_logout_redirect_uri(url);
        }
        if let Some(token) =
            id_token.and_then(|t| t.parse::<openidconnect::core::CoreIdToken>().ok())
        {
            request = request.set_id_token_hint(&token);
        }
        Some(request.http_get_url().to_string())
    }

    /// Checks the response's ID token; on an unknown signing key, reads the
    /// keys again once and checks again.
    async fn verify(
        &self,
        provider: &Arc<Provider>,
        response: &CoreTokenResponse,
        nonce: Option<&Nonce>,
    ) -> Result<Option<Claims>, OidcError> {
        let Some(id_token) = response.id_token() else {
            return Ok(None);
        };
        let first = check_id_token(&provider.client, id_token, nonce);
        let mut claims = match first {
            Err(openidconnect::ClaimsVerificationError::SignatureVerification(
                openidconnect::SignatureVerificationError::NoMatchingKey,
            )) if self.reread_keys(provider).await? => {
                let fresh = self.provider().await?;
                check_id_token(&fresh.client, id_token, nonce)
            }
            other => other,
        }
        .map_err(|e| OidcError::Refused(format!("ID token: {e}")))?;
        // The groups claim may be anything the provider chose: read it from
        // the token's payload, whose signature was just checked.
        claims.groups = payload_of(&id_token.to_string())
            .map(|p| groups_in(&p, &self.config.groups_claim))
            .filter(|g| !g.is_empty());
        Ok(Some(claims))
    }

    /// Marks `nonce` used; a second use is a replay.
    fn use_nonce(&self, nonce: &str) -> Result<(), OidcError> {
        let mut used = self.used_nonces.lock().unwrap_or_else(|e| e.into_inner());
        used.retain(|_, at| at.elapsed() < NONCE_MEMORY);
        if used.contains_key(nonce) {
            return Err(OidcError::Refused(
                "ID token nonce already used (a replay)".into(),
            ));
        }
        if used.len() >= MAX_NONCES
            && let Some(oldest) = used
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(k, _)| k.clone())
        {
            used.remove(&oldest);
        }
        used.insert(nonce.to_owned(), Instant::now());
        Ok(())
    }

    /// Fills in email, name and groups from the userinfo endpoint when the
    /// ID token lacks them (many providers put scope claims only there).
    async fn add_userinfo(
        &self,
        provider: &Provider,
        response: &CoreTokenResponse,
        claims: &mut Claims,
    ) {
        if claims.email.is_some() && claims.groups.is_some() {
            return;
        }
        let Some(endpoint) = provider.metadata.userinfo_endpoint() else {
            return;
        };
        let info = async {
            // Through the same bounded client as the rest of the flow.
            let request = openidconnect::http::Request::get(endpoint.url().as_str())
                .header(
                    "authorization",
                    format!("Bearer {}", response.access_token().secret()),
                )
                .header("accept", "application/json")
                .body(Vec::new())
                .map_err(|e| e.to_string())?;
            let r = send(&self.http.0, request)
                .await
                .map_err(|e| e.to_string())?;
            if !r.status().is_success() {
                return Err(format!("status {}", r.status()));
            }
            serde_json::from_slice::<serde_json::Value>(r.body()).map_err(|e| e.to_string())
        };
        match info.await {
            // The userinfo subject must be the ID token's (OIDC Core 5.3.2).
            Ok(v) if v["sub"].as_str() == Some(claims.subject.as_str()) => {
                if claims.email.is_none() && v["email_verified"].as_bool() == Some(true) {
                    claims.email = v["email"].as_str().map(str::to_owned);
                }
                if claims.name.is_none() {
                    claims.name = v["name"]
                        .as_str()
                        .or_else(|| v["preferred_username"].as_str())
                        .map(str::to_owned);
                }
                if claims.groups.is_none() {
                    // Userinfo answered: its groups are the user's groups,
                    // even none (a user removed from every group).
                    claims.groups = Some(groups_in(&v, &self.config.groups_claim));
                }
            }
            Ok(_) => tracing::warn!("userinfo names another subject than the ID token: ignored"),
            Err(e) => tracing::warn!(error = %e, "userinfo could not be read"),
        }
    }
}

/// Checks an ID token's signature, issuer, audience, expiry and nonce
/// (none for a refreshed token).
fn check_id_token(
    client: &Client,
    id_token: &openidconnect::core::CoreIdToken,
    nonce: Option<&Nonce>,
) -> Result<Claims, openidconnect::ClaimsVerificationError> {
    let verifier = client.id_token_verifier();
    let claims = match nonce {
        Some(nonce) => id_token.claims(&verifier, nonce)?,
        None => id_token.claims(&verifier, |_: Option<&Nonce>| Ok(()))?,
    };
    Ok(Claims {
        subject: claims.subject().to_string(),
        name: claims
            .name()
            .and_then(|n| n.get(None))
            .map(|n| n.to_string())
            .or_else(|| claims.preferred_username().map(|u| u.to_string())),
        email: claims
            .email()
            .filter(|_| claims.email_verified() == Some(true))
            .map(|e| e.to_string()),
        groups: None,
    })
}

/// The tokens a session keeps from a token response.
fn tokens_of(response: &CoreTokenResponse, before: Option<&OidcTokens>, now_ms: i64) -> OidcTokens {
    let lifetime = response
        .expires_in()
        .unwrap_or(Duration::from_secs(300))
        .max(Duration::from_secs(1));
    OidcTokens {
        refresh_token: response
            .refresh_token()
            .map(|t| t.secret().clone())
            .or_else(|| before.and_then(|b| b.refresh_token.clone())),
        refresh_at_ms: now_ms
            .saturating_add(i64::try_from(lifetime.as_millis()).unwrap_or(i64::MAX)),
        id_token: response
            .id_token()
            .map(|t| t.to_string())
            .or_else(|| before.and_then(|b| b.id_token.clone())),
    }
}

/// The JSON payload of a compact JWT (not checked here).
fn payload_of(jwt: &str) -> Option<serde_json::Value> {
    use base64::Engine as _;
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The groups at a dotted `path`: an array of strings, or one string.
pub fn groups_in(value: &serde_json::Value, path: &str) -> Vec<String> {
    let mut at = value;
    for part in path.split('.') {
        match at.get(part) {
            Some(v) => at = v,
            None => return Vec::new(),
        }
    }
    match at {
        serde_json::Value::Array(items) => items
            .iter()
            .filter_map(|g| g.as_str().map(str::to_owned))
            .collect(),
        serde_json::Value::String(one) => vec![one.clone()],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_found_at_dotted_paths() {
        let v = serde_json::json!({
            "groups": ["sre", 3, "dev"],
            "realm_access": {"roles": ["admin"]},
            "team": "payments",
        });
        assert_eq!(groups_in(&v, "groups"), ["sre", "dev"]);
        assert_eq!(groups_in(&v, "realm_access.roles"), ["admin"]);
        assert_eq!(groups_in(&v, "team"), ["payments"]);
        assert!(groups_in(&v, "missing.path").is_empty());
    }
}
