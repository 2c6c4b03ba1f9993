//! Inspections: pure functions from query results to findings, so that they
//! can be tested without servers. The worker applies their outcome to the
//! incident store.

use vigil_proto::query::v1::Host;

use crate::{
    InspectionsConfig, ThresholdConfig,
    incidents::{Finding, IncidentStore, Severity, Transition},
};

pub const HOST_CPU: &str = "host_cpu";
pub const HOST_MEMORY: &str = "host_memory";

/// The outcome of one round: what fires, and what was checked and is fine.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Evaluation {
    pub project: String,
    pub firing: Vec<Finding>,
    /// (inspection, subject) pairs checked and found healthy.
    pub healthy: Vec<(String, String)>,
}

fn subject(host: &Host) -> String {
    if host.cluster.is_empty() {
        format!("node={}", host.node)
    } else {
        format!("cluster={},node={}", host.cluster, host.node)
    }
}

fn check(
    evaluation: &mut Evaluation,
    inspection: &str,
    what: &str,
    config: &ThresholdConfig,
    host: &Host,
    ratio: Option<f64>,
) {
    let Some(ratio) = ratio.filter(|_| config.enabled) else {
        return; // no figure: neither firing nor known healthy
    };
    let percent = ratio * 100.0;
    let subject = subject(host);
    if percent > config.threshold_percent {
        let severity = if percent > config.critical_percent {
            Severity::Critical
        } else {
            Severity::Warning
        };
        evaluation.firing.push(Finding {
            project: evaluation.project.clone(),
            inspection: inspection.to_owned(),
            summary: format!(
                "{what} on {} is {percent:.1}% (threshold {:.1}%)",
                host.node, config.threshold_percent
            ),
            subject,
            severity,
            value: percent,
            threshold: config.threshold_percent,
        });
    } else {
        evaluation.healthy.push((inspection.to_owned(), subject));
    }
}

/// Host CPU and memory against their thresholds.
pub fn evaluate_hosts(project: &str, config: &InspectionsConfig, hosts: &[Host]) -> Evaluation {
    let mut evaluation = Evaluation {
        project: project.to_owned(),
        ..Evaluation::default()
    };
    for host in hosts {
        check(
            &mut evaluation,
            HOST_CPU,
            "CPU usage",
            &config.host_cpu,
            host,
            host.cpu_usage_ratio,
        );
        check(
            &mut evaluation,
            HOST_MEMORY,
            "Memory usage",
            &config.host_memory,
            host,
            host.memory_usage_ratio,
        );
    }
    evaluation
}

impl Evaluation {
    /// Records firing findings and resolves the open incidents of healthy subjects.
    pub fn apply(
        &self,
        store: &IncidentStore,
        now_ms: i64,
    ) -> Result<Vec<Transition>, vigil_storage::StorageError> {
        let mut transitions = Vec::new();
        for finding in &self.firing {
            transitions.push(store.record(finding, now_ms)?);
        }
        for (inspection, subject) in &self.healthy {
            if let Some(incident) = store.resolve(&self.project, inspection, subject, now_ms)? {
                transitions.push(Transition::Resolved(incident));
            }
        }
        Ok(transitions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(node: &str, cpu: Option<f64>, mem: Option<f64>) -> Host {
        Host {
            node: node.into(),
            cpu_usage_ratio: cpu,
            memory_usage_ratio: mem,
            ..Host::default()
        }
    }

    #[test]
    fn thresholds_and_severity() {
        let config = InspectionsConfig::default();
        let e = evaluate_hosts(
            "p",
            &config,
            &[
                host("a", Some(0.95), Some(0.5)),
                host("b", Some(0.99), None),
            ],
        );
        assert_eq!(e.firing.len(), 2);
        assert_eq!(e.firing[0].severity, Severity::Warning);
        assert_eq!(e.firing[0].subject, "node=a");
        assert!(
            e.firing[0].summary.contains("95.0%"),
            "{}",
            e.firing[0].summary
        );
        assert_eq!(e.firing[1].severity, Severity::Critical);
        assert_eq!(
            e.healthy,
            vec![(HOST_MEMORY.to_owned(), "node=a".to_owned())]
        );
    }

    #[test]
    fn disabled_inspection_never_fires() {
        let mut config = InspectionsConfig::default();
        config.host_cpu.enabled = false;
        let e = evaluate_hosts("p", &config, &[host("a", Some(1.0), None)]);
        assert!(e.firing.is_empty() && e.healthy.is_empty());
    }

    #[test]
    fn apply_opens_then_resolves() {
        let dir = tempfile::tempdir().unwrap();
        let store = IncidentStore::open(&dir.path().join("a.redb")).unwrap();
        let config = InspectionsConfig::default();
        let t = evaluate_hosts("p", &config, &[host("a", Some(0.95), None)])
            .apply(&store, 1)
            .unwrap();
        assert!(matches!(&t[..], [Transition::Opened(_)]));
        let t = evaluate_hosts("p", &config, &[host("a", Some(0.10), None)])
            .apply(&store, 2)
            .unwrap();
        assert!(matches!(&t[..], [Transition::Resolved(i)] if i.resolved_at_ms == Some(2)));
    }
}
