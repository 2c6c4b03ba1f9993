//! The systemd journal, read with `journalctl -o json` from a saved cursor
//! each interval (at most a bounded number of entries per read). Entries
//! are grouped by unit (or syslog identifier); PRIORITY is the severity.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
};

use serde_json::Value;

use super::parse::{DEBUG, ERROR, FATAL, INFO, WARN};

/// One journal entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub cursor: String,
    pub time_ns: i64,
    pub severity: u8,
    pub message: String,
    /// `_SYSTEMD_UNIT`, else `SYSLOG_IDENTIFIER`, else `_COMM`.
    pub source: String,
    pub pid: Option<String>,
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        // Non-UTF-8 messages come as arrays of bytes.
        Value::Array(bytes) => Some(
            String::from_utf8_lossy(
                &bytes
                    .iter()
                    .filter_map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
                    .collect::<Vec<u8>>(),
            )
            .into_owned(),
        ),
        _ => None,
    }
}

/// Parses one line of `journalctl -o json`.
pub fn parse_entry(line: &str) -> Option<Entry> {
    let v: Value = serde_json::from_str(line).ok()?;
    let field = |k: &str| v.get(k).and_then(text);
    let severity = match field("PRIORITY").and_then(|p| p.parse::<u8>().ok()) {
        Some(0..=2) => FATAL,
        Some(3) => ERROR,
        Some(4) => WARN,
        Some(5 | 6) => INFO,
        Some(_) => DEBUG,
        None => 0,
    };
    Some(Entry {
        cursor: field("__CURSOR")?,
        time_ns: field("__REALTIME_TIMESTAMP")?
            .parse::<i64>()
            .ok()?
            .saturating_mul(1000),
        severity,
        message: field("MESSAGE").unwrap_or_default(),
        source: field("_SYSTEMD_UNIT")
            .map(|u| u.trim_end_matches(".service").to_owned())
            .or_else(|| field("SYSLOG_IDENTIFIER"))
            .or_else(|| field("_COMM"))
            .unwrap_or_else(|| "journal".to_owned()),
        pid: field("_PID"),
    })
}

/// The oldest `max` entries after `cursor` (the rest wait for the next
/// read); without a cursor, none but the cursor of the newest entry, to
/// follow the journal from now on. `dir`: a journal directory
/// (`/host/var/log/journal` in a container), else the system's. Errors
/// (no journalctl, no journal) say why.
pub fn read_after(
    dir: Option<&Path>,
    cursor: Option<&str>,
    max: usize,
) -> Result<(Vec<Entry>, Option<String>), String> {
    let mut command = Command::new("journalctl");
    // --all: long fields (over 4 kB) as they are, not as null.
    command.args(["-o", "json", "--all", "--no-pager", "-q"]);
    if let Some(dir) = dir {
        command.arg("-D").arg(dir);
    }
    match cursor {
        Some(c) => command.arg(format!("--after-cursor={c}")),
        None => command.arg("--lines=1"),
    };
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run journalctl: {e}"))?;
    let mut entries = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        // Oldest first: read `max`, then stop journalctl.
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            entries.extend(parse_entry(&line));
            if entries.len() >= max {
                break;
            }
        }
    }
    let _ = child.kill();
    let out = child
        .wait_with_output()
        .map_err(|e| format!("journalctl: {e}"))?;
    if entries.is_empty() && !out.status.success() && out.status.code().is_some() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !stderr.trim().is_empty() {
            return Err(format!("journalctl: {}", stderr.trim()));
        }
    }
    let next = entries
        .last()
        .map(|e| e.cursor.clone())
        .or_else(|| cursor.map(str::to_owned));
    match cursor {
        None => Ok((Vec::new(), next)),
        Some(_) => Ok((entries, next)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_json_lines() {
        let e = parse_entry(
            r#"{"__CURSOR":"s=1;i=2","__REALTIME_TIMESTAMP":"1795263767603553","PRIORITY":"3","MESSAGE":"boom","_SYSTEMD_UNIT":"nginx.service","_PID":"42"}"#,
        )
        .unwrap();
        assert_eq!(e.severity, ERROR);
        assert_eq!(e.time_ns, 1_795_263_767_603_553_000);
        assert_eq!((e.source.as_str(), e.pid.as_deref()), ("nginx", Some("42")));
        let e = parse_entry(
            r#"{"__CURSOR":"c","__REALTIME_TIMESTAMP":"1","MESSAGE":[104,105,255],"SYSLOG_IDENTIFIER":"cron"}"#,
        )
        .unwrap();
        assert_eq!(e.message, "hi\u{fffd}");
        assert_eq!((e.source.as_str(), e.severity), ("cron", 0));
        assert_eq!(parse_entry("{}"), None, "no cursor");
    }
}
