//! Inspections over generated figures, and the incident lifecycle in a real
//! redb file: `for`, keep-firing hysteresis, escalation, root-cause hints,
//! the outbox, and a restart in the middle of an incident.

use std::{collections::BTreeMap, path::Path};

use vigil_alerting::{
    AlertingConfig, Settings, catalog,
    evaluate::{self, Figures},
    incidents::{IncidentStore, RoundContext, Transition, deployment_notification, notification},
};
use vigil_notify::{Kind, Outbox, Severity};
use vigil_proto::query::v1 as pb;

fn config(toml: &str) -> AlertingConfig {
    let value: toml::Value = toml::from_str(toml).expect("TOML");
    value.try_into().expect("config")
}

fn settings(toml: &str) -> Settings {
    Settings::new(&config(toml)).expect("settings")
}

fn red(requests: f64, errors: f64) -> pb::Red {
    pb::Red {
        requests,
        errors,
        error_ratio: if requests > 0.0 {
            errors / requests
        } else {
            0.0
        },
        ..pb::Red::default()
    }
}

/// An application whose availability burns `burn`x its budget.
fn app(name: &str, burn: Option<f64>) -> pb::GetApplicationResponse {
    pb::GetApplicationResponse {
        summary: Some(pb::ApplicationSummary {
            name: name.into(),
            inbound: Some(red(1000.0, burn.unwrap_or(0.0) * 10.0)),
            ..pb::ApplicationSummary::default()
        }),
        slo: Some(pb::Slo {
            availability_objective_percent: 99.0,
            availability_percent: burn.map(|b| 100.0 - b),
            availability_burn_rate: burn,
            ..pb::Slo::default()
        }),
        ..pb::GetApplicationResponse::default()
    }
}

fn upstream(name: &str, connects: f64, failed: f64) -> pb::Upstream {
    pb::Upstream {
        name: name.into(),
        connects,
        failed_connects: failed,
        ..pb::Upstream::default()
    }
}

/// `frontend` calls `backend`; the SLO burns at `burn` in every window.
fn figures(burn: Option<f64>, failed: f64) -> Figures {
    let mut frontend = app("frontend", burn);
    frontend.upstreams = vec![upstream(
        "backend",
        if failed > 0.0 { 0.0 } else { 10.0 },
        failed,
    )];
    let backend = app("backend", None);
    let all = vec![frontend, backend];
    Figures {
        w5m: all.clone(),
        w30m: all.clone(),
        w1h: all.clone(),
        w6h: all,
        ..Figures::default()
    }
}

fn firing<'a>(
    obs: &'a [evaluate::Observation],
    id: &str,
    subject: &str,
) -> Option<&'a evaluate::Firing> {
    obs.iter()
        .find(|o| o.inspection.id == id && o.subject == subject)
        .and_then(|o| o.firing.as_ref())
}

#[test]
fn slo_fires_on_both_windows_of_a_pair_only() {
    let s = settings("");
    let obs = evaluate::evaluate(&s, &figures(Some(20.0), 0.0));
    let f = firing(&obs, catalog::SLO_AVAILABILITY, "frontend").expect("fast burn fires");
    assert_eq!(f.severity, Severity::Critical);
    assert!(f.summary.contains("20x (1 h)"), "{}", f.summary);

    // 20x over 5 min but only 2x over the hour: a blip, not a page.
    let mut fig = figures(Some(20.0), 0.0);
    fig.w1h = figures(Some(2.0), 0.0).w1h;
    fig.w6h = fig.w1h.clone();
    let obs = evaluate::evaluate(&s, &fig);
    assert!(firing(&obs, catalog::SLO_AVAILABILITY, "frontend").is_none());

    // 8x everywhere: the slow pair (6 h and 30 min over 6x) warns.
    let obs = evaluate::evaluate(&s, &figures(Some(8.0), 0.0));
    assert_eq!(
        firing(&obs, catalog::SLO_AVAILABILITY, "frontend").map(|f| f.severity),
        Some(Severity::Warning)
    );
    // Without requests there is no burn rate to judge: not observed at all.
    assert!(
        !obs.iter()
            .any(|o| o.inspection.id == catalog::SLO_AVAILABILITY && o.subject == "backend")
    );
}

