//! gRPC server wiring shared by every service: a bound listener, the
//! service's routes, gRPC health checking and reflection, and the tower
//! stack (request tracing, metrics, load shedding above a global concurrency
//! limit, per-call timeout). Message-size limits are set on each generated
//! server with [`GrpcServerConfig::max_message_bytes`].

use std::{convert::Infallible, net::SocketAddr, time::Duration};

use tokio::net::TcpListener;
use tonic::{
    body::Body,
    server::NamedService,
    service::RoutesBuilder,
    transport::{Channel, Endpoint, Server, server::TcpIncoming},
};
use tonic_health::{ServingStatus, server::HealthReporter};
use tower::{Service, ServiceBuilder, limit::GlobalConcurrencyLimitLayer};

use crate::{
    Metrics, RuntimeError, Shutdown,
    config::GrpcServerConfig,
    metrics::{Protocol, RequestMetricsLayer},
};

/// A gRPC server being assembled: bound, but not yet serving.
pub struct GrpcServer {
    name: String,
    config: GrpcServerConfig,
    listener: TcpListener,
    routes: RoutesBuilder,
    services: Vec<&'static str>,
    descriptor_sets: Vec<&'static [u8]>,
}

impl GrpcServer {
    /// Binds the listener now, so that a port in use fails start-up at once.
    pub async fn bind(name: &str, config: &GrpcServerConfig) -> Result<Self, RuntimeError> {
        let listener = crate::error::bind(config.listen).await?;
        Ok(Self {
            name: name.to_owned(),
            config: config.clone(),
            listener,
            routes: RoutesBuilder::default(),
            services: Vec::new(),
            descriptor_sets: Vec::new(),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.config.listen)
    }

    /// Adds a generated tonic server. Its health status follows the server's.
    pub fn add_service<S>(&mut self, service: S) -> &mut Self
    where
        S: Service<http::Request<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.routes.add_service(service);
        self.services.push(S::NAME);
        self
    }

    /// Registers an encoded `FileDescriptorSet` for gRPC reflection.
    pub fn add_descriptor_set(&mut self, encoded: &'static [u8]) -> &mut Self {
        self.descriptor_sets.push(encoded);
        self
    }

    /// Serves until `shutdown`, then stops accepting and drains in-flight calls.
    pub async fn serve(self, metrics: &Metrics, shutdown: &Shutdown) -> Result<(), RuntimeError> {
        let Self {
            name,
            config,
            listener,
            mut routes,
            services,
            descriptor_sets,
        } = self;
        let (health, health_service) = tonic_health::server::health_reporter();
        for service in &services {
            health
                .set_service_status(*service, ServingStatus::Serving)
                .await;
        }
        routes.add_service(health_service);
        let mut reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
        let mut reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
        for set in descriptor_sets {
            reflection_v1 = reflection_v1.register_encoded_file_descriptor_set(set);
            reflection_v1alpha = reflection_v1alpha.register_encoded_file_descriptor_set(set);
        }
        routes.add_service(
            reflection_v1
                .build_v1()
                .map_err(|e| RuntimeError::Reflection(e.to_string()))?,
        );
        routes.add_service(
            reflection_v1alpha
                .build_v1alpha()
                .map_err(|e| RuntimeError::Reflection(e.to_string()))?,
        );

        let stack = ServiceBuilder::new()
            .layer(tower_http::trace::TraceLayer::new_for_grpc())
            .layer(RequestMetricsLayer::new(metrics, &name, Protocol::Grpc))
            .load_shed()
            .layer(GlobalConcurrencyLimitLayer::new(config.concurrency_limit))
            .into_inner();
        let addr = listener.local_addr().unwrap_or(config.listen);
        tracing::info!(server = %name, %addr, "gRPC listening");
        let drain = {
            let shutdown = shutdown.clone();
            let health = health.clone();
            async move {
                shutdown.wait().await;
                for service in services {
                    health
                        .set_service_status(service, ServingStatus::NotServing)
                        .await;
                }
            }
        };
        Server::builder()
            .timeout(config.request_timeout)
            .layer(stack)
            .add_routes(routes.routes())
            // Without TCP_NODELAY a reply that ends in a small segment
            // waits for the client's delayed ACK (~40 ms).
            .serve_with_incoming_shutdown(
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                drain,
            )
            .await
            .map_err(|e| RuntimeError::Serve {
                server: name.clone(),
                message: e.to_string(),
            })?;
        tracing::info!(server = %name, "gRPC drained and stopped");
        Ok(())
    }
}

/// A lazily connected channel to another Vigil service, so that start-up
/// order does not matter: calls fail with UNAVAILABLE until the peer is up.
pub fn channel(endpoint: &str, request_timeout: Duration) -> Result<Channel, RuntimeError> {
    let with_scheme = if endpoint.contains("://") {
        endpoint.to_owned()
    } else {
        format!("http://{endpoint}")
    };
    let endpoint_err = |message: String| RuntimeError::Endpoint {
        endpoint: endpoint.to_owned(),
        message,
    };
    Ok(Endpoint::from_shared(with_scheme)
        .map_err(|e| endpoint_err(e.to_string()))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(request_timeout)
        .tcp_nodelay(true)
        .connect_lazy())
}

/// The `HealthReporter` type, re-exported for services that manage statuses.
pub type Health = HealthReporter;
