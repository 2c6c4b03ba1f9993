//! The checks, their pings and flips, in redb; the current state of every
//! check also in memory, for listings and the once-a-second evaluation.
//!
//! Every change goes through one writer thread, which takes whatever
//! changes are queued (pings, evaluations, API edits) and commits them in
//! one durable transaction before answering any of them: a ping is
//! acknowledged only once it is on disk, and under load many pings share
//! one fsync (group commit). The memory copy is updated after the commit,
//! so readers never see what a crash could take back.
//!
//! A flip is recorded, and its notification queued in the durable outbox,
//! in the same transaction as the state change that caused it: each flip is
//! announced exactly once across crashes and restarts, and a monitor that
//! was itself down announces at most one flip per check when it returns.

use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
    sync::{Arc, RwLock, mpsc},
};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use vigil_notify::Outbox;
use vigil_storage::{
    StorageError,
    redb::{decode_record, encode_record, open_database_with_cache},
};

use crate::{
    checks::{self, Announce, Flip, PingKind, PingState, Status},
    config::CheckConfig,
};

/// uuid → [`StoredCheck`].
const CHECKS: TableDefinition<&str, &[u8]> = TableDefinition::new("checks_v1");
/// uuid → [`PingState`].
const STATES: TableDefinition<&str, &[u8]> = TableDefinition::new("states_v1");
/// (uuid, n) → [`PingRecord`].
const PING_LOG: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("ping_log_v1");
/// (uuid, flip time ms) → [`Flip`].
const FLIPS: TableDefinition<(&str, i64), &[u8]> = TableDefinition::new("flips_v1");
/// Flips kept per check; older ones are dropped.
const FLIPS_KEPT: usize = 100;
/// redb's page cache.
const CACHE_BYTES: usize = 4 << 20;
/// Changes committed together at most.
const BATCH: usize = 256;

/// Where a check comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Origin {
    /// Created through the API (or a slug ping with `?create=1`).
    Api,
    /// Declared in the configuration: the API cannot change it.
    Config,
    /// An external probe's results: pings from outside are refused.
    Probe,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredCheck {
    check: CheckConfig,
    origin: Origin,
    created_ms: i64,
}

/// A check and its state, as committed.
#[derive(Debug, Clone)]
pub struct Entry {
    pub check: Arc<CheckConfig>,
    pub origin: Origin,
    pub created_ms: i64,
    pub state: PingState,
    /// When the next success is due ([`checks::due`]), kept current.
    pub due: Option<i64>,
}

impl Entry {
    fn new(check: CheckConfig, origin: Origin, created_ms: i64, state: PingState) -> Self {
        let due = checks::due(&check, &state);
        Self {
            check: Arc::new(check),
            origin,
            created_ms,
            state,
            due,
        }
    }

    pub fn uuid(&self) -> &str {
        &self.check.uuid
    }

    pub fn status(&self, now_ms: i64) -> Status {
        checks::status_due(&self.check, &self.state, self.due, now_ms)
    }

    /// The next time the status may change by itself (due, then due plus
    /// grace; a started run's grace end), if any.
    pub fn next_change(&self, now_ms: i64) -> Option<i64> {
        if self.state.paused || self.state.failed {
            return None;
        }
        let grace = vigil_runtime::time::millis(self.check.grace);
        let mut times = Vec::with_capacity(3);
        if let Some(due) = self.due {
            times.push(due.saturating_add(1));
            times.push(due.saturating_add(grace).saturating_add(1));
        }
        if let Some(start) = self.state.last_start_ms
            && grace > 0
        {
            times.push(start.saturating_add(grace).saturating_add(1));
        }
        times.into_iter().filter(|t| *t > now_ms).min()
    }

    fn refresh(&mut self) {
        self.due = checks::due(&self.check, &self.state);
    }
}

/// One stored ping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PingRecord {
    pub n: u64,
    pub at_ms: i64,
    pub kind: PingKind,
    pub exit_status: Option<u8>,
    pub rid: Option<String>,
    pub duration_ms: Option<i64>,
    pub scheme: String,
    pub method: String,
    pub remote_addr: String,
    pub user_agent: String,
    pub body: Vec<u8>,
    /// The body was longer than the limit and was cut.
    pub truncated: bool,
}

/// A ping as received.
#[derive(Debug, Clone)]
pub struct PingIn {
    pub kind: PingKind,
    pub exit_status: Option<u8>,
    pub rid: Option<String>,
    pub scheme: String,
    pub method: String,
    pub remote_addr: String,
    pub user_agent: String,
    pub body: Vec<u8>,
    pub truncated: bool,
}

/// The check a ping is for.
#[derive(Debug, Clone)]
pub enum Target {
    Uuid(String),
    /// `/ping/<ping key>/<slug>`; `create` makes the check if it is missing.
    Slug {
        slug: String,
        create: bool,
    },
    /// A probe's own result: the only way into a probe's check.
    Probe(String),
}

/// What became of a ping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PingOutcome {
    Stored,
    /// Stored for a check the ping created (`?create=1`).
    Created,
}

/// Why a change was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Invalid(String),
    /// The change conflicts with the check's state (resume of a check that
    /// is not paused, a slug several checks share).
    #[error("{0}")]
    Conflict(String),
    /// Declared in the configuration, or a probe's: not for the API.
    #[error("{0}")]
    ReadOnly(String),
    #[error("the monitor holds its limit of {0} checks")]
    Full(usize),
    #[error("overloaded: too many changes waiting to be stored, retry later")]
    Busy,
    #[error("the monitor is stopping")]
    Stopped,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

macro_rules! storage_from {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                Self::Storage(e.into())
            }
        }
    )*};
}
storage_from!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// The checks in memory, as committed.
#[derive(Debug, Default)]
struct Inner {
    checks: HashMap<String, Entry>,
    /// slug → uuids (a slug may be shared, which makes slug pings to it
    /// ambiguous).
    by_slug: HashMap<String, Vec<String>>,
    /// unique key (badges, read-only listings) → uuid.
    by_key: HashMap<String, String>,
}