#[test]
fn connection_failures_name_the_upstream() {
    let obs = evaluate::evaluate(&settings(""), &figures(None, 12.0));
    let failed = firing(&obs, catalog::FAILED_CONNECTS, "frontend").expect("fires");
    assert_eq!(failed.upstreams, ["backend"]);
    assert!(
        failed.summary.contains("12 failed TCP connects to backend"),
        "{}",
        failed.summary
    );
    let unreachable = firing(&obs, catalog::UPSTREAM_UNREACHABLE, "frontend").expect("fires");
    assert_eq!(unreachable.severity, Severity::Critical);
    let obs = evaluate::evaluate(&settings(""), &figures(None, 0.0));
    assert!(firing(&obs, catalog::FAILED_CONNECTS, "frontend").is_none());
}

#[test]
fn a_glob_override_changes_the_threshold_only_where_it_matches() {
    let with_cpu = |name: &str, cores: f64| {
        let mut a = app(name, None);
        a.resources = Some(pb::Resources {
            cpu_usage_cores: Some(cores),
            cpu_limit_cores: Some(1.0),
            ..pb::Resources::default()
        });
        a
    };
    let fig = Figures {
        w5m: vec![with_cpu("batch-report", 0.9), with_cpu("orders", 0.9)],
        ..Figures::default()
    };
    let s = settings(
        "[[overrides]]\napplication = \"batch-*\"\ninspection = \"container_cpu\"\nthreshold = 95\n",
    );
    let obs = evaluate::evaluate(&s, &fig);
    assert!(
        firing(&obs, catalog::CONTAINER_CPU, "orders").is_some(),
        "90% > 80% by default"
    );
    assert!(
        firing(&obs, catalog::CONTAINER_CPU, "batch-report").is_none(),
        "90% < 95% for batch-*"
    );
}

#[test]
fn nodes_disks_deployments_and_logs() {
    let mut logged = app("api", None);
    logged.logs = Some(pb::LogFigures {
        messages: 100.0,
        errors: 50.0,
        errors_by_pattern: [("00000000000000aa".to_owned(), 50.0)]
            .into_iter()
            .collect(),
        ..pb::LogFigures::default()
    });
    let mut usual = app("api", None);
    usual.logs = Some(pb::LogFigures {
        messages: 1000.0,
        errors: 60.0,
        ..pb::LogFigures::default()
    });
    let fig = Figures {
        w5m: vec![logged],
        w6h: vec![usual],
        hosts: vec![pb::Host {
            node: "n1".into(),
            cpu_usage_ratio: Some(0.97),
            memory_usage_ratio: Some(0.5),
            ..pb::Host::default()
        }],
        disks: vec![evaluate::Disk {
            node: "n1".into(),
            mount_point: "/var".into(),
            used_ratio: 0.85,
        }],
        deployments: vec![evaluate::Deployment {
            application: "api".into(),
            desired: 4.0,
            available: Some(2.0),
            updated: Some(4.0),
            generation: Some(7.0),
        }],
        flux: vec![
            evaluate::FluxObject {
                kind: "Kustomization".into(),
                namespace: "flux-system".into(),
                name: "apps".into(),
                ready: false,
            },
            evaluate::FluxObject {
                kind: "HelmRelease".into(),
                namespace: "db".into(),
                name: "postgres".into(),
                ready: true,
            },
        ],
        ..Figures::default()
    };
    let obs = evaluate::evaluate(&settings(""), &fig);
    let flux = firing(&obs, catalog::FLUX_NOT_READY, "apps").expect("apps is not ready");
    assert_eq!(
        flux.summary,
        "apps: Flux Kustomization flux-system/apps not ready for over 5m (its events give the reason)"
    );
    assert!(firing(&obs, catalog::FLUX_NOT_READY, "postgres").is_none());
    assert_eq!(
        firing(&obs, catalog::NODE_CPU, "node/n1").map(|f| f.severity),
        Some(Severity::Critical)
    );
    assert!(firing(&obs, catalog::NODE_MEMORY, "node/n1").is_none());
    assert!(firing(&obs, catalog::DISK_SPACE, "node/n1//var").is_some());
    let available = firing(&obs, catalog::INSTANCES_AVAILABLE, "api").expect("2 of 4 is under 75%");
    assert_eq!(
        available.severity,
        Severity::Warning,
        "50% is not under the critical 50%"
    );
    assert!(firing(&obs, catalog::ROLLOUT_STUCK, "api").is_none());
    let errors = firing(&obs, catalog::LOG_ERRORS, "api").expect("errors fire");
    assert!(
        errors
            .details
            .iter()
            .any(|d| d.value.starts_with("00000000000000aa"))
    );
    // 50 in 5 min against 60 in 6 h: 60x the usual rate.
    let spike = firing(&obs, catalog::LOG_ERROR_SPIKE, "api").expect("spike");
    assert!((spike.value - 60.0).abs() < 1e-9, "{}", spike.value);
}

