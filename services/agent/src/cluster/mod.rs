//! The cluster agent: one per cluster, it watches the Kubernetes API
//! (Pods, ReplicaSets, Deployments, StatefulSets, DaemonSets, Jobs,
//! CronJobs, Nodes, Services, EndpointSlices, Events, and Flux
//! Kustomizations and HelmReleases when Flux is installed) and ships to
//! ingest, like the node agent, through a disk spool:
//!
//! - every `interval`, the kube-state-metrics figures of what it holds,
//!   among them `kube_pod_container_info`, which maps each container id to
//!   its pod and application (ingest labels the node agent's records with
//!   it; see `vigil_ingest::containers`);
//! - Kubernetes events and Flux readiness changes as Vigil events
//!   (`events`), each occurrence once across restarts and re-lists.
//!
//! Watches are list-then-watch reflectors (`kube::runtime`): after the
//! first list, a watch that ends resumes from the last resourceVersion
//! (bookmarks keep it fresh), and only a 410 Gone (the version was
//! compacted away) makes it list again.

pub mod events;
pub mod inventory;

use std::{
    fmt::Debug,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{StreamExt, future::BoxFuture};
use k8s_openapi::{
    api::{
        apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet},
        batch::v1::{CronJob, Job},
        core::v1::{Event, Node, Pod, Service},
        discovery::v1::EndpointSlice,
    },
    serde::de::DeserializeOwned,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ApiResource, DynamicObject, GroupVersionKind, ListParams},
    runtime::{
        WatchStreamExt,
        reflector::{self, ObjectRef, Store, reflector},
        watcher,
    },
};
use prometheus_client::metrics::counter::Counter;
use serde::Deserialize;
use vigil_proto::telemetry::v1::{
    AgentInfo, KubeEvent, PushRequest, Resource as PbResource, ResourceMetrics, TimeSeries,
};
use vigil_runtime::{
    Metrics, Readiness, RuntimeError, Shutdown,
    config::{ConfigError, HttpServerConfig, Validate, key, nonzero_duration},
    http::HttpServer,
    time::now_ms,
};

use crate::{AgentError, Shipper};

/// `[cluster_agent]`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterAgentConfig {
    /// Ingest's gRPC address, `host:port` or `http(s)://host:port`.
    pub ingest_endpoint: String,
    /// The project's API key. Prefer `api_key_file` outside of tests.
    pub api_key: String,
    pub api_key_file: Option<PathBuf>,
    /// Cluster name put on every record.
    pub cluster: String,
    /// How often the figures of every object are shipped; events and Flux
    /// changes go out with the next shipment.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    #[serde(with = "humantime_serde")]
    pub push_timeout: Duration,
    /// Namespaces to watch; empty: all of them (nodes are always watched).
    pub namespaces: Vec<String>,
    /// Watch Flux Kustomizations and HelmReleases (when their CRDs exist).
    pub flux: bool,
    /// The API server; default: the in-cluster service account, else the
    /// kubeconfig (`KUBECONFIG`, `~/.kube/config`). Set, it is used without
    /// credentials: for `kubectl proxy` (`http://127.0.0.1:8001`) or tests.
    pub api_url: Option<String>,
    /// How long one watch request lasts before it is resumed (the API
    /// server's `timeoutSeconds`).
    #[serde(with = "humantime_serde")]
    pub watch_timeout: Duration,
    /// Where batches wait for ingest. Default
    /// `/var/lib/vigil/cluster-agent-spool`.
    pub spool_dir: Option<PathBuf>,
    pub max_spool_bytes: u64,
    /// Most event records held between shipments; beyond it the oldest are
    /// dropped (and counted).
    pub max_pending_events: usize,
    /// Health and metrics; default 127.0.0.1:7401.
    pub http: HttpServerConfig,
}

