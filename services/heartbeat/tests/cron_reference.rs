//! Cron due times against the reference: PyPI `cronsim`, the cron
//! evaluator healthchecks.io itself uses. For each expression and time zone,
//! the next 40 fire times from several starts (two of them just before the
//! 2026 daylight-saving changes) must be the same instants.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::process::Command;

use vigil_heartbeat::schedule::Schedule;

const CASES: &[(&str, &str)] = &[
    ("30 2 * * *", "Europe/Berlin"),
    ("0 * * * *", "America/New_York"),
    ("*/15 1-3 * * *", "Europe/London"),
    ("0 9 * * 1-5", "Asia/Kolkata"),
    ("5 0 1 * *", "Australia/Sydney"),
    ("0 0 * * 0", "UTC"),
    ("45 23 L * *", "America/Los_Angeles"),
    ("0 12 * * FRI", "Pacific/Auckland"),
];

const STARTS: &[&str] = &[
    "2026-01-15T10:07:00Z",
    "2026-03-07T20:00:00Z", // before the US change (Mar 8)
    "2026-03-28T20:00:00Z", // before the EU change (Mar 29)
    "2026-10-24T20:00:00Z", // before the EU fall-back (Oct 25)
    "2026-04-04T10:00:00Z", // before the Southern Hemisphere fall-back (Apr 5)
];

const N: usize = 40;

const REFERENCE: &str = r#"
import sys, json
from datetime import datetime
from zoneinfo import ZoneInfo
from cronsim import CronSim
expr, tz, start, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
at = datetime.fromisoformat(start.replace("Z", "+00:00")).astimezone(ZoneInfo(tz))
it = CronSim(expr, at)
out = [int(next(it).timestamp() * 1000) for _ in range(n)]
print(json.dumps(out))
"#;

fn cronsim_available() -> bool {
    Command::new("python3")
        .args(["-c", "import cronsim"])
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn due_times_match_cronsim() {
    if !cronsim_available() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must have cronsim (scripts/install-deps.sh installs it)"
        );
        eprintln!(
            "SKIPPED due_times_match_cronsim: cronsim is not installed (scripts/install-deps.sh installs it)"
        );
        return;
    }
    let mut compared = 0;
    for (expr, tz) in CASES {
        let schedule = Schedule::cron(expr, tz).unwrap();
        for start in STARTS {
            let out = Command::new("python3")
                .args(["-c", REFERENCE, expr, tz, start, &N.to_string()])
                .output()
                .expect("python3 runs");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let expected: Vec<i64> = serde_json::from_slice(&out.stdout).unwrap();
            let mut at = start.parse::<jiff::Timestamp>().unwrap().as_millisecond();
            for (i, want) in expected.iter().enumerate() {
                let got = schedule.next_due(at).unwrap();
                assert_eq!(
                    got,
                    *want,
                    "{expr:?} in {tz} from {start}, fire {i}: ours {}, cronsim {}",
                    jiff::Timestamp::from_millisecond(got).unwrap(),
                    jiff::Timestamp::from_millisecond(*want).unwrap()
                );
                at = got;
                compared += 1;
            }
        }
    }
    assert_eq!(compared, CASES.len() * STARTS.len() * N);
}
