//! The end-to-end harness: builds the real binaries once, starts them on
//! free loopback ports with their own config and data directory, waits for
//! health, and always stops what it started (SIGTERM, then SIGKILL on drop).

pub mod apps;

use std::{
    fs::File,
    io::{BufRead, BufReader, Read, Write},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

/// Every binary the suite ships.
pub const BINARIES: &[&str] = &[
    "vigil",
    "vigil-agent",
    "vigil-ingest",
    "vigil-query",
    "vigil-alerting",
    "vigil-ui-gateway",
    "vigil-heartbeat",
];

/// The repository root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Builds the binaries (once per test process; cargo's lock serializes
/// test processes) and returns the directory holding them.
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(workspace_root())
            .args(["build", "--locked", "--bins"]);
        for package in [
            "vigil-cli",
            "vigil-agent",
            "vigil-ingest",
            "vigil-query",
            "vigil-alerting",
            "vigil-ui-gateway",
            "vigil-heartbeat",
        ] {
            cmd.args(["-p", package]);
        }
        let status = cmd.status().expect("cargo runs");
        assert!(status.success(), "building the binaries failed");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map_or_else(|| workspace_root().join("target"), PathBuf::from);
        target.join("debug")
    })
}

/// A free loopback port (bound then released; the OS does not hand it out
/// again at once).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A started binary. Dropping it kills it.
pub struct Running {
    pub name: String,
    child: Option<Child>,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn stdout_text(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Whether it exited; its status if so.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let pid = self.pid();
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        self.wait(timeout)
    }

    /// SIGKILL, as a crash or the OOM killer would; waits for the exit.
    pub fn kill_hard(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.try_status() {
                return Some(status);
            }
            pause(Duration::from_millis(50));
        }
        None
    }

    /// Panics with the process's output if it has exited.
    pub fn assert_alive(&mut self) {
        if let Some(status) = self.try_status() {
            panic!(
                "{} exited early with {status}\nstdout:\n{}\nstderr:\n{}",
                self.name,
                self.stdout_text(),
                self.stderr_text()
            );
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take()
            && child.try_wait().ok().flatten().is_none()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sleeps the test thread (tests are not async).
#[allow(clippy::disallowed_methods)]
pub fn pause(d: Duration) {
    std::thread::sleep(d);
}

/// Starts `binary` with `args` and extra environment; output goes to files
/// in `dir`. The environment is cleared of VIGIL_* and RUST_LOG first.
pub fn start(dir: &Path, binary: &str, args: &[&str], env: &[(&str, &str)]) -> Running {
    let tag = format!("{binary}-{}", free_port());
    let stdout = dir.join(format!("{tag}.out"));
    let stderr = dir.join(format!("{tag}.err"));
    let mut cmd = Command::new(bin_dir().join(binary));
    cmd.args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(File::create(&stdout).expect("stdout file"))
        .stderr(File::create(&stderr).expect("stderr file"));
    for (key, _) in std::env::vars() {
        if key.starts_with("VIGIL_") || key == "RUST_LOG" {
            cmd.env_remove(key);
        }
    }
    cmd.env("RUST_LOG", "info");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {binary}: {e}"));
    Running {
        name: binary.to_owned(),
        child: Some(child),
        stdout,
        stderr,
    }
}

/// Runs `binary` to completion (at most `timeout`), returning status and output.
pub fn run_to_end(
    dir: &Path,
    binary: &str,
    args: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
) -> (ExitStatus, String, String) {
    let mut running = start(dir, binary, args, env);
    let status = running
        .wait(timeout)
        .unwrap_or_else(|| panic!("{binary} {args:?} did not exit within {timeout:?}"));
    (status, running.stdout_text(), running.stderr_text())
}

fn agent() -> &'static ureq::Agent {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    AGENT.get_or_init(|| {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into()
    })
}

/// GET `url`: (status, body), or None when nothing answers.
pub fn http_get(url: &str) -> Option<(u16, String)> {
    let mut response = agent().get(url).call().ok()?;
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().ok()?;
    Some((status, body))
}