impl Debug for ClusterAgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterAgentConfig")
            .field("ingest_endpoint", &self.ingest_endpoint)
            .field("api_key", &"[redacted]")
            .field("cluster", &self.cluster)
            .field("interval", &self.interval)
            .field("namespaces", &self.namespaces)
            .field("api_url", &self.api_url)
            .finish_non_exhaustive()
    }
}

impl Default for ClusterAgentConfig {
    fn default() -> Self {
        Self {
            ingest_endpoint: "127.0.0.1:4317".into(),
            api_key: String::new(),
            api_key_file: None,
            cluster: String::new(),
            interval: Duration::from_secs(30),
            push_timeout: Duration::from_secs(10),
            namespaces: Vec::new(),
            flux: true,
            api_url: None,
            watch_timeout: Duration::from_secs(290),
            spool_dir: None,
            max_spool_bytes: 256 << 20,
            max_pending_events: 50_000,
            http: HttpServerConfig::on(SocketAddr::from(([127, 0, 0, 1], 7401))),
        }
    }
}

impl Validate for ClusterAgentConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        if self.ingest_endpoint.is_empty() {
            return Err(ConfigError::invalid(
                key(prefix, "ingest_endpoint"),
                "must not be empty",
            ));
        }
        if self.interval < Duration::from_secs(1) {
            return Err(ConfigError::invalid(
                key(prefix, "interval"),
                "must be at least 1s",
            ));
        }
        nonzero_duration(prefix, "push_timeout", self.push_timeout)?;
        if self.watch_timeout < Duration::from_secs(1)
            || self.watch_timeout > Duration::from_secs(3600)
        {
            return Err(ConfigError::invalid(
                key(prefix, "watch_timeout"),
                "must be between 1s and 1h",
            ));
        }
        if self.max_spool_bytes < 1 << 20 {
            return Err(ConfigError::invalid(
                key(prefix, "max_spool_bytes"),
                "must be at least 1 MiB (1048576)",
            ));
        }
        if self.max_pending_events == 0 {
            return Err(ConfigError::invalid(
                key(prefix, "max_pending_events"),
                "must be at least 1",
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        if let Some(ns) = self.namespaces.iter().find(|n| !seen.insert(n.as_str())) {
            return Err(ConfigError::invalid(
                key(prefix, "namespaces"),
                format!("{ns:?} is listed twice"),
            ));
        }
        if let Some(ns) = self.namespaces.iter().find(|n| {
            n.is_empty()
                || n.len() > 63
                || !n
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        }) {
            return Err(ConfigError::invalid(
                key(prefix, "namespaces"),
                format!(
                    "{ns:?} is not a namespace name (lower-case letters, digits, '-', at most 63)"
                ),
            ));
        }
        self.http.validate(&key(prefix, "http"))
    }
}

/// Series and events per batch: under ingest's default limits (10,000
/// series per request) and its 8 MiB gRPC message (a series is about
/// 200 bytes, an event at most about 5 KiB).
const SERIES_PER_BATCH: usize = 5_000;
const EVENTS_PER_BATCH: usize = 1_000;

async fn client(config: &ClusterAgentConfig) -> Result<Client, ConfigError> {
    let invalid = |e: String| ConfigError::invalid("cluster_agent.api_url", e);
    let kube_config = match &config.api_url {
        Some(url) => kube::Config::new(
            url.parse()
                .map_err(|e: http::uri::InvalidUri| invalid(e.to_string()))?,
        ),
        None => kube::Config::infer().await.map_err(|e| {
            invalid(format!(
                "no in-cluster service account and no kubeconfig ({e}); set cluster_agent.api_url"
            ))
        })?,
    };
    Client::try_from(kube_config).map_err(|e| invalid(e.to_string()))
}

/// What the event and Flux watches found since the last shipment.
#[derive(Default)]
struct Pending {
    events: std::collections::VecDeque<KubeEvent>,
    cursor: events::Cursor,
    flux: events::Flux,
}

struct Watches {
    pods: Vec<Store<Pod>>,
    replica_sets: Vec<Store<ReplicaSet>>,
    deployments: Vec<Store<Deployment>>,
    stateful_sets: Vec<Store<StatefulSet>>,
    daemon_sets: Vec<Store<DaemonSet>>,
    jobs: Vec<Store<Job>>,
    cron_jobs: Vec<Store<CronJob>>,
    nodes: Vec<Store<Node>>,
    services: Vec<Store<Service>>,
    endpoint_slices: Vec<Store<EndpointSlice>>,
}

fn state<K: Resource + Clone + 'static>(stores: &[Store<K>]) -> Vec<Arc<K>>
where
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    stores.iter().flat_map(Store::state).collect()
}

