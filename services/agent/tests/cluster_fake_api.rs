//! The cluster agent against a FAKE Kubernetes API server: no real
//! kube-apiserver (nor k3s, kind or etcd-backed apiserver) can run on these
//! machines, so this test starts a local HTTP server that serves list and
//! watch the way the API server does (documented in "Kubernetes API
//! Concepts"): lists carry `metadata.resourceVersion` and items without
//! `apiVersion`/`kind`; watches are streams of `{"type", "object"}` JSON
//! lines from a resourceVersion, with BOOKMARKs, ending after
//! `timeoutSeconds`; a watch from a compacted version gets an ERROR event
//! with a 410 `Expired` Status. Unknown resources (Flux's HelmRelease, not
//! "installed" here) answer 404. The objects are shaped after Kubernetes'
//! OpenAPI schemas (apps/v1 Deployment, core/v1 Pod with containerStatuses,
//! events, Flux's Kustomization with its Ready condition).
//!
//! The agent runs in this process against an in-process ingest on a redb
//! store; what is asserted is what the store holds. Then: a watch that ends
//! resumes without a new list, and an expired version (410) makes exactly
//! one new list that picks up what changed meanwhile.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod common;
mod fake_kube;

use std::time::Duration;

use fake_kube::{Fake, RESOURCES, ago};
use serde_json::{Value, json};
use vigil_agent::cluster::ClusterAgentConfig;
use vigil_runtime::Shutdown;
use vigil_storage::{EventQuery, SeriesSelector, TelemetryStore};

/// A time `secs` seconds ago with microseconds (MicroTime).
fn micro(secs: i64) -> String {
    ago(secs).replace('Z', ".000000Z")
}

/// The BackOff event of the fixtures.
fn back_off() -> Value {
    objects()
        .into_iter()
        .find(|o| o["reason"] == "BackOff")
        .unwrap()
}

const CONTAINER: &str = "3f1c2a9b8e7d6c5b4a39281706f5e4d3c2b1a0f9e8d7c6b5a4938271605f4e3d";

