//! The UI gateway: signs users in (OpenID Connect, a forward-auth proxy, the
//! local login token, or anonymous), serves the web UI (assets built into
//! the binary), and turns the browser's JSON calls into gRPC calls to query,
//! alerting and heartbeat in the user's name: it presents its gateway key
//! and asserts the user's project and role, after checking the role itself.
//! It holds no telemetry.

pub mod api;
mod assets;
pub mod auth;
mod config;
mod render;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Form, Json, Router,
    body::Bytes,
    extract::{ConnectInfo, Path, Query, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
};
pub use config::{AuthConfig, AuthMode, ForwardAuthConfig, OidcConfig, RoleGrant, UiGatewayConfig};
use serde::Deserialize;
use vigil_proto::{
    alerting::v1::alerting_service_client::AlertingServiceClient,
    heartbeat::v1::heartbeat_service_client::HeartbeatServiceClient,
    query::v1::query_service_client::QueryServiceClient,
};
use vigil_runtime::{
    Metrics, Readiness, RuntimeError, Shutdown,
    auth::{BearerAuth, Role},
    http::HttpServer,
    rate::{ProjectRate, RateDenied},
    time::now_ms,
};

use crate::{
    api::{Acting, ApiError, Backends},
    auth::{Auth, Principal, Unauthenticated, safe_return},
    render::{Page, Templates},
};

#[derive(Clone)]
struct App {
    auth: Arc<Auth>,
    backends: Backends,
    templates: Templates,
    projects: Arc<Vec<String>>,
    rate: Arc<ProjectRate>,
    processes_per_host: u32,
}

/// Runs the UI gateway until `shutdown`.
pub async fn run(config: UiGatewayConfig, shutdown: Shutdown) -> Result<(), RuntimeError> {
    let metrics = Metrics::new("ui_gateway");
    let readiness = Readiness::default();
    let http = HttpServer::bind("ui-gateway", &config.http).await?;
    let app = App::new(&config, http.local_addr())?;
    tracing::info!(mode = ?app.auth.mode(), projects = ?config.projects, "UI gateway sign-in");
    readiness.set_ready(true);
    http.serve(router(app), &metrics, &readiness, &shutdown)
        .await
}

impl App {
    fn new(config: &UiGatewayConfig, listen: SocketAddr) -> Result<Self, RuntimeError> {
        let key = BearerAuth::new(&config.resolve_gateway_key()?)?;
        let channel =
            |endpoint: &str| vigil_runtime::grpc::channel(endpoint, config.backend_timeout);
        let backends = Backends {
            query: QueryServiceClient::with_interceptor(
                channel(&config.query_endpoint)?,
                key.clone(),
            ),
            alerting: AlertingServiceClient::with_interceptor(
                channel(&config.alerting_endpoint)?,
                key.clone(),
            ),
            heartbeat: match &config.heartbeat_endpoint {
                Some(e) => Some(HeartbeatServiceClient::with_interceptor(channel(e)?, key)),
                None => None,
            },
        };
        let http = vigil_runtime::http_client::build(concat!(
            "vigil-ui-gateway/",
            env!("CARGO_PKG_VERSION")
        ))
        .map_err(|e| vigil_runtime::config::ConfigError::invalid("ui_gateway.auth", e))?;
        Ok(Self {
            auth: Arc::new(Auth::new(config, listen, http)?),
            backends,
            templates: Templates::new(),
            projects: Arc::new(config.projects.clone()),
            rate: Arc::new(ProjectRate::new(
                config.rate_per_user,
                config.burst_per_user,
            )),
            processes_per_host: config.processes_per_host,
        })
    }
}

fn router(app: App) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/assets/{file}", get(assets::serve))
        .route("/auth/login", get(login))
        .route("/auth/token", post(token_login))
        .route("/auth/callback", get(callback))
        .route("/auth/logout", post(logout))
        .route("/auth/signed-out", get(signed_out))
        .route("/api/v1/session", get(session))
        .route("/api/v1/rpc/{service}/{method}", post(rpc))
        .route("/api/v1/hosts", get(hosts))
        .route("/api/v1/incidents", get(incidents))
        .layer(middleware::from_fn(security_headers))
        .with_state(app)
}