struct Harness {
    store: IncidentStore,
    upstreams: BTreeMap<String, Vec<String>>,
}

impl Harness {
    fn open(path: &Path) -> Self {
        Self {
            store: IncidentStore::open(path).expect("store"),
            upstreams: [("frontend".to_owned(), vec!["backend".to_owned()])]
                .into_iter()
                .collect(),
        }
    }

    fn round(&self, s: &Settings, fig: &Figures, now: i64) -> Vec<Transition> {
        self.round_with(s, fig, now, &[])
    }

    fn round_with(
        &self,
        s: &Settings,
        fig: &Figures,
        now: i64,
        generations: &[(String, i64)],
    ) -> Vec<Transition> {
        let obs = evaluate::evaluate(s, fig);
        let notice = |app: &str, generation: i64, previous: i64| {
            let n = deployment_notification(
                "default",
                app,
                (previous, generation),
                now,
                "vigil-alerting",
                None,
            );
            Some((n, vec!["hook".to_owned()]))
        };
        let notify = |t: &Transition| {
            notification(t, "vigil-alerting", None).map(|n| (n, vec!["hook".to_owned()]))
        };
        self.store
            .apply(
                &RoundContext {
                    project: "default",
                    now_ms: now,
                    upstreams: &self.upstreams,
                    notify: &notify,
                    generations,
                    notice: &notice,
                },
                &obs,
            )
            .expect("round")
    }

    fn outbox(&self) -> Vec<(String, Kind)> {
        Outbox::open(self.store.database())
            .expect("outbox")
            .entries()
            .expect("entries")
            .into_iter()
            .map(|(_, e)| (e.notification.title, e.notification.kind))
            .collect()
    }
}

