//! OpenID Connect sign-in against a scripted provider started by the test:
//! discovery, PKCE (the provider checks the S256 verifier), the session
//! cookie, refresh, signing-key rotation, logout through the end-session
//! endpoint, and every ID token the gateway must refuse — bad signature,
//! wrong issuer, wrong audience, expired, a replayed nonce, a mismatched
//! state. The provider here is written for these tests because a certified
//! one (npm `oidc-provider`, used by the browser test) cannot be made to
//! issue bad tokens; its ID tokens are signed by `openidconnect` with RSA
//! keys made by `openssl`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Form, Json, Router,
    extract::{Query, State},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use openidconnect::{
    AdditionalClaims, Audience, EndUserEmail, IssuerUrl, JsonWebKeyId, Nonce, PrivateSigningKey,
    StandardClaims, SubjectIdentifier,
    core::{
        CoreGenderClaim, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
        CoreRsaPrivateSigningKey,
    },
};
use serde::{Deserialize, Serialize};
use vigil_runtime::{Shutdown, auth::Secret};
use vigil_ui_gateway::{AuthMode, RoleGrant};

mod common;

const CLIENT_ID: &str = "vigil-ui";
const CLIENT_SECRET: &str = "client-secret-0123456789";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Groups {
    groups: Vec<String>,
}
impl AdditionalClaims for Groups {}

type IdToken = openidconnect::IdToken<
    Groups,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;

/// What the provider does wrong on the next token request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    BadSignature,
    WrongIssuer,
    WrongAudience,
    Expired,
    WrongNonce,
}

struct Grant {
    nonce: String,
    challenge: String,
}

struct OpState {
    issuer: String,
    key: CoreRsaPrivateSigningKey,
    /// A key of the same id that the JWKS does not publish.
    impostor: CoreRsaPrivateSigningKey,
    /// Published after rotation.
    next_key: Option<CoreRsaPrivateSigningKey>,
    rotated: bool,
    fault: Fault,
    grants: HashMap<String, Grant>,
    token_lifetime_s: u64,
    refreshes: usize,
    refused_refresh: bool,
    jwks_reads: usize,
    pkce_checked: usize,
}

type Op = Arc<Mutex<OpState>>;

fn rsa_pem() -> String {
    let out = std::process::Command::new("openssl")
        .args(["genrsa", "-traditional", "2048"])
        .output()
        .expect("openssl genrsa (scripts/install-deps.sh installs openssl)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn signing_key(kid: &str) -> CoreRsaPrivateSigningKey {
    CoreRsaPrivateSigningKey::from_pem(&rsa_pem(), Some(JsonWebKeyId::new(kid.into()))).unwrap()
}

async fn discovery(State(op): State<Op>) -> Json<serde_json::Value> {
    let issuer = op.lock().unwrap().issuer.clone();
    Json(serde_json::json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "userinfo_endpoint": format!("{issuer}/userinfo"),
        "end_session_endpoint": format!("{issuer}/logout"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    }))
}

async fn jwks(State(op): State<Op>) -> Json<serde_json::Value> {
    let mut s = op.lock().unwrap();
    s.jwks_reads += 1;
    let mut keys = vec![serde_json::to_value(s.key.as_verification_key()).unwrap()];
    if s.rotated {
        keys =
            vec![serde_json::to_value(s.next_key.as_ref().unwrap().as_verification_key()).unwrap()];
    }
    Json(serde_json::json!({ "keys": keys }))
}

#[derive(Deserialize)]
struct AuthorizeQuery {
    client_id: String,
    redirect_uri: String,
    state: String,
    nonce: String,
    code_challenge: String,
    code_challenge_method: String,
    scope: String,
    response_type: String,
}

/// Signs the user in at once and sends the browser back with a code.
async fn authorize(State(op): State<Op>, Query(q): Query<AuthorizeQuery>) -> Response {
    assert_eq!(q.client_id, CLIENT_ID);
    assert_eq!(q.response_type, "code");
    assert_eq!(q.code_challenge_method, "S256", "PKCE with S256");
    assert!(q.scope.split(' ').any(|s| s == "openid"), "{}", q.scope);
    let code = format!("code-{}", rand_hex());
    op.lock().unwrap().grants.insert(
        code.clone(),
        Grant {
            nonce: q.nonce,
            challenge: q.code_challenge,
        },
    );
    Redirect::to(&format!("{}?code={code}&state={}", q.redirect_uri, q.state)).into_response()
}

fn rand_hex() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    format!(
        "{:016x}",
        N.fetch_add(1, Ordering::SeqCst)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
    )
}