/// POST an empty body to `url`: (status, body).
pub fn http_post(url: &str) -> Option<(u16, String)> {
    let mut response = agent().post(url).send_empty().ok()?;
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().ok()?;
    Some((status, body))
}

/// A signed-in browser session at the UI gateway (token mode): its cookie
/// and CSRF token.
#[derive(Debug, Clone)]
pub struct UiSession {
    base: String,
    cookie: String,
    pub csrf: String,
}

impl UiSession {
    /// Signs in at `base` (`http://host:port`) with the login token, or
    /// None when the gateway does not answer or refuses.
    pub fn sign_in(base: &str, token: &str) -> Option<Self> {
        static NO_REDIRECTS: OnceLock<ureq::Agent> = OnceLock::new();
        let agent = NO_REDIRECTS.get_or_init(|| {
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .max_redirects(0)
                .timeout_global(Some(Duration::from_secs(10)))
                .build()
                .into()
        });
        let body = format!("token={token}&return_to=%2F");
        let response = agent
            .post(&format!("{base}/auth/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .send(body.as_bytes())
            .ok()?;
        if response.status().as_u16() != 303 {
            return None;
        }
        let cookie = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with("vigil_session="))?
            .split(';')
            .next()?
            .to_owned();
        let mut session = Self {
            base: base.to_owned(),
            cookie,
            csrf: String::new(),
        };
        let (status, me) = session.get("/api/v1/session")?;
        if status != 200 {
            return None;
        }
        let me: serde_json::Value = serde_json::from_str(&me).ok()?;
        session.csrf = me["csrf"].as_str()?.to_owned();
        Some(session)
    }

    /// GET a path with the session: (status, body).
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut response = agent()
            .get(&format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .call()
            .ok()?;
        let status = response.status().as_u16();
        Some((status, response.body_mut().read_to_string().ok()?))
    }

    /// Calls `service`/`method` through the gateway's JSON API.
    pub fn rpc(
        &self,
        service: &str,
        method: &str,
        body: &serde_json::Value,
    ) -> Option<(u16, serde_json::Value)> {
        let mut response = agent()
            .post(&format!("{}/api/v1/rpc/{service}/{method}", self.base))
            .header("cookie", &self.cookie)
            .header("x-csrf-token", &self.csrf)
            .header("content-type", "application/json")
            .send(body.to_string().as_bytes())
            .ok()?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().ok()?;
        Some((
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        ))
    }
}

/// Runs the real `curl` against `url`, as a cron job pinging a check would:
/// (HTTP status, body).
pub fn curl(url: &str) -> (u16, String) {
    curl_with(&[], url)
}

/// A request by the real `curl` with extra arguments (`-X`, `-H`, `--data`
/// …): the status and the body.
pub fn curl_with(args: &[&str], url: &str) -> (u16, String) {
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .expect("curl runs (scripts/install-deps.sh installs it)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// Polls `probe` until it returns Some, or panics after `timeout` with `what`.
pub fn eventually<T>(timeout: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        pause(Duration::from_millis(200));
    }
}

/// Waits until `url` answers 200.
pub fn wait_healthy(running: &mut Running, url: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        running.assert_alive();
        if matches!(http_get(url), Some((200, _))) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} not healthy at {url} within {timeout:?}\nstderr:\n{}",
            running.name,
            running.stderr_text()
        );
        pause(Duration::from_millis(100));
    }
}

/// This machine's name as the agent reports it.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

/// Parses JSON, with the text in the panic message when it is not JSON.
pub fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// A webhook receiver on loopback: answers every POST 200 and keeps its
/// JSON body, in order.
pub fn webhook_receiver() -> (u16, Arc<Mutex<Vec<serde_json::Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let store = bodies.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((name, value)) = line.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_ok() {
                if let Ok(v) = serde_json::from_slice(&body) {
                    store.lock().expect("lock").push(v);
                }
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        }
    });
    (port, bodies)
}
