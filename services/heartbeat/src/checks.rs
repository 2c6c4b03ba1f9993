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

use std::sync::Arc;
use vigil_runtime::time::millis;

use serde::{Deserialize, Serialize};
use vigil_notify::{Field, Kind, Notification, Notifier, Severity};

use crate::config::CheckConfig;

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
    /// Kept but ignored: a method the check does not take, or a ping to a
    /// paused check that waits for a manual resume.
    Ignored,
}

impl PingKind {
    /// The name healthchecks.io gives this kind.
    pub fn as_str(self) -> &'static str {
        match self {
            PingKind::Success => "success",
            PingKind::Start => "start",
            PingKind::Fail => "fail",
            PingKind::Log => "log",
            PingKind::Ignored => "ign",
        }
    }
}

/// Runs longer than this get no duration.
const MAX_RUN_MS: i64 = 72 * 3600 * 1000;

/// A check's state, changed by its pings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PingState {
    /// The last success or failure.
    pub last_ping_ms: Option<i64>,
    pub last_success_ms: Option<i64>,
    /// A run started and not finished: when, and its run id.
    pub last_start_ms: Option<i64>,
    pub last_start_rid: Option<String>,
    /// How long the last finished run took.
    pub last_duration_ms: Option<i64>,
    /// Whether the last success-or-failure ping was a failure.
    pub failed: bool,
    /// Every ping, ignored ones too.
    pub pings: u64,
    /// The side last announced: None while new.
    pub announced: Option<Side>,
    pub paused: bool,
    /// The start of the last failure ping's body (for notifications).
    pub last_message: Option<String>,
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

/// Most of a failure ping's body kept for its notification.
const MESSAGE_CHARS: usize = 300;

impl PingState {
    /// Applies a ping: what it counts as (a ping to a paused check that
    /// waits for a manual resume is ignored) and the run's duration, if it
    /// finished one.
    pub fn apply(
        &mut self,
        kind: PingKind,
        rid: Option<&str>,
        manual_resume: bool,
        message: &[u8],
        now_ms: i64,
    ) -> (PingKind, Option<i64>) {
        self.pings += 1;
        let kind = if self.paused && manual_resume {
            PingKind::Ignored
        } else {
            kind
        };
        let mut duration = None;
        match kind {
            PingKind::Start => {
                self.last_start_ms = Some(now_ms);
                self.last_start_rid = rid.map(str::to_owned);
            }
            PingKind::Success | PingKind::Fail => {
                self.last_ping_ms = Some(now_ms);
                self.last_duration_ms = None;
                if let Some(start) = self.last_start_ms {
                    if self.last_start_rid.as_deref() == rid {
                        let took = now_ms - start;
                        if (0..MAX_RUN_MS).contains(&took) {
                            duration = Some(took);
                            self.last_duration_ms = Some(took);
                        }
                        self.last_start_ms = None;
                        self.last_start_rid = None;
                    } else if kind == PingKind::Fail || rid.is_none() {
                        self.last_start_ms = None;
                        self.last_start_rid = None;
                    }
                }
                self.paused = false;
                if kind == PingKind::Success {
                    self.last_success_ms = Some(now_ms);
                    self.failed = false;
                    self.last_message = None;
                } else {
                    self.failed = true;
                    let text = String::from_utf8_lossy(message);
                    let text = text.trim();
                    self.last_message =
                        (!text.is_empty()).then(|| text.chars().take(MESSAGE_CHARS).collect());
                }
            }
            PingKind::Log | PingKind::Ignored => {}
        }
        (kind, duration)
    }

    /// Pauses: no alerts until a ping (or a resume) comes.
    pub fn pause(&mut self) {
        self.paused = true;
        self.last_start_ms = None;
        self.last_start_rid = None;
    }