fn id_token(s: &OpState, nonce: Option<&str>) -> String {
    let now = chrono::Utc::now();
    let (issued, expires) = match s.fault {
        Fault::Expired => (
            now - chrono::Duration::hours(2),
            now - chrono::Duration::hours(1),
        ),
        _ => (now, now + chrono::Duration::minutes(10)),
    };
    let issuer = match s.fault {
        Fault::WrongIssuer => "https://evil.example".to_owned(),
        _ => s.issuer.clone(),
    };
    let audience = match s.fault {
        Fault::WrongAudience => "someone-else",
        _ => CLIENT_ID,
    };
    let mut claims = openidconnect::IdTokenClaims::new(
        IssuerUrl::new(issuer).unwrap(),
        vec![Audience::new(audience.into())],
        expires,
        issued,
        StandardClaims::new(SubjectIdentifier::new("user-42".into()))
            .set_email(Some(EndUserEmail::new("ada@example.com".into())))
            .set_email_verified(Some(true)),
        Groups {
            groups: vec!["sre".into(), "unrelated-group".into()],
        },
    );
    let nonce = match s.fault {
        Fault::WrongNonce => Some("not-the-nonce".to_owned()),
        _ => nonce.map(str::to_owned),
    };
    claims = claims.set_nonce(nonce.map(Nonce::new));
    let key = match (s.fault, s.rotated) {
        (Fault::BadSignature, _) => &s.impostor,
        (_, true) => s.next_key.as_ref().unwrap(),
        _ => &s.key,
    };
    IdToken::new(
        claims,
        key,
        CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
        None,
        None,
    )
    .unwrap()
    .to_string()
}

async fn token(
    State(op): State<Op>,
    headers: axum::http::HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    use base64::Engine as _;
    use sha2::Digest as _;
    // client_secret_basic
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"));
    assert_eq!(
        headers.get("authorization").and_then(|v| v.to_str().ok()),
        Some(format!("Basic {basic}").as_str()),
        "the client authenticates"
    );
    let mut s = op.lock().unwrap();
    let lifetime = s.token_lifetime_s;
    match form.get("grant_type").map(String::as_str) {
        Some("authorization_code") => {
            let code = form.get("code").cloned().unwrap_or_default();
            // The code may be replayed here on purpose: the gateway must
            // refuse the second use of the nonce itself.
            let Some(grant) = s.grants.get(&code) else {
                return (
                    axum::http::StatusCode::BAD_REQUEST,
                    Json(serde_json::json!({"error": "invalid_grant"})),
                )
                    .into_response();
            };
            let verifier = form.get("code_verifier").expect("PKCE verifier sent");
            let hashed = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(sha2::Sha256::digest(verifier.as_bytes()));
            assert_eq!(
                hashed, grant.challenge,
                "the verifier matches the challenge"
            );
            let nonce = grant.nonce.clone();
            s.pkce_checked += 1;
            let id = id_token(&s, Some(&nonce));
            Json(serde_json::json!({
                "access_token": "at-1", "token_type": "Bearer", "expires_in": lifetime,
                "refresh_token": "rt-1", "id_token": id,
            }))
            .into_response()
        }
        Some("refresh_token") => {
            s.refreshes += 1;
            if s.refused_refresh || form.get("refresh_token").map(String::as_str) != Some("rt-1") {
                return (
                    axum::http::StatusCode::BAD_REQUEST,
                    Json(serde_json::json!({"error": "invalid_grant"})),
                )
                    .into_response();
            }
            let id = id_token(&s, None);
            Json(serde_json::json!({
                "access_token": "at-2", "token_type": "Bearer", "expires_in": 600, "id_token": id,
            }))
            .into_response()
        }
        _ => (axum::http::StatusCode::BAD_REQUEST, "grant_type").into_response(),
    }
}

async fn start_op() -> (String, Op) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let op = Arc::new(Mutex::new(OpState {
        issuer: issuer.clone(),
        key: signing_key("k1"),
        impostor: signing_key("k1"),
        next_key: Some(signing_key("k2")),
        rotated: false,
        fault: Fault::None,
        grants: HashMap::new(),
        token_lifetime_s: 600,
        refreshes: 0,
        refused_refresh: false,
        jwks_reads: 0,
        pkce_checked: 0,
    }));
    let app = Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/jwks", get(jwks))
        .route("/authorize", get(authorize))
        .route("/token", post(token))
        .with_state(op.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (issuer, op)
}

