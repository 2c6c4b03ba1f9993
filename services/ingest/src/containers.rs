//! Container id → pod → application, so that what the node agent sends
//! about a container (labelled only `container_id`) lands on its
//! Kubernetes application.
//!
//! The cluster agent publishes the mapping as `kube_pod_container_info`
//! series (`container_id`, `namespace`, `pod`, `container`,
//! `application`). Each ingest replica learns it from the pushes it takes
//! and, at most once a minute per project, from the store (the series other
//! replicas took in the last 15 minutes). A record that already names its
//! application keeps it. Ids not seen for 30 minutes are forgotten.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use vigil_proto::{
    names,
    telemetry::v1::{Label, PushRequest, Resource},
};
use vigil_storage::{SeriesSelector, TelemetryStore};

/// The series that carries the mapping.
pub const CONTAINER_INFO: &str = "kube_pod_container_info";
const REFRESH_EVERY: Duration = Duration::from_secs(60);
const LOOKBACK_MS: i64 = 15 * 60_000;
/// Bound on the ids held per project.
const MAX_PER_PROJECT: usize = 500_000;
/// Ids not seen for this long are forgotten (their containers are gone).
const FORGET_AFTER: Duration = Duration::from_secs(30 * 60);
/// Labels a series may have before enrichment adds its three (ingest
/// refuses more than 40 by default).
const MAX_LABELS_BEFORE: usize = 37;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub namespace: String,
    pub pod: String,
    pub application: String,
}

#[derive(Default)]
struct ProjectMap {
    ids: HashMap<String, (Owner, Instant)>,
    refreshed: Option<Instant>,
    refreshing: bool,
    /// Whether "map full" was logged since the last refresh.
    full_logged: bool,
}

#[derive(Default, Clone)]
pub struct Containers {
    projects: Arc<RwLock<HashMap<String, ProjectMap>>>,
}

fn get<'a>(labels: &'a [Label], name: &str) -> Option<&'a str> {
    labels
        .iter()
        .find(|l| l.name == name)
        .map(|l| l.value.as_str())
        .filter(|v| !v.is_empty())
}

fn owner_of(get: impl Fn(&str) -> Option<String>) -> Option<(String, Owner)> {
    Some((
        get("container_id")?,
        Owner {
            namespace: get(names::LABEL_NAMESPACE).unwrap_or_default(),
            pod: get("pod").unwrap_or_default(),
            application: get(names::LABEL_APPLICATION)?,
        },
    ))
}

fn add(labels: &mut Vec<Label>, name: &str, value: &str) {
    if !value.is_empty() && get(labels, name).is_none() && labels.len() < MAX_LABELS_BEFORE {
        labels.retain(|l| l.name != name);
        labels.push(Label {
            name: name.to_owned(),
            value: value.to_owned(),
        });
    }
}