impl Watches {
    fn snapshot(&self) -> inventory::Snapshot {
        inventory::Snapshot {
            pods: state(&self.pods),
            replica_sets: state(&self.replica_sets),
            deployments: state(&self.deployments),
            stateful_sets: state(&self.stateful_sets),
            daemon_sets: state(&self.daemon_sets),
            jobs: state(&self.jobs),
            cron_jobs: state(&self.cron_jobs),
            nodes: state(&self.nodes),
            services: state(&self.services),
            endpoint_slices: state(&self.endpoint_slices),
        }
    }

    /// Waits until every kind is listed, or until `deadline`: a kind the
    /// agent may not list (RBAC) is named, and the rest ship without it.
    async fn ready(&self, deadline: tokio::time::Instant) {
        macro_rules! wait {
            ($($field:ident),*) => {$(
                for s in &self.$field {
                    if tokio::time::timeout_at(deadline, s.wait_until_ready()).await.is_err() {
                        tracing::warn!(
                            kind = stringify!($field),
                            "not listed yet (may the agent list and watch it?); going on without it"
                        );
                    }
                }
            )*};
        }
        wait!(
            pods,
            replica_sets,
            deployments,
            stateful_sets,
            daemon_sets,
            jobs,
            cron_jobs,
            nodes,
            services,
            endpoint_slices
        );
    }
}

/// Drops what the agent never reads and that can be large (managed
/// fields, annotations, pod templates, containers' environment and
/// probes): the watches hold every object of the cluster in memory.
trait Slim: Resource {
    fn slim(&mut self) {
        let meta = self.meta_mut();
        meta.managed_fields = None;
        meta.annotations = None;
    }
}

/// A pod template the agent does not read.
fn no_template(t: &mut k8s_openapi::api::core::v1::PodTemplateSpec) {
    *t = Default::default();
}

impl Slim for Pod {
    fn slim(&mut self) {
        let meta = self.meta_mut();
        meta.managed_fields = None;
        meta.annotations = None;
        if let Some(spec) = self.spec.as_mut() {
            spec.volumes = None;
            spec.affinity = None;
            spec.tolerations = None;
            spec.init_containers = None;
            for c in &mut spec.containers {
                c.env = None;
                c.env_from = None;
                c.volume_mounts = None;
                c.liveness_probe = None;
                c.readiness_probe = None;
                c.startup_probe = None;
                c.command = None;
                c.args = None;
                c.ports = None;
                c.security_context = None;
                c.lifecycle = None;
            }
        }
    }
}

macro_rules! slim_template {
    ($($kind:ty => |$o:ident| $body:expr;)*) => {$(
        impl Slim for $kind {
            fn slim(&mut self) {
                let meta = self.meta_mut();
                meta.managed_fields = None;
                meta.annotations = None;
                let $o = self;
                $body
            }
        }
    )*};
}

