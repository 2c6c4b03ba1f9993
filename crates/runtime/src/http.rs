//! HTTP server wiring shared by every service: the service's own routes plus
//! `/healthz` (alive), `/readyz` (ready for traffic) and `/metrics`
//! (Prometheus text exposition), behind request tracing, metrics, a global
//! concurrency limit (503 beyond), a body-size limit (413) and a timeout (408).

use std::net::SocketAddr;

use axum::{
    Router,
    error_handling::HandleErrorLayer,
    extract::DefaultBodyLimit,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use tokio::net::TcpListener;
use tower::{BoxError, ServiceBuilder, limit::GlobalConcurrencyLimitLayer};

use crate::{
    Metrics, Readiness, RuntimeError, Shutdown,
    config::HttpServerConfig,
    metrics::{Protocol, RequestMetricsLayer},
};

/// An HTTP server being assembled: bound, but not yet serving.
pub struct HttpServer {
    name: String,
    config: HttpServerConfig,
    listener: TcpListener,
}

impl HttpServer {
    /// Binds the listener now, so that a port in use fails start-up at once.
    pub async fn bind(name: &str, config: &HttpServerConfig) -> Result<Self, RuntimeError> {
        let listener = crate::error::bind(config.listen).await?;
        Ok(Self {
            name: name.to_owned(),
            config: config.clone(),
            listener,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.config.listen)
    }

    /// Serves `app` plus the admin routes until `shutdown`, then drains.
    pub async fn serve(
        self,
        app: Router,
        metrics: &Metrics,
        readiness: &Readiness,
        shutdown: &Shutdown,
    ) -> Result<(), RuntimeError> {
        let Self {
            name,
            config,
            listener,
        } = self;
        let app = app
            .merge(admin_routes(metrics.clone(), readiness.clone()))
            .layer(
                ServiceBuilder::new()
                    .layer(tower_http::trace::TraceLayer::new_for_http())
                    .layer(RequestMetricsLayer::new(metrics, &name, Protocol::Http))
                    .layer(HandleErrorLayer::new(overloaded))
                    .load_shed()
                    .layer(GlobalConcurrencyLimitLayer::new(config.concurrency_limit))
                    .layer(tower_http::timeout::TimeoutLayer::with_status_code(
                        StatusCode::REQUEST_TIMEOUT,
                        config.request_timeout,
                    ))
                    .layer(tower_http::limit::RequestBodyLimitLayer::new(
                        config.max_body_bytes,
                    )),
            )
            .layer(DefaultBodyLimit::max(config.max_body_bytes));
        let addr = listener.local_addr().unwrap_or(config.listen);
        tracing::info!(server = %name, %addr, "HTTP listening");
        // Handlers may ask for the peer's address (`ConnectInfo<SocketAddr>`).
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown.signalled())
        .await
        .map_err(|e| RuntimeError::Serve {
            server: name.clone(),
            message: e.to_string(),
        })?;
        tracing::info!(server = %name, "HTTP drained and stopped");
        Ok(())
    }
}

async fn overloaded(error: BoxError) -> (StatusCode, String) {
    if error.is::<tower::load_shed::error::Overloaded>() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded: too many requests in flight, retry later".to_owned(),
        )
    } else {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("internal error: {error}"),
        )
    }
}

/// `/healthz`, `/readyz` and `/metrics`.
pub fn admin_routes(metrics: Metrics, readiness: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let ready = readiness.is_ready();
                async move {
                    if ready {
                        (StatusCode::OK, "ready\n")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let body = metrics.encode();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        body,
                    )
                        .into_response()
                }
            }),
        )
}
