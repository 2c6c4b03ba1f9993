//! What the cluster agent costs on a big cluster. Figures only.
//!
//! No real Kubernetes API server runs on these machines: the cluster is
//! the fake API server of the tests (`tests/fake_kube`), in this process,
//! holding NODES nodes, DEPLOYMENTS Deployments of PODS pods each (with
//! their ReplicaSets, Services, EndpointSlices) and one event per pod.
//! The real `vigil-cluster-agent` binary runs as its own process against
//! it and an in-process ingest (redb), so its CPU and memory are its own.
//!
//! - time from start to ready (every kind listed) and to the first
//!   shipment stored;
//! - the agent's RSS then, and its CPU per snapshot at rest;
//! - under churn: CHURN pod status updates per second for 20 s, the
//!   agent's CPU and RSS;
//! - the snapshot itself in-process: series per snapshot and the time to
//!   make them.
//!
//! No peer runs here (kube-state-metrics is a Go program in no registry
//! these machines reach), so there is no side-by-side figure.
//!
//! ```sh
//! cargo bench -p vigil-agent --bench cluster   # DEPLOYMENTS=1000 PODS=10 NODES=100 CHURN=500
//! ```

#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::disallowed_methods,
    dead_code
)]

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

mod common;
#[path = "../tests/fake_kube/mod.rs"]
mod fake_kube;
#[path = "../tests/common/mod.rs"]
mod test_common;

use common::{cpu_seconds_of, env, rss_mib_of};
use fake_kube::ago;
use serde_json::{Value, json};
use vigil_storage::{SeriesSelector, TelemetryStore};

fn node(i: u64) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": format!("node-{i}"),
        "labels": {"kubernetes.io/hostname": format!("node-{i}"), "node.kubernetes.io/instance-type": "m5.xlarge"}},
        "spec": {"podCIDR": "10.244.0.0/24"},
        "status": {"conditions": (["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"].iter().map(|c| json!({
                "type": c, "status": if *c == "Ready" { "True" } else { "False" }, "reason": "KubeletReady",
                "lastHeartbeatTime": ago(10), "lastTransitionTime": ago(86_400)})).collect::<Vec<_>>()),
            "capacity": {"cpu": "4", "memory": "16363836Ki", "pods": "110", "ephemeral-storage": "101430960Ki"},
            "allocatable": {"cpu": "3920m", "memory": "15214660Ki", "pods": "110"},
            "nodeInfo": {"kernelVersion": "6.1.0-27-cloud-amd64", "kubeletVersion": "v1.33.1", "containerRuntimeVersion": "containerd://2.0.4",
                "osImage": "Debian GNU/Linux 12 (bookworm)", "architecture": "amd64", "bootID": "b", "kubeProxyVersion": "", "machineID": "m",
                "operatingSystem": "linux", "systemUUID": "s"}}})
}

