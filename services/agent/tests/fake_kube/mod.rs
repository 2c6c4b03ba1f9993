//! A FAKE Kubernetes API server for tests and benchmarks: no real
//! kube-apiserver (nor k3s, kind or an etcd-backed apiserver) can run on
//! these machines. It serves list and watch the way the API server does
//! (documented in "Kubernetes API Concepts"): lists carry
//! `metadata.resourceVersion` and items without `apiVersion`/`kind`;
//! watches are streams of `{"type", "object"}` JSON lines from a
//! resourceVersion, with BOOKMARKs, ending after `timeoutSeconds`; a watch
//! from a compacted version gets an ERROR event with a 410 `Expired`
//! Status. Unknown resources answer 404.

#![allow(dead_code, clippy::unwrap_used)]

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    body::Body,
    extract::{Query, State},
    http::{StatusCode, Uri},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

#[derive(Clone, Debug)]
pub struct Change {
    pub rv: u64,
    resource: String,
    kind: &'static str,
    object: Value,
    /// Made while open watches were stalled: they never deliver it.
    stalled: bool,
}

#[derive(Default)]
pub struct Inner {
    pub rv: u64,
    /// resource ("v1/pods", "apps/v1/deployments") → (namespace, name) → object
    pub objects: BTreeMap<String, BTreeMap<(String, String), Value>>,
    pub history: Vec<Change>,
    /// Watches from a version below this get 410 Gone.
    pub compacted: u64,
    pub lists: BTreeMap<String, usize>,
    pub watches: BTreeMap<String, usize>,
}

pub struct Fake {
    pub inner: Mutex<Inner>,
    pub installed: BTreeSet<&'static str>,
    pub changes: broadcast::Sender<Change>,
    /// Bumped to end every open watch (as an API server restart would).
    pub close: watch::Sender<u64>,
    /// While set, open watches deliver nothing (a stalled connection).
    pub stall: std::sync::atomic::AtomicBool,
}

pub const RESOURCES: [&str; 12] = [
    "v1/pods",
    "v1/nodes",
    "v1/services",
    "v1/events",
    "apps/v1/replicasets",
    "apps/v1/deployments",
    "apps/v1/statefulsets",
    "apps/v1/daemonsets",
    "batch/v1/jobs",
    "batch/v1/cronjobs",
    "discovery.k8s.io/v1/endpointslices",
    "kustomize.toolkit.fluxcd.io/v1/kustomizations",
];

fn resource_of(object: &Value) -> String {
    let api_version = object["apiVersion"].as_str().unwrap();
    let plural = match object["kind"].as_str().unwrap() {
        "Pod" => "pods",
        "Node" => "nodes",
        "Service" => "services",
        "Event" => "events",
        "ReplicaSet" => "replicasets",
        "Deployment" => "deployments",
        "StatefulSet" => "statefulsets",
        "DaemonSet" => "daemonsets",
        "Job" => "jobs",
        "CronJob" => "cronjobs",
        "EndpointSlice" => "endpointslices",
        "Kustomization" => "kustomizations",
        other => panic!("no resource for {other}"),
    };
    format!("{api_version}/{plural}")
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

impl Fake {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Inner {
                rv: 100,
                ..Inner::default()
            }),
            installed: RESOURCES.into_iter().collect(),
            changes: broadcast::channel(1024).0,
            close: watch::channel(0).0,
            stall: false.into(),
        })
    }

    /// Creates or replaces an object, as a write to the API server does.
    pub fn apply(&self, mut object: Value) {
        let mut inner = self.inner.lock().unwrap();
        inner.rv += 1;
        let rv = inner.rv;
        let resource = resource_of(&object);
        let meta = object["metadata"].as_object_mut().unwrap();
        meta.insert("resourceVersion".into(), json!(rv.to_string()));
        let name = meta["name"].as_str().unwrap().to_owned();
        let namespace = meta
            .get("namespace")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        meta.entry("uid")
            .or_insert_with(|| json!(format!("uid-{namespace}-{name}")));
        meta.entry("creationTimestamp")
            .or_insert_with(|| json!("2026-11-22T00:00:00Z"));
        let existed = inner
            .objects
            .entry(resource.clone())
            .or_default()
            .insert((namespace, name), object.clone())
            .is_some();
        let change = Change {
            rv,
            resource,
            kind: if existed { "MODIFIED" } else { "ADDED" },
            object,
            stalled: self.stall.load(std::sync::atomic::Ordering::SeqCst),
        };
        inner.history.push(change.clone());
        let _ = self.changes.send(change);
    }

    /// Forgets history: watches from before the current version get 410.
    pub fn compact(&self) {
        let mut inner = self.inner.lock().unwrap();
        inner.compacted = inner.rv;
        inner.history.clear();
    }

    pub fn end_watches(&self) {
        self.close.send_modify(|n| *n += 1);
    }

    pub fn count(&self, what: fn(&Inner) -> &BTreeMap<String, usize>, resource: &str) -> usize {
        what(&self.inner.lock().unwrap())
            .get(resource)
            .copied()
            .unwrap_or(0)
    }
}

/// `/api/v1[/namespaces/<ns>]/<plural>` and
/// `/apis/<group>/<version>[/namespaces/<ns>]/<plural>`.
fn parse(path: &str) -> Option<(String, Option<String>)> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (gv, rest) = match *parts.first()? {
        "api" => (parts.get(1)?.to_string(), &parts[2..]),
        "apis" => (format!("{}/{}", parts.get(1)?, parts.get(2)?), &parts[3..]),
        _ => return None,
    };
    match rest {
        [plural] => Some((format!("{gv}/{plural}"), None)),
        ["namespaces", ns, plural] => Some((format!("{gv}/{plural}"), Some(ns.to_string()))),
        _ => None,
    }
}

