//! Checks and their pings. A check's status is a pure function of its
//! configuration, its last pings and the time; pings are stored in redb
//! (durably, before the ping is answered) so a restart forgets nothing.
//!
//! A flip is a change between up and down (late is still up; new is
//! neither). Each check's state remembers the side last announced, and a
//! flip is recorded, with its notification queued in the durable outbox, in
//! the same transaction that changes it: so each flip is announced exactly
//! once, across crashes and restarts, and a monitor that was itself down
//! announces at most one flip per check when it comes back.

use std::{collections::HashMap, path::Path, sync::Arc};
use vigil_runtime::time::millis;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use vigil_notify::{Field, Kind, Notification, Notifier, Outbox, Severity};
use vigil_storage::{
    StorageError,
    redb::{decode_record, encode_record, open_database},
};

use crate::config::CheckConfig;

/// Check uuid → its [`PingState`].
const PINGS: TableDefinition<&str, &[u8]> = TableDefinition::new("pings_v2");
/// (check uuid, flip time ms) → [`Flip`].
const FLIPS: TableDefinition<(&str, i64), &[u8]> = TableDefinition::new("flips");
/// Flips kept per check; older ones are dropped.
const FLIPS_KEPT: usize = 100;

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
    /// The side last announced: None while new.
    pub announced: Option<Side>,
}

/// Up or down, as announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Side {
    Up,
    Down,
}

/// A recorded change between up and down.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flip {
    pub at_ms: i64,
    pub from: Option<Side>,
    pub to: Side,
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

/// Where flips are announced: the notifier's routes and the project named
/// in notifications.
#[derive(Clone)]
pub struct Announce {
    pub notifier: Arc<Notifier>,
    pub project: String,
    /// The monitor's own page for a check, when known: `<ui_url>/...`.
    pub ui_url: Option<String>,
}

/// The side a status stands for; None keeps the announced side.
fn side_of(status: Status) -> Option<Side> {
    match status {
        Status::Up | Status::Late => Some(Side::Up),
        Status::Down => Some(Side::Down),
        Status::New => None,
    }
}

/// Updates `state.announced` for the check's status at `now_ms`; the flip,
/// if the side changed. The first up after new is a flip but not worth
/// announcing (see [`announce`]).
pub fn settle(check: &CheckConfig, state: &mut PingState, now_ms: i64) -> Option<Flip> {
    let to = side_of(status(check, state, now_ms))?;
    if state.announced == Some(to) {
        return None;
    }
    let flip = Flip {
        at_ms: now_ms,
        from: state.announced,
        to,
    };
    state.announced = Some(to);
    Some(flip)
}

fn ago(ms: i64) -> String {
    let secs = (ms.max(0) / 1000) as u64;
    humantime::format_duration(std::time::Duration::from_secs(secs)).to_string()
}

/// A time in RFC 3339, to the second.
fn when(ms: i64) -> String {
    jiff::Timestamp::from_second(ms.div_euclid(1000))
        .map_or_else(|_| ms.to_string(), |t| t.to_string())
}

