//! What runs where, from the watched objects: each pod's workload (its
//! owner chain up to the Deployment, StatefulSet, DaemonSet, CronJob or
//! Job: Vigil's application), and the kube-state-metrics figures of every
//! object, named as kube-state-metrics names them so dashboards and rules
//! written for it read Vigil's series unchanged.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet},
        batch::v1::{CronJob, Job},
        core::v1::{ContainerStatus, Node, Pod, Service},
        discovery::v1::EndpointSlice,
    },
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};
use vigil_proto::{
    names,
    telemetry::v1::{Label, Sample, TimeSeries},
};

/// Everything the watches hold at one moment.
#[derive(Default)]
pub struct Snapshot {
    pub pods: Vec<std::sync::Arc<Pod>>,
    pub replica_sets: Vec<std::sync::Arc<ReplicaSet>>,
    pub deployments: Vec<std::sync::Arc<Deployment>>,
    pub stateful_sets: Vec<std::sync::Arc<StatefulSet>>,
    pub daemon_sets: Vec<std::sync::Arc<DaemonSet>>,
    pub jobs: Vec<std::sync::Arc<Job>>,
    pub cron_jobs: Vec<std::sync::Arc<CronJob>>,
    pub nodes: Vec<std::sync::Arc<Node>>,
    pub services: Vec<std::sync::Arc<Service>>,
    pub endpoint_slices: Vec<std::sync::Arc<EndpointSlice>>,
}

/// A pod's workload: the top of its controller owner chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub kind: String,
    pub name: String,
}

/// Resolves owner chains with the ReplicaSets and Jobs the watches hold.
pub struct Owners<'a> {
    /// (namespace, name) → the object's controller.
    replica_sets: BTreeMap<(&'a str, &'a str), Option<&'a OwnerReference>>,
    jobs: BTreeMap<(&'a str, &'a str), Option<&'a OwnerReference>>,
}

fn controller(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_deref()?
        .iter()
        .find(|o| o.controller == Some(true))
}

fn ns(meta: &ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or_default()
}

fn name(meta: &ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or_default()
}

impl<'a> Owners<'a> {
    pub fn new(snapshot: &'a Snapshot) -> Self {
        Self {
            replica_sets: snapshot
                .replica_sets
                .iter()
                .map(|r| {
                    (
                        (ns(&r.metadata), name(&r.metadata)),
                        controller(&r.metadata),
                    )
                })
                .collect(),
            jobs: snapshot
                .jobs
                .iter()
                .map(|j| {
                    (
                        (ns(&j.metadata), name(&j.metadata)),
                        controller(&j.metadata),
                    )
                })
                .collect(),
        }
    }

    /// The workload an object with this metadata belongs to. A ReplicaSet
    /// or Job the watches do not hold (yet) is its own workload, except
    /// that a ReplicaSet named `<deployment>-<pod-template-hash>` is taken
    /// to be that Deployment's.
    pub fn workload(&self, kind: &str, meta: &ObjectMeta) -> Workload {
        let own = Workload {
            kind: kind.to_owned(),
            name: name(meta).to_owned(),
        };
        let Some(owner) = controller(meta) else {
            return own;
        };
        let namespace = ns(meta);
        let up = |kind: &str| Workload {
            kind: kind.to_owned(),
            name: owner.name.clone(),
        };
        match owner.kind.as_str() {
            "ReplicaSet" => match self.replica_sets.get(&(namespace, owner.name.as_str())) {
                // A Deployment's, or another controller's (Argo Rollouts).
                Some(Some(d)) => up_to(d),
                Some(None) => up("ReplicaSet"),
                None => match meta
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("pod-template-hash"))
                    .and_then(|hash| owner.name.strip_suffix(&format!("-{hash}")))
                {
                    Some(deployment) => Workload {
                        kind: "Deployment".into(),
                        name: deployment.to_owned(),
                    },
                    None => up("ReplicaSet"),
                },
            },
            "Job" => match self.jobs.get(&(namespace, owner.name.as_str())) {
                Some(Some(c)) => up_to(c),
                _ => up("Job"),
            },
            // A static (mirror) pod: the kubelet names it `<name>-<node>`
            // and makes the Node its owner; the application is `<name>`.
            "Node" => Workload {
                kind: "StaticPod".into(),
                name: own
                    .name
                    .strip_suffix(&format!("-{}", owner.name))
                    .unwrap_or(&own.name)
                    .to_owned(),
            },
            other => up(other),
        }
    }
}

