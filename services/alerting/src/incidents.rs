//! Incidents and their lifecycle, kept in redb: open → update → resolve.
//!
//! A tracker per (project, inspection, subject) remembers since when an
//! inspection fires and when it last did. An incident opens once it has
//! fired for the inspection's `for`, and resolves once it has not fired for
//! `keep_firing_for`. One round is one write transaction: the incidents,
//! the trackers and the notifications they cause (the outbox) are stored
//! together, so a restart neither repeats nor forgets a notification.

use std::{collections::BTreeMap, path::Path, sync::Arc};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use vigil_notify::{Field, Kind, Notification, Outbox, Severity};
use vigil_runtime::time::millis;
use vigil_storage::{
    StorageError,
    redb::{decode_record, encode_record, open_database},
};

use crate::{catalog, evaluate::Observation};

const INCIDENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("incidents_v2");
/// (project, opened_at_ms, id): listing newest first.
const BY_TIME: TableDefinition<(&str, i64, &str), ()> = TableDefinition::new("incidents_by_time");
const TRACKERS: TableDefinition<(&str, &str, &str), &[u8]> = TableDefinition::new("trackers");
/// (project, application) → the last observed generation of its Deployment.
const GENERATIONS: TableDefinition<(&str, &str), i64> =
    TableDefinition::new("deployment_generations");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tracker {
    pub first_firing_ms: i64,
    pub last_firing_ms: i64,
    pub incident: Option<String>,
    pub upstreams: Vec<String>,
}

/// The likely cause: an upstream whose own problems began first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RootCause {
    pub upstream: String,
    pub inspection: String,
    /// How long before the incident's own inspection began to fire (< 0: after).
    pub lead_ms: i64,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub id: String,
    pub project: String,
    pub inspection: String,
    pub category: String,
    pub subject: String,
    pub application: Option<String>,
    pub severity: Severity,
    pub summary: String,
    pub details: Vec<Field>,
    pub root_cause: Option<RootCause>,
    /// When the inspection began to fire.
    pub started_at_ms: i64,
    pub opened_at_ms: i64,
    pub updated_at_ms: i64,
    pub resolved_at_ms: Option<i64>,
    pub value: f64,
    pub threshold: f64,
    pub acknowledged_by: Option<String>,
    pub acknowledged_at_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    Opened(Incident),
    /// Still firing; `escalated` when it became critical.
    Updated {
        incident: Incident,
        escalated: bool,
    },
    Resolved(Incident),
}

impl Transition {
    pub fn incident(&self) -> &Incident {
        match self {
            Transition::Opened(i)
            | Transition::Resolved(i)
            | Transition::Updated { incident: i, .. } => i,
        }
    }
}

/// Builds a transition's notification and names the integrations taking it.
pub type Notify<'a> = dyn Fn(&Transition) -> Option<(Notification, Vec<String>)> + 'a;

/// Builds the notification of a rollout (application, generation, the
/// previous one) and names the integrations taking it.
pub type Notice<'a> = dyn Fn(&str, i64, i64) -> Option<(Notification, Vec<String>)> + 'a;

/// What a round needs besides its observations.
pub struct RoundContext<'a> {
    pub project: &'a str,
    pub now_ms: i64,
    /// application → its upstreams (service map edges).
    pub upstreams: &'a BTreeMap<String, Vec<String>>,
    /// Builds the notification of a transition and names the integrations
    /// that take it.
    pub notify: &'a Notify<'a>,
    /// Deployments' observed generations now: a larger one than last seen
    /// is a rollout, notified once.
    pub generations: &'a [(String, i64)],
    pub notice: &'a Notice<'a>,
}

#[derive(Debug, Clone)]
pub struct IncidentStore {
    db: Arc<Database>,
}