/// The notification for a flip, or None when it needs none (new → up).
/// Names the check, its last ping and how late it is.
pub fn announce(
    check: &CheckConfig,
    state: &PingState,
    flip: &Flip,
    project: &str,
    ui_url: Option<&str>,
) -> Option<Notification> {
    let last_ping = match state.last_ping_ms {
        Some(at) => format!("{} ({} ago)", when(at), ago(flip.at_ms - at)),
        None => "never".to_owned(),
    };
    let schedule = match (&check.period, &check.schedule) {
        (Some(p), _) => format!("every {}", humantime::format_duration(*p)),
        (None, Some(expr)) => format!("cron \"{expr}\" ({})", check.tz),
        (None, None) => String::new(),
    };
    let mut fields = vec![
        Field::new("Last ping", last_ping.clone()),
        Field::new("Schedule", schedule),
        Field::new("Grace", humantime::format_duration(check.grace).to_string()),
    ];
    let (kind, severity, title, text) = match flip.to {
        Side::Down => {
            let why = if state.failed {
                format!("Its last ping reported a failure, at {last_ping}.")
            } else {
                let due = state
                    .last_success_ms
                    .and_then(|last| check.parsed_schedule().ok()?.next_due(last));
                match due {
                    Some(due) => {
                        let late = ago(flip.at_ms - due);
                        fields.push(Field::new("Late by", late.clone()));
                        format!(
                            "No ping since {last_ping}; one was due at {}, {late} ago.",
                            when(due)
                        )
                    }
                    None => format!("No ping since {last_ping}."),
                }
            };
            (
                Kind::Trigger,
                Severity::Critical,
                format!("{} is DOWN", check.name),
                why,
            )
        }
        Side::Up if flip.from == Some(Side::Down) => (
            Kind::Resolve,
            Severity::Critical,
            format!("{} is up again", check.name),
            format!("It pinged at {last_ping}."),
        ),
        Side::Up => return None,
    };
    Some(Notification {
        kind,
        // One key per check: a resolve closes the trigger before it.
        key: format!("heartbeat/{}", check.uuid.to_ascii_lowercase()),
        project: project.to_owned(),
        category: "heartbeat".into(),
        severity,
        title,
        text,
        subject: check.name.clone(),
        source: "vigil-heartbeat".into(),
        hint: None,
        fields,
        started_at_ms: flip.at_ms,
        resolved_at_ms: (kind == Kind::Resolve).then_some(flip.at_ms),
        url: ui_url.map(|u| format!("{}/#/heartbeats", u.trim_end_matches('/'))),
    })
}

/// A check's stored state (default when it was never pinged).
fn read_state(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    uuid: &str,
) -> Result<PingState, StorageError> {
    match table.get(uuid)? {
        Some(v) => decode_record(v.value()),
        None => Ok(PingState::default()),
    }
}

/// The configured checks and their stored pings.
#[derive(Clone)]
pub struct CheckStore {
    db: Arc<Database>,
    checks: Arc<Vec<CheckConfig>>,
    by_uuid: Arc<HashMap<String, usize>>,
    announce: Option<Announce>,
}

impl std::fmt::Debug for CheckStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckStore")
            .field("checks", &self.checks.len())
            .finish_non_exhaustive()
    }
}

