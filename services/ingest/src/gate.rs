//! What every protocol goes through: refusals with one shape (a gRPC status
//! or an HTTP status, a message naming the limit, counted in `/metrics`),
//! per-project rate limits, the bounded wait for a storage write slot, and
//! the mapping of storage failures to retryable answers.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::response::{IntoResponse, Response};
use prometheus_client::metrics::{counter::Counter, family::Family};
use tokio::sync::Semaphore;
use tonic_types::{ErrorDetails, StatusExt};
use vigil_runtime::{
    Metrics,
    rate::{ProjectRate, RateDenied},
};
use vigil_storage::{StorageError, WriteOutcome};

use crate::config::LimitsConfig;

/// Which door a request came in by; a label on every ingest counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Agent,
    OtlpGrpc,
    OtlpHttp,
    RemoteWrite,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Agent => "agent",
            Self::OtlpGrpc => "otlp_grpc",
            Self::OtlpHttp => "otlp_http",
            Self::RemoteWrite => "remote_write",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Metrics,
    Traces,
    Logs,
    Profiles,
    Events,
}

impl Signal {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Metrics => "metrics",
            Self::Traces => "traces",
            Self::Logs => "logs",
            Self::Profiles => "profiles",
            Self::Events => "events",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// Malformed or against a rule; retrying unchanged fails again.
    Invalid,
    /// Too big: send less per request.
    TooLarge,
    /// Over the project's rate: retry after the hint.
    RateLimited,
    /// Storage is slow or down: retry after the hint.
    Unavailable,
    Unauthenticated,
    /// Vigil's own fault.
    Internal,
}

/// A request (or part of one) that was not stored, and why.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub kind: RefusalKind,
    /// Short, stable name of the limit or rule: the `reason` label in
    /// `/metrics`.
    pub reason: &'static str,
    pub message: String,
    pub retry_after: Option<Duration>,
}

impl Refusal {
    pub fn invalid(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(RefusalKind::Invalid, reason, message)
    }

    pub fn too_large(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(RefusalKind::TooLarge, reason, message)
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(RefusalKind::Unauthenticated, "unauthenticated", message)
    }