slim_template! {
    ReplicaSet => |o| if let Some(s) = o.spec.as_mut() { s.template = None };
    Deployment => |o| if let Some(s) = o.spec.as_mut() { no_template(&mut s.template) };
    StatefulSet => |o| if let Some(s) = o.spec.as_mut() {
        no_template(&mut s.template);
        s.volume_claim_templates = None;
    };
    DaemonSet => |o| if let Some(s) = o.spec.as_mut() { no_template(&mut s.template) };
    Job => |o| if let Some(s) = o.spec.as_mut() { no_template(&mut s.template) };
    CronJob => |o| if let Some(s) = o.spec.as_mut() { s.job_template = Default::default() };
}

impl Slim for Node {}
impl Slim for Service {}
impl Slim for EndpointSlice {}

/// What a reflector can hold.
trait Watched:
    Resource<DynamicType = ()> + Slim + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
}

impl<K> Watched for K where
    K: Resource<DynamicType = ()> + Slim + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
}

struct Watcher {
    client: Client,
    namespaces: Vec<String>,
    config: watcher::Config,
    errors: Counter,
    tasks: Vec<BoxFuture<'static, ()>>,
}

impl Watcher {
    /// One API per watched namespace, or one for all of them.
    fn apis<K>(&self) -> Vec<Api<K>>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    {
        if self.namespaces.is_empty() {
            vec![Api::all(self.client.clone())]
        } else {
            self.namespaces
                .iter()
                .map(|n| Api::namespaced(self.client.clone(), n))
                .collect()
        }
    }

    /// Reflectors of `K` in every watched namespace, driven by tasks.
    fn reflect<K>(&mut self) -> Vec<Store<K>>
    where
        K: Watched + Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    {
        let apis = self.apis::<K>();
        self.reflect_in(apis)
    }

    /// Reflectors of `K` through `apis`, driven by tasks.
    fn reflect_in<K: Watched>(&mut self, apis: Vec<Api<K>>) -> Vec<Store<K>> {
        let mut stores = Vec::new();
        for api in apis {
            let (reader, writer) = reflector::store();
            let stream = reflector(writer, watcher(api, self.config.clone()).modify(K::slim))
                .default_backoff();
            let errors = self.errors.clone();
            let kind = K::kind(&());
            self.tasks.push(Box::pin(async move {
                futures::pin_mut!(stream);
                while let Some(item) = stream.next().await {
                    if let Err(e) = item {
                        watch_failed(&errors, &kind, &e);
                    }
                }
            }));
            stores.push(reader);
        }
        stores
    }
}