impl Inner {
    fn insert(&mut self, entry: Entry) {
        let uuid = entry.uuid().to_owned();
        self.remove(&uuid);
        let slug = entry.check.slug.clone();
        if !slug.is_empty() {
            self.by_slug.entry(slug).or_default().push(uuid.clone());
        }
        self.by_key
            .insert(crate::web::unique_key(&uuid), uuid.clone());
        self.checks.insert(uuid, entry);
    }

    fn remove(&mut self, uuid: &str) {
        if let Some(old) = self.checks.remove(uuid) {
            self.by_key.remove(&crate::web::unique_key(uuid));
            let slug = &old.check.slug;
            if let Some(uuids) = self.by_slug.get_mut(slug) {
                uuids.retain(|u| u != uuid);
                if uuids.is_empty() {
                    self.by_slug.remove(slug);
                }
            }
        }
    }
}

/// Limits and announcements of a store.
#[derive(Clone)]
pub struct StoreOptions {
    pub pings_kept: usize,
    pub max_checks: usize,
    pub queue: usize,
    pub announce: Option<Announce>,
    /// Called after a commit that recorded flips (to wake the deliverer).
    pub on_flip: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            pings_kept: 100,
            max_checks: 100_000,
            queue: 65_536,
            announce: None,
            on_flip: None,
        }
    }
}

type Reply = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
type Job = Box<dyn FnOnce(&mut Batch<'_>) -> JobResult + Send>;

/// What a job did to its batch.
enum JobResult {
    /// Changed the batch; answer with the commit's outcome.
    Done(Reply),
    /// Refused its change (already answered) and left the batch as it was.
    Refused,
    /// Storage failed: the batch cannot commit.
    Failed(StorageError, Reply),
}

/// The checks: reads from memory, changes through the writer thread.
#[derive(Clone)]
pub struct CheckStore {
    db: Arc<Database>,
    inner: Arc<RwLock<Inner>>,
    queue: mpsc::SyncSender<Job>,
    options: Arc<StoreOptions>,
    writer: Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>,
}

/// The writer thread's share of the store.
struct Writer {
    db: Arc<Database>,
    inner: Arc<RwLock<Inner>>,
    options: Arc<StoreOptions>,
}

impl std::fmt::Debug for CheckStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckStore").finish_non_exhaustive()
    }
}

/// The changes of one transaction: reads see the batch's own earlier
/// changes over the committed memory copy.
pub struct Batch<'a> {
    txn: &'a WriteTransaction,
    inner: &'a Inner,
    options: &'a StoreOptions,
    /// uuid → the entry as changed in this batch (None: deleted).
    changed: HashMap<String, Option<Entry>>,
    flips: Vec<(String, Flip)>,
    /// The busiest tables, opened once per batch (opening costs more
    /// than a small insert).
    states: Option<redb::Table<'a, &'static str, &'static [u8]>>,
    ping_log: Option<redb::Table<'a, (&'static str, u64), &'static [u8]>>,
}