fn up_to(owner: &OwnerReference) -> Workload {
    Workload {
        kind: owner.kind.clone(),
        name: owner.name.clone(),
    }
}

/// The id the node agent labels a container with: the first 12 hex digits
/// of the runtime's id (`containerd://3f1c…` → `3f1c…`).
pub fn short_container_id(id: &str) -> Option<String> {
    let hex = id.rsplit("://").next().unwrap_or(id);
    (hex.len() >= 12 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| hex[..12].to_ascii_lowercase())
}

/// A Kubernetes quantity (`500m`, `2`, `1Gi`, `128974848`, `1e3`) as a
/// number: CPU in cores, memory in bytes. None for what is not one.
pub fn quantity(q: &str) -> Option<f64> {
    const SUFFIXES: [(&str, f64, f64); 15] = [
        ("Ki", 1024.0, 1.0),
        ("Mi", 1048576.0, 1.0),
        ("Gi", 1073741824.0, 1.0),
        ("Ti", 1099511627776.0, 1.0),
        ("Pi", 1125899906842624.0, 1.0),
        ("Ei", 1152921504606846976.0, 1.0),
        // Fractions divide, so that 3800m is 3.8 exactly as a float can be.
        ("n", 1.0, 1e9),
        ("u", 1.0, 1e6),
        ("m", 1.0, 1e3),
        ("k", 1e3, 1.0),
        ("M", 1e6, 1.0),
        ("G", 1e9, 1.0),
        ("T", 1e12, 1.0),
        ("P", 1e15, 1.0),
        // `1E` is one exa; `1E3` (an exponent) parses as a plain number.
        ("E", 1e18, 1.0),
    ];
    let q = q.trim();
    if let Ok(plain) = q.parse::<f64>() {
        return Some(plain);
    }
    SUFFIXES.iter().find_map(|(suffix, factor, divisor)| {
        let number: f64 = q.strip_suffix(suffix)?.parse().ok()?;
        Some(number * factor / divisor)
    })
}

/// Series with one sample each, at one timestamp.
pub struct Out {
    ts: i64,
    pub series: Vec<TimeSeries>,
}

impl Out {
    pub fn new(ts: i64) -> Self {
        Self {
            ts,
            series: Vec::new(),
        }
    }

    fn push(&mut self, metric: &str, labels: &[(&str, &str)], value: f64) {
        self.series.push(TimeSeries {
            name: metric.to_owned(),
            labels: labels
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(n, v)| Label {
                    name: (*n).to_owned(),
                    value: (*v).to_owned(),
                })
                .collect(),
            samples: vec![Sample {
                timestamp_ms: self.ts,
                value,
            }],
        });
    }

    fn opt(&mut self, metric: &str, labels: &[(&str, &str)], value: Option<i32>) {
        self.push(metric, labels, f64::from(value.unwrap_or(0)));
    }
}