/// Runs the cluster agent until `shutdown`.
pub async fn run(config: ClusterAgentConfig, shutdown: Shutdown) -> Result<(), AgentError> {
    let api_key = vigil_runtime::auth::resolve_api_key(
        "cluster_agent.api_key",
        &config.api_key,
        config.api_key_file.as_deref(),
    )?;
    let metrics = Metrics::new("cluster_agent");
    let spool_dir = config
        .spool_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("/var/lib/vigil/cluster-agent-spool"));
    let shipper = Shipper::open(
        &metrics,
        "cluster_agent",
        &config.ingest_endpoint,
        config.push_timeout,
        &api_key,
        &spool_dir,
        config.max_spool_bytes,
    )?;
    let cursor_path = spool_dir.join("events-cursor");
    let cursor = shipper
        .recover_sidecar(&cursor_path)
        .and_then(|b| serde_json::from_slice::<events::Cursor>(&b).ok())
        .unwrap_or_default();
    let client = client(&config).await?;
    let http = HttpServer::bind("cluster-agent-http", &config.http).await?;
    let readiness = Readiness::default();
    let errors = Counter::default();
    metrics.register(
        "watch_errors",
        "Failed lists and watches of the Kubernetes API (each is retried with backoff)",
        errors.clone(),
    );
    let events_dropped = Counter::default();
    metrics.register(
        "events_dropped",
        "Kubernetes events and Flux changes dropped: more than max_pending_events waited",
        events_dropped.clone(),
    );
    let events_seen = Counter::default();
    metrics.register(
        "events",
        "Kubernetes events and Flux changes turned into records",
        events_seen.clone(),
    );

    let mut w = Watcher {
        client: client.clone(),
        namespaces: config.namespaces.clone(),
        config: watcher::Config::default()
            .timeout(u32::try_from(config.watch_timeout.as_secs()).unwrap_or(290)),
        errors: errors.clone(),
        tasks: Vec::new(),
    };
    let watches = Arc::new(Watches {
        pods: w.reflect(),
        replica_sets: w.reflect(),
        deployments: w.reflect(),
        stateful_sets: w.reflect(),
        daemon_sets: w.reflect(),
        jobs: w.reflect(),
        cron_jobs: w.reflect(),
        nodes: w.reflect_in(vec![Api::<Node>::all(client.clone())]),
        services: w.reflect(),
        endpoint_slices: w.reflect(),
    });
    let pending = Arc::new(Mutex::new(Pending {
        cursor,
        ..Pending::default()
    }));
    let sink = Sink {
        cluster: config.cluster.clone(),
        pending: pending.clone(),
        errors: errors.clone(),
        dropped: events_dropped,
        seen: events_seen,
        max_pending: config.max_pending_events,
    };
    // How long the first lists may take before the agent ships without a
    // kind it cannot list.
    let listed_by = tokio::time::Instant::now() + Duration::from_secs(60);
    for api in w.apis::<Event>() {
        let stream = watcher(api, w.config.clone()).default_backoff();
        let (watches, sink) = (watches.clone(), sink.clone());
        w.tasks.push(Box::pin(async move {
            // Events name pods and ReplicaSets: hold them until those are
            // listed, so that each is put on its workload.
            watches.ready(listed_by).await;
            futures::pin_mut!(stream);
            while let Some(item) = stream.next().await {
                let e = match item {
                    Ok(watcher::Event::Apply(e) | watcher::Event::InitApply(e)) => e,
                    Ok(_) => continue,
                    Err(e) => {
                        sink.failed("Event", &e);
                        continue;
                    }
                };
                let now = now_ms();
                let application = application_of(&watches, &e);
                let event = events::kube_event(&sink.cluster, &e, &application, now);
                // Admitted and held under one lock: a shipment never
                // carries a cursor past an event it does not carry.
                let mut p = lock(&sink.pending);
                if p.cursor.admit(&e, now) {
                    sink.hold(&mut p, event);
                }
            }
        }));
    }
    if config.flux {
        for (group, version, kind, plural) in [
            (
                "kustomize.toolkit.fluxcd.io",
                "v1",
                "Kustomization",
                "kustomizations",
            ),
            (
                "helm.toolkit.fluxcd.io",
                "v2",
                "HelmRelease",
                "helmreleases",
            ),
        ] {
            let resource = ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk(group, version, kind),
                plural,
            );
            let apis: Vec<Api<DynamicObject>> = if config.namespaces.is_empty() {
                vec![Api::all_with(client.clone(), &resource)]
            } else {
                config
                    .namespaces
                    .iter()
                    .map(|n| Api::namespaced_with(client.clone(), n, &resource))
                    .collect()
            };
            for api in apis {
                w.tasks.push(Box::pin(watch_flux(
                    api,
                    kind,
                    w.config.clone(),
                    sink.clone(),
                    shutdown.clone(),
                )));
            }
        }
    }
    tracing::info!(
        cluster = %config.cluster,
        namespaces = ?config.namespaces,
        flux = config.flux,
        "cluster agent watching the Kubernetes API"
    );

    let agent_id = hex::encode(rand::random::<[u8; 8]>());
    let agent_info = AgentInfo {
        agent_id: agent_id.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        collectors: vec!["kubernetes".to_owned()],
    };
    let spooled = tokio::sync::Notify::new();
    let ship_loop = async {
        shipper.run(&spooled, &shutdown).await;
        Ok::<(), RuntimeError>(())
    };
    let watch_loop = async {
        tokio::select! {
            _ = futures::future::join_all(std::mem::take(&mut w.tasks)) => {}
            () = shutdown.wait() => {}
        }
        Ok::<(), RuntimeError>(())
    };
    let snapshot_loop = async {
        tokio::select! {
            () = watches.ready(listed_by) => {}
            () = shutdown.wait() => return Ok(()),
        }
        readiness.set_ready(true);
        tracing::info!("first list of every kind done; shipping");
        let mut sequence = 0u64;
        loop {
            let now = now_ms();
            let snapshot = watches.snapshot();
            let (events, cursor, mut series) = {
                let mut p = lock(&pending);
                p.cursor.prune(now);
                let series = p.flux.series(now);
                (std::mem::take(&mut p.events), p.cursor.clone(), series)
            };
            series.extend(inventory::series(&snapshot, now));
            let resource = PbResource {
                cluster: config.cluster.clone(),
                ..PbResource::default()
            };
            let cursor = serde_json::to_vec(&cursor).unwrap_or_default();
            // The cursor goes with the last batch that carries events, and
            // only if every such batch before it was spooled: it never
            // covers an event that is not on disk.
            let event_batches = events.len().div_ceil(EVENTS_PER_BATCH);
            let mut events_spooled = true;
            let mut returned = Vec::new();
            let mut series = series.into_iter().peekable();
            let mut events = events.into_iter().peekable();
            let mut n = 0;
            while series.peek().is_some() || events.peek().is_some() {
                let chunk: Vec<TimeSeries> = series.by_ref().take(SERIES_PER_BATCH).collect();
                let events: Vec<KubeEvent> = events.by_ref().take(EVENTS_PER_BATCH).collect();
                let carries_events = !events.is_empty();
                n += 1;
                sequence += 1;
                let mut batch = PushRequest {
                    batch_id: format!("cluster-{agent_id}-{sequence}"),
                    agent: Some(agent_info.clone()),
                    metrics: vec![ResourceMetrics {
                        resource: Some(resource.clone()),
                        series: chunk,
                    }],
                    events,
                    ..PushRequest::default()
                };
                let with_cursor = carries_events && n == event_batches && events_spooled;
                let spooled = shipper.spool(
                    &batch,
                    with_cursor.then_some((cursor_path.as_path(), cursor.as_slice())),
                );
                if carries_events && !spooled {
                    // Tried again with the next shipment.
                    events_spooled = false;
                    returned.append(&mut batch.events);
                }
            }
            if !returned.is_empty() {
                let mut p = lock(&pending);
                for e in returned.into_iter().rev() {
                    p.events.push_front(e);
                }
            }
            spooled.notify_one();
            if !shutdown.sleep(config.interval).await {
                return Ok::<(), RuntimeError>(());
            }
        }
    };
    tokio::try_join!(
        watch_loop,
        snapshot_loop,
        ship_loop,
        http.serve(axum::Router::new(), &metrics, &readiness, &shutdown)
    )?;
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The application an event concerns: a pod's workload, a ReplicaSet's
/// Deployment, a Job's CronJob (empty when the pod, ReplicaSet or Job is
/// gone already: its name is no application); any other object is named
/// as itself.
fn application_of(watches: &Watches, e: &Event) -> String {
    let o = &e.involved_object;
    let name = o.name.clone().unwrap_or_default();
    let namespace = o.namespace.clone().unwrap_or_default();
    fn get<K: Resource<DynamicType = ()> + Clone + 'static>(
        stores: &[Store<K>],
        name: &str,
        namespace: &str,
    ) -> Option<Arc<K>> {
        let key = ObjectRef::new(name).within(namespace);
        stores.iter().find_map(|s| s.get(&key))
    }
    let kind = o.kind.as_deref().unwrap_or_default();
    let meta = match kind {
        "Pod" => get(&watches.pods, &name, &namespace).map(|p| p.metadata.clone()),
        "ReplicaSet" => get(&watches.replica_sets, &name, &namespace).map(|r| r.metadata.clone()),
        "Job" => get(&watches.jobs, &name, &namespace).map(|j| j.metadata.clone()),
        _ => return name,
    };
    let Some(meta) = meta else {
        return String::new();
    };
    // Only the owner the chain goes through is looked up.
    let owner = meta
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true));
    let snapshot = inventory::Snapshot {
        replica_sets: owner
            .filter(|r| r.kind == "ReplicaSet")
            .and_then(|r| get(&watches.replica_sets, &r.name, &namespace))
            .into_iter()
            .collect(),
        jobs: owner
            .filter(|r| r.kind == "Job")
            .and_then(|r| get(&watches.jobs, &r.name, &namespace))
            .into_iter()
            .collect(),
        ..inventory::Snapshot::default()
    };
    inventory::Owners::new(&snapshot).workload(kind, &meta).name
}

