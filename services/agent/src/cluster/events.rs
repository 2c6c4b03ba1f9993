//! Kubernetes events and Flux readiness as Vigil events: log records with
//! `vigil.event` set, so they are searched, counted and alerted on like
//! any log (a Warning event is a WARN record, a Flux object that is not
//! Ready an ERROR record).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Event;
use kube::api::DynamicObject;
use serde::{Deserialize, Serialize};
use vigil_proto::telemetry::v1::{Label, LogRecord, Resource, ResourceLogs};

const INFO: u32 = 9;
const WARN: u32 = 13;
const ERROR: u32 = 17;

fn label(name: &str, value: impl Into<String>) -> Label {
    Label {
        name: name.to_owned(),
        value: value.into(),
    }
}

/// When an event last happened, in milliseconds.
pub fn event_time_ms(e: &Event) -> i64 {
    e.last_timestamp
        .as_ref()
        .map(|t| t.0.as_millisecond())
        .or_else(|| e.event_time.as_ref().map(|t| t.0.as_millisecond()))
        .or_else(|| e.first_timestamp.as_ref().map(|t| t.0.as_millisecond()))
        .or_else(|| {
            e.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_millisecond())
        })
        .unwrap_or(0)
}

/// An occurrence of an event: the same Event object counts again with
/// each repetition (`count`, or `series.count` for events.k8s.io ones).
fn occurrence(e: &Event) -> String {
    let count = e
        .series
        .as_ref()
        .and_then(|s| s.count)
        .or(e.count)
        .unwrap_or(1);
    format!("{}/{count}", e.metadata.uid.as_deref().unwrap_or_default())
}

/// Which events were shipped already, so that a restart or a re-list
/// ships each occurrence once: the newest time shipped, and the
/// occurrences at exactly that time (event times have whole seconds).
/// Kept in the spool with each batch that carries events.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
pub struct Cursor {
    pub time_ms: i64,
    pub at_time: BTreeSet<String>,
}

impl Cursor {
    /// Whether this occurrence is new; notes it if so.
    pub fn admit(&mut self, e: &Event) -> bool {
        let t = event_time_ms(e);
        let key = occurrence(e);
        if t < self.time_ms || (t == self.time_ms && self.at_time.contains(&key)) {
            return false;
        }
        if t > self.time_ms {
            self.time_ms = t;
            self.at_time.clear();
        }
        self.at_time.insert(key);
        true
    }
}

/// One event as a log record of the application it concerns (`application`
/// names the workload of a pod; other objects are named as themselves).
/// The record's time is the event's, but never after `now_ms` (a node's
/// clock ahead of ingest's would get the batch refused).
pub fn event_record(cluster: &str, e: &Event, application: &str, now_ms: i64) -> ResourceLogs {
    let o = &e.involved_object;
    let warning = e.type_.as_deref() == Some("Warning");
    let reason = e.reason.clone().unwrap_or_default();
    let message = e.message.clone().unwrap_or_default();
    let kind = o.kind.clone().unwrap_or_default();
    let name = o.name.clone().unwrap_or_default();
    let component = e
        .reporting_component
        .clone()
        .filter(|c| !c.is_empty())
        .or_else(|| e.source.as_ref().and_then(|s| s.component.clone()))
        .unwrap_or_default();
    let count = e
        .series
        .as_ref()
        .and_then(|s| s.count)
        .or(e.count)
        .unwrap_or(1);
    let mut attributes = vec![
        label("vigil.event", "kubernetes"),
        label("k8s.event.reason", reason.clone()),
        label("k8s.event.type", e.type_.clone().unwrap_or_default()),
        label("k8s.event.count", count.to_string()),
        label("k8s.object.kind", kind.clone()),
        label("k8s.object.name", name.clone()),
    ];
    if !component.is_empty() {
        attributes.push(label("k8s.event.source", component));
    }
    ResourceLogs {
        resource: Some(Resource {
            cluster: cluster.to_owned(),
            namespace: o.namespace.clone().unwrap_or_default(),
            application: application.to_owned(),
            ..Resource::default()
        }),
        service: application.to_owned(),
        resource_attributes: vec![label("k8s.object", format!("{kind}/{name}"))],
        records: vec![LogRecord {
            time_unix_nano: event_time_ms(e).min(now_ms).saturating_mul(1_000_000),
            severity: if warning { WARN } else { INFO },
            severity_text: if warning { "WARN" } else { "INFO" }.to_owned(),
            body: format!("{kind}/{name}: {reason}: {message}"),
            attributes,
            ..LogRecord::default()
        }],
    }
}

