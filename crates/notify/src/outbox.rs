//! A durable outbox: a notification is written in the same redb transaction
//! as the state change that caused it (an incident opening, a check going
//! down), and a dispatcher delivers it, retrying with backoff, until every
//! integration it was routed to has taken it. A restart neither loses nor
//! repeats it (except one that was delivered in the instant before a crash,
//! which is sent again: paging services deduplicate by its key).

use std::{collections::HashSet, sync::Arc, time::Duration};

use prometheus_client::metrics::{counter::Counter, family::Family, gauge::Gauge};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use vigil_runtime::{
    Metrics, Shutdown,
    time::{millis, now_ms},
};
use vigil_storage::{
    StorageError,
    redb::{decode_record, encode_record},
};

use crate::{integration::Notifier, message::Notification};

const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("notify_outbox");

/// One integration still owed a notification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    pub integration: String,
    pub attempts: u32,
    pub next_attempt_ms: i64,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub notification: Notification,
    pub created_ms: i64,
    pub pending: Vec<Pending>,
}

/// The queue, in a redb database shared with the caller's own tables.
#[derive(Debug, Clone)]
pub struct Outbox {
    db: Arc<Database>,
}

impl Outbox {
    pub fn open(db: Arc<Database>) -> Result<Self, StorageError> {
        let txn = db.begin_write()?;
        txn.open_table(OUTBOX)?;
        txn.commit()?;
        Ok(Self { db })
    }

    /// Queues `n` for `integrations` inside the caller's transaction, so it
    /// is stored exactly when the caller's change is.
    pub fn enqueue(
        txn: &WriteTransaction,
        n: &Notification,
        integrations: &[String],
        now_ms: i64,
    ) -> Result<(), StorageError> {
        if integrations.is_empty() {
            return Ok(());
        }
        let mut table = txn.open_table(OUTBOX)?;
        let seq = table.last()?.map_or(0, |(k, _)| k.value() + 1);
        let entry = Entry {
            notification: n.clone(),
            created_ms: now_ms,
            pending: integrations
                .iter()
                .map(|name| Pending {
                    integration: name.clone(),
                    attempts: 0,
                    next_attempt_ms: now_ms,
                    last_error: None,
                })
                .collect(),
        };
        table.insert(seq, encode_record(&entry)?.as_slice())?;
        Ok(())
    }

    /// Everything not yet delivered, oldest first.
    pub fn entries(&self) -> Result<Vec<(u64, Entry)>, StorageError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(OUTBOX)?;
        let mut out = Vec::new();
        for item in table.iter()? {
            let (k, v) = item?;
            out.push((k.value(), decode_record(v.value())?));
        }
        Ok(out)
    }

    fn store(&self, seq: u64, entry: &Entry) -> Result<(), StorageError> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(OUTBOX)?;
            if entry.pending.is_empty() {
                table.remove(seq)?;
            } else {
                table.insert(seq, encode_record(entry)?.as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }
}

/// When to try again.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub first: Duration,
    pub max: Duration,
    /// After this long a notification is dropped (and logged as such).
    pub give_up_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            first: Duration::from_secs(1),
            max: Duration::from_secs(300),
            give_up_after: Duration::from_secs(24 * 3600),
        }
    }
}

impl RetryPolicy {
    /// Exponential: first, 2×first, 4×first, … up to `max`.
    pub fn delay(&self, attempts: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempts.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.first.saturating_mul(factor).min(self.max)
    }
}

type Labels = Vec<(&'static str, String)>;

/// Delivers what the outbox holds.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    outbox: Outbox,
    notifier: Arc<Notifier>,
    policy: RetryPolicy,
    wake: Arc<tokio::sync::Notify>,
    outcomes: Family<Labels, Counter>,
    queued: Gauge,
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    pub delivered: usize,
    pub failed: usize,
    pub dropped: usize,
    /// The earliest retry still waiting, if any.
    pub next_due_ms: Option<i64>,
}

impl Dispatcher {
    pub fn new(outbox: Outbox, notifier: Arc<Notifier>, policy: RetryPolicy) -> Self {
        Self {
            outbox,
            notifier,
            policy,
            wake: Arc::default(),
            outcomes: Family::default(),
            queued: Gauge::default(),
        }
    }

    pub fn register(&self, metrics: &Metrics) {
        metrics.register(
            "notifications",
            "Notification attempts by integration and outcome (delivered, failed, dropped)",
            self.outcomes.clone(),
        );
        metrics.register(
            "notifications_queued",
            "Notifications waiting in the outbox",
            self.queued.clone(),
        );
    }

