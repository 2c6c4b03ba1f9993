//! When a check's next ping is due after its last one: every `period`
//! (simple), or at the next fire time of a 5-field cron expression read in
//! a time zone. Cron times are computed by `croner` on `jiff` zoned times,
//! so daylight-saving gaps and folds follow the time zone database (built
//! into the binary: the monitor runs on small VMs and containers that may
//! lack one).

use std::time::Duration;

use croner::{
    Cron,
    parser::{CronParser, Seconds},
};
use jiff::{Timestamp, tz::TimeZone};

/// How often a check is expected to ping.
#[derive(Clone)]
pub enum Schedule {
    /// Every `period` after the last ping.
    Every(Duration),
    /// At each fire time of a cron expression in a time zone.
    Cron(Box<CronSchedule>),
}

/// A parsed cron expression and its time zone.
#[derive(Clone)]
pub struct CronSchedule {
    pub expr: String,
    pub tz: String,
    cron: Cron,
    zone: TimeZone,
}

impl std::fmt::Debug for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Schedule::Every(d) => write!(f, "every {}", humantime::format_duration(*d)),
            Schedule::Cron(c) => write!(f, "cron {:?} in {}", c.expr, c.tz),
        }
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Schedule::Every(a), Schedule::Every(b)) => a == b,
            (Schedule::Cron(a), Schedule::Cron(b)) => a.expr == b.expr && a.tz == b.tz,
            _ => false,
        }
    }
}

impl Schedule {
    /// A 5-field cron expression (minute hour day-of-month month
    /// day-of-week, as crontab and healthchecks.io read it) in the IANA
    /// time zone `tz`.
    pub fn cron(expr: &str, tz: &str) -> Result<Self, String> {
        let fields = expr.split_whitespace().count();
        if fields != 5 && !expr.trim_start().starts_with('@') {
            return Err(format!(
                "{expr:?} has {fields} fields; a schedule has 5: minute hour day-of-month month day-of-week"
            ));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .build()
            .parse(expr)
            .map_err(|e| format!("{expr:?} is not a cron expression: {e}"))?;
        let zone = TimeZone::get(tz).map_err(|e| format!("{tz:?} is not a time zone: {e}"))?;
        Ok(Schedule::Cron(Box::new(CronSchedule {
            expr: expr.trim().to_owned(),
            tz: tz.to_owned(),
            cron,
            zone,
        })))
    }

    /// When a ping is next due after one at `last_ms` (Unix ms); None when
    /// the cron expression never fires again.
    pub fn next_due(&self, last_ms: i64) -> Option<i64> {
        match self {
            Schedule::Every(period) => {
                Some(last_ms.saturating_add(i64::try_from(period.as_millis()).unwrap_or(i64::MAX)))
            }
            Schedule::Cron(c) => {
                let at = Timestamp::from_millisecond(last_ms)
                    .ok()?
                    .to_zoned(c.zone.clone());
                let next = c.cron.find_next_occurrence(&at, false).ok()?;
                Some(next.timestamp().as_millisecond())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ms(rfc3339: &str) -> i64 {
        rfc3339.parse::<Timestamp>().unwrap().as_millisecond()
    }

    fn iso(ms: i64) -> String {
        Timestamp::from_millisecond(ms).unwrap().to_string()
    }

    #[test]
    fn every_period_after_the_last_ping() {
        let s = Schedule::Every(Duration::from_secs(90));
        assert_eq!(s.next_due(1_000), Some(91_000));
    }

    #[test]
    fn cron_in_a_zone_across_daylight_saving() {
        // 02:30 every day in Berlin. On 2026-03-29 the clock jumps from
        // 02:00 to 03:00: no 02:30 that day, so it is due at 03:00 (as
        // Vixie cron and cronsim do). On 2026-10-25 02:30 happens twice;
        // it is due once, at the first.
        let s = Schedule::cron("30 2 * * *", "Europe/Berlin").unwrap();
        // A plain day: 02:30 CET = 01:30 UTC.
        assert_eq!(
            iso(s.next_due(ms("2026-01-10T12:00:00Z")).unwrap()),
            "2026-01-11T01:30:00Z"
        );
        // Summer: 02:30 CEST = 00:30 UTC.
        assert_eq!(
            iso(s.next_due(ms("2026-06-10T12:00:00Z")).unwrap()),
            "2026-06-11T00:30:00Z"
        );
        // The fold: 02:30 happens twice on 2026-10-25 (00:30 and 01:30 UTC).
        let first = s.next_due(ms("2026-10-24T12:00:00Z")).unwrap();
        assert_eq!(iso(first), "2026-10-25T00:30:00Z");
        assert_eq!(iso(s.next_due(first).unwrap()), "2026-10-26T01:30:00Z");
        // The gap: 03:00 CEST = 01:00 UTC.
        assert_eq!(
            iso(s.next_due(ms("2026-03-28T20:00:00Z")).unwrap()),
            "2026-03-29T01:00:00Z"
        );
        // Hourly at minute 0 in New York over the spring-forward night:
        // 01:00 EST then 03:00 EDT (02:00 does not exist).
        let h = Schedule::cron("0 * * * *", "America/New_York").unwrap();
        let a = h.next_due(ms("2026-03-08T06:30:00Z")).unwrap(); // 01:30 EST
        assert_eq!(iso(a), "2026-03-08T07:00:00Z"); // 03:00 EDT
    }

    #[test]
    fn bad_expressions_and_zones_are_named() {
        let e = Schedule::cron("* * * *", "UTC").unwrap_err();
        assert!(e.contains("4 fields"), "{e}");
        let e = Schedule::cron("61 * * * *", "UTC").unwrap_err();
        assert!(e.contains("not a cron expression"), "{e}");
        let e = Schedule::cron("0 * * * *", "Mars/Olympus").unwrap_err();
        assert!(e.contains("not a time zone"), "{e}");
        assert!(Schedule::cron("0 2 * * 1-5", "Asia/Kolkata").is_ok());
    }
}