/// A Flux object's readiness: its `Ready` condition, and whether it is
/// suspended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// "True", "False" or "Unknown" (reconciling, or no condition yet).
    pub status: String,
    pub reason: String,
    pub message: String,
    pub suspended: bool,
    pub revision: String,
}

impl Readiness {
    pub fn of(o: &DynamicObject) -> Self {
        let ready = o.data["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "Ready"));
        let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
        Self {
            status: ready
                .map(|c| text(&c["status"]))
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "Unknown".into()),
            reason: ready.map(|c| text(&c["reason"])).unwrap_or_default(),
            message: ready.map(|c| text(&c["message"])).unwrap_or_default(),
            suspended: o.data["spec"]["suspend"].as_bool().unwrap_or(false),
            revision: text(&o.data["status"]["lastAppliedRevision"]),
        }
    }

    pub fn ready(&self) -> bool {
        self.status == "True"
    }
}

/// Flux objects' readiness by (kind, namespace, name), and the records of
/// its changes.
#[derive(Default)]
pub struct Flux {
    pub objects: BTreeMap<(String, String, String), Readiness>,
}

impl Flux {
    /// Notes `o`'s readiness; a record when it changed (or, on first
    /// sight, when it is not ready).
    pub fn observe(
        &mut self,
        cluster: &str,
        kind: &str,
        o: &DynamicObject,
        now_ms: i64,
    ) -> Option<ResourceLogs> {
        let namespace = o.metadata.namespace.clone().unwrap_or_default();
        let name = o.metadata.name.clone().unwrap_or_default();
        let now = Readiness::of(o);
        let key = (kind.to_owned(), namespace.clone(), name.clone());
        let before = self.objects.insert(key, now.clone());
        let changed = match &before {
            None => !now.ready() && !now.suspended,
            Some(b) => b.status != now.status || b.reason != now.reason,
        };
        if !changed {
            return None;
        }
        let (severity, text) = match now.status.as_str() {
            "True" => (INFO, "INFO"),
            "False" => (ERROR, "ERROR"),
            _ => (WARN, "WARN"),
        };
        let body = match now.status.as_str() {
            "True" => format!("{kind}/{name} is ready: {}", now.message),
            "False" => format!(
                "{kind}/{name} reconciliation failed: {}: {}",
                now.reason, now.message
            ),
            _ => format!("{kind}/{name} is reconciling: {}", now.message),
        };
        Some(ResourceLogs {
            resource: Some(Resource {
                cluster: cluster.to_owned(),
                namespace: namespace.clone(),
                application: name.clone(),
                ..Resource::default()
            }),
            service: name.clone(),
            resource_attributes: vec![label("k8s.object", format!("{kind}/{name}"))],
            records: vec![LogRecord {
                time_unix_nano: now_ms.saturating_mul(1_000_000),
                severity,
                severity_text: text.to_owned(),
                body,
                attributes: vec![
                    label("vigil.event", "flux"),
                    label("k8s.object.kind", kind),
                    label("k8s.object.name", name),
                    label("flux.ready", now.status.clone()),
                    label("flux.reason", now.reason.clone()),
                    label("flux.revision", now.revision.clone()),
                ],
                ..LogRecord::default()
            }],
        })
    }

    pub fn forget(&mut self, kind: &str, o: &DynamicObject) {
        self.objects.remove(&(
            kind.to_owned(),
            o.metadata.namespace.clone().unwrap_or_default(),
            o.metadata.name.clone().unwrap_or_default(),
        ));
    }