/// Headers on every answer: no framing, no sniffing, scripts and styles
/// only from the gateway itself, no referrer to other sites.
async fn security_headers(request: axum::extract::Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self' https: http:",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

fn with_cookies(
    mut response: Response,
    cookies: impl IntoIterator<Item = HeaderValue>,
) -> Response {
    for c in cookies {
        response.headers_mut().append(header::SET_COOKIE, c);
    }
    response
}

fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn page(app: &App, status: StatusCode, page: &Page<'_>) -> Response {
    no_store((status, Html(app.templates.page(page))).into_response())
}

/// The UI, for a signed-in user; others go to sign in.
async fn index(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    match app.auth.principal(&headers, peer, now_ms()).await {
        Ok(p) => with_cookies(no_store(assets::index()), p.set_cookies),
        Err(Unauthenticated::SignIn(_)) => Redirect::to("/auth/login").into_response(),
    }
}

#[derive(Deserialize)]
struct LoginQuery {
    #[serde(default)]
    return_to: Option<String>,
}

/// Starts signing in: to the provider (OIDC), or the token form.
async fn login(State(app): State<App>, Query(q): Query<LoginQuery>) -> Response {
    let return_to = safe_return(q.return_to.as_deref().unwrap_or("/"));
    match app.auth.mode() {
        AuthMode::Oidc => match app.auth.begin_oidc(&return_to, now_ms()).await {
            Ok((url, cookie)) => {
                with_cookies(no_store(Redirect::to(&url).into_response()), [cookie])
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot start an OpenID Connect sign-in");
                page(
                    &app,
                    StatusCode::BAD_GATEWAY,
                    &Page {
                        title: "Cannot sign in",
                        message: Some(&e.to_string()),
                        error: true,
                        link: Some("/auth/login"),
                        link_text: "Try again",
                        ..Page::default()
                    },
                )
            }
        },
        AuthMode::Token => page(
            &app,
            StatusCode::OK,
            &Page {
                title: "Sign in",
                token_form: true,
                return_to: &return_to,
                ..Page::default()
            },
        ),
        AuthMode::ForwardAuth | AuthMode::Anonymous => Redirect::to(&return_to).into_response(),
    }
}

#[derive(Deserialize)]
struct TokenForm {
    token: String,
    #[serde(default)]
    return_to: String,
}

/// Token mode: the login token for a session.
async fn token_login(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(form): Form<TokenForm>,
) -> Response {
    // Guesses are limited per address like API calls are per user.
    if app
        .rate
        .check(&format!("signin/{}", peer.ip()), 20)
        .is_err()
    {
        return page(
            &app,
            StatusCode::TOO_MANY_REQUESTS,
            &Page {
                title: "Sign in",
                message: Some("too many attempts: wait a few seconds"),
                error: true,
                token_form: true,
                return_to: "/",
                ..Page::default()
            },
        );
    }
    let return_to = safe_return(&form.return_to);
    if app.auth.mode() == AuthMode::Token
        && app.auth.token_matches(&form.token)
        && let Some(cookie) = app.auth.token_session(now_ms())
    {
        tracing::info!(%peer, "signed in with the login token");
        return with_cookies(Redirect::to(&return_to).into_response(), [cookie]);
    }
    tracing::info!(%peer, "sign-in with a wrong login token refused");
    page(
        &app,
        StatusCode::UNAUTHORIZED,
        &Page {
            title: "Sign in",
            message: Some("wrong login token"),
            error: true,
            token_form: app.auth.mode() == AuthMode::Token,
            return_to: &return_to,
            ..Page::default()
        },
    )
}

#[derive(Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    /// RFC 9207: the issuer of the response, when the provider says it.
    iss: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// The provider sends the browser back here with a code.
async fn callback(
    State(app): State<App>,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Response {
    let clear = app.auth.clear_flow();
    let result = match (&q.error, &q.code, &q.state) {
        (Some(error), _, _) => Err(format!(
            "the identity provider answered {error}{}",
            q.error_description
                .as_deref()
                .map(|d| format!(": {d}"))
                .unwrap_or_default()
        )),
        (None, Some(code), Some(state)) => app
            .auth
            .complete_oidc(&headers, code, state, q.iss.as_deref(), now_ms())
            .await
            .map_err(|e| e.to_string()),
        _ => Err("the callback lacks code or state".into()),
    };
    match result {
        Ok((return_to, session)) => with_cookies(
            no_store(Redirect::to(&return_to).into_response()),
            [clear, session],
        ),
        Err(message) => {
            tracing::warn!(error = %message, "OpenID Connect sign-in refused");
            with_cookies(
                page(
                    &app,
                    StatusCode::UNAUTHORIZED,
                    &Page {
                        title: "Sign-in refused",
                        message: Some(&message),
                        error: true,
                        link: Some("/auth/login"),
                        link_text: "Sign in again",
                        ..Page::default()
                    },
                ),
                [clear],
            )
        }
    }
}

/// Signs out (a POST with the CSRF token): clears the session, then the
/// provider's end-session endpoint, if any.
async fn logout(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<LogoutForm>,
) -> Response {
    let now = now_ms();
    let principal = match app.auth.principal(&headers, peer, now).await {
        Ok(p) => p,
        Err(_) => return Redirect::to("/auth/signed-out").into_response(),
    };
    if let Err(e) = app.auth.check_csrf(&principal, &headers, Some(&form.csrf)) {
        return ApiError::new(StatusCode::FORBIDDEN, e).into_response();
    }
    let (clear, target) = app.auth.sign_out(&headers, now).await;
    tracing::info!(user = %principal.subject, "signed out");
    with_cookies(no_store(Redirect::to(&target).into_response()), [clear])
}

#[derive(Deserialize)]
struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

async fn signed_out(State(app): State<App>) -> Response {
    page(
        &app,
        StatusCode::OK,
        &Page {
            title: "Signed out",
            message: Some("You are signed out."),
            link: Some("/auth/login"),
            link_text: "Sign in again",
            ..Page::default()
        },
    )
}

/// The signed-in user, for an API call; 401 otherwise.
async fn api_principal(
    app: &App,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> Result<Principal, ApiError> {
    let principal = app
        .auth
        .principal(headers, peer, now_ms())
        .await
        .map_err(|Unauthenticated::SignIn(why)| ApiError::new(StatusCode::UNAUTHORIZED, why))?;
    match app.rate.check(&format!("user/{}", principal.subject), 1) {
        Ok(()) => Ok(principal),
        Err(RateDenied::Wait(d)) => Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "too many requests: retry in {} ms",
                d.max(Duration::from_millis(1)).as_millis()
            ),
        )),
        Err(RateDenied::OverBurst) => Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too many requests",
        )),
    }
}

