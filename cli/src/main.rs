//! `vigil`: the suite in one binary.
//!
//! `vigil up` hosts ingest, query, alerting, the UI gateway, the heartbeat
//! monitor and the node agent in ONE process sharing one embedded redb
//! store (monolith mode). Each service still serves its own ports and calls
//! the others through their gRPC contracts, exactly as when split.

mod ping;

use std::{
    io::Write,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use tokio::task::JoinSet;
use vigil_runtime::{
    Shutdown,
    auth::{AccessConfig, ProjectConfig, generate_api_key},
    config::{ConfigLoader, LogConfig},
    service::{DRAIN_TIMEOUT, EXIT_CONFIG},
};
use vigil_storage::{Deployment, StorageConfig};

#[derive(Debug, Parser)]
#[command(
    name = "vigil",
    version,
    about = "Vigil: self-hosted observability with zero application changes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole suite on this machine in one process, with embedded storage.
    Up(UpArgs),
    /// Ping a heartbeat check, or run a command between a start ping and a
    /// ping with its exit status and the tail of its output (for cron jobs
    /// and backups): `vigil ping <url> -- <command> [args]`.
    Ping(ping::PingArgs),
    /// Check a configuration file (and VIGIL_* variables) without starting anything.
    CheckConfig {
        /// Configuration file (.toml, .yaml or .yml).
        #[arg(long, short = 'c', value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, clap::Args)]
struct UpArgs {
    /// Configuration file (.toml, .yaml or .yml). VIGIL_<SECTION>__<KEY>
    /// environment variables override it.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where embedded state lives (overrides `data_dir`).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Run only these services (comma-separated). Default: all.
    #[arg(long, value_delimiter = ',', value_name = "SERVICES")]
    only: Vec<Service>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Service {
    Ingest,
    Query,
    Alerting,
    UiGateway,
    Heartbeat,
    Agent,
}

const ALL: [Service; 6] = [
    Service::Ingest,
    Service::Query,
    Service::Alerting,
    Service::UiGateway,
    Service::Heartbeat,
    Service::Agent,
];

/// Every section of the configuration, loaded and validated up front so
/// that a bad key stops start-up before anything binds a port.
struct SuiteConfig {
    data_dir: PathBuf,
    storage: StorageConfig,
    projects: Vec<ProjectConfig>,
    access: AccessConfig,
    ingest: vigil_ingest::IngestConfig,
    query: vigil_query::QueryConfig,
    alerting: vigil_alerting::AlertingConfig,
    ui_gateway: vigil_ui_gateway::UiGatewayConfig,
    heartbeat: vigil_heartbeat::HeartbeatConfig,
    agent: vigil_agent::AgentConfig,
    /// Checked only: `vigil up` does not run the cluster agent (it is
    /// `vigil-cluster-agent`, in a cluster).
    _cluster_agent: vigil_agent::cluster::ClusterAgentConfig,
}

impl SuiteConfig {
    fn load(loader: &ConfigLoader) -> Result<Self, vigil_runtime::config::ConfigError> {
        let _: LogConfig = loader.section("log")?;
        Ok(Self {
            data_dir: loader.data_dir()?,
            storage: loader.section("storage")?,
            projects: loader.section("projects")?,
            access: loader.section("access")?,
            ingest: loader.section("ingest")?,
            query: loader.section("query")?,
            alerting: loader.section("alerting")?,
            ui_gateway: loader.section("ui_gateway")?,
            heartbeat: loader.section("heartbeat")?,
            agent: loader.section("agent")?,
            _cluster_agent: loader.section("cluster_agent")?,
        })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => {
            let checked = ConfigLoader::load(config.as_deref())
                .and_then(|loader| SuiteConfig::load(&loader).map(|_| ()));
            match checked {
                Ok(()) => {
                    println!("configuration is valid");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("vigil: {e}");
                    ExitCode::from(EXIT_CONFIG)
                }
            }
        }
        Command::Up(args) => up(args),
        Command::Ping(args) => match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(ping::run(args)),
            Err(e) => {
                eprintln!("vigil ping: cannot start the async runtime: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn up(args: UpArgs) -> ExitCode {
    let loaded = vigil_runtime::service::load(args.config.as_deref())
        .and_then(|loader| SuiteConfig::load(&loader));
    let mut suite = match loaded {
        Ok(suite) => suite,
        Err(e) => {
            eprintln!("vigil: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Some(dir) = args.data_dir {
        suite.data_dir = dir;
    }
    let services = if args.only.is_empty() {
        ALL.to_vec()
    } else {
        args.only
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("vigil")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vigil: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        match run_suite(suite, &services).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("vigil: {e:#}");
                ExitCode::FAILURE
            }
        }
    })
}

/// A listen address as a local client reaches it (0.0.0.0 → 127.0.0.1).
fn reachable(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    }
}

/// The API key the local agent uses: the first key of the first configured
/// project that has one (inline or in its `api_keys_file`), or a generated
/// one kept in `<data_dir>/api-key` for the `default` project.
fn ensure_project(suite: &mut SuiteConfig) -> anyhow::Result<(String, String, bool)> {
    for (i, project) in suite.projects.iter().enumerate() {
        if let Some(key) = project.first_key(i)? {
            return Ok((project.name.clone(), key, false));
        }
    }
    let path = suite.data_dir.join("api-key");
    let (api_key, generated) = match std::fs::read_to_string(&path) {
        Ok(key) if !key.trim().is_empty() => (key.trim().to_owned(), false),
        _ => {
            let key = generate_api_key();
            write_secret(&path, &key)?;
            (key, true)
        }
    };
    suite.projects = vec![ProjectConfig {
        name: "default".into(),
        api_keys: vec![api_key.clone()],
        api_keys_file: None,
    }];
    Ok(("default".into(), api_key, generated))
}

/// A secret kept in `<data_dir>/<name>`, made on first use.
fn kept_secret(data_dir: &Path, name: &str) -> anyhow::Result<String> {
    let path = data_dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
        _ => {
            let secret = generate_api_key();
            write_secret(&path, &secret)?;
            Ok(secret)
        }
    }
}

/// What the UI gateway needs in one process: a gateway key that query and
/// alerting know (fresh each start, never written), the session secret
/// and, in token mode, the login token (both kept in the data directory so
/// sessions and printed links survive a restart). Returns the login token.
fn ensure_ui_access(suite: &mut SuiteConfig, project: &str) -> anyhow::Result<Option<String>> {
    let ui = &mut suite.ui_gateway;
    if ui.projects == ["default"] {
        ui.projects = vec![project.to_owned()];
    }
    if ui.gateway_key.0.is_empty() && ui.gateway_key_file.is_none() {
        let key = generate_api_key();
        suite.access.gateway_keys.push(key.clone());
        ui.gateway_key.0 = key;
    }
    let auth = &mut ui.auth;
    if auth.session_secret.0.is_empty() && auth.session_secret_file.is_none() {
        auth.session_secret.0 = kept_secret(&suite.data_dir, "ui-session-secret")?;
    }
    // A browser sends Secure cookies to http://127.0.0.1 and localhost, but
    // other local clients do not: on loopback without a public URL, plain.
    if auth.public_url.is_none() && ui.http.listen.ip().is_loopback() {
        auth.secure_cookies = false;
    }
    if auth.mode != vigil_ui_gateway::AuthMode::Token {
        return Ok(None);
    }
    if auth.login_token.0.is_empty() && auth.login_token_file.is_none() {
        auth.login_token.0 = kept_secret(&suite.data_dir, "ui-login-token")?;
        return Ok(Some(auth.login_token.0.clone()));
    }
    Ok(None)
}

fn write_secret(path: &Path, secret: &str) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(secret.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    Ok(())
}

async fn run_suite(mut suite: SuiteConfig, services: &[Service]) -> anyhow::Result<()> {
    std::fs::create_dir_all(&suite.data_dir)
        .with_context(|| format!("cannot create data directory {}", suite.data_dir.display()))?;
    let (project, api_key, generated) = ensure_project(&mut suite)?;
    let login_token = ensure_ui_access(&mut suite, &project)?;
    let keys = vigil_runtime::auth::ApiKeys::new(&suite.projects)?.with_gateways(&suite.access)?;

    // In one process the services find each other at their own listen addresses.
    let ingest_grpc = reachable(suite.ingest.grpc.listen);
    let query_grpc = reachable(suite.query.grpc.listen);
    let alerting_grpc = reachable(suite.alerting.grpc.listen);
    suite.alerting.query_endpoint = query_grpc.to_string();
    suite.alerting.project.clone_from(&project);
    if suite.alerting.api_key.0.is_empty() && suite.alerting.api_key_file.is_none() {
        suite.alerting.api_key.0.clone_from(&api_key);
    }
    suite.ui_gateway.query_endpoint = query_grpc.to_string();
    suite.ui_gateway.alerting_endpoint = alerting_grpc.to_string();
    // The local monitor, when this process runs it; else the UI's heartbeat
    // page is off unless `ui_gateway.heartbeat_endpoint` names one.
    if suite.ui_gateway.heartbeat_endpoint.is_none() && services.contains(&Service::Heartbeat) {
        suite.ui_gateway.heartbeat_endpoint =
            Some(reachable(suite.heartbeat.grpc.listen).to_string());
    }
    suite.agent.ingest_endpoint = ingest_grpc.to_string();
    if suite.agent.spool_dir.is_none() {
        suite.agent.spool_dir = Some(suite.data_dir.join("agent-spool"));
    }
    if suite.agent.api_key.is_empty() && suite.agent.api_key_file.is_none() {
        suite.agent.api_key.clone_from(&api_key);
    }

    let wants = |s: Service| services.contains(&s);
    let store = if wants(Service::Ingest) || wants(Service::Query) {
        Some(vigil_storage::open(&suite.storage, &suite.data_dir, Deployment::Monolith).await?)
    } else {
        None
    };

    let shutdown = Shutdown::new();
    shutdown.trigger_on_signals();
    let mut tasks: JoinSet<(&'static str, anyhow::Result<()>)> = JoinSet::new();
    if let Some(store) = &store {
        // The monolith owns the store, so it runs compaction and retention.
        let (store, s) = (store.clone(), shutdown.clone());
        tasks.spawn(async move {
            vigil_storage::run_maintenance(store, Duration::from_secs(60), s).await;
            ("storage maintenance", Ok(()))
        });
    }
    if let (true, Some(store)) = (wants(Service::Ingest), &store) {
        let (config, store, keys, s) = (
            suite.ingest.clone(),
            store.clone(),
            keys.clone(),
            shutdown.clone(),
        );
        tasks.spawn(async move {
            (
                "ingest",
                vigil_ingest::run(config, store, keys, s)
                    .await
                    .map_err(Into::into),
            )
        });
    }
    if let (true, Some(store)) = (wants(Service::Query), &store) {
        let (config, store, keys, s) = (
            suite.query.clone(),
            store.clone(),
            keys.clone(),
            shutdown.clone(),
        );
        tasks.spawn(async move {
            (
                "query",
                vigil_query::run(config, store, keys, s)
                    .await
                    .map_err(Into::into),
            )
        });
    }
    if wants(Service::Alerting) {
        let access = suite.access.clone();
        let (config, dir, s) = (
            suite.alerting.clone(),
            suite.data_dir.clone(),
            shutdown.clone(),
        );
        tasks.spawn(async move {
            (
                "alerting",
                vigil_alerting::run(config, &access, &dir, s)
                    .await
                    .map_err(Into::into),
            )
        });
    }
    if wants(Service::UiGateway) {
        let (config, s) = (suite.ui_gateway.clone(), shutdown.clone());
        tasks.spawn(async move {
            (
                "ui-gateway",
                vigil_ui_gateway::run(config, s).await.map_err(Into::into),
            )
        });
    }
    if wants(Service::Heartbeat) {
        let access = suite.access.clone();
        let (config, dir, s) = (
            suite.heartbeat.clone(),
            suite.data_dir.clone(),
            shutdown.clone(),
        );
        tasks.spawn(async move {
            (
                "heartbeat",
                vigil_heartbeat::run(config, &access, &dir, s)
                    .await
                    .map_err(Into::into),
            )
        });
    }
    if wants(Service::Agent) {
        let (config, s) = (suite.agent.clone(), shutdown.clone());
        tasks.spawn(async move {
            (
                "agent",
                vigil_agent::run(config, s).await.map_err(Into::into),
            )
        });
    }

    // Tell the user where things are once the services listen (or one failed).
    let mut listening: Vec<SocketAddr> = Vec::new();
    if wants(Service::UiGateway) {
        listening.push(reachable(suite.ui_gateway.http.listen));
    }
    if wants(Service::Ingest) {
        listening.push(ingest_grpc);
    }
    let failure = tokio::select! {
        () = wait_listening(&listening) => None,
        joined = tasks.join_next() => joined,
    };
    if let Some(joined) = failure {
        shutdown.trigger();
        let (name, result) = joined.context("a service task panicked")?;
        drain(&mut tasks).await;
        result.with_context(|| format!("{name} failed to start"))?;
        anyhow::bail!("{name} stopped during start-up");
    }
    print_summary(
        &suite,
        services,
        &project,
        &api_key,
        generated,
        login_token.as_deref(),
    );

    // Run until Ctrl-C / SIGTERM, or until a service fails.
    let mut first_error = None;
    tokio::select! {
        biased;
        () = shutdown.wait() => {}
        joined = tasks.join_next() => {
            if let Some(joined) = joined {
                let (name, result) = joined.context("a service task panicked")?;
                first_error = match result {
                    // Stopping because shutdown was asked for is no failure.
                    Ok(()) if shutdown.is_triggered() => None,
                    Ok(()) => Some(anyhow::anyhow!("{name} stopped unexpectedly")),
                    Err(e) => Some(e.context(format!("{name} failed"))),
                };
                shutdown.trigger();
            }
        }
    }
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, drain(&mut tasks)).await;
    if let Some(e) = first_error {
        return Err(e);
    }
    match drained {
        Ok(Some(e)) => Err(e),
        Ok(None) => {
            println!("vigil stopped cleanly");
            Ok(())
        }
        Err(_) => anyhow::bail!("services did not drain within {DRAIN_TIMEOUT:?}"),
    }
}

/// Waits for every task; returns the first error.
async fn drain(tasks: &mut JoinSet<(&'static str, anyhow::Result<()>)>) -> Option<anyhow::Error> {
    let mut first = None;
    while let Some(joined) = tasks.join_next().await {
        let error = match joined {
            Ok((_, Ok(()))) => continue,
            Ok((name, Err(e))) => e.context(format!("{name} failed")),
            Err(e) => anyhow::anyhow!("a service task panicked: {e}"),
        };
        tracing::error!(error = %format!("{error:#}"), "service stopped with an error");
        first.get_or_insert(error);
    }
    first
}

async fn wait_listening(addrs: &[SocketAddr]) {
    for addr in addrs {
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn print_summary(
    suite: &SuiteConfig,
    services: &[Service],
    project: &str,
    api_key: &str,
    generated: bool,
    login_token: Option<&str>,
) {
    let wants = |s: Service| services.contains(&s);
    let mut out = String::from("\nVigil is up (monolith, embedded redb storage).\n");
    if wants(Service::UiGateway) {
        let ui = reachable(suite.ui_gateway.http.listen);
        match login_token {
            // The token rides in the fragment, which browsers never send.
            Some(token) => {
                out += &format!("  UI:         http://{ui}/auth/login#token={token}\n");
                out += &format!(
                    "              (login token kept in {})\n",
                    suite.data_dir.join("ui-login-token").display()
                );
            }
            None => out += &format!("  UI:         http://{ui}/\n"),
        }
    }
    let origin = if generated {
        "generated now, saved in"
    } else {
        "from"
    };
    if suite.projects.len() == 1 && suite.projects[0].name == "default" {
        out += &format!(
            "  API key:    {api_key}  (project {project}; {origin} {})\n",
            suite.data_dir.join("api-key").display()
        );
    } else {
        out +=
            &format!("  API keys:   from the configuration (project {project} shown in the UI)\n");
    }
    out += &format!("  Data:       {}\n", suite.data_dir.display());
    if wants(Service::Ingest) {
        out += &format!(
            "  Ingest:     gRPC {} (agent protocol), HTTP {}\n",
            reachable(suite.ingest.grpc.listen),
            reachable(suite.ingest.http.listen)
        );
    }
    if wants(Service::Query) {
        out += &format!(
            "  Query:      gRPC {}, Prometheus API http://{}/api/v1/\n",
            reachable(suite.query.grpc.listen),
            reachable(suite.query.http.listen)
        );
    }
    if wants(Service::Heartbeat) {
        out += &format!(
            "  Heartbeat:  http://{}/ping/<check uuid> ({} checks configured)\n",
            reachable(suite.heartbeat.http.listen),
            suite.heartbeat.checks.len()
        );
    }
    if wants(Service::Agent) {
        out += &format!("  Agent:      {}\n", vigil_agent::ebpf::status());
    }
    out += "Press Ctrl-C to stop.\n";
    print!("{out}");
    let _ = std::io::stdout().flush();
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn suite(dir: &Path, toml: &str) -> SuiteConfig {
        let path = dir.join("vigil.toml");
        std::fs::write(&path, toml).unwrap();
        SuiteConfig::load(&ConfigLoader::load_with_env(Some(&path), Vec::new()).unwrap()).unwrap()
    }

    #[test]
    fn projects_with_keys_only_in_files_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        std::fs::write(&keys, "# shop's keys\nvgl_from_file_0123456789\n").unwrap();
        let toml = format!(
            "data_dir = {:?}\n[[projects]]\nname = \"empty\"\n[[projects]]\nname = \"shop\"\napi_keys_file = {:?}\n",
            dir.path(),
            keys
        );
        let mut s = suite(dir.path(), &toml);
        let (project, key, generated) = ensure_project(&mut s).unwrap();
        assert_eq!(
            (project.as_str(), key.as_str(), generated),
            ("shop", "vgl_from_file_0123456789", false)
        );
        assert_eq!(s.projects.len(), 2, "the configured projects stay");

        // No key anywhere: a generated one for `default`, kept.
        let mut s = suite(
            dir.path(),
            &format!("data_dir = {:?}\n", dir.path().join("d")),
        );
        std::fs::create_dir_all(dir.path().join("d")).unwrap();
        let (project, key, generated) = ensure_project(&mut s).unwrap();
        assert_eq!((project.as_str(), generated), ("default", true));
        let (_, again, generated) = ensure_project(&mut s).unwrap();
        assert_eq!((again, generated), (key, false));
    }
}
