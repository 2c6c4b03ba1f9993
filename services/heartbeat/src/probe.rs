//! External probes: the monitor itself checks public endpoints (an HTTP
//! answer, an open TCP port, a TLS certificate's remaining days, a DNS
//! record) every `interval`. Each probe is a check like any other: a good
//! round is a success ping, a round that failed `retries + 1` attempts is a
//! failure ping carrying the reason, so probes share the checks' states,
//! flips, notifications, badges and metrics.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use serde::Deserialize;
use tokio::{io::AsyncReadExt, net::TcpStream};
use vigil_runtime::{
    config::{ConfigError, Validate, key, nonzero_duration},
    error::error_chain,
};

use crate::config::CheckConfig;

/// `[[heartbeat.probes]]`: one of `http`, `tcp`, `tls` or `dns`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeConfig {
    pub name: String,
    #[serde(default)]
    pub slug: String,
    #[serde(default)]
    pub tags: String,
    pub http: Option<HttpProbe>,
    pub tcp: Option<TcpProbe>,
    pub tls: Option<TlsProbe>,
    pub dns: Option<DnsProbe>,
    /// Time between rounds.
    #[serde(with = "humantime_serde", default = "minute")]
    pub interval: Duration,
    /// Longest wait for one attempt.
    #[serde(with = "humantime_serde", default = "ten_seconds")]
    pub timeout: Duration,
    /// Attempts repeated in a round before it counts as failed.
    #[serde(default = "one")]
    pub retries: u32,
    /// Wait between attempts of a round.
    #[serde(with = "humantime_serde", default = "second")]
    pub retry_delay: Duration,
}

fn minute() -> Duration {
    Duration::from_secs(60)
}
fn ten_seconds() -> Duration {
    Duration::from_secs(10)
}
fn second() -> Duration {
    Duration::from_secs(1)
}
fn one() -> u32 {
    1
}

/// `http = { url = "https://…", status = 200, keyword = "ok" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpProbe {
    pub url: String,
    /// Expected status; default any 2xx.
    pub status: Option<u16>,
    /// Text the body must contain.
    pub keyword: Option<String>,
    /// Text the body must not contain.
    pub keyword_absent: Option<String>,
    /// Slower answers fail.
    #[serde(with = "humantime_serde::option", default)]
    pub max_latency: Option<Duration>,
    /// Extra CA certificates (PEM) to trust, for private endpoints.
    pub ca_file: Option<PathBuf>,
}

/// `tcp = { address = "db.example.com:5432" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpProbe {
    pub address: String,
}

/// `tls = { address = "example.com:443", min_days = 14 }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsProbe {
    pub address: String,
    /// Name the certificate must hold; default: the address's host.
    pub server_name: Option<String>,
    /// Fewer days left before expiry fail.
    #[serde(default = "fourteen")]
    pub min_days: u32,
    /// Extra CA certificates (PEM) to trust.
    pub ca_file: Option<PathBuf>,
}

fn fourteen() -> u32 {
    14
}

/// `dns = { name = "example.com", record = "A", expect = "93.184.216.34" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsProbe {
    pub name: String,
    /// A, AAAA, CNAME, MX, NS or TXT.
    #[serde(default = "a_record")]
    pub record: String,
    /// A value the answer must hold; default: any answer.
    pub expect: Option<String>,
    /// The name server; default: the system's.
    pub server: Option<SocketAddr>,
}

fn a_record() -> String {
    "A".into()
}

const RECORD_TYPES: &[&str] = &["A", "AAAA", "CNAME", "MX", "NS", "TXT"];

impl ProbeConfig {
    /// What the probe looks at, as people write it.
    pub fn target(&self) -> String {
        match (&self.http, &self.tcp, &self.tls, &self.dns) {
            (Some(h), ..) => redacted(&h.url),
            (_, Some(t), ..) => format!("tcp://{}", t.address),
            (_, _, Some(t), _) => format!("tls://{}", t.address),
            (.., Some(d)) => format!("dns {} {}", d.record, d.name),
            _ => String::new(),
        }
    }