fn flag(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

const APP: &str = names::LABEL_APPLICATION;
const NS: &str = names::LABEL_NAMESPACE;

/// The kube-state-metrics series of everything in `snapshot`.
pub fn series(snapshot: &Snapshot, ts: i64) -> Vec<TimeSeries> {
    let owners = Owners::new(snapshot);
    let mut out = Out::new(ts);
    for d in &snapshot.deployments {
        let (n, m) = (name(&d.metadata), ns(&d.metadata));
        let l = [(NS, m), ("deployment", n), (APP, n)];
        let s = d.status.clone().unwrap_or_default();
        let spec = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        out.push("kube_deployment_spec_replicas", &l, f64::from(spec));
        out.opt("kube_deployment_status_replicas", &l, s.replicas);
        out.opt(
            "kube_deployment_status_replicas_available",
            &l,
            s.available_replicas,
        );
        out.opt(
            "kube_deployment_status_replicas_ready",
            &l,
            s.ready_replicas,
        );
        out.opt(
            "kube_deployment_status_replicas_updated",
            &l,
            s.updated_replicas,
        );
        out.opt(
            "kube_deployment_status_replicas_unavailable",
            &l,
            s.unavailable_replicas,
        );
        out.push(
            "kube_deployment_status_observed_generation",
            &l,
            s.observed_generation.unwrap_or(0) as f64,
        );
        out.push(
            "kube_deployment_metadata_generation",
            &l,
            d.metadata.generation.unwrap_or(0) as f64,
        );
    }
    for s in &snapshot.stateful_sets {
        let (n, m) = (name(&s.metadata), ns(&s.metadata));
        let l = [(NS, m), ("statefulset", n), (APP, n)];
        let st = s.status.clone().unwrap_or_default();
        let spec = s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        out.push("kube_statefulset_replicas", &l, f64::from(spec));
        out.push(
            "kube_statefulset_status_replicas",
            &l,
            f64::from(st.replicas),
        );
        out.opt(
            "kube_statefulset_status_replicas_available",
            &l,
            st.available_replicas,
        );
        out.opt(
            "kube_statefulset_status_replicas_ready",
            &l,
            st.ready_replicas,
        );
        out.opt(
            "kube_statefulset_status_replicas_updated",
            &l,
            st.updated_replicas,
        );
        out.push(
            "kube_statefulset_status_observed_generation",
            &l,
            st.observed_generation.unwrap_or(0) as f64,
        );
        out.push(
            "kube_statefulset_metadata_generation",
            &l,
            s.metadata.generation.unwrap_or(0) as f64,
        );
    }
    for d in &snapshot.daemon_sets {
        let (n, m) = (name(&d.metadata), ns(&d.metadata));
        let l = [(NS, m), ("daemonset", n), (APP, n)];
        let s = d.status.clone().unwrap_or_default();
        for (metric, value) in [
            (
                "kube_daemonset_status_desired_number_scheduled",
                Some(s.desired_number_scheduled),
            ),
            (
                "kube_daemonset_status_current_number_scheduled",
                Some(s.current_number_scheduled),
            ),
            ("kube_daemonset_status_number_ready", Some(s.number_ready)),
            ("kube_daemonset_status_number_available", s.number_available),
            (
                "kube_daemonset_status_number_unavailable",
                s.number_unavailable,
            ),
            (
                "kube_daemonset_status_number_misscheduled",
                Some(s.number_misscheduled),
            ),
            (
                "kube_daemonset_status_updated_number_scheduled",
                s.updated_number_scheduled,
            ),
        ] {
            out.opt(metric, &l, value);
        }
    }
    for j in &snapshot.jobs {
        let (n, m) = (name(&j.metadata), ns(&j.metadata));
        let app = owners.workload("Job", &j.metadata).name;
        let l = [(NS, m), ("job_name", n), (APP, &app)];
        let s = j.status.clone().unwrap_or_default();
        out.opt("kube_job_status_active", &l, s.active);
        out.opt("kube_job_status_succeeded", &l, s.succeeded);
        out.opt("kube_job_status_failed", &l, s.failed);
        out.opt(
            "kube_job_spec_completions",
            &l,
            j.spec.as_ref().and_then(|s| s.completions),
        );
        let failed = s
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Failed" && c.status == "True");
        out.push("kube_job_failed", &l, flag(failed));
        if let Some(t) = &s.completion_time {
            out.push(
                "kube_job_status_completion_time",
                &l,
                t.0.as_second() as f64,
            );
        }
    }
    for c in &snapshot.cron_jobs {
        let (n, m) = (name(&c.metadata), ns(&c.metadata));
        let l = [(NS, m), ("cronjob", n), (APP, n)];
        let s = c.status.clone().unwrap_or_default();
        out.push(
            "kube_cronjob_status_active",
            &l,
            s.active.as_ref().map_or(0, Vec::len) as f64,
        );
        out.push(
            "kube_cronjob_spec_suspend",
            &l,
            flag(c.spec.as_ref().and_then(|s| s.suspend).unwrap_or(false)),
        );
        for (metric, t) in [
            (
                "kube_cronjob_status_last_schedule_time",
                &s.last_schedule_time,
            ),
            (
                "kube_cronjob_status_last_successful_time",
                &s.last_successful_time,
            ),
        ] {
            if let Some(t) = t {
                out.push(metric, &l, t.0.as_second() as f64);
            }
        }
    }
    for p in &snapshot.pods {
        pod_series(&mut out, &owners, p);
    }
    for node in &snapshot.nodes {
        let n = name(&node.metadata);
        let l = [("node", n)];
        out.push(
            "kube_node_spec_unschedulable",
            &l,
            flag(
                node.spec
                    .as_ref()
                    .and_then(|s| s.unschedulable)
                    .unwrap_or(false),
            ),
        );
        let empty = k8s_openapi::api::core::v1::NodeStatus::default();
        let status = node.status.as_ref().unwrap_or(&empty);
        for c in status.conditions.iter().flatten() {
            for s in ["true", "false", "unknown"] {
                out.push(
                    "kube_node_status_condition",
                    &[("node", n), ("condition", &c.type_), ("status", s)],
                    flag(c.status.eq_ignore_ascii_case(s)),
                );
            }
        }
        for (metric, list) in [
            ("kube_node_status_capacity", &status.capacity),
            ("kube_node_status_allocatable", &status.allocatable),
        ] {
            for (resource, q) in list.iter().flatten() {
                if let ("cpu" | "memory" | "pods", Some(v)) = (resource.as_str(), quantity(&q.0)) {
                    out.push(metric, &[("node", n), ("resource", resource)], v);
                }
            }
        }
        if let Some(info) = &status.node_info {
            out.push(
                "kube_node_info",
                &[
                    ("node", n),
                    ("kernel_version", &info.kernel_version),
                    ("kubelet_version", &info.kubelet_version),
                    ("container_runtime_version", &info.container_runtime_version),
                    ("os_image", &info.os_image),
                ],
                1.0,
            );
        }
    }
    for s in &snapshot.services {
        let (n, m) = (name(&s.metadata), ns(&s.metadata));
        let spec = s.spec.clone().unwrap_or_default();
        out.push(
            "kube_service_info",
            &[
                (NS, m),
                ("service", n),
                ("type", spec.type_.as_deref().unwrap_or("ClusterIP")),
                ("cluster_ip", spec.cluster_ip.as_deref().unwrap_or_default()),
            ],
            1.0,
        );
    }
    // Endpoints per Service, summed over its slices.
    let mut endpoints: BTreeMap<(&str, &str), (f64, f64)> = BTreeMap::new();
    for e in &snapshot.endpoint_slices {
        let Some(service) = e
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("kubernetes.io/service-name"))
        else {
            continue;
        };
        let entry = endpoints.entry((ns(&e.metadata), service)).or_default();
        for endpoint in &e.endpoints {
            // Unset `ready` means ready (the API's documented default).
            let ready = endpoint
                .conditions
                .as_ref()
                .and_then(|c| c.ready)
                .unwrap_or(true);
            let addresses = endpoint.addresses.len() as f64;
            if ready {
                entry.0 += addresses;
            } else {
                entry.1 += addresses;
            }
        }
    }
    for ((m, service), (ready, not_ready)) in endpoints {
        let l = [(NS, m), ("service", service)];
        out.push("kube_endpoint_address_available", &l, ready);
        out.push("kube_endpoint_address_not_ready", &l, not_ready);
    }
    out.series
}

