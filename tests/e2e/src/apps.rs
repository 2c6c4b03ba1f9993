//! Three real HTTP processes for tests that need applications the agent
//! can see: loadgen → frontend → backend (Python, each named after its
//! role through a symlink to the interpreter, since the kernel names a
//! process after the file it executed). loadgen starts a W3C trace per
//! request and frontend passes it on, so the agent's spans of one request
//! form one trace.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::eventually;

const FRONTEND: &str = r#"
import sys, time, urllib.request
from http.server import HTTPServer, BaseHTTPRequestHandler
port, backend = int(sys.argv[1]), sys.argv[2]
log = open("frontend.log", "a", buffering=1)
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        # Pass the W3C trace context on, as an instrumented service would.
        headers = {}
        if self.headers.get("traceparent"):
            headers["traceparent"] = self.headers["traceparent"]
        try:
            with urllib.request.urlopen(urllib.request.Request(backend, headers=headers), timeout=1) as r:
                r.read()
            code = 200
            log.write("%s INFO served GET / from backend\n" % time.strftime("%Y-%m-%dT%H:%M:%S"))
        except Exception as e:
            code = 502
            log.write("%s ERROR backend unreachable: %s\n" % (time.strftime("%Y-%m-%dT%H:%M:%S"), e))
        self.send_response(code)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
HTTPServer(("127.0.0.1", port), H).serve_forever()
"#;

const LOADGEN: &str = r#"
import os, sys, time, urllib.request, urllib.error
url = sys.argv[1]
while True:
    # A new trace per request, as a traced client starts one.
    parent = "00-%s-%s-01" % (os.urandom(16).hex(), os.urandom(8).hex())
    try:
        urllib.request.urlopen(urllib.request.Request(url, headers={"traceparent": parent}), timeout=2).read()
    except Exception:
        pass
    time.sleep(0.01)
"#;

/// A process killed when dropped.
pub struct Proc(Child);

impl Proc {
    /// Starts `command`; panics naming it when it cannot.
    pub fn spawn(command: &mut Command) -> Self {
        Self(
            command
                .spawn()
                .unwrap_or_else(|e| panic!("{:?} starts: {e}", command.get_program())),
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether this runs as root (the agent's eBPF needs it).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// The real Python interpreter (not a pyenv shim).
fn python() -> PathBuf {
    let out = Command::new("python3")
        .args([
            "-c",
            "import os, sys; print(os.path.realpath(sys.executable))",
        ])
        .output()
        .expect("python3 runs");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// The three applications' files in `dir`, and their ports.
pub struct Apps {
    dir: PathBuf,
    pub backend_port: u16,
    pub frontend_port: u16,
}

impl Apps {
    pub fn new(dir: &Path) -> Self {
        std::fs::write(dir.join("frontend.py"), FRONTEND).expect("write");
        std::fs::write(dir.join("loadgen.py"), LOADGEN).expect("write");
        for name in ["backend", "frontend", "loadgen"] {
            std::os::unix::fs::symlink(python(), dir.join(name)).expect("symlink");
        }
        Self {
            dir: dir.to_owned(),
            backend_port: crate::free_port(),
            frontend_port: crate::free_port(),
        }
    }

    fn spawn(&self, name: &str, args: &[&str], port: Option<u16>) -> Proc {
        let mut c = Command::new(self.dir.join(name));
        c.args(args)
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let p = Proc(c.spawn().unwrap_or_else(|e| panic!("{name} starts: {e}")));
        if let Some(port) = port {
            eventually(
                Duration::from_secs(20),
                &format!("{name} listening"),
                || std::net::TcpStream::connect(("127.0.0.1", port)).ok(),
            );
        }
        p
    }

    /// Python's http.server.
    pub fn backend(&self) -> Proc {
        let port = self.backend_port.to_string();
        self.spawn(
            "backend",
            &["-m", "http.server", &port, "--bind", "127.0.0.1"],
            Some(self.backend_port),
        )
    }

    /// Answers 200 when backend does, else 502; logs each request to
    /// `frontend.log` (INFO when served, ERROR when backend failed).
    pub fn frontend(&self) -> Proc {
        let backend = format!("http://127.0.0.1:{}/", self.backend_port);
        let port = self.frontend_port.to_string();
        self.spawn(
            "frontend",
            &["frontend.py", &port, &backend],
            Some(self.frontend_port),
        )
    }

    /// About 100 requests a second to frontend.
    pub fn loadgen(&self) -> Proc {
        let url = format!("http://127.0.0.1:{}/", self.frontend_port);
        self.spawn("loadgen", &["loadgen.py", &url], None)
    }
}