    /// The check that holds the probe's results. Its uuid is derived from
    /// the name, so it stays the same across restarts; pings from outside
    /// are refused for it.
    pub fn check(&self) -> CheckConfig {
        let uuid = uuid::Uuid::new_v5(&PROBE_NAMESPACE, self.name.as_bytes()).to_string();
        let mut check = CheckConfig::every(&self.name, &uuid, self.interval, self.round_time());
        check.slug = self.slug.clone();
        check.tags = self.tags.clone();
        check.desc = format!("probe of {}", self.target());
        check
    }

    /// The longest a round can take: its attempts and the waits between them.
    fn round_time(&self) -> Duration {
        let attempts = self.retries.saturating_add(1);
        (self.timeout + self.retry_delay) * attempts
    }
}

const PROBE_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6b1e_5a0c_7f2d_4e8a_9c3b_1d2e_3f4a_5b6c);

impl Validate for ProbeConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        if self.name.trim().is_empty() {
            return Err(ConfigError::invalid(
                key(prefix, "name"),
                "must not be empty",
            ));
        }
        let kinds = [
            self.http.is_some(),
            self.tcp.is_some(),
            self.tls.is_some(),
            self.dns.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return Err(ConfigError::invalid(
                prefix,
                "set exactly one of http, tcp, tls and dns",
            ));
        }
        nonzero_duration(prefix, "interval", self.interval)?;
        nonzero_duration(prefix, "timeout", self.timeout)?;
        if self.retries > 10 {
            return Err(ConfigError::invalid(key(prefix, "retries"), "at most 10"));
        }
        if let Some(h) = &self.http {
            let url = url::Url::parse(&h.url)
                .map_err(|e| ConfigError::invalid(key(prefix, "http.url"), e.to_string()))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(ConfigError::invalid(
                    key(prefix, "http.url"),
                    "must be an http:// or https:// address",
                ));
            }
            if let Some(s) = h.status
                && !(100..=599).contains(&s)
            {
                return Err(ConfigError::invalid(
                    key(prefix, "http.status"),
                    "must be an HTTP status (100-599)",
                ));
            }
        }
        for (field, address) in [
            ("tcp.address", self.tcp.as_ref().map(|t| &t.address)),
            ("tls.address", self.tls.as_ref().map(|t| &t.address)),
        ] {
            if let Some(a) = address
                && split_host_port(a).is_none()
            {
                return Err(ConfigError::invalid(
                    key(prefix, field),
                    format!("{a:?} is not host:port"),
                ));
            }
        }
        if let Some(d) = &self.dns
            && !RECORD_TYPES.contains(&d.record.to_ascii_uppercase().as_str())
        {
            return Err(ConfigError::invalid(
                key(prefix, "dns.record"),
                format!("must be one of {}", RECORD_TYPES.join(", ")),
            ));
        }
        self.check().validate(prefix)
    }
}

/// A URL without its user, password and query (which may hold tokens),
/// for descriptions, messages and logs.
fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => "(an unreadable URL)".into(),
    }
}

fn split_host_port(address: &str) -> Option<(&str, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = port.parse().ok()?;
    (!host.is_empty()).then_some((host, port))
}

/// A probe ready to run: its config and the clients it needs.
pub struct Prober {
    pub config: ProbeConfig,
    http: Option<reqwest::Client>,
    tls: Option<Arc<rustls::ClientConfig>>,
    dns: Option<hickory_resolver::TokioResolver>,
}

impl std::fmt::Debug for Prober {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prober")
            .field("name", &self.config.name)
            .finish_non_exhaustive()
    }
}

fn read_pem(field: &str, path: &std::path::Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| ConfigError::invalid(field, format!("{}: {e}", path.display())))
}

/// The roots a TLS probe trusts: the built-in web roots and `ca_file`.
fn roots(
    field: &str,
    ca_file: Option<&std::path::Path>,
) -> Result<rustls::RootCertStore, ConfigError> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let pem = read_pem(field, path)?;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| ConfigError::invalid(field, e.to_string()))?;
            roots
                .add(cert)
                .map_err(|e| ConfigError::invalid(field, e.to_string()))?;
        }
    }
    Ok(roots)
}

