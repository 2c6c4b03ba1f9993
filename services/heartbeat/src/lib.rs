//! The heartbeat monitor, meant to run OFF the cluster it watches: a
//! dead-man's switch. Jobs and clusters ping it; when a check's pings stop
//! for longer than its period (plus grace), it goes late, then down.
//!
//! Pings and the management API are healthchecks.io's (see [`web`]), so
//! existing curl lines and API clients work with a new host; Vigil's own
//! clients use `vigil.heartbeat.v1` over gRPC ([`grpc`]). The monitor also
//! probes public endpoints itself ([`probe`]). Flips up and down are
//! announced through the notify crate, exactly once each ([`store`]).

pub mod checks;
mod config;
pub mod grpc;
pub mod probe;
pub mod schedule;
pub mod store;
pub mod web;

use std::{path::Path, sync::Arc, time::Duration};

use checks::Announce;
pub use config::{CheckConfig, HeartbeatConfig, Keys};
use prometheus_client::metrics::{counter::Counter, family::Family, gauge::Gauge};
use store::{CheckStore, Origin, PingIn, StoreOptions, Target};
use vigil_notify::{Dispatcher, Notifier, Outbox, RetryPolicy};
use vigil_proto::heartbeat::v1::heartbeat_service_server::HeartbeatServiceServer;
use vigil_runtime::{
    Metrics, Readiness, RuntimeError, Shutdown,
    auth::{AccessConfig, ApiKeys, ProjectConfig},
    grpc::GrpcServer,
    http::HttpServer,
    time::now_ms,
};

#[derive(Debug, thiserror::Error)]
pub enum HeartbeatError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Config(#[from] vigil_runtime::config::ConfigError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Storage(#[from] vigil_storage::StorageError),
}