    /// `flux_resource_ready` (1 ready, 0 not) and `flux_resource_suspended`
    /// per object.
    pub fn series(&self, ts: i64) -> Vec<vigil_proto::telemetry::v1::TimeSeries> {
        use vigil_proto::telemetry::v1::{Sample, TimeSeries};
        let mut out = Vec::new();
        for ((kind, namespace, name), r) in &self.objects {
            let labels = vec![
                label("kind", kind.clone()),
                label(vigil_proto::names::LABEL_NAMESPACE, namespace.clone()),
                label("name", name.clone()),
                label(vigil_proto::names::LABEL_APPLICATION, name.clone()),
            ];
            for (metric, value) in [
                ("flux_resource_ready", r.ready()),
                ("flux_resource_suspended", r.suspended),
            ] {
                let mut labels = labels.clone();
                if metric == "flux_resource_ready" && !r.reason.is_empty() {
                    labels.push(label("reason", r.reason.clone()));
                }
                out.push(TimeSeries {
                    name: metric.to_owned(),
                    labels,
                    samples: vec![Sample {
                        timestamp_ms: ts,
                        value: if value { 1.0 } else { 0.0 },
                    }],
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn event(uid: &str, last: &str, count: i32) -> Event {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web.17a", "namespace": "shop", "uid": uid},
            "involvedObject": {"kind": "Pod", "name": "web-1", "namespace": "shop"},
            "reason": "BackOff", "message": "Back-off restarting failed container",
            "type": "Warning", "count": count, "lastTimestamp": last,
            "source": {"component": "kubelet"}
        }))
        .unwrap()
    }

    #[test]
    fn each_occurrence_is_admitted_once() {
        let mut c = Cursor::default();
        let a = event("a", "2026-11-22T01:00:00Z", 1);
        assert!(c.admit(&a));
        assert!(!c.admit(&a), "the same occurrence again");
        // Another event in the same second, and a repetition of the first.
        assert!(c.admit(&event("b", "2026-11-22T01:00:00Z", 1)));
        assert!(c.admit(&event("a", "2026-11-22T01:00:05Z", 2)));
        // Older than what was shipped: a re-list after a restart.
        assert!(!c.admit(&event("c", "2026-11-22T00:59:00Z", 1)));
        let kept: Cursor = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(kept, c);
    }

    #[test]
    fn a_warning_event_is_a_warn_record_of_its_application() {
        let r = event_record(
            "prod",
            &event("a", "2026-11-22T01:00:00Z", 3),
            "web",
            i64::MAX,
        );
        let rec = &r.records[0];
        assert_eq!(rec.severity, WARN);
        assert_eq!(
            rec.body,
            "Pod/web-1: BackOff: Back-off restarting failed container"
        );
        assert_eq!(rec.time_unix_nano, 1_795_309_200_000_000_000);
        let resource = r.resource.unwrap();
        assert_eq!(
            (resource.namespace.as_str(), resource.application.as_str()),
            ("shop", "web")
        );
        let attr = |n: &str| {
            rec.attributes
                .iter()
                .find(|l| l.name == n)
                .map(|l| l.value.as_str())
        };
        assert_eq!(attr("k8s.event.count"), Some("3"));
        assert_eq!(attr("k8s.event.source"), Some("kubelet"));
    }

    #[test]
    fn flux_readiness_changes_become_records() {
        let obj = |status: &str, reason: &str| -> DynamicObject {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
                "metadata": {"name": "apps", "namespace": "flux-system"},
                "spec": {"interval": "10m"},
                "status": {"conditions": [{"type": "Ready", "status": status, "reason": reason,
                    "message": "kustomize build failed"}]}
            }))
            .unwrap()
        };
        let mut flux = Flux::default();
        // Ready at first sight: nothing to say.
        assert!(
            flux.observe(
                "c",
                "Kustomization",
                &obj("True", "ReconciliationSucceeded"),
                1
            )
            .is_none()
        );
        let failed = flux
            .observe("c", "Kustomization", &obj("False", "BuildFailed"), 2)
            .unwrap();
        assert_eq!(failed.records[0].severity, ERROR);
        assert!(
            failed.records[0]
                .body
                .contains("reconciliation failed: BuildFailed"),
            "{:?}",
            failed.records[0].body
        );
        // Still failing the same way: no new record.
        assert!(
            flux.observe("c", "Kustomization", &obj("False", "BuildFailed"), 3)
                .is_none()
        );
        let series = flux.series(5);
        let ready = series
            .iter()
            .find(|s| s.name == "flux_resource_ready")
            .unwrap();
        assert_eq!(ready.samples[0].value, 0.0);
        let back = flux
            .observe(
                "c",
                "Kustomization",
                &obj("True", "ReconciliationSucceeded"),
                4,
            )
            .unwrap();
        assert_eq!(back.records[0].severity, INFO);
    }
}