fn opened(t: &[Transition]) -> Vec<String> {
    let mut v: Vec<String> = t
        .iter()
        .filter_map(|t| match t {
            Transition::Opened(i) => Some(format!("{}:{}", i.inspection, i.subject)),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

fn resolved(t: &[Transition]) -> Vec<String> {
    let mut v: Vec<String> = t
        .iter()
        .filter_map(|t| match t {
            Transition::Resolved(i) => Some(format!("{}:{}", i.inspection, i.subject)),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

const SEC: i64 = 1000;

#[test]
fn for_keep_firing_and_a_restart_in_the_middle() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("alerting.redb");
    // failed_connects waits 30 s; the SLO opens at once; both keep firing 60 s.
    let s = settings(
        "[inspections.failed_connects]\nfor = \"30s\"\nkeep_firing_for = \"60s\"\n[inspections.upstream_unreachable]\nenabled = false\n[inspections.slo_availability]\nkeep_firing_for = \"60s\"\n",
    );
    let broken = figures(Some(30.0), 5.0);
    let healthy = figures(Some(0.0), 0.0);
    let t0 = 1_700_000_000_000;
    {
        let h = Harness::open(&path);
        // The connection failures begin 40 s before the SLO burns.
        assert!(
            opened(&h.round(&s, &figures(None, 5.0), t0)).is_empty(),
            "pending for 30 s"
        );
        assert_eq!(
            opened(&h.round(&s, &figures(None, 5.0), t0 + 30 * SEC)),
            ["failed_connects:frontend"]
        );
        let t = h.round(&s, &broken, t0 + 40 * SEC);
        assert_eq!(opened(&t), ["slo_availability:frontend"]);
        let Some(Transition::Opened(slo)) = t.iter().find(|t| matches!(t, Transition::Opened(_)))
        else {
            panic!("opened");
        };
        let hint = slo.root_cause.as_ref().expect("a root-cause hint");
        assert_eq!(hint.upstream, "backend");
        assert_eq!(hint.inspection, catalog::FAILED_CONNECTS);
        assert_eq!(hint.lead_ms, 40 * SEC);
        assert!(
            hint.text.contains("frontend → backend") && hint.text.contains("40 s before"),
            "{}",
            hint.text
        );
        assert_eq!(h.outbox().len(), 2, "two triggers queued");
    }
    // The worker restarts mid-incident: nothing opens twice.
    let h = Harness::open(&path);
    let open = h.store.open_incidents("default").expect("open");
    let keys: Vec<&(String, String)> = open.keys().collect();
    assert_eq!(
        keys,
        [
            &("failed_connects".to_owned(), "frontend".to_owned()),
            &("slo_availability".to_owned(), "frontend".to_owned())
        ]
    );
    let t = h.round(&s, &broken, t0 + 50 * SEC);
    assert!(opened(&t).is_empty() && resolved(&t).is_empty(), "{t:?}");
    assert_eq!(
        h.store
            .list("default", Some(true), 100)
            .expect("list")
            .len(),
        2
    );
    // Healthy again: both keep firing for 60 s, then resolve once.
    assert!(resolved(&h.round(&s, &healthy, t0 + 60 * SEC)).is_empty());
    assert!(resolved(&h.round(&s, &healthy, t0 + 100 * SEC)).is_empty());
    drop(h);
    let h = Harness::open(&path);
    assert_eq!(
        resolved(&h.round(&s, &healthy, t0 + 111 * SEC)),
        ["failed_connects:frontend", "slo_availability:frontend"]
    );
    assert!(
        resolved(&h.round(&s, &healthy, t0 + 200 * SEC)).is_empty(),
        "resolved once"
    );
    let kinds: Vec<Kind> = h.outbox().into_iter().map(|(_, k)| k).collect();
    assert_eq!(
        kinds,
        [Kind::Trigger, Kind::Trigger, Kind::Resolve, Kind::Resolve]
    );
    assert!(
        h.store
            .list("default", Some(true), 100)
            .expect("list")
            .is_empty()
    );
    assert_eq!(
        h.store
            .list("default", Some(false), 100)
            .expect("list")
            .len(),
        2
    );
    // Retention: nothing resolved after the cut goes; then both go.
    assert_eq!(h.store.prune("default", t0 + 111 * SEC).expect("prune"), 0);
    assert_eq!(h.store.prune("default", t0 + 112 * SEC).expect("prune"), 2);
    assert!(h.store.list("default", None, 100).expect("list").is_empty());
}

#[test]
fn a_flap_shorter_than_keep_firing_stays_one_incident_and_escalation_notifies() {
    let dir = tempfile::tempdir().expect("dir");
    let h = Harness::open(&dir.path().join("a.redb"));
    let s = settings("[inspections.slo_availability]\nkeep_firing_for = \"60s\"\n");
    let t0 = 1_700_000_000_000;
    assert_eq!(
        opened(&h.round(&s, &figures(Some(8.0), 0.0), t0)),
        ["slo_availability:frontend"]
    );
    assert!(resolved(&h.round(&s, &figures(Some(0.0), 0.0), t0 + 10 * SEC)).is_empty());
    assert_eq!(
        h.store.prune("default", t0 + 1_000 * SEC).expect("prune"),
        0,
        "open incidents are never pruned"
    );
    let t = h.round(&s, &figures(Some(20.0), 0.0), t0 + 20 * SEC);
    assert!(opened(&t).is_empty(), "the same incident, not a new one");
    assert!(t.iter().any(|t| matches!(t, Transition::Updated { escalated: true, incident } if incident.severity == Severity::Critical)));
    let kinds: Vec<Kind> = h.outbox().into_iter().map(|(_, k)| k).collect();
    assert_eq!(
        kinds,
        [Kind::Trigger, Kind::Trigger],
        "the escalation is notified with the same key"
    );
    // A disabled inspection resolves its incident.
    let off =
        settings("[inspections.slo_availability]\nenabled = false\nkeep_firing_for = \"0s\"\n");
    assert_eq!(
        resolved(&h.round(&off, &figures(Some(20.0), 0.0), t0 + 30 * SEC)),
        ["slo_availability:frontend"]
    );
}

#[test]
fn a_new_generation_is_one_deployment_notice_even_across_a_restart() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("a.redb");
    let s = settings("");
    let healthy = figures(None, 0.0);
    let t0 = 1_700_000_000_000;
    let api = |g: i64| vec![("api".to_owned(), g)];
    {
        let h = Harness::open(&path);
        h.round_with(&s, &healthy, t0, &api(3));
        assert!(h.outbox().is_empty(), "the first sight is not a rollout");
        h.round_with(&s, &healthy, t0 + 1000, &api(3));
        h.round_with(&s, &healthy, t0 + 2000, &api(4));
        assert_eq!(
            h.outbox(),
            [("api: new rollout".to_owned(), Kind::Deployment)]
        );
    }
    let h = Harness::open(&path);
    h.round_with(&s, &healthy, t0 + 3000, &api(4));
    h.round_with(&s, &healthy, t0 + 4000, &api(2)); // a re-created Deployment
    assert_eq!(
        h.outbox().len(),
        1,
        "not repeated after a restart, nor for a smaller generation"
    );
    h.round_with(&s, &healthy, t0 + 5000, &api(3));
    assert_eq!(h.outbox().len(), 2, "a rollout after the re-creation");
}
