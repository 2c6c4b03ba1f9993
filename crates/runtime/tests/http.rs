//! The shared HTTP server as a client meets it: readiness, body limit,
//! load shedding above the concurrency limit, timeout, request metrics, and
//! draining in-flight requests on shutdown.

#![allow(clippy::unwrap_used)] // a test: a panic is the failure report

use std::{net::TcpListener, time::Duration};

use axum::{Router, routing::get, routing::post};
use vigil_runtime::{Metrics, Readiness, Shutdown, config::HttpServerConfig, http::HttpServer};

fn client() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

async fn get_status(url: String) -> (u16, String) {
    tokio::task::spawn_blocking(move || {
        let mut response = client().get(&url).call().unwrap();
        let body = response.body_mut().read_to_string().unwrap_or_default();
        (response.status().as_u16(), body)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_metrics_and_drain() {
    let listen = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = HttpServerConfig {
        listen,
        request_timeout: Duration::from_secs(1),
        concurrency_limit: 1,
        max_body_bytes: 16,
    };
    let metrics = Metrics::new("test");
    let readiness = Readiness::default();
    let shutdown = Shutdown::new();
    let app = Router::new()
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(700)).await;
                "done"
            }),
        )
        .route(
            "/hang",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        )
        .route("/echo", post(|body: String| async move { body }));
    let server = HttpServer::bind("test", &config).await.unwrap();
    let task = {
        let (metrics, readiness, shutdown) = (metrics.clone(), readiness.clone(), shutdown.clone());
        tokio::spawn(async move { server.serve(app, &metrics, &readiness, &shutdown).await })
    };
    let base = format!("http://{listen}");

    assert_eq!(get_status(format!("{base}/healthz")).await.0, 200);
    assert_eq!(
        get_status(format!("{base}/readyz")).await.0,
        503,
        "not ready yet"
    );
    readiness.set_ready(true);
    assert_eq!(get_status(format!("{base}/readyz")).await.0, 200);

    // Body over the limit: 413.
    let url = format!("{base}/echo");
    let status = tokio::task::spawn_blocking(move || {
        client()
            .post(&url)
            .send("x".repeat(32))
            .unwrap()
            .status()
            .as_u16()
    })
    .await
    .unwrap();
    assert_eq!(status, 413);

    // Over the concurrency limit: shed with 503 while the first is served.
    let first = tokio::spawn(get_status(format!("{base}/slow")));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, body) = get_status(format!("{base}/slow")).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("overloaded"), "{body}");
    assert_eq!(first.await.unwrap(), (200, "done".to_owned()));

    // Over the timeout: 408.
    assert_eq!(get_status(format!("{base}/hang")).await.0, 408);

    // Unknown routes are folded into one label.
    assert_eq!(get_status(format!("{base}/no/such/{}", 12345)).await.0, 404);
    let (_, exposition) = get_status(format!("{base}/metrics")).await;
    assert!(
        exposition.contains(r#"route="/slow",code="200""#),
        "{exposition}"
    );
    assert!(
        exposition.contains(r#"route="/slow",code="503""#),
        "{exposition}"
    );
    assert!(
        exposition.contains(r#"route="unmatched",code="404""#),
        "{exposition}"
    );
    assert!(!exposition.contains("12345"), "{exposition}");

    // Shutdown while a request is in flight: it completes, then the server stops.
    let in_flight = tokio::spawn(get_status(format!("{base}/slow")));
    tokio::time::sleep(Duration::from_millis(200)).await;
    shutdown.trigger();
    assert_eq!(
        in_flight.await.unwrap(),
        (200, "done".to_owned()),
        "drained, not cut"
    );
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("server stops after draining")
        .unwrap()
        .unwrap();
}
