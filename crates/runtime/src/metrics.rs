//! Self-metrics: one Prometheus registry per service, served at `/metrics`,
//! and [`RequestMetricsLayer`], the tower layer that counts and times every
//! gRPC and HTTP request.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Instant,
};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::{Metric, Registry},
};
use tower::{Layer, Service};

/// A service's metric registry. Cheap to clone; register at start-up.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<RwLock<Registry>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// A registry whose metric names all start with `vigil_<service>_`.
    pub fn new(service: &str) -> Self {
        let prefix = format!("vigil_{}", service.replace('-', "_"));
        Self {
            registry: Arc::new(RwLock::new(Registry::with_prefix(prefix))),
        }
    }

    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        // A poisoned lock only means another registration panicked; the
        // registry itself is still consistent.
        let mut registry = self
            .registry
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        registry.register(name, help, metric);
    }

    /// The Prometheus/OpenMetrics text exposition of every metric.
    pub fn encode(&self) -> String {
        let registry = self
            .registry
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = String::new();
        if let Err(e) = encode(&mut out, &registry) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        out
    }
}

/// Whether a service is ready to take traffic (`/readyz`, gRPC health).
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set_ready(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    server: String,
    route: String,
    code: String,
}

/// Which protocol a [`RequestMetricsLayer`] observes; it decides how the
/// route and the result code are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    Http,
}

struct RequestMetricsState {
    server: String,
    protocol: Protocol,
    requests: Family<RequestLabels, Counter>,
    seconds: Family<RequestLabels, Histogram>,
}

/// Counts requests and records their latency by server, route and code.
/// Unmatched routes are folded into one `unmatched` label so that random
/// paths cannot grow the label set.
#[derive(Clone)]
pub struct RequestMetricsLayer {
    state: Arc<RequestMetricsState>,
}

impl RequestMetricsLayer {
    pub fn new(metrics: &Metrics, server: &str, protocol: Protocol) -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let seconds = Family::<RequestLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.001, 0.005, 0.025, 0.1, 0.5, 2.5, 10.0])
        });
        let kind = match protocol {
            Protocol::Grpc => "grpc",
            Protocol::Http => "http",
        };
        metrics.register(
            &format!("{kind}_{}_requests", server.replace('-', "_")),
            "Requests served, by route and result code",
            requests.clone(),
        );
        metrics.register(
            &format!(
                "{kind}_{}_request_duration_seconds",
                server.replace('-', "_")
            ),
            "Time to produce the response head",
            seconds.clone(),
        );
        Self {
            state: Arc::new(RequestMetricsState {
                server: server.to_owned(),
                protocol,
                requests,
                seconds,
            }),
        }
    }
}

impl<S> Layer<S> for RequestMetricsLayer {
    type Service = RequestMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestMetricsService {
            inner,
            state: self.state.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RequestMetricsService<S> {
    inner: S,
    state: Arc<RequestMetricsState>,
}

impl<S, B, RB> Service<http::Request<B>> for RequestMetricsService<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = RequestMetricsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let route = match self.state.protocol {
            Protocol::Http => req
                .extensions()
                .get::<axum::extract::MatchedPath>()
                .map(|p| p.as_str().to_owned()),
            Protocol::Grpc => Some(req.uri().path().to_owned()),
        };
        RequestMetricsFuture {
            inner: self.inner.call(req),
            route,
            start: Instant::now(),
            state: self.state.clone(),
        }
    }
}

pin_project_lite::pin_project! {
    pub struct RequestMetricsFuture<F> {
        #[pin]
        inner: F,
        route: Option<String>,
        start: Instant,
        state: Arc<RequestMetricsState>,
    }
}

impl<F, RB, E> Future for RequestMetricsFuture<F>
where
    F: Future<Output = Result<http::Response<RB>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        let state = &**this.state;
        let (code, matched) = match &result {
            Ok(response) => match state.protocol {
                Protocol::Http => {
                    let status = response.status();
                    (
                        status.as_u16().to_string(),
                        status != http::StatusCode::NOT_FOUND,
                    )
                }
                Protocol::Grpc => {
                    // Errors travel in the headers of a trailers-only response;
                    // a successful unary call carries grpc-status in trailers.
                    let code = response
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("0")
                        .to_owned();
                    let matched = code != "12"; // UNIMPLEMENTED: no such method
                    (code, matched)
                }
            },
            Err(_) => ("error".to_owned(), true),
        };
        let route = match this.route.take() {
            Some(route) if matched => route,
            _ => "unmatched".to_owned(),
        };
        let labels = RequestLabels {
            server: state.server.clone(),
            route,
            code,
        };
        state.requests.get_or_create(&labels).inc();
        state
            .seconds
            .get_or_create(&labels)
            .observe(this.start.elapsed().as_secs_f64());
        Poll::Ready(result)
    }
}
