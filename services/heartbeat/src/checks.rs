//! Checks and their pings. A check's status is a pure function of its
//! configuration, its last pings and the time; pings are stored in redb
//! (durably, before the ping is answered) so a restart forgets nothing.

use std::{collections::HashMap, path::Path, sync::Arc};
use vigil_runtime::time::millis;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use vigil_storage::{
    StorageError,
    redb::{decode_record, encode_record, open_database},
};

use crate::config::CheckConfig;

const PINGS: TableDefinition<&str, &[u8]> = TableDefinition::new("pings");

/// What a ping says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PingKind {
    /// The job ran and succeeded (`/ping/<uuid>`, or exit status 0).
    Success,
    /// The job started (`/ping/<uuid>/start`).
    Start,
    /// The job failed (`/ping/<uuid>/fail`, or a non-zero exit status).
    Fail,
    /// A message only; the status does not change (`/ping/<uuid>/log`).
    Log,
}

/// The stored pings of one check.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PingState {
    pub last_ping_ms: Option<i64>,
    pub last_success_ms: Option<i64>,
    pub last_start_ms: Option<i64>,
    /// Whether the last success-or-failure ping was a failure.
    pub failed: bool,
    pub pings: u64,
}

impl PingState {
    pub fn apply(&mut self, kind: PingKind, now_ms: i64) {
        self.pings += 1;
        self.last_ping_ms = Some(now_ms);
        match kind {
            PingKind::Success => {
                self.last_success_ms = Some(now_ms);
                self.failed = false;
            }
            PingKind::Fail => self.failed = true,
            PingKind::Start => self.last_start_ms = Some(now_ms),
            PingKind::Log => {}
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    New,
    Up,
    Late,
    Down,
}

/// The status of a check at `now_ms`.
pub fn status(check: &CheckConfig, state: &PingState, now_ms: i64) -> Status {
    if state.failed {
        return Status::Down;
    }
    let Some(last) = state.last_success_ms else {
        return Status::New;
    };
    // Validation parsed the schedule; a check whose schedule cannot be read
    // must alarm, not look healthy.
    let Ok(schedule) = check.parsed_schedule() else {
        return Status::Down;
    };
    let Some(due) = schedule.next_due(last) else {
        return Status::Up;
    };
    if now_ms <= due {
        Status::Up
    } else if now_ms <= due.saturating_add(millis(check.grace)) {
        Status::Late
    } else {
        Status::Down
    }
}

/// The configured checks and their stored pings.
#[derive(Debug, Clone)]
pub struct CheckStore {
    db: Arc<Database>,
    checks: Arc<Vec<CheckConfig>>,
    by_uuid: Arc<HashMap<String, usize>>,
}

impl CheckStore {
    pub fn open(path: &Path, checks: Vec<CheckConfig>) -> Result<Self, StorageError> {
        let db = open_database(path)?;
        let txn = db.begin_write()?;
        txn.open_table(PINGS)?;
        txn.commit()?;
        let by_uuid = checks
            .iter()
            .enumerate()
            .map(|(i, c)| (c.uuid.to_ascii_lowercase(), i))
            .collect();
        Ok(Self {
            db: Arc::new(db),
            checks: Arc::new(checks),
            by_uuid: Arc::new(by_uuid),
        })
    }

    pub fn checks(&self) -> &[CheckConfig] {
        &self.checks
    }

    /// Records a ping for the check with this uuid; None if no such check.
    pub fn ping(
        &self,
        uuid: &str,
        kind: PingKind,
        now_ms: i64,
    ) -> Result<Option<PingState>, StorageError> {
        let uuid = uuid.to_ascii_lowercase();
        if !self.by_uuid.contains_key(&uuid) {
            return Ok(None);
        }
        let txn = self.db.begin_write()?;
        let state = {
            let mut table = txn.open_table(PINGS)?;
            let mut state = match table.get(uuid.as_str())? {
                Some(v) => decode_record(v.value())?,
                None => PingState::default(),
            };
            state.apply(kind, now_ms);
            let encoded = encode_record(&state)?;
            table.insert(uuid.as_str(), encoded.as_slice())?;
            state
        };
        txn.commit()?;
        Ok(Some(state))
    }

    /// Every configured check with its pings, in configuration order.
    pub fn states(&self) -> Result<Vec<(CheckConfig, PingState)>, StorageError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(PINGS)?;
        self.checks
            .iter()
            .map(|check| {
                let state = match table.get(check.uuid.to_ascii_lowercase().as_str())? {
                    Some(v) => decode_record(v.value())?,
                    None => PingState::default(),
                };
                Ok((check.clone(), state))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const UUID: &str = "5b0f3c38-2f5e-4a53-9d0c-1c3f1f7b8a11";

    fn check() -> CheckConfig {
        CheckConfig::every(
            "nightly backup",
            UUID,
            Duration::from_secs(60),
            Duration::from_secs(30),
        )
    }

    #[test]
    fn status_follows_period_and_grace() {
        let c = check();
        let mut s = PingState::default();
        assert_eq!(status(&c, &s, 0), Status::New);
        s.apply(PingKind::Start, 0);
        assert_eq!(status(&c, &s, 0), Status::New, "a start is not a success");
        s.apply(PingKind::Success, 1_000);
        assert_eq!(status(&c, &s, 61_000), Status::Up);
        assert_eq!(status(&c, &s, 61_001), Status::Late);
        assert_eq!(status(&c, &s, 91_000), Status::Late);
        assert_eq!(status(&c, &s, 91_001), Status::Down);
        s.apply(PingKind::Log, 91_002);
        assert_eq!(
            status(&c, &s, 91_003),
            Status::Down,
            "a log ping changes nothing"
        );
        s.apply(PingKind::Success, 100_000);
        assert_eq!(status(&c, &s, 100_001), Status::Up);
        s.apply(PingKind::Fail, 100_002);
        assert_eq!(
            status(&c, &s, 100_003),
            Status::Down,
            "failure is down at once"
        );
        assert_eq!(s.pings, 5);
    }

    #[test]
    fn cron_checks_are_due_at_fire_times_and_bad_schedules_are_named() {
        use vigil_runtime::config::Validate;
        let parse = |toml: &str| -> CheckConfig {
            let v: toml::Value = toml::from_str(toml).unwrap();
            v.try_into().unwrap()
        };
        // Every day at 02:00 in Berlin, 1 h of grace.
        let c = parse(&format!(
            "name = \"backup\"\nuuid = \"{UUID}\"\nschedule = \"0 2 * * *\"\ntz = \"Europe/Berlin\"\ngrace = \"1h\""
        ));
        c.validate("heartbeat.checks[0]").unwrap();
        let t = |s: &str| s.parse::<jiff::Timestamp>().unwrap().as_millisecond();
        let mut s = PingState::default();
        s.apply(PingKind::Success, t("2026-06-10T00:05:00Z")); // 02:05 CEST
        // Due at 02:00 CEST the next day (00:00 UTC), down an hour later.
        assert_eq!(status(&c, &s, t("2026-06-10T23:59:59Z")), Status::Up);
        assert_eq!(status(&c, &s, t("2026-06-11T00:30:00Z")), Status::Late);
        assert_eq!(status(&c, &s, t("2026-06-11T01:00:01Z")), Status::Down);

        for (toml, key, says) in [
            ("schedule = \"0 2 * *\"", "schedule", "4 fields"),
            (
                "schedule = \"0 2 * * *\"\ntz = \"Nowhere/City\"",
                "schedule",
                "not a time zone",
            ),
            (
                "schedule = \"0 2 * * *\"\nperiod = \"1d\"",
                "period",
                "not both",
            ),
            ("grace = \"1h\"", "period", "set period"),
            ("period = \"10ms\"", "period", "at least 1s"),
        ] {
            let c = parse(&format!("name = \"x\"\nuuid = \"{UUID}\"\n{toml}"));
            let e = c.validate("heartbeat.checks[0]").unwrap_err().to_string();
            assert!(
                e.contains(&format!("heartbeat.checks[0].{key}")) && e.contains(says),
                "{toml}: {e}"
            );
        }
    }

    #[test]
    fn slug_from_name() {
        assert_eq!(check().slug(), "nightly-backup");
    }

    #[test]
    fn pings_persist_and_unknown_uuid_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hb.redb");
        {
            let store = CheckStore::open(&path, vec![check()]).unwrap();
            assert!(
                store
                    .ping("00000000-0000-4000-8000-000000000000", PingKind::Success, 1)
                    .unwrap()
                    .is_none()
            );
            let state = store
                .ping(&UUID.to_uppercase(), PingKind::Success, 5)
                .unwrap()
                .unwrap();
            assert_eq!(state.last_success_ms, Some(5));
        }
        let store = CheckStore::open(&path, vec![check()]).unwrap();
        let states = store.states().unwrap();
        assert_eq!(states[0].1.last_success_ms, Some(5));
        assert_eq!(states[0].1.pings, 1);
    }
}