impl CheckStore {
    pub fn open(path: &Path, checks: Vec<CheckConfig>) -> Result<Self, StorageError> {
        let db = open_database(path)?;
        let txn = db.begin_write()?;
        txn.open_table(PINGS)?;
        txn.open_table(FLIPS)?;
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
            announce: None,
        })
    }

    /// Announces flips through `announce` (queued in this database's
    /// outbox, which the caller's dispatcher delivers).
    pub fn with_announce(mut self, announce: Announce) -> Result<Self, StorageError> {
        Outbox::open(self.db.clone())?;
        self.announce = Some(announce);
        Ok(self)
    }

    pub fn database(&self) -> Arc<Database> {
        self.db.clone()
    }

    /// Records `flip` of `check` and queues its notification, in `txn`.
    fn record_flip(
        &self,
        txn: &WriteTransaction,
        check: &CheckConfig,
        state: &PingState,
        flip: &Flip,
    ) -> Result<(), StorageError> {
        let uuid = check.uuid.to_ascii_lowercase();
        let mut flips = txn.open_table(FLIPS)?;
        flips.insert((uuid.as_str(), flip.at_ms), encode_record(flip)?.as_slice())?;
        let kept: Vec<i64> = flips
            .range((uuid.as_str(), i64::MIN)..=(uuid.as_str(), i64::MAX))?
            .rev()
            .skip(FLIPS_KEPT)
            .map(|e| e.map(|(k, _)| k.value().1))
            .collect::<Result<_, _>>()?;
        for at in kept {
            flips.remove((uuid.as_str(), at))?;
        }
        tracing::info!(check = check.name, from = ?flip.from, to = ?flip.to, "check flipped");
        if let Some(a) = &self.announce
            && let Some(n) = announce(check, state, flip, &a.project, a.ui_url.as_deref())
        {
            Outbox::enqueue(txn, &n, &a.notifier.route(&n), flip.at_ms)?;
        }
        Ok(())
    }

    /// Settles every check at `now_ms`: records each flip and queues its
    /// notification, in one transaction. Returns the flips.
    pub fn evaluate(&self, now_ms: i64) -> Result<Vec<(String, Flip)>, StorageError> {
        // Most rounds change nothing: look first, write only when needed.
        let changed: Vec<usize> = {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(PINGS)?;
            let mut changed = Vec::new();
            for (i, check) in self.checks.iter().enumerate() {
                let mut state = read_state(&table, &check.uuid.to_ascii_lowercase())?;
                if settle(check, &mut state, now_ms).is_some() {
                    changed.push(i);
                }
            }
            changed
        };
        if changed.is_empty() {
            return Ok(Vec::new());
        }
        let txn = self.db.begin_write()?;
        let mut flips = Vec::new();
        for i in changed {
            let check = &self.checks[i];
            let uuid = check.uuid.to_ascii_lowercase();
            let mut state = read_state(&txn.open_table(PINGS)?, &uuid)?;
            if let Some(flip) = settle(check, &mut state, now_ms) {
                txn.open_table(PINGS)?
                    .insert(uuid.as_str(), encode_record(&state)?.as_slice())?;
                self.record_flip(&txn, check, &state, &flip)?;
                flips.push((check.uuid.clone(), flip));
            }
        }
        txn.commit()?;
        Ok(flips)
    }

    /// A check's flips, newest first.
    pub fn flips(&self, uuid: &str) -> Result<Vec<Flip>, StorageError> {
        let uuid = uuid.to_ascii_lowercase();
        let txn = self.db.begin_read()?;
        let table = txn.open_table(FLIPS)?;
        table
            .range((uuid.as_str(), i64::MIN)..=(uuid.as_str(), i64::MAX))?
            .rev()
            .map(|e| {
                e.map_err(StorageError::from)
                    .and_then(|(_, v)| decode_record(v.value()))
            })
            .collect()
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
        let Some(&index) = self.by_uuid.get(&uuid) else {
            return Ok(None);
        };
        let check = &self.checks[index];
        let txn = self.db.begin_write()?;
        let mut state = read_state(&txn.open_table(PINGS)?, &uuid)?;
        state.apply(kind, now_ms);
        // A ping can flip a check at once (a failure, or a success after down).
        let flip = settle(check, &mut state, now_ms);
        txn.open_table(PINGS)?
            .insert(uuid.as_str(), encode_record(&state)?.as_slice())?;
        if let Some(flip) = &flip {
            self.record_flip(&txn, check, &state, flip)?;
        }
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
                let state = read_state(&table, &check.uuid.to_ascii_lowercase())?;
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

    fn announcing(path: &Path, checks: Vec<CheckConfig>) -> CheckStore {
        let hook: vigil_notify::IntegrationConfig =
            toml::from_str("name = \"hook\"\nwebhook = { url = \"http://127.0.0.1:9/hook\" }")
                .unwrap();
        let notifier = Arc::new(Notifier::new("heartbeat.integrations", &[hook], "test").unwrap());
        CheckStore::open(path, checks)
            .unwrap()
            .with_announce(Announce {
                notifier,
                project: "default".into(),
                ui_url: Some("http://vigil.example".into()),
            })
            .unwrap()
    }

    /// (kind, title) of every queued notification, oldest first.
    fn queued(store: &CheckStore) -> Vec<(Kind, String)> {
        Outbox::open(store.database())
            .unwrap()
            .entries()
            .unwrap()
            .into_iter()
            .map(|(_, e)| (e.notification.kind, e.notification.title))
            .collect()
    }

    #[test]
    fn each_flip_is_announced_once_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hb.redb");
        let s = announcing(&path, vec![check()]);
        s.ping(UUID, PingKind::Success, 0).unwrap();
        assert!(queued(&s).is_empty(), "new → up is not announced");
        assert_eq!(s.flips(UUID).unwrap().len(), 1, "but it is a flip");
        assert!(s.evaluate(60_000).unwrap().is_empty());
        assert!(s.evaluate(90_000).unwrap().is_empty(), "late is still up");
        let flips = s.evaluate(95_000).unwrap();
        assert_eq!(flips.len(), 1);
        assert_eq!(flips[0].1.to, Side::Down);
        let q = queued(&s);
        assert_eq!(
            q,
            vec![(Kind::Trigger, "nightly backup is DOWN".to_owned())]
        );
        let n = &Outbox::open(s.database()).unwrap().entries().unwrap()[0]
            .1
            .notification;
        assert!(
            n.text
                .contains("one was due at 1970-01-01T00:01:00Z, 35s ago"),
            "{}",
            n.text
        );
        assert!(
            n.fields
                .iter()
                .any(|f| f.name == "Late by" && f.value == "35s"),
            "{:?}",
            n.fields
        );
        assert!(
            n.fields
                .iter()
                .any(|f| f.name == "Last ping" && f.value.contains("1m 35s ago")),
            "{:?}",
            n.fields
        );
        assert_eq!(n.url.as_deref(), Some("http://vigil.example/#/heartbeats"));
        assert!(s.evaluate(200_000).unwrap().is_empty(), "announced once");
        drop(s);

        // A restart (the same file) announces nothing again.
        let s = announcing(&path, vec![check()]);
        assert!(s.evaluate(300_000).unwrap().is_empty());
        assert_eq!(queued(&s).len(), 1);
        // Back up: one resolve. A failure ping: down at once.
        s.ping(UUID, PingKind::Success, 400_000).unwrap();
        s.ping(UUID, PingKind::Fail, 410_000).unwrap();
        let kinds: Vec<Kind> = queued(&s).into_iter().map(|(k, _)| k).collect();
        assert_eq!(kinds, [Kind::Trigger, Kind::Resolve, Kind::Trigger]);
        let sides: Vec<Side> = s.flips(UUID).unwrap().iter().map(|f| f.to).collect();
        assert_eq!(
            sides,
            [Side::Down, Side::Up, Side::Down, Side::Up],
            "newest first"
        );
    }

    #[test]
    fn a_monitor_that_was_down_announces_one_flip_per_check() {
        let dir = tempfile::tempdir().unwrap();
        let uuids = [
            "5b0f3c38-2f5e-4a53-9d0c-1c3f1f7b8a11",
            "6c1f4d49-3a6f-4b64-8e1d-2d4a2a8c9b22",
            "7d2a5e5a-4b7a-4c75-9f2e-3e5b3b9dac33",
        ];
        let checks: Vec<CheckConfig> = uuids
            .iter()
            .enumerate()
            .map(|(i, u)| {
                CheckConfig::every(
                    &format!("job {i}"),
                    u,
                    Duration::from_secs(60),
                    Duration::from_secs(0),
                )
            })
            .collect();
        let s = announcing(&dir.path().join("hb.redb"), checks);
        for u in uuids {
            s.ping(u, PingKind::Success, 0).unwrap();
        }
        // Ten days later, evaluated every second for a minute: 3 flips, no storm.
        let mut flips = 0;
        for k in 0..60 {
            flips += s.evaluate(864_000_000 + k * 1000).unwrap().len();
        }
        assert_eq!(flips, 3);
        assert_eq!(queued(&s).len(), 3);
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