fn objects() -> Vec<Value> {
    let (t0, t10, t12, t20) = (ago(1200), ago(600), ago(480), ago(60));
    vec![
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"},
            "status": {"conditions": [
                {"type": "Ready", "status": "True", "reason": "KubeletReady"},
                {"type": "MemoryPressure", "status": "False"},
                {"type": "DiskPressure", "status": "True", "reason": "KubeletHasDiskPressure"}],
              "capacity": {"cpu": "4", "memory": "16Gi", "pods": "110"},
              "allocatable": {"cpu": "3800m", "memory": "15Gi", "pods": "110"},
              "nodeInfo": {"kernelVersion": "6.1.0", "kubeletVersion": "v1.33.1", "containerRuntimeVersion": "containerd://2.0.0",
                "osImage": "Debian GNU/Linux 12", "architecture": "amd64", "bootID": "b", "kubeProxyVersion": "", "machineID": "m",
                "operatingSystem": "linux", "systemUUID": "s"}}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop", "generation": 4},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "app", "image": "shop/web:1.4"}]}}},
            "status": {"observedGeneration": 4, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 2, "availableReplicas": 2, "unavailableReplicas": 1}}),
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": "web-5d9c7b6f8", "namespace": "shop", "labels": {"pod-template-hash": "5d9c7b6f8"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "uid-shop-web", "controller": true}]},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}},
            "status": {"replicas": 3, "readyReplicas": 2}}),
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-5d9c7b6f8-x2x4q", "namespace": "shop", "labels": {"app": "web", "pod-template-hash": "5d9c7b6f8"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d9c7b6f8", "uid": "uid-shop-web-5d9c7b6f8", "controller": true}],
                "managedFields": [{"manager": "kube-controller-manager", "operation": "Update"}]},
            "spec": {"nodeName": "node-1", "containers": [{"name": "app", "image": "shop/web:1.4",
                "resources": {"requests": {"cpu": "250m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}}}]},
            "status": {"phase": "Running", "podIP": "10.244.0.7",
                "conditions": [{"type": "Ready", "status": "False"}],
                "containerStatuses": [{"name": "app", "image": "shop/web:1.4", "imageID": "sha256:ab", "ready": false,
                    "restartCount": 5, "containerID": format!("containerd://{CONTAINER}"),
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 2m40s restarting failed container"}},
                    "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled",
                        "startedAt": t10, "finishedAt": t12}}}]}}),
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db", "namespace": "shop", "generation": 1},
            "spec": {"replicas": 1, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "pg", "image": "postgres:17"}]}}},
            "status": {"replicas": 1, "readyReplicas": 1, "availableReplicas": 1, "observedGeneration": 1}}),
        json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "vigil-agent", "namespace": "vigil"},
            "spec": {"selector": {"matchLabels": {"app": "a"}}, "template": {"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "a", "image": "a"}]}}},
            "status": {"desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberReady": 2, "numberAvailable": 2, "numberUnavailable": 1, "numberMisscheduled": 0}}),
        json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "backup", "namespace": "ops"},
            "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "b", "image": "b"}], "restartPolicy": "Never"}}}}},
            "status": {"lastScheduleTime": t20}}),
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "backup-29400000", "namespace": "ops",
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": "backup", "uid": "uid-ops-backup", "controller": true}]},
            "spec": {"completions": 1, "template": {"spec": {"containers": [{"name": "b", "image": "b"}], "restartPolicy": "Never"}}},
            "status": {"failed": 2, "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.12", "ports": [{"port": 80}]}}),
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "web-abc12", "namespace": "shop", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.244.0.7"], "conditions": {"ready": false}},
                          {"addresses": ["10.244.0.8"], "conditions": {"ready": true}},
                          {"addresses": ["10.244.0.9"]}]}),
        json!({"apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "web-5d9c7b6f8-x2x4q.17f", "namespace": "shop"},
            "involvedObject": {"kind": "Pod", "name": "web-5d9c7b6f8-x2x4q", "namespace": "shop", "apiVersion": "v1"},
            "reason": "BackOff", "message": "Back-off restarting failed container app",
            "type": "Warning", "count": 5, "source": {"component": "kubelet", "host": "node-1"},
            "firstTimestamp": t10, "lastTimestamp": t12}),
        // Older, but after the first in the list's (name) order.
        json!({"apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "zz-web-5d9c7b6f8-x2x4q.17a", "namespace": "shop"},
            "involvedObject": {"kind": "Pod", "name": "web-5d9c7b6f8-x2x4q", "namespace": "shop", "apiVersion": "v1"},
            "reason": "Pulled", "message": "Container image \"shop/web:1.4\" already present on machine",
            "type": "Normal", "count": 1, "source": {"component": "kubelet", "host": "node-1"},
            "firstTimestamp": t10, "lastTimestamp": t10}),
        // An events.k8s.io-style event: eventTime is its first occurrence,
        // series.lastObservedTime its latest.
        json!({"apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "web-5d9c7b6f8-x2x4q.sched", "namespace": "shop"},
            "involvedObject": {"kind": "Pod", "name": "web-5d9c7b6f8-x2x4q", "namespace": "shop", "apiVersion": "v1"},
            "reason": "FailedScheduling", "message": "0/3 nodes are available: 3 Insufficient memory.",
            "type": "Warning", "eventTime": micro(1100), "reportingComponent": "default-scheduler",
            "reportingInstance": "default-scheduler-node-1",
            "series": {"count": 3, "lastObservedTime": micro(90)}}),
        json!({"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
            "metadata": {"name": "apps", "namespace": "flux-system"},
            "spec": {"interval": "10m", "path": "./apps", "prune": true, "sourceRef": {"kind": "GitRepository", "name": "flux-system"}},
            "status": {"conditions": [{"type": "Ready", "status": "False", "reason": "BuildFailed",
                "message": "kustomization path not found", "lastTransitionTime": t0}]}}),
    ]
}

