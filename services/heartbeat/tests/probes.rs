//! External probes against real servers on loopback: an HTTP server
//! (status, keywords, latency, timeout), TCP ports open and closed, a TLS
//! server whose certificate the test makes to expire in a few days (from a
//! CA it also makes), and DNS records served by a real dnsmasq.

#![allow(clippy::unwrap_used)]

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::net::TcpListener;
use vigil_heartbeat::probe::{ProbeConfig, Prober};

fn prober(toml: &str) -> Prober {
    let config: ProbeConfig = toml::from_str(&format!("name = \"p\"\n{toml}")).unwrap();
    use vigil_runtime::config::Validate;
    config.validate("heartbeat.probes[0]").unwrap();
    Prober::new(config, "heartbeat.probes[0]").unwrap()
}

async fn http_server() -> SocketAddr {
    use axum::{Router, http::StatusCode, routing::get};
    let app = Router::new()
        .route("/ok", get(|| async { "all good" }))
        .route(
            "/error",
            get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "broken") }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(400)).await;
                "late but fine"
            }),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[tokio::test]
async fn http_probes_check_status_keywords_and_latency() {
    let addr = http_server().await;
    let probe = |path: &str, extra: &str| {
        prober(&format!(
            "http = {{ url = \"http://{addr}{path}\"{extra} }}\ntimeout = \"2s\"\nretries = 0"
        ))
    };
    let seen = probe("/ok", "").round().await.unwrap();
    assert!(seen.starts_with("status 200 OK in "), "{seen}");
    probe("/ok", ", keyword = \"good\"").round().await.unwrap();
    let e = probe("/ok", ", keyword = \"bad\"")
        .round()
        .await
        .unwrap_err();
    assert_eq!(e, "the body does not contain \"bad\"");
    let e = probe("/ok", ", keyword_absent = \"good\"")
        .round()
        .await
        .unwrap_err();
    assert_eq!(e, "the body contains \"good\"");
    // Credentials and tokens in a probe's URL stay out of its messages.
    let secret = prober(
        "http = { url = \"http://user:hunter2@127.0.0.1:1/health?token=s3cret\" }\ntimeout = \"2s\"\nretries = 0",
    );
    assert_eq!(secret.config.target(), "http://127.0.0.1:1/health");
    let e = secret.round().await.unwrap_err();
    assert!(
        !e.contains("hunter2") && !e.contains("s3cret") && !e.contains("user"),
        "{e}"
    );
    let e = probe("/error", "").round().await.unwrap_err();
    assert_eq!(e, "status 500 Internal Server Error, expected 2xx");
    probe("/error", ", status = 500").round().await.unwrap();
    let e = probe("/slow", ", max_latency = \"100ms\"")
        .round()
        .await
        .unwrap_err();
    assert!(e.contains("more than 100 ms"), "{e}");
    let slow = prober(&format!(
        "http = {{ url = \"http://{addr}/slow\" }}\ntimeout = \"100ms\"\nretries = 2\nretry_delay = \"10ms\""
    ));
    let e = slow.round().await.unwrap_err();
    assert!(
        e.contains("100ms") && e.ends_with("(3 attempts)"),
        "timeouts, retried: {e}"
    );
}

#[tokio::test]
async fn tcp_probes_see_open_and_closed_ports() {
    let open = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = open.local_addr().unwrap();
    let seen = prober(&format!("tcp = {{ address = \"{addr}\" }}"))
        .round()
        .await
        .unwrap();
    assert!(seen.starts_with(&format!("{addr} open")), "{seen}");
    drop(open);
    let e = prober(&format!(
        "tcp = {{ address = \"{addr}\" }}\nretries = 1\nretry_delay = \"10ms\""
    ))
    .round()
    .await
    .unwrap_err();
    assert!(
        e.starts_with(&format!("cannot connect to {addr}")) && e.ends_with("(2 attempts)"),
        "{e}"
    );
}