impl<'a> Batch<'a> {
    fn states(&mut self) -> Result<&mut redb::Table<'a, &'static str, &'static [u8]>, StoreError> {
        if self.states.is_none() {
            self.states = Some(self.txn.open_table(STATES)?);
        }
        Ok(self.states.as_mut().expect("just opened"))
    }

    fn ping_log(
        &mut self,
    ) -> Result<&mut redb::Table<'a, (&'static str, u64), &'static [u8]>, StoreError> {
        if self.ping_log.is_none() {
            self.ping_log = Some(self.txn.open_table(PING_LOG)?);
        }
        Ok(self.ping_log.as_mut().expect("just opened"))
    }

    /// The entry as this batch sees it.
    pub fn get(&self, uuid: &str) -> Option<&Entry> {
        match self.changed.get(uuid) {
            Some(e) => e.as_ref(),
            None => self.inner.checks.get(uuid),
        }
    }

    /// Every entry as this batch sees it.
    fn all(&self) -> impl Iterator<Item = &Entry> {
        self.inner
            .checks
            .values()
            .filter(|e| !self.changed.contains_key(e.uuid()))
            .chain(self.changed.values().flatten())
    }

    fn count(&self) -> usize {
        self.all().count()
    }

    /// The uuids with this slug.
    fn with_slug(&self, slug: &str) -> Vec<String> {
        let mut uuids: Vec<String> = self
            .inner
            .by_slug
            .get(slug)
            .into_iter()
            .flatten()
            .filter(|u| !self.changed.contains_key(*u))
            .cloned()
            .collect();
        uuids.extend(
            self.changed
                .values()
                .flatten()
                .filter(|e| e.check.slug == slug)
                .map(|e| e.uuid().to_owned()),
        );
        uuids
    }

    /// Stores `entry` (definition and state).
    fn put(&mut self, mut entry: Entry) -> Result<(), StoreError> {
        entry.refresh();
        let uuid = entry.uuid().to_owned();
        self.txn.open_table(CHECKS)?.insert(
            uuid.as_str(),
            encode_record(&StoredCheck {
                check: (*entry.check).clone(),
                origin: entry.origin,
                created_ms: entry.created_ms,
            })?
            .as_slice(),
        )?;
        self.put_state(&uuid, &entry.state)?;
        self.changed.insert(uuid, Some(entry));
        Ok(())
    }

    fn put_state(&mut self, uuid: &str, state: &PingState) -> Result<(), StoreError> {
        let record = encode_record(state)?;
        self.states()?.insert(uuid, record.as_slice())?;
        Ok(())
    }

    /// Changes the state of `uuid` with `f`, settles it at `now_ms`, and
    /// records the flip (with its notification) if it flipped.
    fn update_state<T>(
        &mut self,
        uuid: &str,
        now_ms: i64,
        f: impl FnOnce(&mut PingState) -> T,
    ) -> Result<T, StoreError> {
        let mut entry = self.get(uuid).cloned().ok_or(StoreError::NotFound)?;
        let out = f(&mut entry.state);
        entry.refresh();
        let flip = checks::settle(&entry.check, &mut entry.state, entry.due, now_ms);
        self.put_state(uuid, &entry.state)?;
        if let Some(flip) = flip {
            self.record_flip(&entry, &flip)?;
            self.flips.push((uuid.to_owned(), flip));
        }
        self.changed.insert(uuid.to_owned(), Some(entry));
        Ok(out)
    }

    /// Records `flip` and queues its notification.
    fn record_flip(&self, entry: &Entry, flip: &Flip) -> Result<(), StoreError> {
        let uuid = entry.uuid();
        let mut flips = self.txn.open_table(FLIPS)?;
        // Two flips in one millisecond keep both, in order.
        let mut at = flip.at_ms;
        while flips.get((uuid, at))?.is_some() {
            at += 1;
        }
        flips.insert((uuid, at), encode_record(flip)?.as_slice())?;
        let old: Vec<i64> = flips
            .range((uuid, i64::MIN)..=(uuid, i64::MAX))?
            .rev()
            .skip(FLIPS_KEPT)
            .map(|e| e.map(|(k, _)| k.value().1))
            .collect::<Result<_, _>>()?;
        for at in old {
            flips.remove((uuid, at))?;
        }
        tracing::info!(check = entry.check.name, from = ?flip.from, to = ?flip.to, "check flipped");
        if let Some(a) = &self.options.announce
            && let Some(n) = checks::announce(
                &entry.check,
                &entry.state,
                flip,
                &a.project,
                a.ui_url.as_deref(),
            )
        {
            Outbox::enqueue(self.txn, &n, &a.notifier.route(&n), flip.at_ms)?;
        }
        Ok(())
    }

    /// Records a ping. Pings from outside cannot reach a probe's check.
    pub fn ping(
        &mut self,
        target: &Target,
        ping: PingIn,
        now_ms: i64,
    ) -> Result<PingOutcome, StoreError> {
        let (uuid, outcome) = match target {
            Target::Uuid(u) | Target::Probe(u) => (u.to_ascii_lowercase(), PingOutcome::Stored),
            Target::Slug { slug, create } => match self.with_slug(slug).as_slice() {
                [one] => (one.clone(), PingOutcome::Stored),
                [] if *create => {
                    if self.count() >= self.options.max_checks {
                        return Err(StoreError::Full(self.options.max_checks));
                    }
                    let uuid = uuid::Uuid::new_v4().to_string();
                    let mut check = CheckConfig::every(
                        slug,
                        &uuid,
                        std::time::Duration::from_secs(86_400),
                        std::time::Duration::from_secs(3_600),
                    );
                    check.slug = slug.clone();
                    self.put(Entry::new(check, Origin::Api, now_ms, PingState::default()))?;
                    (uuid, PingOutcome::Created)
                }
                [] => return Err(StoreError::NotFound),
                _ => return Err(StoreError::Conflict("ambiguous slug".into())),
            },
        };
        let entry = self.get(&uuid).ok_or(StoreError::NotFound)?;
        if (entry.origin == Origin::Probe) != matches!(target, Target::Probe(_)) {
            return Err(StoreError::NotFound);
        }
        let kind = if !entry.check.methods.is_empty()
            && !entry.check.methods.eq_ignore_ascii_case(&ping.method)
        {
            PingKind::Ignored
        } else if entry.state.paused && matches!(target, Target::Probe(_)) {
            // A paused probe stays paused until someone resumes it.
            PingKind::Ignored
        } else {
            ping.kind
        };
        let manual_resume = entry.check.manual_resume;
        let n = entry.state.pings + 1;
        let (kind, duration_ms) = self.update_state(&uuid, now_ms, |state| {
            state.apply(kind, ping.rid.as_deref(), manual_resume, &ping.body, now_ms)
        })?;
        let record = PingRecord {
            n,
            at_ms: now_ms,
            kind,
            exit_status: ping.exit_status,
            rid: ping.rid,
            duration_ms,
            scheme: ping.scheme,
            method: ping.method,
            remote_addr: ping.remote_addr,
            user_agent: ping.user_agent,
            body: ping.body,
            truncated: ping.truncated,
        };
        let encoded = encode_record(&record)?;
        let kept = self.options.pings_kept as u64;
        let log = self.ping_log()?;
        log.insert((uuid.as_str(), n), encoded.as_slice())?;
        if let Some(old) = n.checked_sub(kept)
            && old > 0
        {
            log.remove((uuid.as_str(), old))?;
        }
        Ok(outcome)
    }

    /// Creates a check, or with `unique` fields, returns the oldest check
    /// whose fields equal the new one's. The check and whether it was
    /// created.
    pub fn create(
        &mut self,
        check: CheckConfig,
        unique: &[String],
        now_ms: i64,
    ) -> Result<(Entry, bool), StoreError> {
        if !unique.is_empty() {
            let same = |e: &&Entry| {
                unique.iter().all(|field| match field.as_str() {
                    "name" => e.check.name == check.name,
                    "slug" => e.check.slug == check.slug,
                    "tags" => e.check.tags == check.tags,
                    "timeout" => e.check.period == check.period,
                    "grace" => e.check.grace == check.grace,
                    _ => false,
                })
            };
            let mut found: Vec<&Entry> = self.all().filter(same).collect();
            found.sort_by_key(|e| (e.created_ms, e.uuid().to_owned()));
            if let Some(existing) = found.first() {
                // The caller updates it with what the request gave.
                return Ok(((*existing).clone(), false));
            }
        }
        if self.count() >= self.options.max_checks {
            return Err(StoreError::Full(self.options.max_checks));
        }
        if self.get(&check.uuid).is_some() {
            return Err(StoreError::Conflict("a check has this uuid".into()));
        }
        let entry = Entry::new(check, Origin::Api, now_ms, PingState::default());
        self.put(entry.clone())?;
        Ok((self.get(entry.uuid()).cloned().unwrap_or(entry), true))
    }

    /// Changes a check's definition with `f` (which must keep its uuid).
    pub fn update(
        &mut self,
        uuid: &str,
        f: impl FnOnce(&mut CheckConfig),
    ) -> Result<Entry, StoreError> {
        let mut entry = self.writable(uuid)?;
        let mut check = (*entry.check).clone();
        let uuid = check.uuid.clone();
        f(&mut check);
        check.uuid = uuid.clone();
        let check = CheckConfig::revalidated(check).map_err(StoreError::Invalid)?;
        entry.check = Arc::new(check);
        self.put(entry)?;
        self.get(&uuid).cloned().ok_or(StoreError::NotFound)
    }

    /// The entry of a check the API may change.
    fn writable(&self, uuid: &str) -> Result<Entry, StoreError> {
        let entry = self.get(uuid).cloned().ok_or(StoreError::NotFound)?;
        match entry.origin {
            Origin::Api => Ok(entry),
            Origin::Config => Err(StoreError::ReadOnly(
                "this check is declared in the configuration (heartbeat.checks); change it there"
                    .into(),
            )),
            Origin::Probe => Err(StoreError::ReadOnly(
                "this check holds a probe's results (heartbeat.probes); change the probe".into(),
            )),
        }
    }

    /// Deletes a check with its pings and flips.
    pub fn delete(&mut self, uuid: &str) -> Result<Entry, StoreError> {
        let entry = self.writable(uuid)?;
        self.txn.open_table(CHECKS)?.remove(uuid)?;
        self.states()?.remove(uuid)?;
        self.ping_log()?
            .retain_in((uuid, 0)..=(uuid, u64::MAX), |_, _| false)?;
        self.txn
            .open_table(FLIPS)?
            .retain_in((uuid, i64::MIN)..=(uuid, i64::MAX), |_, _| false)?;
        self.changed.insert(uuid.to_owned(), None);
        Ok(entry)
    }

    /// Pauses a check (declared ones too: pausing is operation, not
    /// definition).
    pub fn pause(&mut self, uuid: &str, now_ms: i64) -> Result<Entry, StoreError> {
        self.update_state(uuid, now_ms, PingState::pause)?;
        self.get(uuid).cloned().ok_or(StoreError::NotFound)
    }

    /// Resumes a paused check, as new.
    pub fn resume(&mut self, uuid: &str, now_ms: i64) -> Result<Entry, StoreError> {
        if !self.get(uuid).ok_or(StoreError::NotFound)?.state.paused {
            return Err(StoreError::Conflict("check is not paused".into()));
        }
        self.update_state(uuid, now_ms, PingState::resume)?;
        self.get(uuid).cloned().ok_or(StoreError::NotFound)
    }

    /// Settles every check at `now_ms`.
    pub fn evaluate(&mut self, now_ms: i64) -> Result<usize, StoreError> {
        let due: Vec<String> = self
            .all()
            .filter(|e| checks::would_flip(&e.check, &e.state, e.due, now_ms))
            .map(|e| e.uuid().to_owned())
            .collect();
        for uuid in &due {
            self.update_state(uuid, now_ms, |_| ())?;
        }
        Ok(due.len())
    }
}