impl Prober {
    pub fn new(config: ProbeConfig, prefix: &str) -> Result<Self, ConfigError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = match &config.http {
            Some(h) => {
                // Each attempt is bounded by the probe's timeout (in round).
                let mut builder = reqwest::Client::builder()
                    .user_agent(concat!("vigil-heartbeat/", env!("CARGO_PKG_VERSION")))
                    .redirect(reqwest::redirect::Policy::limited(5));
                if let Some(path) = &h.ca_file {
                    let field = key(prefix, "http.ca_file");
                    for cert in reqwest::Certificate::from_pem_bundle(&read_pem(&field, path)?)
                        .map_err(|e| ConfigError::invalid(&field, e.to_string()))?
                    {
                        builder = builder.add_root_certificate(cert);
                    }
                }
                Some(
                    builder
                        .build()
                        .map_err(|e| ConfigError::invalid(prefix, e.to_string()))?,
                )
            }
            None => None,
        };
        let tls = match &config.tls {
            Some(t) => {
                let roots = roots(&key(prefix, "tls.ca_file"), t.ca_file.as_deref())?;
                Some(Arc::new(
                    rustls::ClientConfig::builder()
                        .with_root_certificates(roots)
                        .with_no_client_auth(),
                ))
            }
            None => None,
        };
        let dns = match &config.dns {
            Some(d) => Some(resolver(d).map_err(|e| ConfigError::invalid(key(prefix, "dns"), e))?),
            None => None,
        };
        Ok(Self {
            config,
            http,
            tls,
            dns,
        })
    }

    /// One round: up to `retries + 1` attempts. What was seen, or why it
    /// failed.
    pub async fn round(&self) -> Result<String, String> {
        let mut last = String::new();
        for attempt in 0..=self.config.retries {
            if attempt > 0 {
                tokio::time::sleep(self.config.retry_delay).await;
            }
            match tokio::time::timeout(self.config.timeout, self.attempt()).await {
                Ok(Ok(seen)) => return Ok(seen),
                Ok(Err(why)) => last = why,
                Err(_) => {
                    last = format!(
                        "no answer within {}",
                        humantime::format_duration(self.config.timeout)
                    )
                }
            }
        }
        let attempts = self.config.retries + 1;
        Err(if attempts > 1 {
            format!("{last} ({attempts} attempts)")
        } else {
            last
        })
    }

    async fn attempt(&self) -> Result<String, String> {
        let c = &self.config;
        if let (Some(h), Some(client)) = (&c.http, &self.http) {
            return http_attempt(h, client).await;
        }
        if let Some(t) = &c.tcp {
            let started = std::time::Instant::now();
            TcpStream::connect(&t.address)
                .await
                .map_err(|e| format!("cannot connect to {}: {e}", t.address))?;
            return Ok(format!(
                "{} open, connected in {} ms",
                t.address,
                started.elapsed().as_millis()
            ));
        }
        if let (Some(t), Some(config)) = (&c.tls, &self.tls) {
            return tls_attempt(t, config.clone()).await;
        }
        if let (Some(d), Some(resolver)) = (&c.dns, &self.dns) {
            return dns_attempt(d, resolver).await;
        }
        Err("the probe has nothing to check".into())
    }
}

/// Most of a body read for keywords.
const BODY_READ: usize = 1 << 20;

async fn http_attempt(h: &HttpProbe, client: &reqwest::Client) -> Result<String, String> {
    let started = std::time::Instant::now();
    let mut response = client.get(&h.url).send().await.map_err(|e| {
        format!(
            "GET {}: {}",
            redacted(&h.url),
            error_chain(&e.without_url())
        )
    })?;
    let status = response.status();
    let latency = started.elapsed();
    match h.status {
        Some(want) if status.as_u16() != want => {
            return Err(format!("status {status}, expected {want}"));
        }
        None if !status.is_success() => return Err(format!("status {status}, expected 2xx")),
        _ => {}
    }
    if h.keyword.is_some() || h.keyword_absent.is_some() {
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("reading the body: {}", error_chain(&e.without_url())))?
        {
            body.extend_from_slice(&chunk);
            if body.len() >= BODY_READ {
                break;
            }
        }
        let text = String::from_utf8_lossy(&body);
        if let Some(k) = &h.keyword
            && !text.contains(k.as_str())
        {
            return Err(format!("the body does not contain {k:?}"));
        }
        if let Some(k) = &h.keyword_absent
            && text.contains(k.as_str())
        {
            return Err(format!("the body contains {k:?}"));
        }
    }
    let ms = latency.as_millis();
    if let Some(max) = h.max_latency
        && latency > max
    {
        return Err(format!(
            "answered in {ms} ms, more than {} ms",
            max.as_millis()
        ));
    }
    Ok(format!("status {status} in {ms} ms"))
}