/// Runs the monitor until `shutdown`. `access` holds the UI gateways'
/// keys, which may call the gRPC API for their users.
pub async fn run(
    config: HeartbeatConfig,
    access: &AccessConfig,
    data_dir: &Path,
    shutdown: Shutdown,
) -> Result<(), HeartbeatError> {
    let path = config
        .state_path
        .clone()
        .unwrap_or_else(|| data_dir.join("heartbeat.redb"));
    let keys = Arc::new(config.keys()?);
    let notifier = Arc::new(Notifier::new(
        "heartbeat.integrations",
        &config.integrations,
        "vigil-heartbeat",
    )?);
    let probers = config
        .probes
        .iter()
        .enumerate()
        .map(|(i, p)| probe::Prober::new(p.clone(), &format!("heartbeat.probes[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    let declared = config
        .checks
        .iter()
        .map(|c| (c.clone(), Origin::Config))
        .chain(probers.iter().map(|p| (p.config.check(), Origin::Probe)))
        .collect();
    // The deliverer is woken by every commit that records a flip.
    let flipped = Arc::new(tokio::sync::Notify::new());
    let store = CheckStore::open(
        &path,
        declared,
        StoreOptions {
            pings_kept: config.pings_kept,
            max_checks: config.max_checks,
            queue: config.ping_queue,
            announce: Some(Announce {
                notifier: notifier.clone(),
                project: config.project.clone(),
                ui_url: config.ui_url.clone(),
            }),
            on_flip: Some({
                let flipped = flipped.clone();
                Arc::new(move || flipped.notify_one())
            }),
        },
    )?;
    let dispatcher = Dispatcher::new(
        Outbox::open(store.database())?,
        notifier,
        RetryPolicy::default(),
    );
    let wake_dispatcher = async {
        loop {
            tokio::select! {
                () = shutdown.wait() => break,
                () = flipped.notified() => dispatcher.wake(),
            }
        }
        Ok::<(), RuntimeError>(())
    };
    tracing::info!(
        path = %path.display(),
        checks = store.len(),
        probes = probers.len(),
        api = keys.read_write.is_some(),
        slug_pings = keys.ping.is_some(),
        "heartbeat store open"
    );
    let metrics = Metrics::new("heartbeat");
    dispatcher.register(&metrics);
    let readiness = Readiness::default();
    let http = HttpServer::bind("heartbeat-http", &config.http).await?;
    let mut grpc = GrpcServer::bind("heartbeat", &config.grpc).await?;

    // A change through the API may bring a deadline nearer: it wakes the
    // monitor. (Pings only push deadlines later, or flip at once.)
    let wake = Arc::new(tokio::sync::Notify::new());
    let on_change: Arc<dyn Fn() + Send + Sync> = {
        let wake = wake.clone();
        Arc::new(move || wake.notify_one())
    };
    let api_keys = Arc::new(
        ApiKeys::new(&[ProjectConfig {
            name: config.project.clone(),
            api_keys: keys.read_write.iter().cloned().collect(),
            api_keys_file: None,
        }])?
        .with_gateways(access)?,
    );
    grpc.add_service(tonic::service::interceptor::InterceptedService::new(
        HeartbeatServiceServer::new(grpc::HeartbeatApi {
            store: store.clone(),
            on_change: on_change.clone(),
        })
        .max_decoding_message_size(config.grpc.max_message_bytes),
        grpc::authenticator(keys.clone(), api_keys, config.project.clone()),
    ))
    .add_descriptor_set(vigil_proto::FILE_DESCRIPTOR_SET);

    let pings: Family<[(&'static str, &'static str); 1], Counter> = Family::default();
    let changes: Family<[(&'static str, &'static str); 1], Counter> = Family::default();
    let by_status: Family<[(&'static str, &'static str); 1], Gauge> = Family::default();
    metrics.register("pings", "Pings stored, by kind", pings.clone());
    metrics.register("flips", "Checks flipping up or down", changes.clone());
    metrics.register("checks", "Checks, by status", by_status.clone());
    let app = web::router(web::Web {
        store: store.clone(),
        keys,
        project: config.project.clone().into(),
        public_url: config.public_url.clone().map(Into::into),
        ping_body_limit: config.ping_body_limit,
        on_change: on_change.clone(),
        pings,
    });
    readiness.set_ready(true);

    let monitor = async {
        loop {
            let now = now_ms();
            match store.evaluate(now).await {
                Ok(0) => {}
                Ok(n) => {
                    changes
                        .get_or_create(&[("change", "flip")])
                        .inc_by(n as u64);
                    dispatcher.wake();
                }
                Err(e) => tracing::error!(error = %e, "cannot evaluate the checks"),
            }
            let mut counts = [0i64; 5];
            for e in store.entries() {
                counts[e.status(now) as usize] += 1;
            }
            for (i, name) in ["new", "up", "late", "down", "paused"].iter().enumerate() {
                by_status.get_or_create(&[("status", name)]).set(counts[i]);
            }
            // Sleep until the next deadline (so alerts leave within
            // milliseconds of it), at most evaluate_every, or a change.
            let next = store
                .next_change(now_ms())
                .map_or(config.evaluate_every, |t| {
                    Duration::from_millis(u64::try_from(t - now_ms()).unwrap_or(0))
                        .min(config.evaluate_every)
                });
            tokio::select! {
                () = shutdown.wait() => break,
                () = tokio::time::sleep(next) => {}
                () = wake.notified() => {}
            }
        }
        Ok::<(), RuntimeError>(())
    };
    let probing = async {
        let rounds = probers.into_iter().map(|p| {
            let (store, shutdown) = (store.clone(), shutdown.clone());
            async move {
                let uuid = p.config.check().uuid;
                loop {
                    let outcome = p.round().await;
                    let (kind, text) = match outcome {
                        Ok(seen) => (checks::PingKind::Success, seen),
                        Err(why) => {
                            tracing::warn!(probe = p.config.name, reason = why, "probe failed");
                            (checks::PingKind::Fail, why)
                        }
                    };
                    let ping = PingIn {
                        kind,
                        exit_status: None,
                        rid: None,
                        scheme: "probe".into(),
                        method: "PROBE".into(),
                        remote_addr: String::new(),
                        user_agent: "vigil-heartbeat probe".into(),
                        body: text.into_bytes(),
                        truncated: false,
                    };
                    if let Err(e) = store.ping(Target::Probe(uuid.clone()), ping, now_ms()).await {
                        tracing::error!(probe = p.config.name, error = %e, "probe result not stored");
                    }
                    if !shutdown.sleep(p.config.interval).await {
                        break;
                    }
                }
            }
        });
        futures::future::join_all(rounds).await;
        Ok::<(), RuntimeError>(())
    };
    let deliver = async {
        dispatcher
            .run(&shutdown, Duration::from_secs(5), &|| true)
            .await;
        Ok::<(), RuntimeError>(())
    };
    tokio::try_join!(
        monitor,
        probing,
        deliver,
        wake_dispatcher,
        http.serve(app, &metrics, &readiness, &shutdown),
        grpc.serve(&metrics, &shutdown),
    )?;
    Ok(())
}