impl Writer {
    /// The writer: one transaction per batch of queued jobs. A job that
    /// refuses its change (not found, invalid) is answered at once and
    /// leaves nothing in the transaction; a storage failure fails the
    /// whole batch, whose callers all get the error.
    fn write_loop(&self, jobs: &mpsc::Receiver<Job>) {
        // Without its writer the monitor can neither store a ping nor raise
        // an alarm: if this loop ever dies by a panic, the process ends, so
        // a supervisor restarts it, rather than stay up and blind.
        struct AbortOnUnwind;
        impl Drop for AbortOnUnwind {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    eprintln!("vigil-heartbeat: the store's writer failed; stopping");
                    std::process::abort();
                }
            }
        }
        let _guard = AbortOnUnwind;
        let mut pending: Vec<Job> = Vec::new();
        loop {
            if pending.is_empty() {
                match jobs.recv() {
                    Ok(job) => pending.push(job),
                    Err(_) => break,
                }
            }
            while pending.len() < BATCH
                && let Ok(job) = jobs.try_recv()
            {
                pending.push(job);
            }
            // Jobs a failed batch did not reach go first into the next one.
            pending = self.run_batch(pending);
        }
    }

    /// Runs `jobs` in one transaction; returns the jobs it did not reach
    /// (after a storage failure), which the next batch takes.
    fn run_batch(&self, jobs: Vec<Job>) -> Vec<Job> {
        let txn = match self.db.begin_write() {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "cannot begin a transaction");
                // Try again shortly rather than spin.
                std::thread::park_timeout(std::time::Duration::from_millis(100));
                return jobs;
            }
        };
        let mut replies: Vec<Reply> = Vec::with_capacity(jobs.len());
        let mut left = Vec::new();
        let (changed, flipped, result) = {
            let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
            let mut batch = Batch {
                txn: &txn,
                inner: &inner,
                options: &self.options,
                changed: HashMap::new(),
                flips: Vec::new(),
                states: None,
                ping_log: None,
            };
            let mut result = Ok(());
            let mut jobs = jobs.into_iter();
            for job in jobs.by_ref() {
                // Jobs check before they write: a refused one changed nothing.
                // A panicking job fails the batch (nothing of it commits).
                let outcome =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut batch)));
                match outcome {
                    Ok(JobResult::Done(reply)) => replies.push(reply),
                    Ok(JobResult::Refused) => {}
                    Ok(JobResult::Failed(e, reply)) => {
                        replies.push(reply);
                        result = Err(e);
                        break;
                    }
                    Err(_) => {
                        result = Err(StorageError::Corrupt(
                            "a change failed unexpectedly (a bug): nothing of its batch was stored"
                                .into(),
                        ));
                        break;
                    }
                }
            }
            left.extend(jobs);
            (batch.changed, !batch.flips.is_empty(), result)
        };
        if result.is_ok() && replies.is_empty() {
            // Every job was refused: nothing to store, no fsync.
            let _ = txn.abort();
            return left;
        }
        let outcome = result.and_then(|()| txn.commit().map_err(StorageError::from));
        match outcome {
            Ok(()) => {
                if !changed.is_empty() {
                    let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
                    for (uuid, entry) in changed {
                        match entry {
                            Some(e) => inner.insert(e),
                            None => inner.remove(&uuid),
                        }
                    }
                }
                for reply in replies {
                    reply(Ok(()));
                }
                if flipped && let Some(on_flip) = &self.options.on_flip {
                    on_flip();
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "changes not stored");
                let message = e.to_string();
                for reply in replies {
                    reply(Err(StoreError::Storage(StorageError::Corrupt(format!(
                        "not stored: {message}"
                    )))));
                }
            }
        }
        left
    }
}

