//! `vigil ping`: the client side of the heartbeat monitor, for cron jobs,
//! Kubernetes CronJobs and backups. Without a command it sends one success
//! ping. With one (`vigil ping <url> -- <command> [args]`) it sends `/start`,
//! runs the command with its output passed through, then sends the exit
//! status (`/<code>`: 0 is success, anything else a failure) with the tail
//! of the output as the body, and exits with the command's own status. A
//! ping that cannot be delivered (after retries) is reported on stderr but
//! never changes the job's outcome.

use std::{
    collections::VecDeque,
    process::{ExitCode, Stdio},
    time::Duration,
};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// Bytes of output sent with the final ping (the monitor keeps 10 KB).
const TAIL_BYTES: usize = 10 * 1024;
const ATTEMPTS: u32 = 3;

#[derive(Debug, clap::Args)]
pub struct PingArgs {
    /// The check's ping URL, e.g. https://monitor.example.com/ping/<uuid>.
    #[arg(value_parser = ping_url)]
    url: String,
    /// How long one ping may take.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// The command to run, after `--`.
    #[arg(last = true)]
    command: Vec<String>,
}

/// An http(s) URL with a host: a mistyped one is refused before the job
/// runs, not discovered after it.
fn ping_url(text: &str) -> Result<String, String> {
    let scheme_ok = text.starts_with("http://") || text.starts_with("https://");
    let host = text
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split(['/', '?']).next());
    match (scheme_ok, host) {
        (true, Some(h)) if !h.is_empty() && !h.contains(char::is_whitespace) => Ok(text.to_owned()),
        _ => Err(format!(
            "{text:?} is not a ping URL: use http(s)://host/ping/<uuid>"
        )),
    }
}

/// The URL as it may be shown: scheme and host only. The path holds the
/// check's uuid or ping key, which is a secret, and a job's stderr often
/// ends up in logs.
fn shown(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let host = rest.split(['/', '?']).next().unwrap_or_default();
    format!("{scheme}://{host}/…")
}

/// Sends a ping with `body`, retrying; says on stderr when it fails.
async fn send(http: &reqwest::Client, url: &str, body: Vec<u8>, timeout: Duration) -> bool {
    for attempt in 1..=ATTEMPTS {
        let sent = http
            .post(url)
            .timeout(timeout)
            .body(body.clone())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => return true,
            Ok(r) if r.status().is_client_error() => {
                eprintln!(
                    "vigil ping: {} answered {}: not retried",
                    shown(url),
                    r.status()
                );
                return false;
            }
            Ok(r) => eprintln!(
                "vigil ping: {} answered {} (attempt {attempt})",
                shown(url),
                r.status()
            ),
            Err(e) => eprintln!("vigil ping: {} (attempt {attempt})", e.without_url()),
        }
        tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
    }
    false
}

/// Copies `from` to `to` and keeps the last [`TAIL_BYTES`] in `tail`.
async fn relay(
    mut from: impl AsyncRead + Unpin,
    mut to: impl tokio::io::AsyncWrite + Unpin,
    tail: std::sync::Arc<std::sync::Mutex<VecDeque<u8>>>,
) {
    let mut buf = [0u8; 8192];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let _ = to.write_all(&buf[..n]).await;
        let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
        t.extend(&buf[..n]);
        let excess = t.len().saturating_sub(TAIL_BYTES);
        t.drain(..excess);
    }
    let _ = to.flush().await;
}

pub async fn run(args: PingArgs) -> ExitCode {
    let http = match vigil_runtime::http_client::build(concat!(
        "vigil-ping/",
        env!("CARGO_PKG_VERSION")
    )) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("vigil ping: {e}");
            return ExitCode::FAILURE;
        }
    };
    let url = args.url.trim_end_matches('/').to_owned();
    let Some((program, rest)) = args.command.split_first() else {
        return if send(&http, &url, Vec::new(), args.timeout).await {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    };
    send(&http, &format!("{url}/start"), Vec::new(), args.timeout).await;
    let child = tokio::process::Command::new(program)
        .args(rest)
        .stdin(Stdio::inherit())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            let message = format!("vigil ping: cannot run {program:?}: {e}\n");
            eprint!("{message}");
            // 127: what a shell answers for a command it cannot run.
            send(
                &http,
                &format!("{url}/127"),
                message.into_bytes(),
                args.timeout,
            )
            .await;
            return ExitCode::from(127);
        }
    };
    let tail = std::sync::Arc::new(std::sync::Mutex::new(VecDeque::new()));
    let out = child
        .stdout
        .take()
        .map(|o| tokio::spawn(relay(o, tokio::io::stdout(), tail.clone())));
    let err = child
        .stderr
        .take()
        .map(|e| tokio::spawn(relay(e, tokio::io::stderr(), tail.clone())));
    let status = child.wait().await;
    for task in [out, err].into_iter().flatten() {
        let _ = task.await;
    }
    let code: u8 = match status {
        Ok(s) => match s.code() {
            Some(c) => u8::try_from(c).unwrap_or(255),
            None => {
                // Killed by a signal: 128 + its number, as shells report it.
                #[cfg(unix)]
                {
                    use std::os::unix::process::ExitStatusExt;
                    s.signal()
                        .map_or(255, |n| u8::try_from(128 + n).unwrap_or(255))
                }
                #[cfg(not(unix))]
                {
                    255
                }
            }
        },
        Err(e) => {
            eprintln!("vigil ping: waiting for {program:?}: {e}");
            255
        }
    };
    let body: Vec<u8> = tail
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .copied()
        .collect();
    send(&http, &format!("{url}/{code}"), body, args.timeout).await;
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    #[test]
    fn failures_show_the_host_not_the_check() {
        assert_eq!(
            super::shown("https://hc.example.com:8443/ping/5f0c1e7a-1b2c/start?rid=1"),
            "https://hc.example.com:8443/…"
        );
        assert_eq!(super::shown("http://h/ping/k/slug"), "http://h/…");
    }
}