const PHASES: [&str; 5] = ["Pending", "Running", "Succeeded", "Failed", "Unknown"];

fn pod_series(out: &mut Out, owners: &Owners<'_>, p: &Pod) {
    let (n, m) = (name(&p.metadata), ns(&p.metadata));
    let workload = owners.workload("Pod", &p.metadata);
    let empty = k8s_openapi::api::core::v1::PodStatus::default();
    let status = p.status.as_ref().unwrap_or(&empty);
    let node = p
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or_default();
    let base = [(NS, m), ("pod", n), (APP, workload.name.as_str())];
    out.push(
        "kube_pod_info",
        &[
            (NS, m),
            ("pod", n),
            (APP, &workload.name),
            ("workload_kind", &workload.kind),
            (names::LABEL_NODE, node),
            ("pod_ip", status.pod_ip.as_deref().unwrap_or_default()),
        ],
        1.0,
    );
    let phase = status.phase.as_deref().unwrap_or("Unknown");
    for ph in PHASES {
        out.push(
            "kube_pod_status_phase",
            &[base[0], base[1], base[2], ("phase", ph)],
            flag(ph == phase),
        );
    }
    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    out.push("kube_pod_status_ready", &base, flag(ready));
    let specs: BTreeMap<&str, &k8s_openapi::api::core::v1::Container> = p
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .map(|c| (c.name.as_str(), c))
        .collect();
    for c in status.container_statuses.iter().flatten() {
        container_series(out, &base, node, c);
    }
    for (container, spec) in specs {
        let Some(resources) = &spec.resources else {
            continue;
        };
        for (metric, list) in [
            ("kube_pod_container_resource_requests", &resources.requests),
            ("kube_pod_container_resource_limits", &resources.limits),
        ] {
            for (resource, q) in list.iter().flatten() {
                if let ("cpu" | "memory", Some(v)) = (resource.as_str(), quantity(&q.0)) {
                    out.push(
                        metric,
                        &[
                            base[0],
                            base[1],
                            base[2],
                            (names::LABEL_CONTAINER, container),
                            ("resource", resource),
                        ],
                        v,
                    );
                }
            }
        }
    }
}

