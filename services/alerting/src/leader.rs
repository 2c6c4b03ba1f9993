//! Leader election: in Kubernetes, replicas of the worker share one
//! `coordination.k8s.io/v1` Lease and only its holder runs rounds and sends
//! notifications. The holder renews it every `renew_every`; a Lease not
//! renewed for its duration may be taken by another replica. Updates use
//! the Lease's resourceVersion, so two replicas cannot both take it.
//! Without `[alerting.lease]` the worker always leads (one process).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{PostParams, ResourceExt},
};
use serde::Deserialize;
use vigil_runtime::{
    Shutdown,
    config::{ConfigError, key},
};

/// `[alerting.lease]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeaseConfig {
    /// The Lease's name; default `vigil-alerting-<project>`.
    pub name: Option<String>,
    /// Its namespace; default the pod's (from the service account).
    pub namespace: Option<String>,
    /// This replica's name in the Lease; default `$HOSTNAME` (the pod name).
    pub identity: Option<String>,
    /// The API server; default the in-cluster one (service account token).
    pub api_url: Option<String>,
    /// How long a Lease stays with a holder that stopped renewing it.
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    #[serde(with = "humantime_serde")]
    pub renew_every: Duration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        Self {
            name: None,
            namespace: None,
            identity: None,
            api_url: None,
            duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        }
    }
}

impl LeaseConfig {
    pub fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        if self.renew_every.is_zero() || self.duration < self.renew_every * 2 {
            return Err(ConfigError::invalid(
                key(prefix, "duration"),
                "must be at least twice renew_every (and renew_every above 0)",
            ));
        }
        Ok(())
    }
}

/// Whether this replica leads now.
#[derive(Debug, Clone)]
pub struct Leadership(Arc<AtomicBool>);

impl Leadership {
    /// Always the leader: no Lease configured.
    pub fn always() -> Self {
        Self(Arc::new(AtomicBool::new(true)))
    }

    pub fn is_leader(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// A Lease elector.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    config: LeaseConfig,
    leadership: Leadership,
}

impl std::fmt::Debug for Elector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Elector")
            .field("name", &self.name)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

fn micro(ms: i64) -> MicroTime {
    MicroTime(Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH))
}

fn ms(t: &MicroTime) -> i64 {
    t.0.as_millisecond()
}

impl Elector {
    /// Connects to the API server named by `config` (or the in-cluster one).
    pub async fn connect(config: &LeaseConfig, project: &str) -> Result<Self, ConfigError> {
        let invalid =
            |field: &str, e: String| ConfigError::invalid(key("alerting.lease", field), e);
        let kube_config = match &config.api_url {
            Some(url) => kube::Config::new(
                url.parse()
                    .map_err(|e: http::uri::InvalidUri| invalid("api_url", e.to_string()))?,
            ),
            None => kube::Config::incluster().map_err(|e| {
                invalid(
                    "api_url",
                    format!("not in a cluster ({e}); set alerting.lease.api_url"),
                )
            })?,
        };
        let namespace = config
            .namespace
            .clone()
            .unwrap_or_else(|| kube_config.default_namespace.clone());
        let client =
            Client::try_from(kube_config).map_err(|e| invalid("api_url", e.to_string()))?;
        let identity = config
            .identity
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .filter(|i| !i.is_empty())
            .ok_or_else(|| invalid("identity", "set it, or HOSTNAME".into()))?;
        Ok(Self {
            api: Api::namespaced(client, &namespace),
            name: config
                .name
                .clone()
                .unwrap_or_else(|| format!("vigil-alerting-{project}")),
            identity,
            config: config.clone(),
            leadership: Leadership(Arc::new(AtomicBool::new(false))),
        })
    }

    pub fn leadership(&self) -> Leadership {
        self.leadership.clone()
    }

    /// Takes or renews the Lease at `now_ms`; whether this replica holds it.
    pub async fn try_lead(&self, now_ms: i64) -> Result<bool, kube::Error> {
        let duration_s = i32::try_from(self.config.duration.as_secs()).unwrap_or(i32::MAX);
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(duration_s),
                    acquire_time: Some(micro(now_ms)),
                    renew_time: Some(micro(now_ms)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let renewed = spec.renew_time.as_ref().map_or(0, ms);
        let lasts = i64::from(spec.lease_duration_seconds.unwrap_or(duration_s)) * 1000;
        let mine = holder == self.identity;
        if !mine && !holder.is_empty() && now_ms < renewed.saturating_add(lasts) {
            return Ok(false);
        }
        if !mine {
            spec.acquire_time = Some(micro(now_ms));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            spec.holder_identity = Some(self.identity.clone());
        }
        spec.renew_time = Some(micro(now_ms));
        spec.lease_duration_seconds = Some(duration_s);
        let name = lease.name_any();
        match self
            .api
            .replace(&name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            // Someone else wrote it since we read it.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up (on shutdown), so another replica takes over at once.
    pub async fn release(&self) {
        if let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await {
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            if spec.holder_identity.as_deref() == Some(self.identity.as_str()) {
                spec.holder_identity = None;
                let name = lease.name_any();
                let _ = self
                    .api
                    .replace(&name, &PostParams::default(), &lease)
                    .await;
            }
        }
        self.leadership.0.store(false, Ordering::SeqCst);
    }

    /// Keeps trying to lead until `shutdown`, then releases.
    pub async fn run(&self, shutdown: &Shutdown) {
        let mut last_success = 0i64;
        loop {
            let now = vigil_runtime::time::now_ms();
            match self.try_lead(now).await {
                Ok(leading) => {
                    last_success = now;
                    if leading != self.leadership.is_leader() {
                        tracing::info!(
                            lease = self.name,
                            identity = self.identity,
                            leading,
                            "leadership changed"
                        );
                    }
                    self.leadership.0.store(leading, Ordering::SeqCst);
                }
                Err(e) => {
                    tracing::warn!(lease = self.name, error = %e, "cannot reach the Lease");
                    // Without a renewal for a whole duration, stop leading:
                    // another replica may hold it by now.
                    let lasts = i64::try_from(self.config.duration.as_millis()).unwrap_or(i64::MAX);
                    if now.saturating_sub(last_success) >= lasts {
                        self.leadership.0.store(false, Ordering::SeqCst);
                    }
                }
            }
            if !shutdown.sleep(self.config.renew_every).await {
                break;
            }
        }
        self.release().await;
    }
}
