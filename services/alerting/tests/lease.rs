//! Leader election against a local fake of the Kubernetes API server's
//! Lease endpoints (no API server runs on these machines). The fake is
//! faithful where it matters: objects carry a resourceVersion, an update
//! with a stale one is refused with 409 Conflict, a second create with 409
//! AlreadyExists, and a missing Lease is a 404 Status.
#![allow(clippy::unwrap_used)]

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde_json::{Value, json};
use vigil_alerting::leader::{Elector, LeaseConfig};
use vigil_runtime::Shutdown;

#[derive(Clone, Default)]
struct Fake {
    lease: Arc<Mutex<Option<Value>>>,
    version: Arc<Mutex<u64>>,
    writes: Arc<Mutex<u64>>,
}

fn status(code: StatusCode, reason: &str) -> Response {
    (
        code,
        Json(json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": reason, "reason": reason, "code": code.as_u16(),
        })),
    )
        .into_response()
}

impl Fake {
    fn stamp(&self, mut lease: Value, ns: &str) -> Value {
        let mut v = self.version.lock().unwrap();
        *v += 1;
        lease["metadata"]["resourceVersion"] = json!(v.to_string());
        lease["metadata"]["namespace"] = json!(ns);
        *self.writes.lock().unwrap() += 1;
        lease
    }
}

async fn read(State(f): State<Fake>, Path((_ns, _name)): Path<(String, String)>) -> Response {
    match f.lease.lock().unwrap().clone() {
        Some(l) => Json(l).into_response(),
        None => status(StatusCode::NOT_FOUND, "NotFound"),
    }
}

async fn create(
    State(f): State<Fake>,
    Path(ns): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    let mut slot = f.lease.lock().unwrap();
    if slot.is_some() {
        return status(StatusCode::CONFLICT, "AlreadyExists");
    }
    let stored = f.stamp(body, &ns);
    *slot = Some(stored.clone());
    (StatusCode::CREATED, Json(stored)).into_response()
}

async fn replace(
    State(f): State<Fake>,
    Path((ns, _name)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> Response {
    let mut slot = f.lease.lock().unwrap();
    let current = slot
        .as_ref()
        .map(|l| l["metadata"]["resourceVersion"].clone());
    if current != Some(body["metadata"]["resourceVersion"].clone()) {
        return status(StatusCode::CONFLICT, "Conflict");
    }
    let stored = f.stamp(body, &ns);
    *slot = Some(stored.clone());
    Json(stored).into_response()
}

async fn fake_api_server() -> (Fake, String) {
    let fake = Fake::default();
    let app = Router::new()
        .route(
            "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases",
            post(create),
        )
        .route(
            "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}",
            get(read).put(replace),
        )
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (fake, url)
}

async fn elector(url: &str, identity: &str) -> Elector {
    let config = LeaseConfig {
        namespace: Some("vigil".into()),
        identity: Some(identity.into()),
        api_url: Some(url.into()),
        duration: Duration::from_secs(2),
        renew_every: Duration::from_millis(200),
        ..LeaseConfig::default()
    };
    Elector::connect(&config, "default")
        .await
        .expect("connects")
}

#[tokio::test]
async fn one_holder_at_a_time_and_takeover_after_expiry() {
    let (fake, url) = fake_api_server().await;
    let (a, b) = (elector(&url, "pod-a").await, elector(&url, "pod-b").await);
    let t0 = 1_700_000_000_000;
    assert!(a.try_lead(t0).await.unwrap(), "a creates the Lease");
    assert!(!b.try_lead(t0).await.unwrap(), "held and fresh");
    assert!(a.try_lead(t0 + 1_000).await.unwrap(), "a renews");
    assert!(
        !b.try_lead(t0 + 2_900).await.unwrap(),
        "renewed at +1 s: still fresh"
    );
    assert!(b.try_lead(t0 + 3_001).await.unwrap(), "expired: b takes it");
    assert!(!a.try_lead(t0 + 3_100).await.unwrap(), "a lost it");
    let lease = fake.lease.lock().unwrap().clone().unwrap();
    assert_eq!(lease["metadata"]["name"], "vigil-alerting-default");
    assert_eq!(lease["spec"]["holderIdentity"], "pod-b");
    assert_eq!(lease["spec"]["leaseTransitions"], 1);
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 2);

    // Both try at once on an expired Lease, twenty times: exactly one wins
    // each time (the other reads a fresh holder, or its write conflicts).
    let mut now = t0 + 10_000;
    for _ in 0..20 {
        now += 3_000;
        let (x, y) = tokio::join!(a.try_lead(now), b.try_lead(now));
        let (x, y) = (x.unwrap(), y.unwrap());
        assert!(x ^ y, "exactly one leader: a {x}, b {y}");
    }
}

#[tokio::test]
async fn a_stopping_leader_releases_the_lease_at_once() {
    let (_fake, url) = fake_api_server().await;
    let a = elector(&url, "pod-a").await;
    let b = elector(&url, "pod-b").await;
    let leadership = a.leadership();
    let shutdown = Shutdown::new();
    let s = shutdown.clone();
    let running = tokio::spawn(async move {
        a.run(&s).await;
        a
    });
    for _ in 0..50 {
        if leadership.is_leader() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(leadership.is_leader(), "a leads");
    let now = vigil_runtime::time::now_ms();
    assert!(!b.try_lead(now).await.unwrap(), "a renews it");
    shutdown.trigger();
    running.await.unwrap();
    assert!(!leadership.is_leader(), "a stopped leading");
    assert!(
        b.try_lead(vigil_runtime::time::now_ms()).await.unwrap(),
        "b at once, without waiting for expiry"
    );
}

#[tokio::test]
async fn bad_lease_settings_are_refused() {
    let config = LeaseConfig {
        duration: Duration::from_secs(5),
        renew_every: Duration::from_secs(5),
        ..LeaseConfig::default()
    };
    let err = config
        .validate("alerting.lease")
        .expect_err("too short")
        .to_string();
    assert!(err.contains("alerting.lease.duration"), "{err}");
    let outside = LeaseConfig::default();
    let err = Elector::connect(&outside, "default")
        .await
        .expect_err("not in a cluster")
        .to_string();
    assert!(err.contains("alerting.lease.api_url"), "{err}");
}