    /// Resumes a paused check as new.
    pub fn resume(&mut self) {
        self.paused = false;
        self.failed = false;
        self.last_ping_ms = None;
        self.last_success_ms = None;
        self.last_start_ms = None;
        self.last_start_rid = None;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    New,
    Up,
    Late,
    Down,
    Paused,
}

/// When the next success is due, after the last one; None when no
/// success is awaited (new, or a schedule that never fires again).
/// i64::MIN when the schedule cannot be read: such a check must alarm,
/// not look healthy (validation refuses it, so this is a safeguard).
pub fn due(check: &CheckConfig, state: &PingState) -> Option<i64> {
    let last = state.last_success_ms?;
    match check.parsed_schedule() {
        Ok(schedule) => schedule.next_due(last),
        Err(_) => Some(i64::MIN),
    }
}

/// The status of a check at `now_ms`.
pub fn status(check: &CheckConfig, state: &PingState, now_ms: i64) -> Status {
    status_due(check, state, due(check, state), now_ms)
}

/// [`status`] with the due time already known (see [`due`]).
pub fn status_due(check: &CheckConfig, state: &PingState, due: Option<i64>, now_ms: i64) -> Status {
    if state.paused {
        return Status::Paused;
    }
    if state.failed {
        return Status::Down;
    }
    let grace = millis(check.grace);
    // A run that started and did not finish within the grace time.
    if let Some(start) = state.last_start_ms
        && grace > 0
        && now_ms > start.saturating_add(grace)
    {
        return Status::Down;
    }
    if state.last_success_ms.is_none() {
        return Status::New;
    }
    let Some(due) = due else {
        return Status::Up;
    };
    if now_ms <= due {
        Status::Up
    } else if now_ms <= due.saturating_add(grace) {
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
        Status::New | Status::Paused => None,
    }
}

/// Whether [`settle`] would record a flip at `now_ms`.
pub fn would_flip(check: &CheckConfig, state: &PingState, due: Option<i64>, now_ms: i64) -> bool {
    side_of(status_due(check, state, due, now_ms)).is_some_and(|to| state.announced != Some(to))
}

/// Updates `state.announced` for the check's status at `now_ms`; the flip,
/// if the side changed. The first up after new is a flip but not worth
/// announcing (see [`announce`]).
pub fn settle(
    check: &CheckConfig,
    state: &mut PingState,
    due: Option<i64>,
    now_ms: i64,
) -> Option<Flip> {
    let to = side_of(status_due(check, state, due, now_ms))?;
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
                if let Some(m) = &state.last_message {
                    fields.push(Field::new("Message", m.clone()));
                }
                format!("Its last ping reported a failure, at {last_ping}.")
            } else if let Some(start) = state.last_start_ms.filter(|s| {
                check.grace > std::time::Duration::ZERO && flip.at_ms > s + millis(check.grace)
            }) {
                format!(
                    "A run started at {} and has not finished after {}.",
                    when(start),
                    ago(flip.at_ms - start)
                )
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
        s.apply(PingKind::Start, None, false, b"", 0);
        assert_eq!(status(&c, &s, 0), Status::New, "a start is not a success");
        s.apply(PingKind::Success, None, false, b"", 1_000);
        assert_eq!(status(&c, &s, 61_000), Status::Up);
        assert_eq!(status(&c, &s, 61_001), Status::Late);
        assert_eq!(status(&c, &s, 91_000), Status::Late);
        assert_eq!(status(&c, &s, 91_001), Status::Down);
        s.apply(PingKind::Log, None, false, b"", 91_002);
        assert_eq!(
            status(&c, &s, 91_003),
            Status::Down,
            "a log ping changes nothing"
        );
        s.apply(PingKind::Success, None, false, b"", 100_000);
        assert_eq!(status(&c, &s, 100_001), Status::Up);
        s.apply(PingKind::Fail, None, false, b"", 100_002);
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
        s.apply(
            PingKind::Success,
            None,
            false,
            b"",
            t("2026-06-10T00:05:00Z"),
        ); // 02:05 CEST
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
    fn runs_durations_pause_and_manual_resume() {
        let c = check();
        let mut s = PingState::default();
        // A run with a run id: its success gives the duration.
        s.apply(PingKind::Start, Some("r1"), false, b"", 1_000);
        assert_eq!(status(&c, &s, 1_000), Status::New);
        assert_eq!(
            s.apply(PingKind::Success, Some("r2"), false, b"", 2_000),
            (PingKind::Success, None),
            "another run's success does not end r1"
        );
        assert!(s.last_start_ms.is_some());
        assert_eq!(
            s.apply(PingKind::Success, Some("r1"), false, b"", 4_500),
            (PingKind::Success, Some(3_500))
        );
        assert_eq!(s.last_duration_ms, Some(3_500));
        assert!(s.last_start_ms.is_none());
        // A run that overruns its grace (30 s) is down.
        s.apply(PingKind::Start, None, false, b"", 10_000);
        assert_eq!(status(&c, &s, 40_000), Status::Up);
        assert_eq!(status(&c, &s, 40_001), Status::Down);
        // Paused: no status change from time; a ping resumes it...
        s.pause();
        assert_eq!(status(&c, &s, 999_999), Status::Paused);
        assert!(!would_flip(&c, &s, due(&c, &s), 999_999));
        s.apply(PingKind::Success, None, false, b"", 1_000_000);
        assert_eq!(status(&c, &s, 1_000_001), Status::Up);
        // ...unless it waits for a manual resume: then pings are ignored.
        s.pause();
        assert_eq!(
            s.apply(PingKind::Success, None, true, b"", 1_000_002).0,
            PingKind::Ignored
        );
        assert_eq!(status(&c, &s, 1_000_003), Status::Paused);
        s.resume();
        assert_eq!(status(&c, &s, 1_000_004), Status::New, "resumed as new");
    }
}