pub async fn serve(
    State(fake): State<Arc<Fake>>,
    uri: Uri,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let Some((resource, namespace)) = parse(uri.path()) else {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(status(404, "NotFound", "no such path")),
        )
            .into_response();
    };
    if !fake.installed.contains(resource.as_str()) {
        let mut inner = fake.inner.lock().unwrap();
        let counts = if q.contains_key("watch") {
            &mut inner.watches
        } else {
            &mut inner.lists
        };
        *counts.entry(resource.clone()).or_default() += 1;
        drop(inner);
        return (
            StatusCode::NOT_FOUND,
            axum::Json(status(
                404,
                "NotFound",
                "the server could not find the requested resource",
            )),
        )
            .into_response();
    }
    let in_ns = move |object: &Value| {
        namespace
            .as_deref()
            .is_none_or(|ns| object["metadata"]["namespace"] == ns)
    };
    if q.get("watch").is_some_and(|w| w == "true" || w == "1") {
        let from: u64 = q
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let timeout = Duration::from_secs(
            q.get("timeoutSeconds")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1800),
        );
        let bookmarks = q.get("allowWatchBookmarks").is_some_and(|b| b == "true");
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, std::io::Error>>(64);
        let mut changes = fake.changes.subscribe();
        let mut close = fake.close.subscribe();
        let (replay, expired, now) = {
            let mut inner = fake.inner.lock().unwrap();
            *inner.watches.entry(resource.clone()).or_default() += 1;
            let replay: Vec<Change> = inner
                .history
                .iter()
                .filter(|c| c.rv > from && c.resource == resource)
                .cloned()
                .collect();
            (replay, from < inner.compacted, inner.rv)
        };
        let line = |c: &Change| format!("{}\n", json!({"type": c.kind, "object": c.object}));
        tokio::spawn(async move {
            if expired {
                let gone = status(
                    410,
                    "Expired",
                    &format!("too old resource version: {from} ({now})"),
                );
                let _ = tx
                    .send(Ok(format!(
                        "{}\n",
                        json!({"type": "ERROR", "object": gone})
                    )))
                    .await;
                return;
            }
            let mut last = from;
            for c in replay.iter().filter(|c| in_ns(&c.object)) {
                last = c.rv;
                if tx.send(Ok(line(c))).await.is_err() {
                    return;
                }
            }
            if bookmarks {
                let (api_version, kind) = api_version_kind(&resource);
                let bookmark = json!({"type": "BOOKMARK", "object": {"apiVersion": api_version, "kind": kind,
                    "metadata": {"resourceVersion": now.max(last).to_string()}}});
                let _ = tx.send(Ok(format!("{bookmark}\n"))).await;
            }
            let deadline = tokio::time::sleep(timeout);
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    c = changes.recv() => match c {
                        Ok(c) if !c.stalled && c.rv > last && c.resource == resource && in_ns(&c.object) => {
                            last = c.rv;
                            if tx.send(Ok(line(&c))).await.is_err() {
                                return;
                            }
                        }
                        Ok(_) => {}
                        Err(_) => return,
                    },
                    _ = close.changed() => return,
                    () = &mut deadline => return,
                }
            }
        });
        return Response::builder()
            .header("content-type", "application/json")
            .body(Body::from_stream(
                tokio_stream::wrappers::ReceiverStream::new(rx),
            ))
            .unwrap();
    }
    let mut inner = fake.inner.lock().unwrap();
    *inner.lists.entry(resource.clone()).or_default() += 1;
    let items: Vec<Value> = inner
        .objects
        .get(&resource)
        .into_iter()
        .flat_map(BTreeMap::values)
        .filter(|o| in_ns(o))
        .map(|o| {
            let mut o = o.clone();
            let map = o.as_object_mut().unwrap();
            map.remove("apiVersion");
            map.remove("kind");
            o
        })
        .collect();
    let (api_version, kind) = api_version_kind(&resource);
    axum::Json(json!({
        "apiVersion": api_version, "kind": format!("{kind}List"),
        "metadata": {"resourceVersion": inner.rv.to_string()},
        "items": items,
    }))
    .into_response()
}

fn api_version_kind(resource: &str) -> (String, String) {
    let (gv, plural) = resource.rsplit_once('/').unwrap();
    let kind = match plural {
        "pods" => "Pod",
        "nodes" => "Node",
        "services" => "Service",
        "events" => "Event",
        "replicasets" => "ReplicaSet",
        "deployments" => "Deployment",
        "statefulsets" => "StatefulSet",
        "daemonsets" => "DaemonSet",
        "jobs" => "Job",
        "cronjobs" => "CronJob",
        "endpointslices" => "EndpointSlice",
        "kustomizations" => "Kustomization",
        _ => "Unknown",
    };
    (gv.to_owned(), kind.to_owned())
}

/// A time `secs` seconds ago, as the API writes times.
pub fn ago(secs: i64) -> String {
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    k8s_openapi::jiff::Timestamp::from_second(now - secs)
        .unwrap()
        .to_string()
}

impl Fake {
    /// Serves the fake on a free loopback port.
    pub async fn start(self: &Arc<Self>) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().fallback(serve).with_state(self.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }
}