impl CheckStore {
    /// Opens the store, makes the declared checks (configuration and
    /// probes) what the configuration says, and starts the writer.
    pub fn open(
        path: &Path,
        declared: Vec<(CheckConfig, Origin)>,
        options: StoreOptions,
    ) -> Result<Self, StoreError> {
        // A small page cache: the monitor's state is in memory already, and it
        // runs on small machines (aim: 30 MiB with 10,000 checks).
        let db = Arc::new(open_database_with_cache(path, CACHE_BYTES)?);
        let now = vigil_runtime::time::now_ms();
        let mut inner = Inner::default();
        {
            let txn = db.begin_write()?;
            txn.open_table(PING_LOG)?;
            txn.open_table(FLIPS)?;
            let mut stored: BTreeMap<String, StoredCheck> = BTreeMap::new();
            let mut states: HashMap<String, PingState> = HashMap::new();
            {
                let checks = txn.open_table(CHECKS)?;
                for e in checks.iter()? {
                    let (k, v) = e?;
                    stored.insert(k.value().to_owned(), decode_record(v.value())?);
                }
                let table = txn.open_table(STATES)?;
                for e in table.iter()? {
                    let (k, v) = e?;
                    states.insert(k.value().to_owned(), decode_record(v.value())?);
                }
            }
            // Declared checks: configuration wins over what is stored.
            let mut wanted: HashMap<String, (CheckConfig, Origin)> = HashMap::new();
            for (check, origin) in declared {
                // One spelling of each uuid: the one ping URLs use.
                let uuid = uuid::Uuid::parse_str(&check.uuid)
                    .map_or_else(|_| check.uuid.to_ascii_lowercase(), |u| u.to_string());
                wanted.insert(uuid, (check, origin));
            }
            let mut checks = txn.open_table(CHECKS)?;
            let gone: Vec<String> = stored
                .iter()
                .filter(|(uuid, s)| s.origin != Origin::Api && !wanted.contains_key(*uuid))
                .map(|(uuid, _)| uuid.clone())
                .collect();
            for uuid in &gone {
                if let Some(s) = stored.remove(uuid) {
                    tracing::info!(
                        check = s.check.name,
                        "declared check removed from the configuration: deleted"
                    );
                    checks.remove(uuid.as_str())?;
                    txn.open_table(STATES)?.remove(uuid.as_str())?;
                    txn.open_table(PING_LOG)?
                        .retain_in((uuid.as_str(), 0)..=(uuid.as_str(), u64::MAX), |_, _| false)?;
                    txn.open_table(FLIPS)?.retain_in(
                        (uuid.as_str(), i64::MIN)..=(uuid.as_str(), i64::MAX),
                        |_, _| false,
                    )?;
                }
            }
            for (uuid, (mut check, origin)) in wanted {
                check.uuid = uuid.clone();
                check.slug = check.slug();
                let created_ms = stored.get(&uuid).map_or(now, |s| s.created_ms);
                let record = StoredCheck {
                    check,
                    origin,
                    created_ms,
                };
                checks.insert(uuid.as_str(), encode_record(&record)?.as_slice())?;
                stored.insert(uuid, record);
            }
            drop(checks);
            let kept = options.pings_kept as u64;
            for (uuid, s) in stored {
                let state = states.remove(&uuid).unwrap_or_default();
                // Fewer pings kept than before: drop the surplus now.
                if let Some(last_old) = state.pings.checked_sub(kept) {
                    txn.open_table(PING_LOG)?
                        .retain_in((uuid.as_str(), 0)..=(uuid.as_str(), last_old), |_, _| false)?;
                }
                if s.check.parsed_schedule().is_err() {
                    tracing::error!(
                        check = s.check.name,
                        "stored check has an unreadable schedule; it shows as down"
                    );
                }
                inner.insert(Entry::new(s.check, s.origin, s.created_ms, state));
            }
            txn.commit()?;
        }
        if options.announce.is_some() {
            Outbox::open(db.clone())?;
        }
        let (queue, jobs) = mpsc::sync_channel(options.queue.max(1));
        let inner = Arc::new(RwLock::new(inner));
        let options = Arc::new(options);
        let writer = Writer {
            db: db.clone(),
            inner: inner.clone(),
            options: options.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("heartbeat-writer".into())
            .spawn(move || writer.write_loop(&jobs))
            .map_err(|e| StoreError::Invalid(format!("cannot start the writer thread: {e}")))?;
        Ok(Self {
            db,
            inner,
            queue,
            options,
            writer: Arc::new(std::sync::Mutex::new(Some(handle))),
        })
    }

    /// Stops the writer once it has stored what is queued, and closes the
    /// database. Call on the last clone (others keep it open).
    pub fn close(self) {
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        drop(self);
        if let Some(handle) = writer {
            let _ = handle.join();
        }
    }

    pub fn database(&self) -> Arc<Database> {
        self.db.clone()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn options(&self) -> &StoreOptions {
        &self.options
    }

    /// Runs `f` in the next batch; answers once the batch is committed.
    pub async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Batch<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |batch| match f(batch) {
            Ok(value) => JobResult::Done(Box::new(move |committed: Result<(), StoreError>| {
                let _ = tx.send(committed.map(|()| value));
            })),
            Err(StoreError::Storage(e)) => JobResult::Failed(
                e,
                // The batch fails with it: answered with the batch's error.
                Box::new(move |committed: Result<(), StoreError>| {
                    let _ = tx.send(Err(committed.err().unwrap_or(StoreError::Stopped)));
                }),
            ),
            Err(refused) => {
                let _ = tx.send(Err(refused));
                JobResult::Refused
            }
        });
        self.queue.try_send(job).map_err(|e| match e {
            mpsc::TrySendError::Full(_) => StoreError::Busy,
            mpsc::TrySendError::Disconnected(_) => StoreError::Stopped,
        })?;
        rx.await.map_err(|_| StoreError::Stopped)?
    }