/// What the event and Flux watches share.
#[derive(Clone)]
struct Sink {
    cluster: String,
    pending: Arc<Mutex<Pending>>,
    errors: Counter,
    dropped: Counter,
    seen: Counter,
    max_pending: usize,
}

impl Sink {
    /// Holds an event for the next shipment, dropping the oldest when full.
    fn hold(&self, p: &mut Pending, event: KubeEvent) {
        self.seen.inc();
        if p.events.len() >= self.max_pending {
            p.events.pop_front();
            self.dropped.inc();
        }
        p.events.push_back(event);
    }

    fn failed(&self, kind: &str, e: &dyn std::fmt::Display) {
        watch_failed(&self.errors, kind, e);
    }
}

/// Counts and logs a failed list or watch (kube-runtime retries it).
fn watch_failed(errors: &Counter, kind: &str, e: &dyn std::fmt::Display) {
    errors.inc();
    tracing::warn!(kind, error = %e, "watch failed; retrying");
}

/// Watches one Flux kind; waits (re-checking every 5 min) while its CRD is
/// not installed.
async fn watch_flux(
    api: Api<DynamicObject>,
    kind: &'static str,
    config: watcher::Config,
    sink: Sink,
    shutdown: Shutdown,
) {
    loop {
        match api.list(&ListParams::default().limit(1)).await {
            Ok(_) => break,
            Err(kube::Error::Api(s)) if s.code == 404 => {
                tracing::info!(
                    kind,
                    "Flux is not installed (no {kind} resource); checking again in 5 min"
                );
            }
            Err(e) => {
                sink.errors.inc();
                tracing::warn!(kind, error = %e, "cannot list Flux objects; retrying in 5 min");
            }
        }
        if !shutdown.sleep(Duration::from_secs(300)).await {
            return;
        }
    }
    let stream = watcher(api, config).default_backoff();
    futures::pin_mut!(stream);
    let mut listed = std::collections::BTreeSet::new();
    while let Some(item) = stream.next().await {
        let now = now_ms();
        match item {
            Ok(watcher::Event::Init) => listed.clear(),
            Ok(watcher::Event::InitApply(o) | watcher::Event::Apply(o)) => {
                listed.insert((o.namespace(), o.name_any()));
                let mut p = lock(&sink.pending);
                if let Some(event) = p.flux.observe(&sink.cluster, kind, &o, now) {
                    sink.hold(&mut p, event);
                }
            }
            Ok(watcher::Event::Delete(o)) => lock(&sink.pending).flux.forget(kind, &o),
            // Objects deleted while the watch was down are not listed again.
            Ok(watcher::Event::InitDone) => {
                lock(&sink.pending).flux.objects.retain(|(k, ns, name), _| {
                    k != kind
                        || listed
                            .contains(&(Some(ns.clone()).filter(|n| !n.is_empty()), name.clone()))
                });
            }
            Err(e) => sink.failed(kind, &e),
        }
    }
}