fn container_series(out: &mut Out, base: &[(&str, &str); 3], node: &str, c: &ContainerStatus) {
    let container = (names::LABEL_CONTAINER, c.name.as_str());
    let l = [base[0], base[1], base[2], container];
    let short = c
        .container_id
        .as_deref()
        .and_then(short_container_id)
        .unwrap_or_default();
    out.push(
        "kube_pod_container_info",
        &[
            base[0],
            base[1],
            base[2],
            container,
            ("container_id", &short),
            (names::LABEL_NODE, node),
            ("image", &c.image),
        ],
        1.0,
    );
    out.push(
        "kube_pod_container_status_restarts_total",
        &l,
        f64::from(c.restart_count),
    );
    out.push("kube_pod_container_status_ready", &l, flag(c.ready));
    let empty = k8s_openapi::api::core::v1::ContainerState::default();
    let state = c.state.as_ref().unwrap_or(&empty);
    out.push(
        "kube_pod_container_status_running",
        &l,
        flag(state.running.is_some()),
    );
    if let Some(reason) = state.waiting.as_ref().and_then(|w| w.reason.as_deref()) {
        out.push(
            "kube_pod_container_status_waiting_reason",
            &[l[0], l[1], l[2], l[3], ("reason", reason)],
            1.0,
        );
    }
    if let Some(t) = &state.terminated {
        out.push(
            "kube_pod_container_status_terminated_reason",
            &[
                l[0],
                l[1],
                l[2],
                l[3],
                ("reason", t.reason.as_deref().unwrap_or("Unknown")),
            ],
            1.0,
        );
    }
    if let Some(t) = c.last_state.as_ref().and_then(|s| s.terminated.as_ref()) {
        let reason = t.reason.as_deref().unwrap_or("Unknown");
        out.push(
            "kube_pod_container_status_last_terminated_reason",
            &[l[0], l[1], l[2], l[3], ("reason", reason)],
            1.0,
        );
        out.push(
            "kube_pod_container_status_last_terminated_exitcode",
            &l,
            f64::from(t.exit_code),
        );
    }
}