fn config(
    dir: &std::path::Path,
    api: std::net::SocketAddr,
    ingest: &common::Ingest,
) -> ClusterAgentConfig {
    ClusterAgentConfig {
        ingest_endpoint: ingest.config.grpc.listen.to_string(),
        api_key: common::INGEST_KEY.into(),
        cluster: "test".into(),
        interval: Duration::from_secs(1),
        api_url: Some(format!("http://{api}")),
        spool_dir: Some(dir.join("spool")),
        http: vigil_runtime::config::HttpServerConfig::on(common::free_addr()),
        ..ClusterAgentConfig::default()
    }
}

/// The newest value of `metric` whose labels include `want`, waiting up to
/// 20 s for one that satisfies `until`.
async fn value(
    store: &dyn TelemetryStore,
    metric: &str,
    want: &[(&str, &str)],
    until: impl Fn(f64) -> bool,
) -> Option<f64> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut last = None;
    loop {
        let series = store
            .select("p1", &SeriesSelector::metric(metric), 0, i64::MAX)
            .await
            .unwrap();
        last = series
            .iter()
            .filter(|s| {
                want.iter()
                    .all(|(n, v)| s.labels.get(*n).map(String::as_str) == Some(*v))
            })
            .filter_map(|s| s.samples.last())
            .max_by_key(|s| s.timestamp_ms)
            .map(|s| s.value)
            .or(last);
        if last.is_some_and(&until) || tokio::time::Instant::now() > deadline {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The events stored for `application`, newest first.
async fn events(store: &dyn TelemetryStore, application: &str) -> Vec<vigil_storage::Event> {
    store
        .list_events(
            "p1",
            &EventQuery {
                start_ns: 0,
                end_ns: i64::MAX,
                resource: vec![("application".into(), application.into())],
                ..EventQuery::default()
            },
        )
        .await
        .unwrap()
}

/// What the node agent sends about a container: its CPU, labelled only
/// with the container id.
async fn push_node_batch(ingest: &common::Ingest) {
    use vigil_proto::telemetry::v1::{
        Label, PushRequest, Resource, ResourceMetrics, Sample, TimeSeries,
        telemetry_service_client::TelemetryServiceClient,
    };
    let mut client =
        TelemetryServiceClient::connect(format!("http://{}", ingest.config.grpc.listen))
            .await
            .unwrap();
    let mut request = tonic::Request::new(PushRequest {
        batch_id: "node-1".into(),
        metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                node: "node-1".into(),
                ..Resource::default()
            }),
            series: vec![TimeSeries {
                name: "container_cpu_usage_seconds_total".into(),
                labels: vec![Label {
                    name: "container_id".into(),
                    value: CONTAINER[..12].into(),
                }],
                samples: vec![Sample {
                    timestamp_ms: vigil_runtime::time::now_ms(),
                    value: 12.5,
                }],
            }],
        }],
        ..PushRequest::default()
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", common::INGEST_KEY).parse().unwrap(),
    );
    client.push(request).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_events_and_watch_restarts_against_a_fake_api_server() {
    let _ = vigil_runtime::telemetry::init(&vigil_runtime::config::LogConfig {
        level: "warn".into(),
        ..Default::default()
    });
    let fake = Fake::new();
    for o in objects() {
        fake.apply(o);
    }
    let api = fake.start().await;

    let dir = tempfile::tempdir().unwrap();
    let ingest = common::Ingest::start(None);
    let store = ingest.store.clone();
    let stop = Shutdown::new();
    let agent = tokio::spawn(vigil_agent::cluster::run(
        config(dir.path(), api, &ingest),
        stop.clone(),
    ));
    let s = store.as_ref();
    let web = [("namespace", "shop"), ("application", "web")];

    // kube-state-metrics figures, with pods named by their workload.
    assert_eq!(
        value(s, "kube_deployment_spec_replicas", &web, |_| true).await,
        Some(3.0)
    );
    assert_eq!(
        value(
            s,
            "kube_deployment_status_replicas_available",
            &[("deployment", "web")],
            |_| true
        )
        .await,
        Some(2.0)
    );
    assert_eq!(
        value(s, "kube_pod_container_status_restarts_total", &web, |_| {
            true
        })
        .await,
        Some(5.0)
    );
    for (metric, reason) in [
        (
            "kube_pod_container_status_waiting_reason",
            "CrashLoopBackOff",
        ),
        (
            "kube_pod_container_status_last_terminated_reason",
            "OOMKilled",
        ),
    ] {
        assert_eq!(
            value(
                s,
                metric,
                &[("application", "web"), ("reason", reason)],
                |_| true
            )
            .await,
            Some(1.0),
            "{metric}"
        );
    }
    assert_eq!(
        value(
            s,
            "kube_pod_container_info",
            &[
                ("application", "web"),
                ("container_id", &CONTAINER[..12]),
                ("node", "node-1"),
                ("cluster", "test")
            ],
            |_| true
        )
        .await,
        Some(1.0)
    );
    assert_eq!(
        value(
            s,
            "kube_node_status_condition",
            &[
                ("node", "node-1"),
                ("condition", "DiskPressure"),
                ("status", "true")
            ],
            |_| true
        )
        .await,
        Some(1.0)
    );
    assert_eq!(
        value(
            s,
            "kube_node_status_allocatable",
            &[("resource", "cpu")],
            |_| true
        )
        .await,
        Some(3.8)
    );
    assert_eq!(
        value(
            s,
            "kube_statefulset_status_replicas_ready",
            &[("statefulset", "db")],
            |_| true
        )
        .await,
        Some(1.0)
    );
    assert_eq!(
        value(
            s,
            "kube_daemonset_status_number_unavailable",
            &[("daemonset", "vigil-agent")],
            |_| true
        )
        .await,
        Some(1.0)
    );
    assert_eq!(
        value(
            s,
            "kube_job_failed",
            &[("job_name", "backup-29400000"), ("application", "backup")],
            |_| true
        )
        .await,
        Some(1.0)
    );
    assert_eq!(
        value(
            s,
            "kube_endpoint_address_available",
            &[("service", "web")],
            |_| true
        )
        .await,
        Some(2.0)
    );
    assert_eq!(
        value(
            s,
            "kube_endpoint_address_not_ready",
            &[("service", "web")],
            |_| true
        )
        .await,
        Some(1.0)
    );
    assert_eq!(
        value(
            s,
            "flux_resource_ready",
            &[("kind", "Kustomization"), ("name", "apps")],
            |_| true
        )
        .await,
        Some(0.0)
    );

    // The Warning event, as an event of the pod's application.
    // All three, though the older Pulled is listed after the newer BackOff;
    // the scheduler's at its latest time, 90 s ago.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while events(s, "web").await.len() < 3 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let got = events(s, "web").await;
    let reasons: Vec<&str> = got.iter().map(|e| e.reason.as_str()).collect();
    assert_eq!(
        reasons,
        ["FailedScheduling", "BackOff", "Pulled"],
        "newest first"
    );
    let age_s = (vigil_runtime::time::now_ms() * 1_000_000 - got[0].time_ns) / 1_000_000_000;
    assert!((89..120).contains(&age_s), "FailedScheduling {age_s} s ago");
    assert_eq!(
        got[0].resource.get("k8s.event.count").map(String::as_str),
        Some("3")
    );
    let e = &got[1];
    assert_eq!(
        (e.kind.as_str(), e.reason.as_str(), e.object.as_str()),
        ("Warning", "BackOff", "Pod/shop/web-5d9c7b6f8-x2x4q")
    );
    assert_eq!(e.message, "Back-off restarting failed container app");
    assert_eq!(e.resource.get("cluster").map(String::as_str), Some("test"));
    assert_eq!(
        e.resource.get("k8s.event.count").map(String::as_str),
        Some("5")
    );
    let flux = events(s, "apps").await;
    assert_eq!(flux.len(), 1, "{flux:#?}");
    assert_eq!(
        (flux[0].kind.as_str(), flux[0].reason.as_str()),
        ("Flux", "BuildFailed")
    );
    assert_eq!(
        flux[0].message,
        "reconciliation failed: kustomization path not found"
    );

    // The node agent's container figures land on the application.
    push_node_batch(&ingest).await;
    assert_eq!(
        value(
            s,
            "container_cpu_usage_seconds_total",
            &[
                ("application", "web"),
                ("pod", "web-5d9c7b6f8-x2x4q"),
                ("namespace", "shop")
            ],
            |_| true
        )
        .await,
        Some(12.5)
    );

    let lists = |r: &str| fake.count(|i| &i.lists, r);
    let watches = |r: &str| fake.count(|i| &i.watches, r);
    // Flux kinds are listed once more first: is Flux installed?
    let first = |r: &str| if r.contains("fluxcd") { 2 } else { 1 };
    for r in RESOURCES {
        assert_eq!(lists(r), first(r), "{r}: one list to start");
    }
    // HelmRelease is not installed: asked for (404), not watched.
    let helm = "helm.toolkit.fluxcd.io/v2/helmreleases";
    assert_eq!((lists(helm), watches(helm)), (1, 0));

    // A watch that ends resumes from its resourceVersion: no new list, and
    // a change made while it was down still arrives.
    let pods_watches = watches("v1/pods");
    fake.end_watches();
    let mut deployment = objects()[1].clone();
    deployment["spec"]["replicas"] = json!(5);
    fake.apply(deployment.clone());
    assert_eq!(
        value(s, "kube_deployment_spec_replicas", &web, |v| v == 5.0).await,
        Some(5.0)
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while watches("v1/pods") == pods_watches && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        watches("v1/pods") > pods_watches,
        "the pod watch was resumed"
    );
    for r in RESOURCES {
        assert_eq!(lists(r), first(r), "{r}: no re-list after a watch ended");
    }

    // Changes the open watches never deliver, then the history is
    // compacted and the watches end: resuming gets 410 Expired, and each
    // kind lists again, once, seeing the new state.
    fake.stall.store(true, std::sync::atomic::Ordering::SeqCst);
    deployment["spec"]["replicas"] = json!(7);
    let mut event = back_off();
    event["count"] = json!(6);
    event["lastTimestamp"] = json!(ago(30));
    fake.apply(deployment);
    fake.apply(event);
    fake.compact();
    fake.end_watches();
    fake.stall.store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        value(s, "kube_deployment_spec_replicas", &web, |v| v == 7.0).await,
        Some(7.0)
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while events(s, "web").await.len() < 4 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        events(s, "web").await.len(),
        4,
        "the event's 6th occurrence, once"
    );
    let relisted = || RESOURCES.iter().all(|r| lists(r) > first(r));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !relisted() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A little longer: a second re-list would show too.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for r in RESOURCES {
        assert_eq!(
            lists(r),
            first(r) + 1,
            "{r}: one re-list after 410; watches {}",
            watches(r)
        );
    }

    // Restarted, the agent lists again but ships no event twice.
    stop.trigger();
    agent.await.unwrap().unwrap();
    let stop = Shutdown::new();
    let agent = tokio::spawn(vigil_agent::cluster::run(
        config(dir.path(), api, &ingest),
        stop.clone(),
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while lists("v1/events") < 3 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        events(s, "web").await.len(),
        4,
        "no event shipped twice after a restart"
    );
    // ... and it ships what happens next.
    let mut event = back_off();
    event["count"] = json!(7);
    event["lastTimestamp"] = json!(ago(1));
    fake.apply(event);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while events(s, "web").await.len() < 5 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(events(s, "web").await.len(), 5, "the 7th occurrence");
    stop.trigger();
    agent.await.unwrap().unwrap();
    ingest.stop().await;
}
