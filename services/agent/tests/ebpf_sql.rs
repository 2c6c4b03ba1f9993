//! Postgres and MariaDB queries seen from syscall tracepoints against
//! ground truth (root and BTF; CI runs as root): Debian's PostgreSQL 15
//! driven by the real psql, Debian's MariaDB driven by the real mariadb
//! client, each running a script with a known number of statements of each
//! kind, some of which fail.
//!
//! Counted on the client side for both; on the server side for MariaDB
//! (one process, a thread per connection). A Postgres backend is a process
//! forked after accept(): sockets are followed per process, so its server
//! side is not seen (see docs/metrics.md).

#![allow(clippy::unwrap_used, clippy::print_stderr, clippy::disallowed_methods)]

mod common;

use std::{
    path::Path,
    process::{Command, Stdio},
};

use common::{client_count, free_port, settle};
use vigil_agent::ebpf::{
    L7Tracer,
    l7::{Protocol, Side},
};

/// (statement, verb, fails) × repetitions: 8 SELECT ok, 3 INSERT ok,
/// 2 SELECT errors (no such table), 1 CREATE ok.
fn script() -> (String, Vec<(&'static str, &'static str, u64)>) {
    let mut sql = String::from("CREATE TABLE t (a int);\n");
    for i in 0..3 {
        sql += &format!("INSERT INTO t VALUES ({i});\n");
    }
    for i in 0..8 {
        sql += &format!("SELECT {i};\n");
    }
    for _ in 0..2 {
        sql += "SELECT * FROM no_such_table;\n";
    }
    let expected = vec![
        ("CREATE", "ok", 1),
        ("INSERT", "ok", 3),
        ("SELECT", "ok", 8),
        ("SELECT", "error", 2),
    ];
    (sql, expected)
}

fn run(program: &str, args: &[&str], stdin: &str) -> String {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

#[test]
fn postgres_queries_and_errors_match_ground_truth() {
    let pg_installed = Path::new(PG_BIN).join("postgres").exists();
    if !common::installed("psql") || !pg_installed {
        assert!(
            pg_installed || std::env::var("CI").as_deref() != Ok("true"),
            "CI must have PostgreSQL 15: scripts/install-deps.sh installs it"
        );
        return;
    }
    let Some(mut t) = common::started(L7Tracer::start) else {
        return;
    };
    // PostgreSQL refuses to run as root: its files and process belong to
    // the `postgres` user the Debian package creates.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let chown = Command::new("chown")
        .args(["postgres", dir.path().to_str().unwrap()])
        .status()
        .unwrap();
    assert!(chown.success());
    let as_postgres = |program: &str| {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", &format!("{PG_BIN}/{program}")]);
        c
    };
    let init = as_postgres("initdb")
        .args([
            "-D",
            data.to_str().unwrap(),
            "-A",
            "trust",
            "-U",
            "postgres",
        ])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(init.success(), "initdb failed");
    let port = free_port();
    let (_server, addr) = common::serve(
        as_postgres("postgres").args([
            "-D",
            data.to_str().unwrap(),
            "-p",
            &port.to_string(),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            &format!("unix_socket_directories={}", dir.path().display()),
            "-c",
            "fsync=off",
        ]),
        port,
    );
    let (sql, expected) = script();
    let output = run(
        "psql",
        &[
            "-X",
            &format!("host=127.0.0.1 port={port} user=postgres dbname=postgres sslmode=disable"),
            "-f",
            "-",
        ],
        &sql,
    );
    assert_eq!(output.matches("ERROR:").count(), 2, "{output}");
    settle(&mut t, |t| {
        client_count(t, addr, Protocol::Postgres, "SELECT", "error") >= 2
    });
    let seen: Vec<_> = t
        .stats
        .requests
        .iter()
        .filter(|(k, _)| k.protocol == Protocol::Postgres)
        .collect();
    eprintln!("postgres: {seen:?}");
    for (verb, status, n) in expected {
        assert_eq!(
            client_count(&t, addr, Protocol::Postgres, verb, status),
            n,
            "client {verb} {status}"
        );
    }
}

#[test]
fn mariadb_queries_and_errors_match_ground_truth() {
    if !common::installed("mariadbd") || !common::installed("mariadb") {
        return;
    }
    let Some(mut t) = common::started(L7Tracer::start) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let install = Command::new("mariadb-install-db")
        .args([
            &format!("--datadir={}", data.display()),
            "--user=root",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(install.success(), "mariadb-install-db failed");
    let port = free_port();
    // The server's own record of every statement it received.
    let general_log = dir.path().join("general.log");
    let (server, addr) = common::serve(
        Command::new("mariadbd").args([
            "--no-defaults",
            &format!("--datadir={}", data.display()),
            &format!("--port={port}"),
            "--bind-address=127.0.0.1",
            &format!("--socket={}", dir.path().join("sock").display()),
            "--user=root",
            "--skip-grant-tables",
            "--skip-log-bin",
            "--innodb-buffer-pool-size=16M",
            "--general-log",
            &format!("--general-log-file={}", general_log.display()),
        ]),
        port,
    );
    let (sql, expected) = script();
    let output = run(
        "mariadb",
        &[
            "--no-defaults",
            "--force",
            "-h",
            "127.0.0.1",
            "-P",
            &port.to_string(),
            "-u",
            "root",
            "-D",
            "mysql",
        ],
        &format!("CREATE DATABASE vigil_test; USE vigil_test;\n{sql}"),
    );
    assert_eq!(output.matches("ERROR 1146").count(), 2, "{output}");
    let mariadb_pid = server.0.id();
    settle(&mut t, |t| {
        client_count(t, addr, Protocol::Mysql, "SELECT", "error") >= 2
            && t.stats.count(
                mariadb_pid,
                Side::Server,
                None,
                Protocol::Mysql,
                "SELECT",
                "error",
            ) >= 2
    });
    let seen: Vec<_> = t
        .stats
        .requests
        .iter()
        .filter(|(k, _)| k.protocol == Protocol::Mysql)
        .collect();
    eprintln!("mariadb: {seen:?}");
    // Ground truth: the statements in the server's general log (the
    // client adds its own, e.g. `select @@version_comment`), less the
    // script's failures, which the client printed.
    let log = std::fs::read_to_string(&general_log).unwrap();
    let logged = |verb: &str| {
        log.lines()
            .filter_map(|l| l.split_once(" Query\t"))
            .filter(|(_, q)| q.trim_start().to_ascii_uppercase().starts_with(verb))
            .count() as u64
    };
    let errors: u64 = expected
        .iter()
        .filter(|(_, status, _)| *status == "error")
        .map(|(_, _, n)| n)
        .sum();
    assert!(logged("SELECT") >= 10, "{log}");
    for (verb, status) in [
        ("CREATE", "ok"),
        ("INSERT", "ok"),
        ("SELECT", "ok"),
        ("SELECT", "error"),
    ] {
        let n = match status {
            "error" => errors,
            _ if verb == "SELECT" => logged(verb) - errors,
            _ => logged(verb),
        };
        assert_eq!(
            client_count(&t, addr, Protocol::Mysql, verb, status),
            n,
            "client {verb} {status}"
        );
        assert_eq!(
            t.stats.count(
                mariadb_pid,
                Side::Server,
                None,
                Protocol::Mysql,
                verb,
                status
            ),
            n,
            "server {verb} {status}"
        );
    }
}