    /// Every check, oldest first.
    pub fn entries(&self) -> Vec<Entry> {
        let mut all: Vec<Entry> = self.read().checks.values().cloned().collect();
        all.sort_by(|a, b| (a.created_ms, &a.check.name).cmp(&(b.created_ms, &b.check.name)));
        all
    }

    pub fn entry(&self, uuid: &str) -> Option<Entry> {
        self.read().checks.get(&uuid.to_ascii_lowercase()).cloned()
    }

    /// The check with this unique key (see [`crate::web::unique_key`]).
    pub fn by_unique_key(&self, key: &str) -> Option<Entry> {
        let inner = self.read();
        let uuid = inner.by_key.get(&key.to_ascii_lowercase())?;
        inner.checks.get(uuid).cloned()
    }

    pub fn len(&self) -> usize {
        self.read().checks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The earliest time a check's status may change by itself.
    pub fn next_change(&self, now_ms: i64) -> Option<i64> {
        self.read()
            .checks
            .values()
            .filter_map(|e| e.next_change(now_ms))
            .min()
    }

    /// Records a ping; acknowledged once stored.
    pub async fn ping(
        &self,
        target: Target,
        ping: PingIn,
        now_ms: i64,
    ) -> Result<PingOutcome, StoreError> {
        // Pings for checks that do not exist are refused from memory: a
        // flood of made-up uuids costs the writer nothing. (The batch
        // checks again.)
        let known = {
            let inner = self.read();
            match &target {
                Target::Uuid(u) | Target::Probe(u) => {
                    inner.checks.contains_key(&u.to_ascii_lowercase())
                }
                Target::Slug { slug, create } => *create || inner.by_slug.contains_key(slug),
            }
        };
        if !known {
            return Err(StoreError::NotFound);
        }
        self.write(move |b| b.ping(&target, ping, now_ms)).await
    }

    /// Settles every check at `now_ms`; the number that flipped. Looks in
    /// memory first: most rounds change nothing and write nothing.
    pub async fn evaluate(&self, now_ms: i64) -> Result<usize, StoreError> {
        let any = self
            .read()
            .checks
            .values()
            .any(|e| checks::would_flip(&e.check, &e.state, e.due, now_ms));
        if !any {
            return Ok(0);
        }
        self.write(move |b| b.evaluate(now_ms)).await
    }

    /// A check's flips, newest first.
    pub fn flips(&self, uuid: &str) -> Result<Vec<Flip>, StoreError> {
        let uuid = uuid.to_ascii_lowercase();
        let txn = self.db.begin_read()?;
        let table = txn.open_table(FLIPS)?;
        let flips = table
            .range((uuid.as_str(), i64::MIN)..=(uuid.as_str(), i64::MAX))?
            .rev()
            .map(|e| {
                e.map_err(StorageError::from)
                    .and_then(|(_, v)| decode_record(v.value()))
            })
            .collect::<Result<_, _>>()?;
        Ok(flips)
    }

    /// A check's stored pings, newest first.
    pub fn pings(&self, uuid: &str) -> Result<Vec<PingRecord>, StoreError> {
        let uuid = uuid.to_ascii_lowercase();
        let txn = self.db.begin_read()?;
        let table = txn.open_table(PING_LOG)?;
        let pings = table
            .range((uuid.as_str(), 0)..=(uuid.as_str(), u64::MAX))?
            .rev()
            .map(|e| {
                e.map_err(StorageError::from)
                    .and_then(|(_, v)| decode_record(v.value()))
            })
            .collect::<Result<_, _>>()?;
        Ok(pings)
    }

    /// One stored ping.
    pub fn ping_record(&self, uuid: &str, n: u64) -> Result<Option<PingRecord>, StoreError> {
        let uuid = uuid.to_ascii_lowercase();
        let txn = self.db.begin_read()?;
        let table = txn.open_table(PING_LOG)?;
        Ok(match table.get((uuid.as_str(), n))? {
            Some(v) => Some(decode_record(v.value())?),
            None => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use vigil_notify::{Kind, Notifier};

    use super::*;
    use crate::checks::Side;

    const UUID: &str = "5b0f3c38-2f5e-4a53-9d0c-1c3f1f7b8a11";

    fn check() -> CheckConfig {
        CheckConfig::every(
            "nightly backup",
            UUID,
            Duration::from_secs(60),
            Duration::from_secs(30),
        )
    }

    fn open(path: &Path, checks: Vec<CheckConfig>) -> CheckStore {
        let hook: vigil_notify::IntegrationConfig =
            toml::from_str("name = \"hook\"\nwebhook = { url = \"http://127.0.0.1:9/hook\" }")
                .unwrap();
        let notifier = Arc::new(Notifier::new("heartbeat.integrations", &[hook], "test").unwrap());
        CheckStore::open(
            path,
            checks.into_iter().map(|c| (c, Origin::Config)).collect(),
            StoreOptions {
                pings_kept: 3,
                max_checks: 5,
                announce: Some(Announce {
                    notifier,
                    project: "default".into(),
                    ui_url: Some("http://vigil.example".into()),
                }),
                ..StoreOptions::default()
            },
        )
        .unwrap()
    }

    fn ping(kind: PingKind) -> PingIn {
        PingIn {
            kind,
            exit_status: None,
            rid: None,
            scheme: "http".into(),
            method: "GET".into(),
            remote_addr: "127.0.0.1".into(),
            user_agent: "test".into(),
            body: Vec::new(),
            truncated: false,
        }
    }

    async fn send(
        s: &CheckStore,
        uuid: &str,
        kind: PingKind,
        at: i64,
    ) -> Result<PingOutcome, StoreError> {
        s.ping(Target::Uuid(uuid.into()), ping(kind), at).await
    }

    /// (kind, title) of every queued notification, oldest first.
    fn queued(store: &CheckStore) -> Vec<(Kind, String)> {
        Outbox::open(store.database())
            .unwrap()
            .entries()
            .unwrap()
            .into_iter()
            .map(|(_, e)| (e.notification.kind, e.notification.title))
            .collect()
    }

    #[tokio::test]
    async fn each_flip_is_announced_once_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hb.redb");
        let s = open(&path, vec![check()]);
        send(&s, UUID, PingKind::Success, 0).await.unwrap();
        assert!(queued(&s).is_empty(), "new → up is not announced");
        assert_eq!(s.flips(UUID).unwrap().len(), 1, "but it is a flip");
        assert_eq!(s.evaluate(60_000).await.unwrap(), 0);
        assert_eq!(s.evaluate(90_000).await.unwrap(), 0, "late is still up");
        assert_eq!(s.next_change(90_000), Some(90_001), "down just after grace");
        assert_eq!(s.evaluate(95_000).await.unwrap(), 1);
        assert_eq!(
            queued(&s),
            vec![(Kind::Trigger, "nightly backup is DOWN".to_owned())]
        );
        let n = &Outbox::open(s.database()).unwrap().entries().unwrap()[0]
            .1
            .notification;
        assert!(
            n.text
                .contains("one was due at 1970-01-01T00:01:00Z, 35s ago"),
            "{}",
            n.text
        );
        assert!(
            n.fields
                .iter()
                .any(|f| f.name == "Late by" && f.value == "35s"),
            "{:?}",
            n.fields
        );
        assert!(
            n.fields
                .iter()
                .any(|f| f.name == "Last ping" && f.value.contains("1m 35s ago")),
            "{:?}",
            n.fields
        );
        assert_eq!(n.url.as_deref(), Some("http://vigil.example/#/heartbeats"));
        assert_eq!(s.evaluate(200_000).await.unwrap(), 0, "announced once");
        s.close();

        // A restart (the same file) announces nothing again.
        let s = open(&path, vec![check()]);
        assert_eq!(s.evaluate(300_000).await.unwrap(), 0);
        assert_eq!(queued(&s).len(), 1);
        // Back up: one resolve. A failure ping: down at once, with its message.
        send(&s, UUID, PingKind::Success, 400_000).await.unwrap();
        let mut failed = ping(PingKind::Fail);
        failed.body = b"disk full\n".to_vec();
        s.ping(Target::Uuid(UUID.into()), failed, 410_000)
            .await
            .unwrap();
        let kinds: Vec<Kind> = queued(&s).into_iter().map(|(k, _)| k).collect();
        assert_eq!(kinds, [Kind::Trigger, Kind::Resolve, Kind::Trigger]);
        let last = &Outbox::open(s.database()).unwrap().entries().unwrap()[2]
            .1
            .notification;
        assert!(
            last.fields
                .iter()
                .any(|f| f.name == "Message" && f.value == "disk full"),
            "{:?}",
            last.fields
        );
        let sides: Vec<Side> = s.flips(UUID).unwrap().iter().map(|f| f.to).collect();
        assert_eq!(
            sides,
            [Side::Down, Side::Up, Side::Down, Side::Up],
            "newest first"
        );
    }

    #[tokio::test]
    async fn a_monitor_that_was_down_announces_one_flip_per_check() {
        let dir = tempfile::tempdir().unwrap();
        let uuids = [
            "5b0f3c38-2f5e-4a53-9d0c-1c3f1f7b8a11",
            "6c1f4d49-3a6f-4b64-8e1d-2d4a2a8c9b22",
            "7d2a5e5a-4b7a-4c75-9f2e-3e5b3b9dac33",
        ];
        let checks: Vec<CheckConfig> = uuids
            .iter()
            .enumerate()
            .map(|(i, u)| {
                CheckConfig::every(
                    &format!("job {i}"),
                    u,
                    Duration::from_secs(60),
                    Duration::ZERO,
                )
            })
            .collect();
        let s = open(&dir.path().join("hb.redb"), checks);
        for u in uuids {
            send(&s, u, PingKind::Success, 0).await.unwrap();
        }
        // Ten days later, evaluated every second for a minute: 3 flips, no storm.
        let mut flips = 0;
        for k in 0..60 {
            flips += s.evaluate(864_000_000 + k * 1000).await.unwrap();
        }
        assert_eq!(flips, 3);
        assert_eq!(queued(&s).len(), 3);
    }

    #[tokio::test]
    async fn pings_persist_and_only_the_newest_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hb.redb");
        let s = open(&path, vec![check()]);
        assert!(matches!(
            send(
                &s,
                "00000000-0000-4000-8000-000000000000",
                PingKind::Success,
                1
            )
            .await,
            Err(StoreError::NotFound)
        ));
        for at in 1..=5 {
            let mut p = ping(PingKind::Log);
            p.body = format!("line {at}").into_bytes();
            s.ping(Target::Uuid(UUID.to_uppercase()), p, at)
                .await
                .unwrap();
        }
        s.close();
        let s = open(&path, vec![check()]);
        let e = s.entry(UUID).unwrap();
        assert_eq!(e.state.pings, 5);
        let kept: Vec<(u64, Vec<u8>)> = s
            .pings(UUID)
            .unwrap()
            .into_iter()
            .map(|p| (p.n, p.body))
            .collect();
        assert_eq!(
            kept,
            [
                (5, b"line 5".to_vec()),
                (4, b"line 4".to_vec()),
                (3, b"line 3".to_vec())
            ],
            "pings_kept = 3, newest first"
        );
        assert!(s.ping_record(UUID, 2).unwrap().is_none());
    }

    #[tokio::test]
    async fn slug_pings_create_and_ambiguous_slugs_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(&dir.path().join("hb.redb"), vec![check()]);
        let slug = |slug: &str, create| Target::Slug {
            slug: slug.into(),
            create,
        };
        // The declared check's slug comes from its name.
        assert_eq!(
            s.ping(slug("nightly-backup", false), ping(PingKind::Success), 1)
                .await
                .unwrap(),
            PingOutcome::Stored
        );
        assert!(matches!(
            s.ping(slug("db-dump", false), ping(PingKind::Success), 2)
                .await,
            Err(StoreError::NotFound)
        ));
        assert_eq!(
            s.ping(slug("db-dump", true), ping(PingKind::Start), 3)
                .await
                .unwrap(),
            PingOutcome::Created
        );
        assert_eq!(
            s.ping(slug("db-dump", true), ping(PingKind::Success), 4)
                .await
                .unwrap(),
            PingOutcome::Stored,
            "created once"
        );
        let created = s
            .entries()
            .into_iter()
            .find(|e| e.check.slug == "db-dump")
            .unwrap();
        assert_eq!(created.origin, Origin::Api);
        assert_eq!(created.check.period, Some(Duration::from_secs(86_400)));
        assert_eq!(created.check.grace, Duration::from_secs(3_600));
        assert_eq!(
            created.state.last_duration_ms,
            Some(1),
            "start at 3, success at 4"
        );
        // A second check with the same slug makes slug pings ambiguous.
        let mut twin = CheckConfig::every(
            "twin",
            "9e8d7c6b-5a49-4838-a726-150f1e2d3c4b",
            Duration::from_secs(60),
            Duration::ZERO,
        );
        twin.slug = "db-dump".into();
        s.write(move |b| b.create(twin, &[], 5)).await.unwrap();
        assert!(matches!(
            s.ping(slug("db-dump", true), ping(PingKind::Success), 6).await,
            Err(StoreError::Conflict(m)) if m == "ambiguous slug"
        ));
        // max_checks = 5: three now, two more fit, the sixth is refused.
        for name in ["a", "b"] {
            s.ping(slug(name, true), ping(PingKind::Success), 7)
                .await
                .unwrap();
        }
        assert!(matches!(
            s.ping(slug("c", true), ping(PingKind::Success), 8).await,
            Err(StoreError::Full(5))
        ));
    }

    #[tokio::test]
    async fn declared_checks_win_and_refusals_leave_the_batch_intact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hb.redb");
        let s = open(&path, vec![check()]);
        let e = s
            .write(|b| b.update(UUID, |c| c.name = "renamed".into()))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, StoreError::ReadOnly(m) if m.contains("heartbeat.checks")),
            "{e}"
        );
        assert!(matches!(
            s.write(|b| b.delete(UUID)).await,
            Err(StoreError::ReadOnly(_))
        ));
        // Pausing is operation, allowed; resume of a running check is refused.
        let paused = s.write(|b| b.pause(UUID, 10)).await.unwrap();
        assert_eq!(paused.status(10), Status::Paused);
        s.write(|b| b.resume(UUID, 11)).await.unwrap();
        assert!(matches!(
            s.write(|b| b.resume(UUID, 12)).await,
            Err(StoreError::Conflict(m)) if m == "check is not paused"
        ));
        // Many jobs in one batch, one refused in it: the others are stored.
        // A first job holds the writer until all the others are queued.
        let (release, held) = std::sync::mpsc::channel::<()>();
        let blocker = s.write(move |_| {
            let _ = held.recv();
            Ok(())
        });
        let mut jobs: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>> =
            vec![Box::pin(async move { blocker.await.is_ok() })];
        for i in 0..50 {
            let s = s.clone();
            jobs.push(if i == 25 {
                Box::pin(async move {
                    matches!(
                        s.write(|b| b.resume(UUID, 99)).await,
                        Err(StoreError::Conflict(_))
                    )
                })
            } else {
                Box::pin(async move { send(&s, UUID, PingKind::Log, 100 + i).await.is_ok() })
            });
        }
        std::thread::spawn(move || {
            // Long enough for every job above to be queued.
            let (_keep, wait) = std::sync::mpsc::channel::<()>();
            let _ = wait.recv_timeout(Duration::from_millis(300));
            let _ = release.send(());
        });
        let outcomes = futures::future::join_all(jobs).await;
        assert!(outcomes.iter().all(|ok| *ok), "{outcomes:?}");
        assert_eq!(s.entry(UUID).unwrap().state.pings, 49);
        s.close();
        // A changed configuration: the old declared check is gone, the new one is there.
        let mut other = check();
        other.uuid = "6c1f4d49-3a6f-4b64-8e1d-2d4a2a8c9b22".into();
        other.name = "other".into();
        let s = open(&path, vec![other]);
        assert!(s.entry(UUID).is_none());
        assert!(s.pings(UUID).unwrap().is_empty());
        assert_eq!(s.len(), 1);
    }
}
