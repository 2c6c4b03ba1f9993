//! The worker's gRPC API on a running worker: authentication and project
//! scoping, bad input refused with the problem named, the inspection
//! catalog, and test notifications through a real local receiver. The
//! query API it points at is not running, so every round is skipped (and
//! nothing is resolved).

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener},
    time::Duration,
};

use tonic::{Code, Request, transport::Channel};
use vigil_alerting::AlertingConfig;
use vigil_proto::alerting::v1::{self as pb, alerting_service_client::AlertingServiceClient};
use vigil_runtime::{
    Shutdown,
    auth::Secret,
    config::{GrpcServerConfig, HttpServerConfig},
};

const KEY: &str = "alerting-api-key-0123456789";

fn free() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

/// Answers every request with 200 and counts them.
fn receiver() -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let mut buf = [0u8; 65536];
            let _ = stream.read(&mut buf);
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (addr, count)
}

fn with_key<T>(message: T, key: &str) -> Request<T> {
    let mut r = Request::new(message);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {key}").parse().expect("header"),
    );
    r
}

#[tokio::test]
async fn the_api_checks_keys_and_input_and_sends_test_notifications() {
    let dir = tempfile::tempdir().expect("dir");
    let (hook, received) = receiver();
    let grpc = free();
    let mut config: AlertingConfig = {
        let toml = format!(
            "[[integrations]]\nname = \"hook\"\nwebhook = {{ url = \"http://{hook}/x\" }}\n\
             [[integrations]]\nname = \"dead\"\nslack = {{ webhook_url = \"http://127.0.0.1:9/services/secret-token\" }}\n"
        );
        let value: toml::Value = toml::from_str(&toml).expect("TOML");
        value.try_into().expect("config")
    };
    config.grpc = GrpcServerConfig::on(grpc);
    config.http = HttpServerConfig::on(free());
    config.query_endpoint = free().to_string(); // nothing listens there
    config.api_key = Secret(KEY.into());
    config.interval = Duration::from_millis(200);
    let shutdown = Shutdown::new();
    let s = shutdown.clone();
    let data = dir.path().to_owned();
    let worker =
        tokio::spawn(
            async move { vigil_alerting::run(config, &Default::default(), &data, s).await },
        );
    let mut client = None;
    for _ in 0..100 {
        if let Ok(c) = AlertingServiceClient::<Channel>::connect(format!("http://{grpc}")).await {
            client = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut c = client.expect("the worker's API starts");

    // Keys and projects.
    let err = c
        .list_incidents(pb::ListIncidentsRequest::default())
        .await
        .expect_err("no key");
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = c
        .list_incidents(with_key(
            pb::ListIncidentsRequest::default(),
            "wrong-key-0123456789",
        ))
        .await
        .expect_err("wrong key");
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = c
        .list_incidents(with_key(
            pb::ListIncidentsRequest {
                project: "other".into(),
                ..Default::default()
            },
            KEY,
        ))
        .await
        .expect_err("another project");
    assert_eq!(err.code(), Code::PermissionDenied);
    let listed = c
        .list_incidents(with_key(pb::ListIncidentsRequest::default(), KEY))
        .await
        .expect("listed")
        .into_inner();
    assert!(
        listed.incidents.is_empty(),
        "rounds are skipped: the query API is down"
    );

    // Bad input.
    for (request, wanted) in [
        (
            pb::ListIncidentsRequest {
                state: 7,
                ..Default::default()
            },
            "state 7",
        ),
        (
            pb::ListIncidentsRequest {
                limit: 5000,
                ..Default::default()
            },
            "limit 5000",
        ),
    ] {
        let err = c
            .list_incidents(with_key(request, KEY))
            .await
            .expect_err(wanted);
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains(wanted), "{}", err.message());
    }
    let err = c
        .get_incident(with_key(
            pb::GetIncidentRequest {
                id: "nope".into(),
                ..Default::default()
            },
            KEY,
        ))
        .await
        .expect_err("not a UUID");
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = c
        .get_incident(with_key(
            pb::GetIncidentRequest {
                id: "0b8f1c0e-7d3a-4c55-9a61-5f2e8d7c9b10".into(),
                ..Default::default()
            },
            KEY,
        ))
        .await
        .expect_err("unknown");
    assert_eq!(err.code(), Code::NotFound);
    let err = c
        .acknowledge_incident(with_key(
            pb::AcknowledgeIncidentRequest {
                id: "0b8f1c0e-7d3a-4c55-9a61-5f2e8d7c9b10".into(),
                by: String::new(),
                ..Default::default()
            },
            KEY,
        ))
        .await
        .expect_err("who?");
    assert_eq!(err.code(), Code::InvalidArgument);

    // The catalog and the integrations.
    let inspections = c
        .list_inspections(with_key(pb::ListInspectionsRequest {}, KEY))
        .await
        .expect("catalog")
        .into_inner()
        .inspections;
    assert_eq!(
        inspections.len(),
        vigil_alerting::catalog::INSPECTIONS.len()
    );
    let slo = inspections
        .iter()
        .find(|i| i.id == "slo_availability")
        .expect("slo");
    assert_eq!((slo.threshold, slo.critical), (6.0, Some(14.4)));
    let integrations = c
        .list_integrations(with_key(pb::ListIntegrationsRequest {}, KEY))
        .await
        .expect("integrations")
        .into_inner()
        .integrations;
    let targets: Vec<(&str, &str)> = integrations
        .iter()
        .map(|i| (i.name.as_str(), i.target.as_str()))
        .collect();
    assert_eq!(targets, [("hook", "webhook"), ("dead", "slack")]);
    let ok = c
        .test_integration(with_key(
            pb::TestIntegrationRequest {
                name: "hook".into(),
            },
            KEY,
        ))
        .await
        .expect("tested")
        .into_inner();
    assert!(ok.delivered, "{}", ok.error);
    assert_eq!(received.load(std::sync::atomic::Ordering::SeqCst), 1);
    let failed = c
        .test_integration(with_key(
            pb::TestIntegrationRequest {
                name: "dead".into(),
            },
            KEY,
        ))
        .await
        .expect("tested")
        .into_inner();
    assert!(!failed.delivered);
    assert!(
        !failed.error.is_empty() && !failed.error.contains("secret-token"),
        "{}",
        failed.error
    );
    let err = c
        .test_integration(with_key(
            pb::TestIntegrationRequest {
                name: "nope".into(),
            },
            KEY,
        ))
        .await
        .expect_err("unknown integration");
    assert_eq!(err.code(), Code::NotFound);

    let status = c
        .inspection_status(with_key(pb::InspectionStatusRequest::default(), KEY))
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status.evaluated_at_ms, 0, "no round could look yet");

    shutdown.trigger();
    worker
        .await
        .expect("joined")
        .expect("the worker stops cleanly");
}