/// Container id (short) → its pod's namespace, pod, container and
/// application: what ingest puts on the node agent's records.
pub fn containers(snapshot: &Snapshot) -> BTreeMap<String, ContainerOwner> {
    let owners = Owners::new(snapshot);
    let mut out = BTreeMap::new();
    for p in &snapshot.pods {
        let workload = owners.workload("Pod", &p.metadata);
        for c in p
            .status
            .iter()
            .flat_map(|s| s.container_statuses.iter().flatten())
        {
            if let Some(id) = c.container_id.as_deref().and_then(short_container_id) {
                out.insert(
                    id,
                    ContainerOwner {
                        namespace: ns(&p.metadata).to_owned(),
                        pod: name(&p.metadata).to_owned(),
                        container: c.name.clone(),
                        application: workload.name.clone(),
                    },
                );
            }
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerOwner {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub application: String,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn pod(json: serde_json::Value) -> std::sync::Arc<Pod> {
        std::sync::Arc::new(serde_json::from_value(json).unwrap())
    }

    #[test]
    fn quantities() {
        for (q, v) in [
            ("500m", 0.5),
            ("3800m", 3.8),
            ("2", 2.0),
            ("1Gi", 1073741824.0),
            ("128974848", 128974848.0),
            ("129e6", 129e6),
            ("123Mi", 128974848.0),
            ("1k", 1000.0),
            ("1E", 1e18),
            ("2Ei", 2.0 * 1024f64.powi(6)),
        ] {
            assert_eq!(quantity(q), Some(v), "{q}");
        }
        assert_eq!(quantity("lots"), None);
        assert_eq!(quantity("1Xi"), None);
    }

    #[test]
    fn container_ids_are_shortened_as_the_node_agent_does() {
        let id = "containerd://3f1c2a9b8e7d6c5b4a39281706f5e4d3c2b1a0f9e8d7c6b5a4938271605f4e3d";
        assert_eq!(short_container_id(id).as_deref(), Some("3f1c2a9b8e7d"));
        assert_eq!(short_container_id("docker://abc"), None);
        assert_eq!(short_container_id("cri-o://not-hex-at-all-here"), None);
    }

    #[test]
    fn owner_chains_reach_the_workload_even_before_the_replica_set_is_seen() {
        let rs: ReplicaSet = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-5d9c7", "namespace": "shop", "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "d1", "controller": true}]}
        }))
        .unwrap();
        let job: Job = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "backup-29000000", "namespace": "ops", "ownerReferences": [
                {"apiVersion": "batch/v1", "kind": "CronJob", "name": "backup", "uid": "c1", "controller": true}]}
        }))
        .unwrap();
        let snapshot = Snapshot {
            replica_sets: vec![rs.into()],
            jobs: vec![job.into()],
            ..Snapshot::default()
        };
        let owners = Owners::new(&snapshot);
        let meta = |ns: &str, kind: &str, owner: &str, hash: Option<&str>| -> ObjectMeta {
            serde_json::from_value(serde_json::json!({
                "name": "p", "namespace": ns,
                "labels": hash.map(|h| serde_json::json!({"pod-template-hash": h})),
                "ownerReferences": [{"apiVersion": "v1", "kind": kind, "name": owner, "uid": "u", "controller": true}]
            }))
            .unwrap()
        };
        let w = |kind: &str, name: &str| Workload {
            kind: kind.into(),
            name: name.into(),
        };
        assert_eq!(
            owners.workload("Pod", &meta("shop", "ReplicaSet", "web-5d9c7", None)),
            w("Deployment", "web")
        );
        // Not watched yet: the pod-template-hash names the Deployment.
        assert_eq!(
            owners.workload(
                "Pod",
                &meta("shop", "ReplicaSet", "api-7f8b9", Some("7f8b9"))
            ),
            w("Deployment", "api")
        );
        assert_eq!(
            owners.workload("Pod", &meta("shop", "ReplicaSet", "lone-1", None)),
            w("ReplicaSet", "lone-1")
        );
        assert_eq!(
            owners.workload("Pod", &meta("ops", "Job", "backup-29000000", None)),
            w("CronJob", "backup")
        );
        assert_eq!(
            owners.workload("Pod", &meta("shop", "StatefulSet", "db", None)),
            w("StatefulSet", "db")
        );
        // Another namespace's ReplicaSet of the same name is not this one.
        assert_eq!(
            owners.workload("Pod", &meta("other", "ReplicaSet", "web-5d9c7", None)),
            w("ReplicaSet", "web-5d9c7")
        );
        let mirror: ObjectMeta = serde_json::from_value(serde_json::json!({
            "name": "etcd-node-1", "namespace": "kube-system",
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": "node-1", "uid": "n", "controller": true}]
        }))
        .unwrap();
        assert_eq!(owners.workload("Pod", &mirror), w("StaticPod", "etcd"));
        let bare: ObjectMeta =
            serde_json::from_value(serde_json::json!({"name": "debug", "namespace": "x"})).unwrap();
        assert_eq!(owners.workload("Pod", &bare), w("Pod", "debug"));
    }

    #[test]
    fn a_crash_looping_pod_shows_restarts_reasons_and_resources() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "web-5d9c7-x2", "namespace": "shop",
                "labels": {"pod-template-hash": "5d9c7"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d9c7", "uid": "r", "controller": true}]},
            "spec": {"nodeName": "n1", "containers": [{"name": "app", "image": "shop/web:1",
                "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}}}]},
            "status": {"phase": "Running", "podIP": "10.0.0.7",
                "conditions": [{"type": "Ready", "status": "False"}],
                "containerStatuses": [{"name": "app", "image": "shop/web:1", "imageID": "x", "ready": false,
                    "restartCount": 7,
                    "containerID": "containerd://aaaaaaaaaaaabbbbbbbbbbbbcccccccccccc",
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}
        }));
        let snapshot = Snapshot {
            pods: vec![p],
            ..Snapshot::default()
        };
        let series = series(&snapshot, 1000);
        let find = |metric: &str, want: &[(&str, &str)]| -> f64 {
            let s = series
                .iter()
                .find(|s| {
                    s.name == metric
                        && want
                            .iter()
                            .all(|(n, v)| s.labels.iter().any(|l| l.name == *n && l.value == *v))
                })
                .unwrap_or_else(|| panic!("no {metric} {want:?} in {series:#?}"));
            assert_eq!(s.samples[0].timestamp_ms, 1000);
            s.samples[0].value
        };
        let app = ("application", "web");
        assert_eq!(
            find("kube_pod_container_status_restarts_total", &[app]),
            7.0
        );
        assert_eq!(
            find(
                "kube_pod_container_status_waiting_reason",
                &[app, ("reason", "CrashLoopBackOff")]
            ),
            1.0
        );
        assert_eq!(
            find(
                "kube_pod_container_status_last_terminated_reason",
                &[app, ("reason", "OOMKilled")]
            ),
            1.0
        );
        assert_eq!(
            find("kube_pod_container_status_last_terminated_exitcode", &[app]),
            137.0
        );
        assert_eq!(
            find("kube_pod_status_phase", &[app, ("phase", "Running")]),
            1.0
        );
        assert_eq!(
            find("kube_pod_status_phase", &[app, ("phase", "Pending")]),
            0.0
        );
        assert_eq!(find("kube_pod_status_ready", &[app]), 0.0);
        assert_eq!(
            find(
                "kube_pod_container_info",
                &[app, ("container_id", "aaaaaaaaaaaa"), ("node", "n1")]
            ),
            1.0
        );
        assert_eq!(
            find(
                "kube_pod_container_resource_requests",
                &[app, ("resource", "cpu")]
            ),
            0.25
        );
        assert_eq!(
            find(
                "kube_pod_container_resource_limits",
                &[app, ("resource", "memory")]
            ),
            134217728.0
        );
        let map = containers(&snapshot);
        assert_eq!(
            map.get("aaaaaaaaaaaa"),
            Some(&ContainerOwner {
                namespace: "shop".into(),
                pod: "web-5d9c7-x2".into(),
                container: "app".into(),
                application: "web".into(),
            })
        );
    }
}