/// A CA and a certificate for `localhost` that expires `days` from now.
fn short_lived_certificate(
    days: i64,
) -> (
    String,
    rustls::pki_types::CertificateDer<'static>,
    rustls::pki_types::PrivateKeyDer<'static>,
) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "vigil probe test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    let expiry = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_hours(24 * days))
        .unwrap()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    leaf.not_after = rcgen::date_time_ymd(
        i32::from(expiry.year()),
        expiry.month() as u8,
        expiry.day() as u8,
    );
    leaf.not_before = rcgen::date_time_ymd(2020, 1, 1);
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    (
        ca_cert.pem(),
        cert.der().clone(),
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
}

async fn tls_server(
    cert: rustls::pki_types::CertificateDer<'static>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
) -> SocketAddr {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    use tokio::io::AsyncWriteExt;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn tls_probes_count_the_days_left() {
    let (ca_pem, cert, key) = short_lived_certificate(5);
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let addr = tls_server(cert, key).await;
    let probe = |min_days: u32, ca: bool| {
        let ca = if ca {
            format!(", ca_file = \"{}\"", ca_file.display())
        } else {
            String::new()
        };
        prober(&format!(
            "tls = {{ address = \"{addr}\", server_name = \"localhost\", min_days = {min_days}{ca} }}\nretries = 0"
        ))
    };
    // Expires at midnight UTC five days on: four whole days and some left.
    let e = probe(14, true).round().await.unwrap_err();
    assert!(
        e.starts_with("the certificate of localhost expires in 4 days")
            && e.ends_with("fewer than 14"),
        "{e}"
    );
    let seen = probe(3, true).round().await.unwrap();
    assert!(
        seen.starts_with("the certificate of localhost expires in 4 days"),
        "{seen}"
    );
    let e = probe(3, false).round().await.unwrap_err();
    assert!(
        e.contains("TLS handshake") && e.contains("UnknownIssuer"),
        "a certificate nobody trusts fails: {e}"
    );
}

/// A dnsmasq on a loopback port serving two records, or None (with why)
/// when dnsmasq is missing outside CI.
struct Dnsmasq(std::process::Child, u16);

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn dnsmasq() -> Option<Dnsmasq> {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = std::process::Command::new("dnsmasq")
        .args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            "--user=",
            &format!("--port={port}"),
            "--address=/probe.test/10.1.2.3",
            "--txt-record=probe.test,hello world",
        ])
        .stderr(std::process::Stdio::null())
        .spawn();
    match child {
        Ok(c) => Some(Dnsmasq(c, port)),
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("SKIPPED: dnsmasq cannot run ({e}); scripts/install-deps.sh installs it");
            None
        }
        Err(e) => panic!("dnsmasq cannot run in CI: {e}"),
    }
}

#[tokio::test]
async fn dns_probes_read_records_from_a_real_server() {
    let Some(server) = dnsmasq() else { return };
    let port = server.1;
    let probe = |record: &str, name: &str, expect: Option<&str>| {
        let expect = expect
            .map(|e| format!(", expect = \"{e}\""))
            .unwrap_or_default();
        prober(&format!(
            "dns = {{ name = \"{name}\", record = \"{record}\", server = \"127.0.0.1:{port}\"{expect} }}\ntimeout = \"2s\"\nretries = 3\nretry_delay = \"200ms\""
        ))
    };
    // dnsmasq needs a moment to listen: the probe's retries cover it.
    let seen = probe("A", "probe.test", Some("10.1.2.3"))
        .round()
        .await
        .unwrap();
    assert_eq!(seen, "A probe.test is 10.1.2.3");
    let e = probe("A", "probe.test", Some("10.9.9.9"))
        .round()
        .await
        .unwrap_err();
    assert!(
        e.starts_with("A probe.test is 10.1.2.3, not 10.9.9.9"),
        "{e}"
    );
    let seen = probe("TXT", "probe.test", None).round().await.unwrap();
    assert!(seen.contains("hello world"), "{seen}");
    let e = probe("A", "missing.test", None).round().await.unwrap_err();
    assert!(e.starts_with("A missing.test"), "{e}");
}