    fn new(kind: RefusalKind, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            reason,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn grpc_code(&self) -> tonic::Code {
        match self.kind {
            RefusalKind::Invalid => tonic::Code::InvalidArgument,
            RefusalKind::TooLarge | RefusalKind::RateLimited => tonic::Code::ResourceExhausted,
            RefusalKind::Unavailable => tonic::Code::Unavailable,
            RefusalKind::Unauthenticated => tonic::Code::Unauthenticated,
            RefusalKind::Internal => tonic::Code::Internal,
        }
    }

    pub fn http_status(&self) -> http::StatusCode {
        match self.kind {
            RefusalKind::Invalid => http::StatusCode::BAD_REQUEST,
            RefusalKind::TooLarge => http::StatusCode::PAYLOAD_TOO_LARGE,
            RefusalKind::RateLimited => http::StatusCode::TOO_MANY_REQUESTS,
            RefusalKind::Unavailable => http::StatusCode::SERVICE_UNAVAILABLE,
            RefusalKind::Unauthenticated => http::StatusCode::UNAUTHORIZED,
            RefusalKind::Internal => http::StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The gRPC status; retryable refusals carry a `google.rpc.RetryInfo`
    /// (OTLP senders retry RESOURCE_EXHAUSTED only with one).
    pub fn to_status(&self) -> tonic::Status {
        match self.retry_after {
            Some(delay) => tonic::Status::with_error_details(
                self.grpc_code(),
                self.message.clone(),
                ErrorDetails::with_retry_info(Some(delay)),
            ),
            None => tonic::Status::new(self.grpc_code(), self.message.clone()),
        }
    }

    /// An HTTP answer with a plain-text body and, when retryable, a
    /// `Retry-After` header in whole seconds.
    pub fn to_response(&self) -> Response {
        let mut response = (self.http_status(), self.message.clone()).into_response();
        if let Some(delay) = self.retry_after {
            let seconds = delay.as_secs().max(1);
            if let Ok(value) = http::HeaderValue::from_str(&seconds.to_string()) {
                response
                    .headers_mut()
                    .insert(http::header::RETRY_AFTER, value);
            }
        }
        response
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The oldest and newest timestamps (ms since the epoch) accepted now.
#[derive(Debug, Clone, Copy)]
pub struct TimeWindow {
    pub oldest_ms: i64,
    pub newest_ms: i64,
}

impl TimeWindow {
    /// Checks one timestamp, saying how it is out of bounds.
    pub fn check_ms(&self, ts_ms: i64) -> Result<(), Refusal> {
        if ts_ms < self.oldest_ms {
            return Err(Refusal::invalid(
                "too_old",
                format!(
                    "timestamp {ts_ms} ms is older than the accepted age (limits.max_age): oldest accepted is {}",
                    self.oldest_ms
                ),
            ));
        }
        if ts_ms > self.newest_ms {
            return Err(Refusal::invalid(
                "too_far_in_future",
                format!(
                    "timestamp {ts_ms} ms is too far in the future (limits.max_future): newest accepted is {}",
                    self.newest_ms
                ),
            ));
        }
        Ok(())
    }

    pub fn check_ns(&self, ts_ns: i64) -> Result<(), Refusal> {
        self.check_ms(ts_ns.div_euclid(1_000_000))
    }
}

/// Shared by every protocol of one ingest server.
pub struct Gate {
    pub limits: LimitsConfig,
    rate: ProjectRate,
    slots: Arc<Semaphore>,
    /// The memory budget, in KiB.
    memory: Arc<Semaphore>,
    refused: Family<[(&'static str, &'static str); 2], Counter>,
    stored: Family<[(&'static str, &'static str); 2], Counter>,
    duplicates: Family<[(&'static str, &'static str); 1], Counter>,
    skipped: Family<[(&'static str, &'static str); 2], Counter>,
}

impl Gate {
    pub fn new(limits: LimitsConfig, metrics: &Metrics) -> Self {
        let refused = Family::default();
        let stored = Family::default();
        let duplicates = Family::default();
        let skipped = Family::default();
        metrics.register(
            "skipped_samples",
            "Samples that are not data and were not stored (Prometheus stale markers, NaN), by protocol",
            skipped.clone(),
        );
        metrics.register(
            "refused_items",
            "Requests or items refused, by protocol and the limit or rule that refused them",
            refused.clone(),
        );
        metrics.register(
            "stored_items",
            "Samples, spans and log records durably stored, by protocol and signal",
            stored.clone(),
        );
        metrics.register(
            "duplicate_requests",
            "Retried requests acknowledged without storing again, by protocol",
            duplicates.clone(),
        );
        Self {
            rate: ProjectRate::new(limits.project_rate, limits.project_burst),
            slots: Arc::new(Semaphore::new(limits.max_inflight_writes)),
            memory: Arc::new(Semaphore::new(
                (limits.max_inflight_bytes / 1024).min(Semaphore::MAX_PERMITS),
            )),
            limits,
            refused,
            stored,
            duplicates,
            skipped,
        }
    }

    /// Counts the refusals of a partly accepted request, each under its
    /// own reason, and hands back the first.
    pub fn refused_items<T>(
        &self,
        protocol: Protocol,
        converted: &crate::otlp::Converted<T>,
    ) -> Option<Refusal> {
        for (reason, count) in &converted.by_reason {
            self.refused
                .get_or_create(&[("protocol", protocol.as_str()), ("reason", reason)])
                .inc_by(*count);
        }
        let first = converted.first_refusal.clone()?;
        tracing::debug!(
            protocol = protocol.as_str(),
            refused = converted.rejected,
            first = %first.message,
            "items refused"
        );
        Some(first)
    }

    /// Counts items left out because they carry no data.
    pub fn skipped(&self, protocol: Protocol, reason: &'static str, items: u64) {
        self.skipped
            .get_or_create(&[("protocol", protocol.as_str()), ("reason", reason)])
            .inc_by(items);
    }

    /// Counts a refusal of `items` items (1 for a whole request) and hands it back.
    pub fn refused(&self, protocol: Protocol, refusal: Refusal, items: u64) -> Refusal {
        self.refused
            .get_or_create(&[("protocol", protocol.as_str()), ("reason", refusal.reason)])
            .inc_by(items.max(1));
        tracing::debug!(
            protocol = protocol.as_str(),
            reason = refusal.reason,
            error = %refusal.message,
            "refused"
        );
        refusal
    }

    /// The timestamps accepted right now.
    pub fn window(&self) -> TimeWindow {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        TimeWindow {
            oldest_ms: now.saturating_sub(self.limits.max_age.as_millis() as i64),
            newest_ms: now.saturating_add(self.limits.max_future.as_millis() as i64),
        }
    }

    /// Reserves memory for a request of `bytes` (uncompressed) while it is
    /// decoded, converted and written: 4× its size, released when the
    /// reservation is dropped. Waits up to `queue_timeout`, then answers
    /// UNAVAILABLE / 503 with a retry hint.
    pub async fn reserve(
        &self,
        protocol: Protocol,
        bytes: usize,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, Refusal> {
        let kib = bytes.saturating_mul(4).div_ceil(1024).max(1);
        let total = (self.limits.max_inflight_bytes / 1024).min(Semaphore::MAX_PERMITS);
        let Ok(kib) = u32::try_from(kib) else {
            return Err(self.refused(protocol, self.too_big_for_memory(bytes), 1));
        };
        if kib as usize > total {
            return Err(self.refused(protocol, self.too_big_for_memory(bytes), 1));
        }
        match tokio::time::timeout(
            self.limits.queue_timeout,
            self.memory.clone().acquire_many_owned(kib),
        )
        .await
        {
            Ok(Ok(permit)) => Ok(permit),
            _ => {
                let refusal = self.unavailable(
                    "memory_budget_full",
                    format!(
                        "requests in flight hold the ingest memory budget (limits.max_inflight_bytes = {}); retry later",
                        self.limits.max_inflight_bytes
                    ),
                );
                Err(self.refused(protocol, refusal, 1))
            }
        }
    }

    fn too_big_for_memory(&self, bytes: usize) -> Refusal {
        Refusal::too_large(
            "request_too_large",
            format!(
                "a request of {bytes} bytes needs more than the whole ingest memory budget (limits.max_inflight_bytes = {})",
                self.limits.max_inflight_bytes
            ),
        )
    }

    /// Takes `items` from the project's rate budget.
    fn check_rate(&self, project: &str, items: u64) -> Result<(), Refusal> {
        match self.rate.check(project, items) {
            Ok(()) => Ok(()),
            Err(RateDenied::Wait(wait)) => Err(Refusal {
                kind: RefusalKind::RateLimited,
                reason: "project_rate",
                message: format!(
                    "project {project:?} is over its rate of {} items/s (limits.project_rate); retry in {} ms",
                    self.limits.project_rate,
                    wait.as_millis().max(1)
                ),
                retry_after: Some(wait.max(Duration::from_secs(1))),
            }),
            Err(RateDenied::OverBurst) => Err(Refusal::too_large(
                "project_burst",
                format!(
                    "request carries {items} items, more than project {project:?} may send at once (limits.project_burst = {})",
                    self.limits.project_burst
                ),
            )),
        }
    }

    /// Runs one storage write of `items` items for `project`: after the rate
    /// check, in a bounded number of write slots. Acknowledge only on `Ok`.
    pub async fn write<F>(
        &self,
        protocol: Protocol,
        signal: Signal,
        project: &str,
        items: u64,
        write: F,
    ) -> Result<WriteOutcome, Refusal>
    where
        F: Future<Output = Result<WriteOutcome, StorageError>>,
    {
        if let Err(refusal) = self.check_rate(project, items) {
            return Err(self.refused(protocol, refusal, items));
        }
        let permit = match tokio::time::timeout(self.limits.queue_timeout, self.slots.acquire())
            .await
        {
            Ok(Ok(permit)) => permit,
            _ => {
                let refusal = self.unavailable(
                        "write_queue_full",
                        format!(
                            "storage is not keeping up: no write slot within {:?} (limits.max_inflight_writes = {}); retry later",
                            self.limits.queue_timeout, self.limits.max_inflight_writes
                        ),
                    );
                return Err(self.refused(protocol, refusal, items));
            }
        };
        let outcome = write.await;
        drop(permit);
        match outcome {
            Ok(WriteOutcome::Stored { records }) => {
                self.stored
                    .get_or_create(&[("protocol", protocol.as_str()), ("signal", signal.as_str())])
                    .inc_by(records);
                Ok(WriteOutcome::Stored { records })
            }
            Ok(WriteOutcome::Duplicate) => {
                self.duplicates
                    .get_or_create(&[("protocol", protocol.as_str())])
                    .inc();
                Ok(WriteOutcome::Duplicate)
            }
            Err(e) => {
                let refusal = match e {
                    StorageError::InvalidData(message) => Refusal::invalid("invalid", message),
                    e if e.is_transient() => self.unavailable(
                        "storage_unavailable",
                        format!("storage is unavailable, nothing was stored; retry later: {e}"),
                    ),
                    e => Refusal::new(RefusalKind::Internal, "storage_failed", e.to_string()),
                };
                if refusal.kind != RefusalKind::Invalid {
                    tracing::warn!(protocol = protocol.as_str(), project, error = %refusal.message, "write failed");
                }
                Err(self.refused(protocol, refusal, items))
            }
        }
    }

    fn unavailable(&self, reason: &'static str, message: String) -> Refusal {
        Refusal {
            kind: RefusalKind::Unavailable,
            reason,
            message,
            retry_after: Some(self.limits.retry_after),
        }
    }
}

/// Refuses a request carrying more than `limit` of `what` (413 /
/// RESOURCE_EXHAUSTED), naming the `limits.<field>` setting.
pub fn at_most(what: &str, count: usize, limit: usize, field: &str) -> Result<(), Refusal> {
    if count > limit {
        return Err(Refusal::too_large(
            "request_too_large",
            format!(
                "request carries {count} {what}; at most {limit} are accepted (limits.{field})"
            ),
        ));
    }
    Ok(())
}

/// A batch id derived from a request's bytes: a sender retrying the same
/// request (OTLP and remote_write have no ids) is stored once.
pub fn content_batch_id(protocol: Protocol, signal: Signal, body: &[u8]) -> String {
    let hash = xxhash_rust::xxh3::xxh3_128(body);
    format!("{}-{}-{hash:032x}", protocol.as_str(), signal.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(limits: LimitsConfig) -> Gate {
        Gate::new(limits, &Metrics::new("test"))
    }

    #[tokio::test]
    async fn rate_limit_refuses_with_a_retry_hint() {
        let gate = gate(LimitsConfig {
            project_rate: 10,
            project_burst: 10,
            ..LimitsConfig::default()
        });
        let ok = || async { Ok(WriteOutcome::Stored { records: 1 }) };
        gate.write(Protocol::Agent, Signal::Metrics, "p", 10, ok())
            .await
            .unwrap();
        let refusal = gate
            .write(Protocol::Agent, Signal::Metrics, "p", 5, ok())
            .await
            .unwrap_err();
        assert_eq!(refusal.kind, RefusalKind::RateLimited);
        assert_eq!(refusal.http_status(), http::StatusCode::TOO_MANY_REQUESTS);
        assert!(refusal.message.contains("limits.project_rate"));
        let status = refusal.to_status();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(status.get_details_retry_info().is_some());
        // another project has its own budget
        gate.write(Protocol::Agent, Signal::Metrics, "q", 5, ok())
            .await
            .unwrap();
        // more than the burst can never pass: too large, not "retry later"
        let refusal = gate
            .write(Protocol::Agent, Signal::Metrics, "r", 11, ok())
            .await
            .unwrap_err();
        assert_eq!(refusal.kind, RefusalKind::TooLarge);
        assert!(refusal.retry_after.is_none());
    }

    #[tokio::test]
    async fn a_full_write_queue_answers_unavailable() {
        let gate = Arc::new(gate(LimitsConfig {
            max_inflight_writes: 1,
            queue_timeout: Duration::from_millis(50),
            ..LimitsConfig::default()
        }));
        let (release, wait) = tokio::sync::oneshot::channel::<()>();
        let slow = {
            let gate = gate.clone();
            tokio::spawn(async move {
                gate.write(Protocol::Agent, Signal::Metrics, "p", 1, async {
                    let _ = wait.await;
                    Ok(WriteOutcome::Stored { records: 1 })
                })
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let refusal = gate
            .write(Protocol::Agent, Signal::Metrics, "p", 1, async {
                Ok(WriteOutcome::Stored { records: 1 })
            })
            .await
            .unwrap_err();
        assert_eq!(refusal.kind, RefusalKind::Unavailable);
        assert_eq!(refusal.reason, "write_queue_full");
        let response = refusal.to_response();
        assert_eq!(response.status(), http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[http::header::RETRY_AFTER], "5");
        release.send(()).unwrap();
        slow.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn the_memory_budget_bounds_requests_in_flight() {
        let gate = gate(LimitsConfig {
            max_inflight_bytes: 1 << 20,
            queue_timeout: Duration::from_millis(50),
            ..LimitsConfig::default()
        });
        let held = gate.reserve(Protocol::OtlpHttp, 200 << 10).await.unwrap();
        let refusal = gate
            .reserve(Protocol::OtlpHttp, 100 << 10)
            .await
            .unwrap_err();
        assert_eq!(refusal.reason, "memory_budget_full");
        assert_eq!(refusal.http_status(), http::StatusCode::SERVICE_UNAVAILABLE);
        assert!(refusal.retry_after.is_some());
        drop(held);
        let _again = gate.reserve(Protocol::OtlpHttp, 100 << 10).await.unwrap();
        let refusal = gate.reserve(Protocol::OtlpHttp, 1 << 20).await.unwrap_err();
        assert_eq!(refusal.kind, RefusalKind::TooLarge);
        assert!(refusal.message.contains("limits.max_inflight_bytes"));
    }

    #[tokio::test]
    async fn storage_failures_map_to_retryable_or_not() {
        let gate = gate(LimitsConfig::default());
        let transient = gate
            .write(Protocol::OtlpGrpc, Signal::Traces, "p", 1, async {
                Err(StorageError::Io("connection refused".into()))
            })
            .await
            .unwrap_err();
        assert_eq!(transient.grpc_code(), tonic::Code::Unavailable);
        assert!(transient.retry_after.is_some());
        let invalid = gate
            .write(Protocol::OtlpGrpc, Signal::Traces, "p", 1, async {
                Err(StorageError::InvalidData("span name too long".into()))
            })
            .await
            .unwrap_err();
        assert_eq!(invalid.grpc_code(), tonic::Code::InvalidArgument);
        assert!(invalid.retry_after.is_none());
    }

    #[test]
    fn time_window_names_the_limit() {
        let window = TimeWindow {
            oldest_ms: 1000,
            newest_ms: 2000,
        };
        assert!(window.check_ms(1500).is_ok());
        assert_eq!(window.check_ms(999).unwrap_err().reason, "too_old");
        assert_eq!(
            window.check_ns(2_001_000_000).unwrap_err().reason,
            "too_far_in_future"
        );
    }

    #[test]
    fn content_ids_follow_the_bytes() {
        let a = content_batch_id(Protocol::RemoteWrite, Signal::Metrics, b"one");
        assert_eq!(
            a,
            content_batch_id(Protocol::RemoteWrite, Signal::Metrics, b"one")
        );
        assert_ne!(
            a,
            content_batch_id(Protocol::RemoteWrite, Signal::Metrics, b"two")
        );
        assert_ne!(
            a,
            content_batch_id(Protocol::OtlpHttp, Signal::Metrics, b"one")
        );
    }
}
