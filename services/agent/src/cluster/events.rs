//! Kubernetes events and Flux readiness changes as Vigil events
//! (`vigil.telemetry.v1.KubeEvent`; the query API lists them with
//! `ListEvents`), each put on the application it concerns.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Event;
use kube::api::DynamicObject;
use serde::{Deserialize, Serialize};
use vigil_proto::telemetry::v1::{KubeEvent, Label, Resource};

fn label(name: &str, value: impl Into<String>) -> Label {
    Label {
        name: name.to_owned(),
        value: value.into(),
    }
}

/// When an event last happened, in milliseconds: the newest of its times
/// (`series.lastObservedTime` for a repeated events.k8s.io event, whose
/// `eventTime` is its first occurrence).
pub fn event_time_ms(e: &Event) -> i64 {
    e.series
        .as_ref()
        .and_then(|s| s.last_observed_time.as_ref())
        .map(|t| t.0.as_millisecond())
        .or_else(|| e.last_timestamp.as_ref().map(|t| t.0.as_millisecond()))
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

/// How many times the event happened: `series.count` for events.k8s.io
/// ones, `count` for core/v1 ones.
fn count(e: &Event) -> i32 {
    e.series
        .as_ref()
        .and_then(|s| s.count)
        .or(e.count)
        .unwrap_or(1)
}

/// Events older than this are not shipped: the API server keeps events an
/// hour by default, so after a longer outage what it still lists is stale.
pub const HORIZON_MS: i64 = 3 * 3_600_000;

/// Which event occurrences were shipped, so that a restart or a re-list
/// ships each once: per event uid, the highest count shipped and when.
/// Entries older than [`HORIZON_MS`] are dropped (so are such events).
/// Kept in the spool with the batch that carries the last events it notes.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
pub struct Cursor {
    pub shipped: BTreeMap<String, (i32, i64)>,
}

impl Cursor {
    /// Whether this occurrence is new (and recent); notes it if so.
    pub fn admit(&mut self, e: &Event, now_ms: i64) -> bool {
        let time = event_time_ms(e);
        if now_ms - time > HORIZON_MS {
            return false;
        }
        let uid = e.metadata.uid.clone().unwrap_or_default();
        let count = count(e);
        if self
            .shipped
            .get(&uid)
            .is_some_and(|(shipped, _)| *shipped >= count)
        {
            return false;
        }
        self.shipped.insert(uid, (count, time));
        true
    }

    /// Forgets what is past the horizon.
    pub fn prune(&mut self, now_ms: i64) {
        self.shipped.retain(|_, (_, t)| now_ms - *t <= HORIZON_MS);
    }
}

/// Longest reason, object and message kept (the events store refuses more
/// than 256 and 1024 bytes for the first two; a message is cut at 4 KiB so
/// that a batch of events stays well under the gRPC message limit).
const MAX_REASON: usize = 256;
const MAX_OBJECT: usize = 1024;
const MAX_MESSAGE: usize = 4096;

fn cut(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// One event, on the application it concerns (`application` names the
/// workload of a pod; other objects are named as themselves). Its time is
/// the event's, but never after `now_ms` (a node's clock ahead of ingest's
/// would get the batch refused).
pub fn kube_event(cluster: &str, e: &Event, application: &str, now_ms: i64) -> KubeEvent {
    let o = &e.involved_object;
    let kind = o.kind.clone().unwrap_or_default();
    let name = o.name.clone().unwrap_or_default();
    let namespace = o.namespace.clone().unwrap_or_default();
    let component = e
        .reporting_component
        .clone()
        .filter(|c| !c.is_empty())
        .or_else(|| e.source.as_ref().and_then(|s| s.component.clone()))
        .unwrap_or_default();
    let mut attributes = vec![label("k8s.event.count", count(e).to_string())];
    if !component.is_empty() {
        attributes.push(label("k8s.event.source", component));
    }
    KubeEvent {
        time_unix_nano: event_time_ms(e).min(now_ms).saturating_mul(1_000_000),
        kind: e.type_.clone().unwrap_or_else(|| "Normal".into()),
        reason: cut(e.reason.clone().unwrap_or_default(), MAX_REASON),
        object: cut(object(&kind, &namespace, &name), MAX_OBJECT),
        message: cut(e.message.clone().unwrap_or_default(), MAX_MESSAGE),
        resource: Some(Resource {
            cluster: cluster.to_owned(),
            namespace,
            application: application.to_owned(),
            ..Resource::default()
        }),
        resource_attributes: attributes,
    }
}

/// `Kind/namespace/name`, or `Kind/name` for what has no namespace.
fn object(kind: &str, namespace: &str, name: &str) -> String {
    if namespace.is_empty() {
        format!("{kind}/{name}")
    } else {
        format!("{kind}/{namespace}/{name}")
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

/// Flux objects' readiness by (kind, namespace, name), and the events of
/// its changes. Each reconciliation passes through Ready=Unknown
/// (Progressing): only the definite states (True, False) count, so a
/// healthy object makes no events and stays ready.
#[derive(Default)]
pub struct Flux {
    pub objects: BTreeMap<(String, String, String), Readiness>,
}

impl Readiness {
    fn definite(&self) -> bool {
        self.status == "True" || self.status == "False"
    }
}

impl Flux {
    /// Notes `o`'s readiness; an event when it changed (or, on first
    /// sight, when it is not ready). Its reason is the Ready condition's
    /// (`BuildFailed`, `ReconciliationSucceeded`, …), or `Suspended`.
    pub fn observe(
        &mut self,
        cluster: &str,
        kind: &str,
        o: &DynamicObject,
        now_ms: i64,
    ) -> Option<KubeEvent> {
        let namespace = o.metadata.namespace.clone().unwrap_or_default();
        let name = o.metadata.name.clone().unwrap_or_default();
        let now = Readiness::of(o);
        let key = (kind.to_owned(), namespace.clone(), name.clone());
        let before = self.objects.get(&key).cloned();
        if !now.definite() {
            // Reconciling: the last definite state holds (first sight:
            // ready until it says otherwise).
            let suspended = now.suspended;
            let held = before.unwrap_or(Readiness {
                status: "True".into(),
                ..now
            });
            self.objects.insert(key, Readiness { suspended, ..held });
            return None;
        }
        self.objects.insert(key, now.clone());
        let changed = match &before {
            None => !now.ready() && !now.suspended,
            Some(b) => b.status != now.status || b.reason != now.reason,
        };
        if !changed {
            return None;
        }
        let message = if now.ready() {
            format!("ready: {}", now.message)
        } else {
            format!("reconciliation failed: {}", now.message)
        };
        Some(KubeEvent {
            time_unix_nano: now_ms.saturating_mul(1_000_000),
            kind: "Flux".into(),
            reason: cut(
                if now.reason.is_empty() {
                    now.status.clone()
                } else {
                    now.reason.clone()
                },
                MAX_REASON,
            ),
            object: cut(object(kind, &namespace, &name), MAX_OBJECT),
            message: cut(message, MAX_MESSAGE),
            resource: Some(Resource {
                cluster: cluster.to_owned(),
                namespace,
                application: name,
                ..Resource::default()
            }),
            resource_attributes: vec![
                label("flux.ready", now.status.clone()),
                label("flux.revision", now.revision.clone()),
            ],
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
    /// per object. The reason is not a label (each new reason would start a
    /// new series next to the old one); it is in the object's events.
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
                out.push(TimeSeries {
                    name: metric.to_owned(),
                    labels: labels.clone(),
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
    fn each_occurrence_is_admitted_once_in_any_order() {
        let now = 1_795_309_300_000; // 2026-11-22T01:01:40Z
        let mut c = Cursor::default();
        let a = event("a", "2026-11-22T01:00:00Z", 1);
        assert!(c.admit(&a, now));
        assert!(!c.admit(&a, now), "the same occurrence again");
        // Listed after a newer one (lists are in name order, not time
        // order): still new.
        assert!(c.admit(&event("b", "2026-11-22T00:59:00Z", 1), now));
        // A repetition is a new occurrence; an older count is not.
        assert!(c.admit(&event("a", "2026-11-22T01:00:05Z", 2), now));
        assert!(!c.admit(&event("a", "2026-11-22T01:00:00Z", 1), now));
        // Past the horizon: not shipped.
        assert!(!c.admit(&event("c", "2026-11-21T20:00:00Z", 1), now));
        let kept: Cursor = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(kept, c);
        c.prune(now + HORIZON_MS - 130_000);
        assert_eq!(
            c.shipped.len(),
            1,
            "b (00:59) is past the horizon, a is not"
        );
    }

    #[test]
    fn a_repeated_new_style_event_has_its_latest_time() {
        let e: Event = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "x", "namespace": "shop", "uid": "n"},
            "involvedObject": {"kind": "Pod", "name": "web-1", "namespace": "shop"},
            "reason": "FailedScheduling", "type": "Warning",
            "eventTime": "2026-11-22T00:00:00.000000Z",
            "series": {"count": 4, "lastObservedTime": "2026-11-22T01:00:00.250000Z"},
            "reportingComponent": "default-scheduler", "reportingInstance": "s"
        }))
        .unwrap();
        assert_eq!(event_time_ms(&e), 1_795_309_200_250);
        assert_eq!(count(&e), 4);
    }

    #[test]
    fn a_warning_event_is_an_event_of_its_application() {
        let e = kube_event(
            "prod",
            &event("a", "2026-11-22T01:00:00Z", 3),
            "web",
            i64::MAX,
        );
        assert_eq!(
            (e.kind.as_str(), e.reason.as_str(), e.object.as_str()),
            ("Warning", "BackOff", "Pod/shop/web-1")
        );
        assert_eq!(e.message, "Back-off restarting failed container");
        assert_eq!(e.time_unix_nano, 1_795_309_200_000_000_000);
        let resource = e.resource.clone().unwrap();
        assert_eq!(
            (resource.namespace.as_str(), resource.application.as_str()),
            ("shop", "web")
        );
        let attr = |n: &str| {
            e.resource_attributes
                .iter()
                .find(|l| l.name == n)
                .map(|l| l.value.as_str())
        };
        assert_eq!(attr("k8s.event.count"), Some("3"));
        assert_eq!(attr("k8s.event.source"), Some("kubelet"));
        // A clock ahead of ours: the event is not put in the future.
        let late = kube_event("prod", &event("a", "2026-11-22T01:00:00Z", 3), "web", 5);
        assert_eq!(late.time_unix_nano, 5_000_000);
    }

    #[test]
    fn flux_readiness_changes_become_events() {
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
        assert_eq!(
            (
                failed.kind.as_str(),
                failed.reason.as_str(),
                failed.object.as_str()
            ),
            ("Flux", "BuildFailed", "Kustomization/flux-system/apps")
        );
        assert_eq!(
            failed.message,
            "reconciliation failed: kustomize build failed"
        );
        // Still failing the same way, or reconciling again: no event, and
        // still not ready.
        assert!(
            flux.observe("c", "Kustomization", &obj("False", "BuildFailed"), 3)
                .is_none()
        );
        assert!(
            flux.observe("c", "Kustomization", &obj("Unknown", "Progressing"), 3)
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
        assert_eq!(back.reason, "ReconciliationSucceeded");
        // A healthy object's next reconciliation: no events, ready all along.
        for status in [
            ("Unknown", "Progressing"),
            ("True", "ReconciliationSucceeded"),
        ] {
            assert!(
                flux.observe("c", "Kustomization", &obj(status.0, status.1), 5)
                    .is_none()
            );
            assert_eq!(flux.series(6)[0].samples[0].value, 1.0, "{status:?}");
        }
        assert!(flux.series(6)[0].labels.iter().all(|l| l.name != "reason"));
    }
}