impl Containers {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, ProjectMap>> {
        self.projects
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, ProjectMap>> {
        self.projects
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn note(map: &mut ProjectMap, id: String, owner: Owner) {
        if map.ids.len() < MAX_PER_PROJECT || map.ids.contains_key(&id) {
            map.ids.insert(id, (owner, Instant::now()));
        } else if !map.full_logged {
            map.full_logged = true;
            tracing::warn!(
                limit = MAX_PER_PROJECT,
                "container map full: new containers are not labelled with their application"
            );
        }
    }

    /// Learns the mappings a batch carries, then labels the batch's
    /// container records with their pod and application.
    pub fn enrich(&self, project: &str, request: &mut PushRequest) {
        let mut learned = request
            .metrics
            .iter()
            .flat_map(|rm| &rm.series)
            .filter(|s| s.name == CONTAINER_INFO)
            .filter_map(|s| owner_of(|n| get(&s.labels, n).map(str::to_owned)))
            .peekable();
        if learned.peek().is_some() {
            let mut projects = self.write();
            let map = projects.entry(project.to_owned()).or_default();
            for (id, owner) in learned {
                Self::note(map, id, owner);
            }
        }
        let projects = self.read();
        let Some(map) = projects.get(project).filter(|m| !m.ids.is_empty()) else {
            return;
        };
        let lookup = |labels: &[Label]| {
            if get(labels, names::LABEL_APPLICATION).is_some() {
                return None;
            }
            map.ids.get(get(labels, "container_id")?).map(|(o, _)| o)
        };
        for rm in &mut request.metrics {
            // A label the resource already sets would clash with it.
            let r = rm.resource.clone().unwrap_or_default();
            if !r.application.is_empty() {
                continue;
            }
            for s in &mut rm.series {
                if let Some(o) = lookup(&s.labels).cloned() {
                    add(&mut s.labels, names::LABEL_APPLICATION, &o.application);
                    if r.namespace.is_empty() {
                        add(&mut s.labels, names::LABEL_NAMESPACE, &o.namespace);
                    }
                    add(&mut s.labels, "pod", &o.pod);
                }
            }
        }
        let label_resource = |resource: &mut Option<Resource>, attributes: &mut Vec<Label>| {
            let r = resource.get_or_insert_with(Resource::default);
            if !r.application.is_empty() {
                return;
            }
            if let Some(o) = lookup(attributes).cloned() {
                r.application = o.application;
                if r.namespace.is_empty() {
                    r.namespace = o.namespace;
                }
                add(attributes, "pod", &o.pod);
            }
        };
        for l in &mut request.logs {
            label_resource(&mut l.resource, &mut l.resource_attributes);
        }
        for s in &mut request.spans {
            label_resource(&mut s.resource, &mut s.resource_attributes);
        }
        for p in &mut request.profiles {
            label_resource(&mut p.resource, &mut p.resource_attributes);
        }
    }

    /// Whether `project`'s map is due for a refresh from the store; marks
    /// it as being refreshed.
    fn due(&self, project: &str) -> bool {
        let mut projects = self.write();
        let map = projects.entry(project.to_owned()).or_default();
        let due = !map.refreshing && map.refreshed.is_none_or(|t| t.elapsed() >= REFRESH_EVERY);
        if due {
            map.refreshing = true;
        }
        due
    }

    /// Reads the last 15 minutes of mappings from the store.
    pub async fn refresh(&self, store: &dyn TelemetryStore, project: &str, now_ms: i64) {
        let read = store
            .select(
                project,
                &SeriesSelector::metric(CONTAINER_INFO),
                now_ms - LOOKBACK_MS,
                now_ms,
            )
            .await;
        let mut projects = self.write();
        let map = projects.entry(project.to_owned()).or_default();
        map.refreshing = false;
        map.refreshed = Some(Instant::now());
        map.ids.retain(|_, (_, seen)| seen.elapsed() < FORGET_AFTER);
        map.full_logged = false;
        match read {
            Ok(series) => {
                for s in series {
                    if let Some((id, owner)) = owner_of(|n| s.labels.get(n).cloned()) {
                        Self::note(map, id, owner);
                    }
                }
            }
            Err(e) => tracing::warn!(project, error = %e, "cannot read the container map"),
        }
    }

    /// Refreshes `project` in the background when it is due.
    pub fn refresh_if_due(&self, store: Arc<dyn TelemetryStore>, project: &str) {
        if self.due(project) {
            let (this, project) = (self.clone(), project.to_owned());
            tokio::spawn(async move {
                this.refresh(store.as_ref(), &project, vigil_runtime::time::now_ms())
                    .await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use vigil_proto::telemetry::v1::{ResourceLogs, ResourceMetrics, Sample, TimeSeries};

    fn labels(pairs: &[(&str, &str)]) -> Vec<Label> {
        pairs
            .iter()
            .map(|(n, v)| Label {
                name: (*n).into(),
                value: (*v).into(),
            })
            .collect()
    }

    fn series(name: &str, pairs: &[(&str, &str)]) -> TimeSeries {
        TimeSeries {
            name: name.into(),
            labels: labels(pairs),
            samples: vec![Sample {
                timestamp_ms: 1,
                value: 1.0,
            }],
        }
    }

    #[test]
    fn node_agent_records_get_the_application_of_their_container() {
        let c = Containers::default();
        // The cluster agent's batch teaches the map.
        let mut info = PushRequest {
            metrics: vec![ResourceMetrics {
                resource: None,
                series: vec![series(
                    CONTAINER_INFO,
                    &[
                        ("container_id", "3f1c2a9b8e7d"),
                        ("namespace", "shop"),
                        ("pod", "web-1"),
                        ("application", "web"),
                    ],
                )],
            }],
            ..PushRequest::default()
        };
        c.enrich("p", &mut info);
        let mut node = PushRequest {
            metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    node: "n1".into(),
                    ..Resource::default()
                }),
                series: vec![
                    series(
                        "container_cpu_usage_seconds_total",
                        &[("container_id", "3f1c2a9b8e7d")],
                    ),
                    series(
                        "process_cpu_usage_cores",
                        &[("container_id", "3f1c2a9b8e7d"), ("application", "mine")],
                    ),
                    series("host_load1", &[]),
                    series(
                        "container_cpu_usage_seconds_total",
                        &[("container_id", "999999999999")],
                    ),
                ],
            }],
            logs: vec![ResourceLogs {
                resource: None,
                resource_attributes: labels(&[("container_id", "3f1c2a9b8e7d")]),
                ..ResourceLogs::default()
            }],
            ..PushRequest::default()
        };
        c.enrich("p", &mut node);
        let s = &node.metrics[0].series;
        assert_eq!(get(&s[0].labels, "application"), Some("web"));
        assert_eq!(get(&s[0].labels, "namespace"), Some("shop"));
        assert_eq!(get(&s[0].labels, "pod"), Some("web-1"));
        assert_eq!(get(&s[1].labels, "application"), Some("mine"), "kept");
        assert_eq!(s[2].labels, vec![]);
        assert_eq!(get(&s[3].labels, "application"), None, "unknown id");
        let r = node.logs[0].resource.as_ref().unwrap();
        assert_eq!(
            (r.application.as_str(), r.namespace.as_str()),
            ("web", "shop")
        );
        // A resource that names the namespace keeps it (a series label of
        // the same name would clash with it).
        let mut in_ns = node.clone();
        in_ns.metrics[0].resource = Some(Resource {
            namespace: "shop".into(),
            ..Resource::default()
        });
        in_ns.metrics[0].series[0].labels = labels(&[("container_id", "3f1c2a9b8e7d")]);
        c.enrich("p", &mut in_ns);
        let l = &in_ns.metrics[0].series[0].labels;
        assert_eq!(get(l, "application"), Some("web"));
        assert_eq!(get(l, "namespace"), None);
        // Another project does not see this one's containers.
        let mut other = node.clone();
        other.metrics[0].series[0].labels = labels(&[("container_id", "3f1c2a9b8e7d")]);
        c.enrich("q", &mut other);
        assert_eq!(get(&other.metrics[0].series[0].labels, "application"), None);
    }
}
