//! The heartbeat monitor's off-cluster packaging: the systemd unit in
//! deploy/systemd is valid for systemd (`systemd-analyze verify`, with its
//! ExecStart pointing at the built binary), and the binary runs the way the
//! unit and the container image run it: a config file, its state where
//! `VIGIL_DATA_DIR` says. (No container engine runs on these machines, so
//! deploy/container/heartbeat.Dockerfile is not built here.)

#![allow(clippy::unwrap_used)]

use std::{process::Command, time::Duration};

use vigil_e2e::{bin_dir, curl, free_port, start, wait_healthy, workspace_root};

#[test]
fn the_systemd_unit_verifies() {
    let unit =
        std::fs::read_to_string(workspace_root().join("deploy/systemd/vigil-heartbeat.service"))
            .unwrap();
    assert!(
        unit.contains(
            "ExecStart=/usr/local/bin/vigil-heartbeat --config /etc/vigil/heartbeat.toml"
        )
    );
    let dir = tempfile::tempdir().unwrap();
    let binary = bin_dir().join("vigil-heartbeat");
    let local = dir.path().join("vigil-heartbeat.service");
    std::fs::write(
        &local,
        unit.replace(
            "/usr/local/bin/vigil-heartbeat",
            &binary.display().to_string(),
        ),
    )
    .unwrap();
    let verify = |path: &std::path::Path| {
        Command::new("systemd-analyze")
            .arg("verify")
            .arg(path)
            .output()
    };
    let output = match verify(&local) {
        Ok(o) => o,
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!(
                "SKIPPED: systemd-analyze cannot run ({e}); scripts/install-deps.sh installs systemd"
            );
            return;
        }
        Err(e) => panic!("systemd-analyze cannot run in CI: {e}"),
    };
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // The check can fail: a unit with a typo is refused.
    let broken = dir.path().join("broken.service");
    std::fs::write(
        &broken,
        std::fs::read_to_string(&local)
            .unwrap()
            .replace("ExecStart=", "ExecStrat="),
    )
    .unwrap();
    assert!(!verify(&broken).unwrap().status.success());
}

#[test]
fn the_binary_runs_as_the_unit_and_the_image_run_it() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (http, grpc) = (free_port(), free_port());
    let config = dir.path().join("heartbeat.toml");
    std::fs::write(
        &config,
        format!(
            "[heartbeat.http]\nlisten = \"127.0.0.1:{http}\"\n[heartbeat.grpc]\nlisten = \"127.0.0.1:{grpc}\"\n[[heartbeat.checks]]\nname = \"cluster\"\nuuid = \"6f1d2c3b-4a59-4e8d-9c7b-1a2b3c4d5e6f\"\nperiod = \"5m\"\n"
        ),
    )
    .unwrap();
    let state_text = state.display().to_string();
    let mut running = start(
        dir.path(),
        "vigil-heartbeat",
        &["--config", &config.display().to_string()],
        &[("VIGIL_DATA_DIR", &state_text)],
    );
    wait_healthy(
        &mut running,
        &format!("http://127.0.0.1:{http}/readyz"),
        Duration::from_secs(30),
    );
    let (code, body) = curl(&format!(
        "http://127.0.0.1:{http}/ping/6f1d2c3b-4a59-4e8d-9c7b-1a2b3c4d5e6f"
    ));
    assert_eq!((code, body.as_str()), (200, "OK"));
    assert!(
        state.join("heartbeat.redb").exists(),
        "state in VIGIL_DATA_DIR"
    );
    // SIGTERM (systemd's and docker's stop) drains and exits cleanly.
    let status = running
        .terminate(Duration::from_secs(20))
        .expect("stops on SIGTERM");
    assert!(status.success(), "{status}");
}