    /// Tells a running dispatcher that something was queued.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    fn count(&self, integration: &str, outcome: &'static str) {
        self.outcomes
            .get_or_create(&vec![
                ("integration", integration.to_owned()),
                ("outcome", outcome.to_owned()),
            ])
            .inc();
    }

    /// One pass over the outbox at `now`: every due delivery is attempted
    /// once. A notification waits while an earlier one with the same key is
    /// still owed to the same integration, so a resolve never overtakes its
    /// trigger.
    pub async fn pass(&self, now: i64) -> Result<Pass, StorageError> {
        let mut pass = Pass::default();
        let entries = self.outbox.entries()?;
        self.queued.set(entries.len() as i64);
        let mut blocked: HashSet<(String, String)> = HashSet::new();
        for (seq, mut entry) in entries {
            let key = entry.notification.key.clone();
            let mut changed = false;
            let mut still = Vec::with_capacity(entry.pending.len());
            for mut p in std::mem::take(&mut entry.pending) {
                let pair = (p.integration.clone(), key.clone());
                if blocked.contains(&pair) {
                    still.push(p);
                    continue;
                }
                let Some(integration) = self.notifier.get(&p.integration) else {
                    tracing::warn!(
                        integration = p.integration,
                        key,
                        "notification dropped: the integration is no longer configured"
                    );
                    self.count(&p.integration, "dropped");
                    pass.dropped += 1;
                    changed = true;
                    continue;
                };
                if now.saturating_sub(entry.created_ms) > millis(self.policy.give_up_after) {
                    tracing::error!(
                        integration = p.integration,
                        key,
                        attempts = p.attempts,
                        last_error = p.last_error.as_deref().unwrap_or(""),
                        "notification dropped: not delivered in time"
                    );
                    self.count(&p.integration, "dropped");
                    pass.dropped += 1;
                    changed = true;
                    continue;
                }
                if p.next_attempt_ms > now || !integration.try_acquire() {
                    let due = p.next_attempt_ms.max(now + 1000);
                    pass.next_due_ms = Some(pass.next_due_ms.map_or(due, |d| d.min(due)));
                    blocked.insert(pair);
                    still.push(p);
                    continue;
                }
                p.attempts += 1;
                changed = true;
                match self
                    .notifier
                    .send(&p.integration, &entry.notification)
                    .await
                {
                    Ok(()) => {
                        tracing::info!(
                            integration = p.integration,
                            key,
                            kind = entry.notification.kind.as_str(),
                            attempts = p.attempts,
                            "notification delivered"
                        );
                        self.count(&p.integration, "delivered");
                        pass.delivered += 1;
                    }
                    Err(e) if e.retryable => {
                        let delay = e
                            .retry_after
                            .unwrap_or_else(|| self.policy.delay(p.attempts))
                            .min(self.policy.max);
                        tracing::warn!(integration = p.integration, key, attempts = p.attempts, retry_in = ?delay, error = %e, "notification not delivered; will retry");
                        self.count(&p.integration, "failed");
                        pass.failed += 1;
                        p.next_attempt_ms = now.saturating_add(millis(delay));
                        p.last_error = Some(e.message);
                        pass.next_due_ms = Some(
                            pass.next_due_ms
                                .map_or(p.next_attempt_ms, |d| d.min(p.next_attempt_ms)),
                        );
                        blocked.insert(pair);
                        still.push(p);
                    }
                    Err(e) => {
                        tracing::error!(integration = p.integration, key, error = %e, "notification dropped: the target refused it");
                        self.count(&p.integration, "dropped");
                        pass.dropped += 1;
                    }
                }
            }
            entry.pending = still;
            if changed {
                self.outbox.store(seq, &entry)?;
            }
        }
        Ok(pass)
    }

    /// Delivers until `shutdown`: at once when woken, else when a retry is
    /// due, and at least every `idle`; only while `active()` (the leader of
    /// replicas) is true.
    pub async fn run(
        &self,
        shutdown: &Shutdown,
        idle: Duration,
        active: &(dyn Fn() -> bool + Sync),
    ) {
        loop {
            if !active() {
                tokio::select! {
                    () = shutdown.wait() => return,
                    () = tokio::time::sleep(idle) => continue,
                }
            }
            let wait = match self.pass(now_ms()).await {
                Ok(pass) => pass
                    .next_due_ms
                    .map_or(idle, |due| {
                        Duration::from_millis(due.saturating_sub(now_ms()).max(50) as u64)
                    })
                    .min(idle),
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the notification outbox");
                    idle
                }
            };
            tokio::select! {
                () = shutdown.wait() => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay(1), Duration::from_secs(1));
        assert_eq!(p.delay(2), Duration::from_secs(2));
        assert_eq!(p.delay(4), Duration::from_secs(8));
        assert_eq!(p.delay(9), Duration::from_secs(256));
        assert_eq!(p.delay(10), Duration::from_secs(300));
        assert_eq!(p.delay(u32::MAX), Duration::from_secs(300));
    }
}