impl IncidentStore {
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        let db = Arc::new(open_database(path)?);
        let txn = db.begin_write()?;
        txn.open_table(INCIDENTS)?;
        txn.open_table(BY_TIME)?;
        txn.open_table(TRACKERS)?;
        txn.open_table(GENERATIONS)?;
        txn.commit()?;
        Ok(Self { db })
    }

    pub fn database(&self) -> Arc<Database> {
        self.db.clone()
    }

    /// Applies one round's observations. Trackers of subjects not observed
    /// this round count as not firing (the application is gone, or the
    /// inspection was disabled).
    pub fn apply(
        &self,
        round: &RoundContext<'_>,
        observations: &[Observation],
    ) -> Result<Vec<Transition>, StorageError> {
        let now = round.now_ms;
        let txn = self.db.begin_write()?;
        let mut transitions = Vec::new();
        {
            let mut incidents = txn.open_table(INCIDENTS)?;
            let mut by_time = txn.open_table(BY_TIME)?;
            let mut trackers_table = txn.open_table(TRACKERS)?;
            let mut trackers: BTreeMap<(String, String), Tracker> = BTreeMap::new();
            for entry in trackers_table.range((round.project, "", "")..)? {
                let (k, v) = entry?;
                let (project, inspection, subject) = k.value();
                if project != round.project {
                    break;
                }
                trackers.insert(
                    (inspection.to_owned(), subject.to_owned()),
                    decode_record(v.value())?,
                );
            }
            let before = trackers.clone();
            let mut firing: BTreeMap<(String, String), &Observation> = BTreeMap::new();
            for o in observations {
                let Some(f) = &o.firing else { continue };
                let key = (o.inspection.id.to_owned(), o.subject.clone());
                let t = trackers.entry(key.clone()).or_insert(Tracker {
                    first_firing_ms: now,
                    last_firing_ms: now,
                    incident: None,
                    upstreams: Vec::new(),
                });
                t.last_firing_ms = now;
                t.upstreams.clone_from(&f.upstreams);
                firing.insert(key, o);
            }
            let effective: BTreeMap<(&str, &str), &Observation> = observations
                .iter()
                .map(|o| ((o.inspection.id, o.subject.as_str()), o))
                .collect();
            let keys: Vec<(String, String)> = trackers.keys().cloned().collect();
            for key in keys {
                let Some(mut t) = trackers.get(&key).cloned() else {
                    continue;
                };
                let (inspection_id, subject) = (&key.0, &key.1);
                let inspection = catalog::find(inspection_id);
                if let Some(o) = firing.get(&key) {
                    let f = o
                        .firing
                        .as_ref()
                        .expect("firing observations carry a finding");
                    match &t.incident {
                        None if now - t.first_firing_ms >= millis(o.effective.for_) => {
                            let root_cause = o.application.as_deref().and_then(|app| {
                                root_cause(
                                    app,
                                    inspection_id,
                                    t.first_firing_ms,
                                    &trackers,
                                    round.upstreams,
                                )
                            });
                            let incident = Incident {
                                id: uuid::Uuid::new_v4().to_string(),
                                project: round.project.to_owned(),
                                inspection: inspection_id.clone(),
                                category: o.inspection.category.to_owned(),
                                subject: subject.clone(),
                                application: o.application.clone(),
                                severity: f.severity,
                                summary: f.summary.clone(),
                                details: f.details.clone(),
                                root_cause,
                                started_at_ms: t.first_firing_ms,
                                opened_at_ms: now,
                                updated_at_ms: now,
                                resolved_at_ms: None,
                                value: f.value,
                                threshold: f.threshold,
                                acknowledged_by: None,
                                acknowledged_at_ms: None,
                            };
                            t.incident = Some(incident.id.clone());
                            transitions.push(Transition::Opened(incident));
                        }
                        None => {} // pending: not for long enough yet
                        Some(id) => {
                            if let Some(v) = incidents.get(id.as_str())? {
                                let mut incident: Incident = decode_record(v.value())?;
                                let escalated = f.severity > incident.severity;
                                incident.severity = incident.severity.max(f.severity);
                                incident.summary.clone_from(&f.summary);
                                incident.details.clone_from(&f.details);
                                incident.value = f.value;
                                incident.threshold = f.threshold;
                                incident.updated_at_ms = now;
                                transitions.push(Transition::Updated {
                                    incident,
                                    escalated,
                                });
                            }
                        }
                    }
                    trackers.insert(key, t);
                    continue;
                }
                // Not firing this round.
                let keep = effective
                    .get(&(inspection_id.as_str(), subject.as_str()))
                    .map(|o| o.effective.keep_firing_for)
                    .or(inspection.map(|i| i.keep_firing_for))
                    .unwrap_or_default();
                match &t.incident {
                    None => {
                        trackers.remove(&key);
                    }
                    Some(id) if now - t.last_firing_ms >= millis(keep) => {
                        if let Some(v) = incidents.get(id.as_str())? {
                            let mut incident: Incident = decode_record(v.value())?;
                            incident.resolved_at_ms = Some(now);
                            incident.updated_at_ms = now;
                            transitions.push(Transition::Resolved(incident));
                        }
                        trackers.remove(&key);
                    }
                    Some(_) => {} // keeps firing for a while
                }
            }
            for t in &transitions {
                let incident = t.incident();
                incidents.insert(incident.id.as_str(), encode_record(incident)?.as_slice())?;
                if let Transition::Opened(i) = t {
                    by_time.insert((i.project.as_str(), i.opened_at_ms, i.id.as_str()), ())?;
                }
                if let Some((n, to)) = (round.notify)(t) {
                    Outbox::enqueue(&txn, &n, &to, now)?;
                }
            }
            for (key, t) in &trackers {
                if before.get(key) != Some(t) {
                    trackers_table.insert(
                        (round.project, key.0.as_str(), key.1.as_str()),
                        encode_record(t)?.as_slice(),
                    )?;
                }
            }
            for key in before.keys().filter(|k| !trackers.contains_key(*k)) {
                trackers_table.remove((round.project, key.0.as_str(), key.1.as_str()))?;
            }
            let mut generations = txn.open_table(GENERATIONS)?;
            for (app, generation) in round.generations {
                let previous = generations
                    .get((round.project, app.as_str()))?
                    .map(|v| v.value());
                if previous == Some(*generation) {
                    continue;
                }
                // The first sight of a Deployment is not a rollout.
                if let Some(previous) = previous.filter(|p| generation > p)
                    && let Some((n, to)) = (round.notice)(app, *generation, previous)
                {
                    Outbox::enqueue(&txn, &n, &to, now)?;
                }
                generations.insert((round.project, app.as_str()), *generation)?;
            }
        }
        txn.commit()?;
        Ok(transitions)
    }

    pub fn get(&self, id: &str) -> Result<Option<Incident>, StorageError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(INCIDENTS)?;
        table.get(id)?.map(|v| decode_record(v.value())).transpose()
    }

    /// A project's incidents, newest first, at most `limit`.
    pub fn list(
        &self,
        project: &str,
        open_only: Option<bool>,
        limit: usize,
    ) -> Result<Vec<Incident>, StorageError> {
        let txn = self.db.begin_read()?;
        let by_time = txn.open_table(BY_TIME)?;
        let incidents = txn.open_table(INCIDENTS)?;
        let mut out = Vec::new();
        for entry in by_time
            .range((project, i64::MIN, "")..=(project, i64::MAX, "\u{10ffff}"))?
            .rev()
        {
            let (k, _) = entry?;
            let (_, _, id) = k.value();
            let Some(v) = incidents.get(id)? else {
                continue;
            };
            let incident: Incident = decode_record(v.value())?;
            if open_only.is_some_and(|open| open != incident.resolved_at_ms.is_none()) {
                continue;
            }
            out.push(incident);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// The open incidents' ids by (inspection, subject), from the trackers
    /// (not a scan of every incident kept).
    pub fn open_incidents(
        &self,
        project: &str,
    ) -> Result<BTreeMap<(String, String), String>, StorageError> {
        let txn = self.db.begin_read()?;
        let trackers = txn.open_table(TRACKERS)?;
        let mut out = BTreeMap::new();
        for entry in trackers.range((project, "", "")..)? {
            let (k, v) = entry?;
            let (p, inspection, subject) = k.value();
            if p != project {
                break;
            }
            let t: Tracker = decode_record(v.value())?;
            if let Some(id) = t.incident {
                out.insert((inspection.to_owned(), subject.to_owned()), id);
            }
        }
        Ok(out)
    }

    /// Deletes the project's incidents resolved before `before_ms`; open
    /// ones stay whatever their age. Returns how many went.
    pub fn prune(&self, project: &str, before_ms: i64) -> Result<usize, StorageError> {
        let txn = self.db.begin_write()?;
        let mut gone = Vec::new();
        {
            let mut by_time = txn.open_table(BY_TIME)?;
            let mut incidents = txn.open_table(INCIDENTS)?;
            // Resolved before `before_ms` means opened before it too.
            for entry in by_time.range((project, i64::MIN, "")..(project, before_ms, ""))? {
                let (k, _) = entry?;
                let (_, opened, id) = k.value();
                let Some(v) = incidents.get(id)? else {
                    gone.push((opened, id.to_owned()));
                    continue;
                };
                let incident: Incident = decode_record(v.value())?;
                if incident.resolved_at_ms.is_some_and(|r| r < before_ms) {
                    gone.push((opened, id.to_owned()));
                }
            }
            for (opened, id) in &gone {
                by_time.remove((project, *opened, id.as_str()))?;
                incidents.remove(id.as_str())?;
            }
        }
        txn.commit()?;
        Ok(gone.len())
    }

    /// Marks an incident acknowledged; `Ok(None)` if there is no such one.
    pub fn acknowledge(
        &self,
        project: &str,
        id: &str,
        by: &str,
        now_ms: i64,
    ) -> Result<Option<Incident>, StorageError> {
        let txn = self.db.begin_write()?;
        let incident = {
            let mut incidents = txn.open_table(INCIDENTS)?;
            let found: Option<Incident> = incidents
                .get(id)?
                .map(|v| decode_record(v.value()))
                .transpose()?;
            match found.filter(|i| i.project == project) {
                None => None,
                Some(mut incident) => {
                    incident.acknowledged_by = Some(by.to_owned());
                    incident.acknowledged_at_ms = Some(now_ms);
                    incidents.insert(id, encode_record(&incident)?.as_slice())?;
                    Some(incident)
                }
            }
        };
        txn.commit()?;
        Ok(incident)
    }
}

/// Inspections about an application's calls to one upstream.
const EDGE_INSPECTIONS: [&str; 9] = [
    catalog::UPSTREAM_UNREACHABLE,
    catalog::FAILED_CONNECTS,
    catalog::NETWORK_RTT,
    catalog::RETRANSMITS,
    catalog::DNS_LATENCY,
    catalog::DNS_ERRORS,
    catalog::DNS_NXDOMAIN,
    catalog::DB_AVAILABILITY,
    catalog::DB_LATENCY,
];

fn order(inspection: &str) -> usize {
    catalog::INSPECTIONS
        .iter()
        .position(|i| i.id == inspection)
        .unwrap_or(usize::MAX)
}

fn ago(ms: i64) -> String {
    let s = ms.unsigned_abs() / 1000;
    if s < 120 {
        format!("{s} s")
    } else if s < 7200 {
        format!("{} min", s / 60)
    } else {
        format!("{} h", s / 3600)
    }
}

/// Walks from `app` to its upstreams and picks the one whose problems began
/// first: problems seen on the way there (`app`'s own edge inspections
/// naming it) and the upstream's own firing inspections. Ties go to the
/// inspection listed first in the catalog, then to the name.
pub fn root_cause(
    app: &str,
    incident_inspection: &str,
    started_ms: i64,
    trackers: &BTreeMap<(String, String), Tracker>,
    upstreams: &BTreeMap<String, Vec<String>>,
) -> Option<RootCause> {
    let mut candidates: Vec<String> = upstreams.get(app).cloned().unwrap_or_default();
    for ((inspection, subject), t) in trackers {
        if subject == app && EDGE_INSPECTIONS.contains(&inspection.as_str()) {
            candidates.extend(t.upstreams.iter().cloned());
        }
    }
    candidates.sort();
    candidates.dedup();
    let mut best: Option<(i64, usize, String, String)> = None;
    for upstream in candidates.iter().filter(|u| u.as_str() != app) {
        for ((inspection, subject), t) in trackers {
            if inspection == incident_inspection && subject == app {
                continue;
            }
            let on_the_way = subject == app
                && EDGE_INSPECTIONS.contains(&inspection.as_str())
                && t.upstreams.contains(upstream);
            if !on_the_way && subject != upstream {
                continue;
            }
            let candidate = (
                t.first_firing_ms,
                order(inspection),
                upstream.clone(),
                inspection.clone(),
            );
            if best.as_ref().is_none_or(|b| candidate < *b) {
                best = Some(candidate);
            }
        }
    }
    let (first, _, upstream, inspection) = best?;
    let lead_ms = started_ms - first;
    let title = catalog::find(&inspection).map_or(inspection.as_str(), |i| i.title);
    let own = catalog::find(incident_inspection).map_or(incident_inspection, |i| i.title);
    let when = match lead_ms {
        0 => format!("began together with the {own}"),
        l if l > 0 => format!("began {} before the {own}", ago(l)),
        l => format!("began {} after the {own}", ago(l)),
    };
    Some(RootCause {
        text: format!("{app} → {upstream}: {title} ({inspection}) {when}"),
        upstream,
        inspection,
        lead_ms,
    })
}

/// A rollout notice: `generations` is (previous, now).
pub fn deployment_notification(
    project: &str,
    application: &str,
    (previous, generation): (i64, i64),
    now_ms: i64,
    source: &str,
    ui_url: Option<&str>,
) -> Notification {
    Notification {
        kind: Kind::Deployment,
        key: format!("vigil-deploy-{project}-{application}-{generation}"),
        project: project.to_owned(),
        category: "deployment".into(),
        severity: Severity::Info,
        title: format!("{application}: new rollout"),
        text: format!(
            "The Deployment of {application} rolled out generation {generation} (was {previous})."
        ),
        subject: application.to_owned(),
        source: source.to_owned(),
        hint: None,
        fields: vec![Field::new("Generation", generation.to_string())],
        started_at_ms: now_ms,
        resolved_at_ms: None,
        url: ui_url.map(|u| format!("{}/applications/{application}", u.trim_end_matches('/'))),
    }
}

/// The notification of a transition (none for quiet updates).
pub fn notification(t: &Transition, source: &str, ui_url: Option<&str>) -> Option<Notification> {
    let (kind, incident) = match t {
        Transition::Opened(i) => (Kind::Trigger, i),
        Transition::Updated {
            incident,
            escalated: true,
        } => (Kind::Trigger, incident),
        Transition::Updated { .. } => return None,
        Transition::Resolved(i) => (Kind::Resolve, i),
    };
    let title =
        catalog::find(&incident.inspection).map_or(incident.inspection.as_str(), |i| i.title);
    let mut fields = incident.details.clone();
    fields.push(Field::new("Inspection", incident.inspection.clone()));
    Some(Notification {
        kind,
        key: format!("vigil-{}", incident.id),
        project: incident.project.clone(),
        category: incident.category.clone(),
        severity: incident.severity,
        title: format!("{}: {title}", incident.subject),
        text: if kind == Kind::Resolve {
            format!("Resolved. Last seen: {}", incident.summary)
        } else {
            incident.summary.clone()
        },
        subject: incident.subject.clone(),
        source: source.to_owned(),
        hint: incident.root_cause.as_ref().map(|r| r.text.clone()),
        fields,
        started_at_ms: incident.started_at_ms,
        resolved_at_ms: incident.resolved_at_ms,
        url: ui_url.map(|u| format!("{}/incidents/{}", u.trim_end_matches('/'), incident.id)),
    })
}
