//! Incidents in a redb file: one record per incident, and an index of the
//! open one per (project, inspection, subject), so an inspection that keeps
//! firing updates its incident instead of opening another.

use std::{path::Path, sync::Arc};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use vigil_storage::{
    StorageError,
    redb::{decode_record, encode_record, open_database},
};

const INCIDENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("incidents");
const OPEN: TableDefinition<(&str, &str, &str), &str> = TableDefinition::new("open_incidents");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Severity {
    Warning,
    Critical,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub id: String,
    pub project: String,
    pub inspection: String,
    pub subject: String,
    pub severity: Severity,
    pub summary: String,
    pub opened_at_ms: i64,
    pub resolved_at_ms: Option<i64>,
    pub value: f64,
    pub threshold: f64,
}

/// What an inspection found about one subject at one time.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub project: String,
    pub inspection: String,
    pub subject: String,
    pub severity: Severity,
    pub summary: String,
    pub value: f64,
    pub threshold: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    Opened(Incident),
    Updated(Incident),
    Resolved(Incident),
}

#[derive(Debug, Clone)]
pub struct IncidentStore {
    db: Arc<Database>,
}

fn decode(bytes: &[u8]) -> Result<Incident, StorageError> {
    decode_record(bytes)
}

impl IncidentStore {
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        let db = open_database(path)?;
        let txn = db.begin_write()?;
        txn.open_table(INCIDENTS)?;
        txn.open_table(OPEN)?;
        txn.commit()?;
        Ok(Self { db: Arc::new(db) })
    }

    /// Opens an incident for a firing finding, or updates the open one.
    pub fn record(&self, finding: &Finding, now_ms: i64) -> Result<Transition, StorageError> {
        let txn = self.db.begin_write()?;
        let transition = {
            let mut incidents = txn.open_table(INCIDENTS)?;
            let mut open = txn.open_table(OPEN)?;
            let key = (
                finding.project.as_str(),
                finding.inspection.as_str(),
                finding.subject.as_str(),
            );
            let existing_id = open.get(key)?.map(|id| id.value().to_owned());
            let existing = match &existing_id {
                Some(id) => incidents
                    .get(id.as_str())?
                    .map(|v| decode(v.value()))
                    .transpose()?,
                None => None,
            };
            let transition = match existing {
                Some(mut incident) => {
                    incident.value = finding.value;
                    incident.threshold = finding.threshold;
                    incident.summary.clone_from(&finding.summary);
                    // Severity only escalates while open.
                    if finding.severity == Severity::Critical {
                        incident.severity = Severity::Critical;
                    }
                    Transition::Updated(incident)
                }
                None => Transition::Opened(Incident {
                    id: uuid::Uuid::new_v4().to_string(),
                    project: finding.project.clone(),
                    inspection: finding.inspection.clone(),
                    subject: finding.subject.clone(),
                    severity: finding.severity,
                    summary: finding.summary.clone(),
                    opened_at_ms: now_ms,
                    resolved_at_ms: None,
                    value: finding.value,
                    threshold: finding.threshold,
                }),
            };
            let (Transition::Opened(incident)
            | Transition::Updated(incident)
            | Transition::Resolved(incident)) = &transition;
            incidents.insert(incident.id.as_str(), encode_record(incident)?.as_slice())?;
            open.insert(key, incident.id.as_str())?;
            transition
        };
        txn.commit()?;
        Ok(transition)
    }

    /// Resolves the open incident of (project, inspection, subject), if any.
    pub fn resolve(
        &self,
        project: &str,
        inspection: &str,
        subject: &str,
        now_ms: i64,
    ) -> Result<Option<Incident>, StorageError> {
        let txn = self.db.begin_write()?;
        let resolved = {
            let mut incidents = txn.open_table(INCIDENTS)?;
            let mut open = txn.open_table(OPEN)?;
            let id = open
                .remove((project, inspection, subject))?
                .map(|id| id.value().to_owned());
            match id {
                None => None,
                Some(id) => {
                    let incident = incidents
                        .get(id.as_str())?
                        .map(|v| decode(v.value()))
                        .transpose()?;
                    match incident {
                        Some(mut incident) => {
                            incident.resolved_at_ms = Some(now_ms);
                            incidents.insert(id.as_str(), encode_record(&incident)?.as_slice())?;
                            Some(incident)
                        }
                        None => None,
                    }
                }
            }
        };
        txn.commit()?;
        Ok(resolved)
    }

    /// Subjects with an open incident for this project and inspection.
    pub fn open_subjects(
        &self,
        project: &str,
        inspection: &str,
    ) -> Result<Vec<String>, StorageError> {
        let txn = self.db.begin_read()?;
        let open = txn.open_table(OPEN)?;
        let mut subjects = Vec::new();
        for entry in open.range((project, inspection, "")..)? {
            let (key, _) = entry?;
            let (p, i, subject) = key.value();
            if p != project || i != inspection {
                break;
            }
            subjects.push(subject.to_owned());
        }
        Ok(subjects)
    }

    /// All incidents of a project, newest first.
    pub fn list(&self, project: &str) -> Result<Vec<Incident>, StorageError> {
        let txn = self.db.begin_read()?;
        let incidents = txn.open_table(INCIDENTS)?;
        let mut out = Vec::new();
        for entry in incidents.iter()? {
            let (_, value) = entry?;
            let incident = decode(value.value())?;
            if incident.project == project {
                out.push(incident);
            }
        }
        out.sort_by(|a, b| {
            b.opened_at_ms
                .cmp(&a.opened_at_ms)
                .then_with(|| a.id.cmp(&b.id))
        });
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(subject: &str, severity: Severity, value: f64) -> Finding {
        Finding {
            project: "p".into(),
            inspection: "host_cpu".into(),
            subject: subject.into(),
            severity,
            summary: format!("cpu {value}"),
            value,
            threshold: 90.0,
        }
    }

    #[test]
    fn open_update_resolve_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = IncidentStore::open(&dir.path().join("a.redb")).unwrap();
        let Transition::Opened(first) = store
            .record(&finding("node=a", Severity::Warning, 91.0), 10)
            .unwrap()
        else {
            panic!("expected opened");
        };
        let Transition::Updated(updated) = store
            .record(&finding("node=a", Severity::Critical, 99.0), 20)
            .unwrap()
        else {
            panic!("expected updated");
        };
        assert_eq!(updated.id, first.id);
        assert_eq!(updated.severity, Severity::Critical);
        assert_eq!(updated.opened_at_ms, 10);
        assert_eq!(
            store.open_subjects("p", "host_cpu").unwrap(),
            vec!["node=a"]
        );
        let resolved = store
            .resolve("p", "host_cpu", "node=a", 30)
            .unwrap()
            .unwrap();
        assert_eq!(resolved.resolved_at_ms, Some(30));
        assert!(store.open_subjects("p", "host_cpu").unwrap().is_empty());
        assert!(
            store
                .resolve("p", "host_cpu", "node=a", 31)
                .unwrap()
                .is_none()
        );
        let Transition::Opened(second) = store
            .record(&finding("node=a", Severity::Warning, 95.0), 40)
            .unwrap()
        else {
            panic!("a new incident after resolution");
        };
        assert_ne!(second.id, first.id);
        let all = store.list("p").unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].id, second.id, "newest first");
        assert!(store.list("other").unwrap().is_empty());
    }

    #[test]
    fn survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.redb");
        {
            let store = IncidentStore::open(&path).unwrap();
            store
                .record(&finding("node=a", Severity::Warning, 91.0), 10)
                .unwrap();
        }
        let store = IncidentStore::open(&path).unwrap();
        assert_eq!(store.list("p").unwrap().len(), 1);
        assert_eq!(
            store.open_subjects("p", "host_cpu").unwrap(),
            vec!["node=a"]
        );
    }
}