/// The project a call is for (`x-vigil-project`, else the only one the
/// user can see) and the user's role in it.
fn project_of(
    app: &App,
    principal: &Principal,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<(String, Role), ApiError> {
    let named = headers
        .get("x-vigil-project")
        .and_then(|v| v.to_str().ok())
        .or(query)
        .map(str::to_owned);
    let project = match named {
        Some(p) => p,
        None => match principal.roles.keys().next() {
            Some(p) if principal.roles.len() == 1 => p.clone(),
            Some(_) => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "name the project in x-vigil-project",
                ));
            }
            None => app.projects.first().cloned().unwrap_or_default(),
        },
    };
    match principal.role_in(&project) {
        Some(role) => Ok((project, role)),
        None => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("{} has no role in project {project:?}", principal.display()),
        )),
    }
}

/// `GET /api/v1/session`: who is signed in, their roles, and the CSRF
/// token for state-changing calls.
async fn session(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    match api_principal(&app, &headers, peer).await {
        Ok(p) => {
            let body = serde_json::json!({
                "user": {"subject": p.subject, "name": p.name, "email": p.email, "display": p.display()},
                "method": p.method,
                "roles": p.roles,
                "csrf": p.csrf,
                "projects": p.roles.keys().collect::<Vec<_>>(),
                "can_sign_out": matches!(app.auth.mode(), AuthMode::Oidc | AuthMode::Token),
            });
            with_cookies(no_store(Json(body).into_response()), p.set_cookies)
        }
        Err(e) => e.into_response(),
    }
}