async fn tls_attempt(t: &TlsProbe, config: Arc<rustls::ClientConfig>) -> Result<String, String> {
    let (host, _) = split_host_port(&t.address).ok_or("not host:port")?;
    let name = t.server_name.clone().unwrap_or_else(|| host.to_owned());
    let server_name = rustls::pki_types::ServerName::try_from(name.clone())
        .map_err(|e| format!("{name:?} is not a server name: {e}"))?;
    let tcp = TcpStream::connect(&t.address)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", t.address))?;
    let mut stream = tokio_rustls::TlsConnector::from(config)
        .connect(server_name, tcp)
        .await
        .map_err(|e| format!("TLS handshake with {}: {e}", t.address))?;
    let (_, session) = stream.get_ref();
    let cert = session
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or("the server sent no certificate")?
        .clone();
    // The handshake is all we need; a read of 0 bytes is not waited for.
    let _ = tokio::time::timeout(Duration::from_millis(1), stream.read(&mut [0u8; 0])).await;
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| format!("cannot read the certificate: {e}"))?;
    let not_after = parsed.validity().not_after.timestamp();
    let left = not_after - jiff::Timestamp::now().as_second();
    let days = left.div_euclid(86_400);
    let expires = jiff::Timestamp::from_second(not_after)
        .map_or_else(|_| not_after.to_string(), |t| t.to_string());
    if days < i64::from(t.min_days) {
        return Err(format!(
            "the certificate of {name} expires in {days} days ({expires}), fewer than {}",
            t.min_days
        ));
    }
    Ok(format!(
        "the certificate of {name} expires in {days} days ({expires})"
    ))
}

fn resolver(d: &DnsProbe) -> Result<hickory_resolver::TokioResolver, String> {
    use hickory_resolver::{
        config::{NameServerConfig, ResolverConfig},
        net::runtime::TokioRuntimeProvider,
    };
    let provider = TokioRuntimeProvider::default();
    let builder = match d.server {
        Some(server) => {
            let mut name_server = NameServerConfig::udp_and_tcp(server.ip());
            for connection in &mut name_server.connections {
                connection.port = server.port();
            }
            let config = ResolverConfig::from_parts(None, Vec::new(), vec![name_server]);
            hickory_resolver::Resolver::builder_with_config(config, provider)
        }
        None => hickory_resolver::Resolver::builder(provider).map_err(|e| e.to_string())?,
    };
    builder.build().map_err(|e| e.to_string())
}

async fn dns_attempt(
    d: &DnsProbe,
    resolver: &hickory_resolver::TokioResolver,
) -> Result<String, String> {
    use hickory_resolver::proto::rr::RecordType;
    let record: RecordType = d
        .record
        .to_ascii_uppercase()
        .parse()
        .map_err(|e| format!("{}: {e}", d.record))?;
    let answer = resolver
        .lookup(d.name.as_str(), record)
        .await
        .map_err(|e| format!("{} {}: {e}", d.record, d.name))?;
    let values: Vec<String> = answer
        .answers()
        .iter()
        .map(|r| {
            r.data
                .to_string()
                .trim_end_matches('.')
                .trim_matches('"')
                .to_owned()
        })
        .collect();
    if values.is_empty() {
        return Err(format!("{} {}: no records", d.record, d.name));
    }
    if let Some(want) = &d.expect {
        let want = want.trim_end_matches('.');
        if !values
            .iter()
            .any(|v| v == want || v.ends_with(&format!(" {want}")))
        {
            return Err(format!(
                "{} {} is {}, not {want}",
                d.record,
                d.name,
                values.join(", ")
            ));
        }
    }
    Ok(format!("{} {} is {}", d.record, d.name, values.join(", ")))
}