fn pod(d: u64, p: u64, nodes: u64, restarts: u64) -> Value {
    let name = format!("app-{d}");
    let hash = format!("{:010x}", d * 7919);
    let id = format!("{:064x}", (d << 20) + p);
    let env: Vec<Value> = (0..12)
        .map(|i| json!({"name": format!("SETTING_{i}"), "value": format!("value-{i}-of-{name}")}))
        .collect();
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("{name}-{hash}-{p:05}"), "namespace": format!("team-{}", d % 20),
            "labels": {"app": name, "pod-template-hash": hash, "version": "1.4.2"},
            "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "9090"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{name}-{hash}"),
                "uid": format!("rs-{d}"), "controller": true, "blockOwnerDeletion": true}],
            "managedFields": [{"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1",
                "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:app": {}}}}},
                {"manager": "kubelet", "operation": "Update", "apiVersion": "v1", "subresource": "status",
                "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {"f:conditions": {}, "f:containerStatuses": {}}}}]},
        "spec": {"nodeName": format!("node-{}", (d * 31 + p) % nodes), "serviceAccountName": "default",
            "containers": [{"name": "app", "image": format!("registry.example.com/{name}:1.4.2"),
                "ports": [{"containerPort": 8080, "protocol": "TCP"}], "env": env,
                "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
                "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 10},
                "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 5},
                "volumeMounts": [{"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}]}],
            "volumes": [{"name": "kube-api-access", "projected": {"sources": [{"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}}]}}]},
        "status": {"phase": "Running", "podIP": format!("10.{}.{}.{}", d % 250, p % 250, 7), "hostIP": "192.168.0.10",
            "startTime": ago(3600), "qosClass": "Burstable",
            "conditions": (["Initialized", "Ready", "ContainersReady", "PodScheduled"].iter().map(|c| json!({
                "type": c, "status": "True", "lastTransitionTime": ago(3600)})).collect::<Vec<_>>()),
            "containerStatuses": [{"name": "app", "image": format!("registry.example.com/{name}:1.4.2"),
                "imageID": format!("registry.example.com/{name}@sha256:{id}"), "ready": true, "started": true,
                "restartCount": restarts, "containerID": format!("containerd://{id}"),
                "state": {"running": {"startedAt": ago(3000)}},
                "lastState": (if restarts > 0 { json!({"terminated": {"exitCode": 137, "reason": "OOMKilled", "startedAt": ago(3600), "finishedAt": ago(3000)}}) } else { json!({}) })}]}})
}

fn objects(deployments: u64, pods: u64, nodes: u64) -> Vec<Value> {
    let mut out: Vec<Value> = (0..nodes).map(node).collect();
    for d in 0..deployments {
        let name = format!("app-{d}");
        let ns = format!("team-{}", d % 20);
        let hash = format!("{:010x}", d * 7919);
        out.push(json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns, "generation": 3, "uid": format!("dep-{d}")},
            "spec": {"replicas": pods, "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "app", "image": "x"}]}}},
            "status": {"observedGeneration": 3, "replicas": pods, "updatedReplicas": pods, "readyReplicas": pods, "availableReplicas": pods}}));
        out.push(json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": format!("{name}-{hash}"), "namespace": ns, "uid": format!("rs-{d}"),
                "labels": {"app": name, "pod-template-hash": hash},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name, "uid": format!("dep-{d}"), "controller": true}]},
            "spec": {"replicas": pods, "selector": {"matchLabels": {"app": name}}},
            "status": {"replicas": pods, "readyReplicas": pods, "availableReplicas": pods}}));
        out.push(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": {"type": "ClusterIP", "clusterIP": format!("10.96.{}.{}", d / 250, d % 250), "ports": [{"port": 80, "targetPort": 8080}]}}));
        out.push(json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("{name}-abcde"), "namespace": ns, "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "endpoints": ((0..pods).map(|p| json!({"addresses": [format!("10.{}.{}.7", d % 250, p % 250)], "conditions": {"ready": true}})).collect::<Vec<_>>())}));
        for p in 0..pods {
            out.push(pod(d, p, nodes, 0));
            out.push(json!({"apiVersion": "v1", "kind": "Event",
                "metadata": {"name": format!("{name}-{p}.18a"), "namespace": ns},
                "involvedObject": {"kind": "Pod", "name": format!("{name}-{hash}-{p:05}"), "namespace": ns},
                "reason": "Pulled", "message": "Container image already present on machine", "type": "Normal", "count": 1,
                "source": {"component": "kubelet"}, "firstTimestamp": ago(600), "lastTimestamp": ago(600)}));
        }
    }
    out
}

fn typed<K: serde::de::DeserializeOwned>(objects: &[Value], kind: &str) -> Vec<std::sync::Arc<K>> {
    objects
        .iter()
        .filter(|o| o["kind"] == kind)
        .map(|o| std::sync::Arc::new(serde_json::from_value(o.clone()).unwrap()))
        .collect()
}

async fn count_series(store: &dyn TelemetryStore, metric: &str) -> usize {
    store
        .select("p1", &SeriesSelector::metric(metric), 0, i64::MAX)
        .await
        .map(|s| s.len())
        .unwrap_or(0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let (deployments, pods, nodes, churn) = (
        env("DEPLOYMENTS", 1000),
        env("PODS", 10),
        env("NODES", 100),
        env("CHURN", 500),
    );
    let total_pods = deployments * pods;
    let fake = fake_kube::Fake::new();
    let objects = objects(deployments, pods, nodes);
    let bytes: usize = objects.iter().map(|o| o.to_string().len()).sum();
    for o in &objects {
        fake.apply(o.clone());
    }
    println!(
        "cluster: {nodes} nodes, {deployments} Deployments x {pods} pods = {total_pods} pods, {} objects, {:.0} MiB of JSON",
        objects.len(),
        bytes as f64 / 1048576.0
    );

    // The snapshot in-process: the series one shipment carries.
    let snapshot = vigil_agent::cluster::inventory::Snapshot {
        pods: typed(&objects, "Pod"),
        replica_sets: typed(&objects, "ReplicaSet"),
        deployments: typed(&objects, "Deployment"),
        nodes: typed(&objects, "Node"),
        services: typed(&objects, "Service"),
        endpoint_slices: typed(&objects, "EndpointSlice"),
        ..Default::default()
    };
    let start = Instant::now();
    let rounds = 5;
    let mut series = 0;
    for _ in 0..rounds {
        series = vigil_agent::cluster::inventory::series(&snapshot, 1).len();
    }
    println!(
        "snapshot: {series} series, {:.1} ms to make them",
        start.elapsed().as_secs_f64() * 1000.0 / f64::from(rounds)
    );

    let api = fake.start().await;
    let ingest = test_common::Ingest::start(None);
    let store = ingest.store.clone();
    let dir = tempfile::tempdir().unwrap();
    let http = test_common::free_addr();
    let config = dir.path().join("vigil.toml");
    std::fs::write(
        &config,
        format!(
            "[log]\nlevel = \"warn\"\n[cluster_agent]\ningest_endpoint = \"{}\"\napi_key = \"{}\"\ncluster = \"bench\"\ninterval = \"10s\"\napi_url = \"http://{api}\"\nspool_dir = \"{}\"\n[cluster_agent.http]\nlisten = \"{http}\"\n",
            ingest.config.grpc.listen,
            test_common::INGEST_KEY,
            dir.path().join("spool").display()
        ),
    )
    .unwrap();
    let started = Instant::now();
    let mut agent = Command::new(env!("CARGO_BIN_EXE_vigil-cluster-agent"))
        .args(["--config", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = agent.id().to_string();
    let readyz = format!("http://{http}/readyz");
    loop {
        let url = readyz.clone();
        let ok = tokio::task::spawn_blocking(move || ureq::get(&url).call().is_ok())
            .await
            .unwrap();
        if ok {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "not ready in 5 min"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ready = started.elapsed();
    while count_series(store.as_ref(), "kube_pod_info").await < total_pods as usize {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "nothing stored in 5 min"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let shipped = started.elapsed();
    println!(
        "start: ready (every kind listed) in {:.2} s, first shipment stored in {:.2} s",
        ready.as_secs_f64(),
        shipped.as_secs_f64()
    );
    println!(
        "agent memory after the first shipment: RSS {:.1} MiB (peak {:.1} MiB)",
        rss_mib_of(&pid, "VmRSS:"),
        rss_mib_of(&pid, "VmHWM:")
    );

    // At rest: one snapshot every 10 s.
    let cpu0 = cpu_seconds_of(&pid);
    let rest = Duration::from_secs(30);
    tokio::time::sleep(rest).await;
    let cpu = cpu_seconds_of(&pid) - cpu0;
    println!(
        "at rest: {:.3} CPU s per 10 s snapshot ({:.2} % of a core), RSS {:.1} MiB",
        cpu / 3.0,
        cpu / rest.as_secs_f64() * 100.0,
        rss_mib_of(&pid, "VmRSS:")
    );

    // Churn: pods change status (restarts) at CHURN per second.
    let cpu0 = cpu_seconds_of(&pid);
    let churn_for = Duration::from_secs(20);
    let t0 = Instant::now();
    let mut n = 0u64;
    while t0.elapsed() < churn_for {
        let tick = Instant::now();
        for _ in 0..churn / 10 {
            let d = n % deployments;
            let p = (n / deployments) % pods;
            fake.apply(pod(d, p, nodes, 1 + n / total_pods));
            n += 1;
        }
        if let Some(rest) = Duration::from_millis(100).checked_sub(tick.elapsed()) {
            tokio::time::sleep(rest).await;
        }
    }
    let cpu = cpu_seconds_of(&pid) - cpu0;
    println!(
        "churn: {n} pod updates in {:.0} s ({:.0}/s): agent CPU {:.1} % of a core, RSS {:.1} MiB (peak {:.1} MiB)",
        t0.elapsed().as_secs_f64(),
        n as f64 / t0.elapsed().as_secs_f64(),
        cpu / t0.elapsed().as_secs_f64() * 100.0,
        rss_mib_of(&pid, "VmRSS:"),
        rss_mib_of(&pid, "VmHWM:")
    );
    let lists: usize = fake_kube::RESOURCES
        .iter()
        .map(|r| fake.count(|i| &i.lists, r))
        .sum();
    println!("lists made: {lists} (one per kind, plus one to ask whether Flux is installed)");
    let _ = agent.kill();
    let _ = agent.wait();
    ingest.stop().await;
}