async fn start_gateway(issuer: &str) -> (String, Shutdown) {
    // No backends: sign-in never calls them.
    let mut config = common::gateway_config("127.0.0.1:9", "127.0.0.1:9");
    let auth = &mut config.auth;
    auth.mode = AuthMode::Oidc;
    auth.oidc.issuer = issuer.to_owned();
    auth.oidc.client_id = CLIENT_ID.into();
    auth.oidc.client_secret = Secret(CLIENT_SECRET.into());
    auth.oidc.scopes.push("groups".into());
    auth.roles = vec![RoleGrant {
        project: "default".into(),
        role: vigil_runtime::auth::Role::Editor,
        users: vec![],
        groups: vec!["sre".into()],
        everyone: false,
    }];
    let shutdown = Shutdown::new();
    let base = common::start_gateway(config, &shutdown).await;
    (base, shutdown)
}

/// A browser, as far as this flow needs one: cookies by name, no automatic
/// redirects.
struct Browser {
    http: reqwest::Client,
    cookies: HashMap<String, String>,
}

impl Browser {
    fn new() -> Self {
        Self {
            http: vigil_runtime::http_client::build("test-browser").unwrap(),
            cookies: HashMap::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn keep(&mut self, r: &reqwest::Response) {
        for set in r.headers().get_all("set-cookie") {
            let text = set.to_str().unwrap();
            let pair = text.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() || text.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
    }

    async fn get(&mut self, url: &str) -> reqwest::Response {
        let r = self
            .http
            .get(url)
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        self.keep(&r);
        r
    }

    async fn post_form(&mut self, url: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let r = self
            .http
            .post(url)
            .header("cookie", self.cookie_header())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(
                form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(form)
                    .finish(),
            )
            .send()
            .await
            .unwrap();
        self.keep(&r);
        r
    }
}

fn location(r: &reqwest::Response) -> String {
    r.headers()
        .get("location")
        .unwrap_or_else(|| panic!("a redirect, got {}", r.status()))
        .to_str()
        .unwrap()
        .to_owned()
}

/// Login → provider → callback URL (not yet followed).
async fn to_callback(b: &mut Browser, gw: &str) -> String {
    let r = b
        .get(&format!("{gw}/auth/login?return_to=/%23/services"))
        .await;
    assert_eq!(r.status(), 303, "to the provider");
    let authorize = location(&r);
    assert!(authorize.contains("code_challenge="), "{authorize}");
    let r = b.get(&authorize).await;
    location(&r)
}

async fn sign_in(b: &mut Browser, gw: &str) -> reqwest::Response {
    let callback = to_callback(b, gw).await;
    b.get(&callback).await
}

#[tokio::test]
async fn oidc_sign_in_refresh_rotation_and_logout() {
    let (issuer, op) = start_op().await;
    let (gw, shutdown) = start_gateway(&issuer).await;
    let mut b = Browser::new();

    // Not signed in: the UI sends to sign-in; the API answers 401.
    let r = b.get(&format!("{gw}/")).await;
    assert_eq!(
        (r.status().as_u16(), location(&r).as_str()),
        (303, "/auth/login")
    );
    assert_eq!(b.get(&format!("{gw}/api/v1/session")).await.status(), 401);

    let r = sign_in(&mut b, &gw).await;
    assert_eq!(r.status(), 303, "{:?}", r.text().await);
    assert_eq!(location(&r), "/#/services", "back where the user was going");
    assert!(b.cookies.contains_key("vigil_session"));
    assert!(
        !b.cookies.contains_key("vigil_signin"),
        "the flow cookie is cleared"
    );
    assert_eq!(op.lock().unwrap().pkce_checked, 1);
    let me: serde_json::Value = b
        .get(&format!("{gw}/api/v1/session"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["user"]["subject"], "user-42");
    assert_eq!(me["user"]["email"], "ada@example.com");
    assert_eq!(
        me["roles"]["default"], "editor",
        "role from the sre group: {me}"
    );
    assert!(me["csrf"].as_str().unwrap().len() >= 40);

    // The provider rotates its signing key: the next sign-in's token names a
    // key the gateway has not seen, so it reads the keys again.
    let reads = op.lock().unwrap().jwks_reads;
    op.lock().unwrap().rotated = true;
    let mut b2 = Browser::new();
    let r = sign_in(&mut b2, &gw).await;
    assert_eq!(r.status(), 303, "rotation: {:?}", r.text().await);
    assert_eq!(op.lock().unwrap().jwks_reads, reads + 1);

    // Refresh: a session whose access token expired is renewed with the
    // provider on the next call; a refused refresh ends the session.
    op.lock().unwrap().token_lifetime_s = 1;
    let mut b3 = Browser::new();
    assert_eq!(sign_in(&mut b3, &gw).await.status(), 303);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = b3.cookies["vigil_session"].clone();
    let r = b3.get(&format!("{gw}/api/v1/session")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(op.lock().unwrap().refreshes, 1);
    assert_ne!(
        b3.cookies["vigil_session"], before,
        "the renewed session is written back"
    );
    let mut b4 = Browser::new();
    assert_eq!(sign_in(&mut b4, &gw).await.status(), 303);
    op.lock().unwrap().refused_refresh = true;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = b4.get(&format!("{gw}/api/v1/session")).await;
    assert_eq!(r.status(), 401, "a refused refresh signs out");
    op.lock().unwrap().refused_refresh = false;

    // Logout needs the CSRF token, then goes to the provider's end-session
    // endpoint with the ID token hint.
    let csrf = me["csrf"].as_str().unwrap().to_owned();
    let r = b
        .post_form(&format!("{gw}/auth/logout"), &[("csrf", "wrong")])
        .await;
    assert_eq!(r.status(), 403);
    let r = b
        .post_form(&format!("{gw}/auth/logout"), &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status(), 303);
    let to = location(&r);
    assert!(to.starts_with(&format!("{issuer}/logout?")), "{to}");
    assert!(
        to.contains("id_token_hint=") && to.contains("post_logout_redirect_uri="),
        "{to}"
    );
    assert!(
        !b.cookies.contains_key("vigil_session"),
        "session cookie cleared"
    );
    assert_eq!(b.get(&format!("{gw}/api/v1/session")).await.status(), 401);
    shutdown.trigger();
}

#[tokio::test]
async fn bad_id_tokens_states_and_replays_are_refused() {
    let (issuer, op) = start_op().await;
    let (gw, shutdown) = start_gateway(&issuer).await;
    for (fault, says) in [
        (Fault::BadSignature, "Signature verification failed"),
        (Fault::WrongIssuer, "issuer"),
        (Fault::WrongAudience, "audience"),
        (Fault::Expired, "Expired"),
        (Fault::WrongNonce, "nonce"),
    ] {
        op.lock().unwrap().fault = fault;
        let mut b = Browser::new();
        let r = sign_in(&mut b, &gw).await;
        assert_eq!(r.status(), 401, "{fault:?} refused");
        let page = r.text().await.unwrap();
        assert!(
            page.to_lowercase().contains(&says.to_lowercase()),
            "{fault:?}: {page}"
        );
        assert!(
            !b.cookies.contains_key("vigil_session"),
            "{fault:?}: no session"
        );
    }
    op.lock().unwrap().fault = Fault::None;

    // A mismatched state (a callback this browser did not start).
    let mut b = Browser::new();
    let callback = to_callback(&mut b, &gw).await;
    let forged = regex_replace_state(&callback, "forged-state");
    let r = b.get(&forged).await;
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("state does not match"));

    // A callback without any sign-in in progress (no flow cookie).
    let mut stranger = Browser::new();
    let r = stranger.get(&callback).await;
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("no sign-in in progress"));

    // A replay: the same callback, with the same flow cookie, used twice.
    // The provider here lets the code be used again, so it is the gateway
    // that must refuse the nonce it has already accepted.
    let mut b = Browser::new();
    let callback = to_callback(&mut b, &gw).await;
    let flow = b.cookies["vigil_signin"].clone();
    assert_eq!(b.get(&callback).await.status(), 303, "first use");
    let mut replayer = Browser::new();
    replayer.cookies.insert("vigil_signin".into(), flow);
    let r = replayer.get(&callback).await;
    assert_eq!(r.status(), 401, "replay refused");
    assert!(r.text().await.unwrap().contains("already used"));

    // A response naming another issuer (RFC 9207 mix-up).
    let mut b = Browser::new();
    let callback = to_callback(&mut b, &gw).await;
    let r = b
        .get(&format!("{callback}&iss=https%3A%2F%2Fevil.example"))
        .await;
    assert_eq!(r.status(), 401);
    assert!(
        r.text().await.unwrap().contains("comes from issuer"),
        "mix-up refused"
    );

    // A provider error is shown, not a session.
    let r = Browser::new()
        .get(&format!(
            "{gw}/auth/callback?error=access_denied&error_description=nope"
        ))
        .await;
    assert_eq!(r.status(), 401);
    shutdown.trigger();
}

fn regex_replace_state(url: &str, state: &str) -> String {
    let (base, query) = url.split_once('?').unwrap();
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| !p.starts_with("state="))
        .collect();
    format!("{base}?{}&state={state}", kept.join("&"))
}

#[tokio::test]
async fn a_provider_that_cannot_be_reached_is_said_plainly() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (gw, shutdown) = start_gateway(&format!("http://{dead}")).await;
    let r = Browser::new().get(&format!("{gw}/auth/login")).await;
    assert_eq!(r.status(), 502);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("identity provider cannot be reached")
    );
    shutdown.trigger();
}