/// The signed-in user of an API call, acting in the project the call
/// names (`x-vigil-project`, else `?project=`, else their only one).
async fn acting(
    app: &App,
    headers: &HeaderMap,
    peer: SocketAddr,
    query: Option<&str>,
) -> Result<(Principal, Acting), ApiError> {
    let principal = api_principal(app, headers, peer).await?;
    let (project, role) = project_of(app, &principal, headers, query)?;
    let user = principal.display();
    Ok((
        principal,
        Acting {
            project,
            role,
            user,
        },
    ))
}

/// A JSON answer, never cached, with the session's cookies.
fn reply(result: Result<(serde_json::Value, Vec<HeaderValue>), ApiError>) -> Response {
    match result {
        Ok((value, cookies)) => with_cookies(no_store(Json(value).into_response()), cookies),
        Err(e) => e.into_response(),
    }
}

/// `POST /api/v1/rpc/<service>/<Method>`.
async fn rpc(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((service, method_name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    reply(
        async {
            let need = api::route(&service, &method_name).ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!("no method {service}/{method_name}"),
                )
            })?;
            let (principal, acting) = acting(&app, &headers, peer, None).await?;
            app.auth
                .check_csrf(&principal, &headers, None)
                .map_err(|e| ApiError::new(StatusCode::FORBIDDEN, e))?;
            if acting.role < need {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    format!(
                        "{service}/{method_name} needs the {need} role; you are {} in {}",
                        acting.role, acting.project
                    ),
                ));
            }
            let value = app
                .backends
                .call(&service, &method_name, &body, &acting)
                .await?;
            Ok((value, principal.set_cookies))
        }
        .await,
    )
}

#[derive(Deserialize)]
struct ProjectQuery {
    project: Option<String>,
}

/// `GET /api/v1/hosts`: every host with its busiest processes (for
/// scripts and the overview).
async fn hosts(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<ProjectQuery>,
) -> Response {
    reply(
        async {
            let (principal, acting) = acting(&app, &headers, peer, q.project.as_deref()).await?;
            let listed = app
                .backends
                .call("query", "ListHosts", b"{}", &acting)
                .await?;
            let mut hosts = listed["hosts"].as_array().cloned().unwrap_or_default();
            for host in &mut hosts {
                let body = serde_json::json!({
                    "node": host["node"],
                    "limit": app.processes_per_host,
                });
                let processes = app
                    .backends
                    .call(
                        "query",
                        "ListProcesses",
                        body.to_string().as_bytes(),
                        &acting,
                    )
                    .await?;
                host["processes"] = processes["processes"].clone();
            }
            Ok((serde_json::json!({ "hosts": hosts }), principal.set_cookies))
        }
        .await,
    )
}

/// `GET /api/v1/incidents`: the project's incidents, newest first.
async fn incidents(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<ProjectQuery>,
) -> Response {
    reply(
        async {
            let (principal, acting) = acting(&app, &headers, peer, q.project.as_deref()).await?;
            let value = app
                .backends
                .call("alerting", "ListIncidents", b"{}", &acting)
                .await?;
            Ok((value, principal.set_cookies))
        }
        .await,
    )
}
