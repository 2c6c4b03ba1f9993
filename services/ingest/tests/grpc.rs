//! Ingest over a real gRPC connection: the runtime's server wiring (auth,
//! message-size limit, health checking, reflection, graceful shutdown) as a
//! client sees it.

#![allow(clippy::unwrap_used)] // a test: a panic is the failure report

use std::{net::TcpListener, sync::Arc, time::Duration};

use tonic::{Code, Request};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};
use vigil_ingest::IngestConfig;
use vigil_proto::telemetry::v1::{
    PushRequest, Resource, ResourceMetrics, Sample, TimeSeries,
    telemetry_service_client::TelemetryServiceClient,
};
use vigil_runtime::{
    Shutdown,
    auth::{ApiKeys, ProjectConfig},
};
use vigil_storage::{SeriesSelector, TelemetryStore, redb::RedbStore};

const KEY: &str = "test-key-0123456789abcdef";

fn free_addr() -> std::net::SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn push(batch_id: &str, values: usize) -> PushRequest {
    PushRequest {
        batch_id: batch_id.into(),
        agent: None,
        events: vec![],
        metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                node: "n1".into(),
                ..Resource::default()
            }),
            series: vec![TimeSeries {
                name: "host_load1".into(),
                labels: vec![],
                samples: (0..values)
                    .map(|i| Sample {
                        timestamp_ms: vigil_runtime::time::now_ms() - 60_000 + i as i64,
                        value: 1.0,
                    })
                    .collect(),
            }],
        }],
        spans: vec![],
        logs: vec![],
        profiles: vec![],
    }
}

fn authorized<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {KEY}").parse().unwrap());
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_auth_limits_health_reflection_and_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn TelemetryStore> =
        Arc::new(RedbStore::open(&dir.path().join("t.redb")).unwrap());
    let mut config = IngestConfig::default();
    config.grpc.listen = free_addr();
    config.http.listen = free_addr();
    config.grpc.max_message_bytes = 64 * 1024;
    let keys = ApiKeys::new(&[ProjectConfig {
        name: "p1".into(),
        api_keys: vec![KEY.into()],
        api_keys_file: None,
    }])
    .unwrap();
    let shutdown = Shutdown::new();
    let server = tokio::spawn(vigil_ingest::run(
        config.clone(),
        store.clone(),
        keys,
        shutdown.clone(),
    ));
    let endpoint = format!("http://{}", config.grpc.listen);
    let channel = loop {
        if let Ok(channel) = tonic::transport::Endpoint::from_shared(endpoint.clone())
            .unwrap()
            .connect()
            .await
        {
            break channel;
        }
        assert!(!server.is_finished(), "ingest stopped: {:?}", server.await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut client = TelemetryServiceClient::new(channel.clone());

    // No key, a wrong key: UNAUTHENTICATED with the reason.
    let status = client.push(push("b1", 1)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("missing API key"), "{status:?}");
    let mut wrong = Request::new(push("b1", 1));
    wrong
        .metadata_mut()
        .insert("authorization", "Bearer nope".parse().unwrap());
    assert_eq!(
        client.push(wrong).await.unwrap_err().code(),
        Code::Unauthenticated
    );

    // A good push is stored under the key's project, once.
    let response = client
        .push(authorized(push("b1", 3)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.samples_stored, 3);
    assert!(
        client
            .push(authorized(push("b1", 3)))
            .await
            .unwrap()
            .into_inner()
            .duplicate
    );
    let stored = store
        .select("p1", &SeriesSelector::metric("host_load1"), 0, i64::MAX)
        .await
        .unwrap();
    assert_eq!(stored[0].samples.len(), 3);

    // Over the message-size limit: tonic answers OUT_OF_RANGE, naming the limit.
    let status = client
        .push(authorized(push("big", 10_000)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(status.message().contains("too large"), "{status:?}");

    // gRPC health checking, per service.
    let mut health = HealthClient::new(channel.clone());
    let reply = health
        .check(HealthCheckRequest {
            service: "vigil.telemetry.v1.TelemetryService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.status, ServingStatus::Serving as i32);

    // gRPC reflection lists Vigil's service.
    let mut reflection = ServerReflectionClient::new(channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let response = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("expected a service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"vigil.telemetry.v1.TelemetryService".to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_owned()),
        "{names:?}"
    );

    // Shutdown drains and returns cleanly.
    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("ingest stops within 10 s")
        .unwrap()
        .unwrap();
}
