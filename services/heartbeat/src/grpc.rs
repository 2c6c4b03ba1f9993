//! `vigil.heartbeat.v1` over gRPC: the checks, their pings and flips, for
//! Vigil's own clients. Keys: the monitor's read-write key is an editor,
//! its read-only key a viewer; a UI gateway's key asserts its user's role.

use std::{sync::Arc, time::Duration};

use tonic::{Request, Response, Status as GrpcStatus};
use vigil_proto::heartbeat::v1::{self as pb, heartbeat_service_server::HeartbeatService};
use vigil_runtime::{
    auth::{ApiKeys, Caller, Project, Role, require_role},
    time::{millis, now_ms},
};

use crate::{
    checks::{PingKind, Side, Status},
    config::{CheckConfig, Keys},
    store::{CheckStore, Entry, Origin, StoreError},
    web::unique_key,
};

/// Authenticates calls: the read-only key first, then the read-write key
/// and gateway keys (through [`ApiKeys`]).
#[allow(clippy::result_large_err)]
pub fn authenticator(
    keys: Arc<Keys>,
    api_keys: Arc<ApiKeys>,
    project: String,
) -> impl Fn(Request<()>) -> Result<Request<()>, GrpcStatus> + Clone {
    move |mut request: Request<()>| {
        let metadata = request.metadata();
        let presented = metadata
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .or_else(|| {
                metadata
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
            })
            .map(str::trim);
        if let (Some(k), Some(ro)) = (presented, keys.read_only.as_deref())
            && crate::web::keys_equal(k, ro)
        {
            request.extensions_mut().insert(Project(project.clone()));
            request.extensions_mut().insert(Caller {
                role: Role::Viewer,
                user: None,
            });
            return Ok(request);
        }
        let request = api_keys.intercept(request)?;
        match request.extensions().get::<Project>() {
            Some(Project(p)) if *p == project => Ok(request),
            _ => Err(GrpcStatus::permission_denied(format!(
                "this monitor serves project {project:?}"
            ))),
        }
    }
}

fn status_of(e: StoreError) -> GrpcStatus {
    match e {
        StoreError::NotFound => GrpcStatus::not_found("no such check"),
        StoreError::Invalid(m) => GrpcStatus::invalid_argument(m),
        StoreError::Conflict(m) => GrpcStatus::failed_precondition(m),
        StoreError::ReadOnly(m) => GrpcStatus::permission_denied(m),
        StoreError::Full(_) => GrpcStatus::resource_exhausted(e.to_string()),
        StoreError::Busy => GrpcStatus::unavailable(e.to_string()),
        StoreError::Stopped => GrpcStatus::unavailable(e.to_string()),
        StoreError::Storage(s) => GrpcStatus::internal(s.to_string()),
    }
}

fn ms(d: Duration) -> i64 {
    millis(d)
}

/// A check as a message; `secret` shows its uuid (the ping secret).
pub fn check_message(e: &Entry, now: i64, secret: bool) -> pb::Check {
    let c = &e.check;
    let s = &e.state;
    let status = e.status(now);
    pb::Check {
        name: c.name.clone(),
        slug: c.slug.clone(),
        uuid: if secret {
            e.uuid().to_owned()
        } else {
            String::new()
        },
        status: match status {
            Status::New => pb::CheckStatus::New,
            Status::Up => pb::CheckStatus::Up,
            Status::Late => pb::CheckStatus::Late,
            Status::Down => pb::CheckStatus::Down,
            Status::Paused => pb::CheckStatus::Paused,
        } as i32,
        period_ms: c.period.map_or(0, ms),
        grace_ms: ms(c.grace),
        last_ping_ms: s.last_ping_ms.unwrap_or(0),
        pings: s.pings,
        schedule: c.schedule.clone().unwrap_or_default(),
        tz: if c.schedule.is_some() {
            c.tz.clone()
        } else {
            String::new()
        },
        tags: c.tags.clone(),
        desc: c.desc.clone(),
        manual_resume: c.manual_resume,
        methods: c.methods.clone(),
        started: s.last_start_ms.is_some(),
        last_duration_ms: s.last_duration_ms.unwrap_or(0),
        next_ping_ms: match status {
            Status::Up | Status::Late => e.due.filter(|d| *d != i64::MIN).unwrap_or(0),
            _ => 0,
        },
        origin: match e.origin {
            Origin::Api => pb::CheckOrigin::Api,
            Origin::Config => pb::CheckOrigin::Config,
            Origin::Probe => pb::CheckOrigin::Probe,
        } as i32,
        unique_key: unique_key(e.uuid()),
        // Failure output may hold secrets: editors only, like ping bodies.
        last_message: if secret {
            s.last_message.clone().unwrap_or_default()
        } else {
            String::new()
        },
    }
}

pub struct HeartbeatApi {
    pub store: CheckStore,
    pub on_change: Arc<dyn Fn() + Send + Sync>,
}

impl HeartbeatApi {
    /// The check an id names: a uuid, or for reads a unique key.
    #[allow(clippy::result_large_err)]
    fn find(&self, id: &str, by_unique_key: bool) -> Result<Entry, GrpcStatus> {
        let id = id.trim().to_ascii_lowercase();
        if let Some(e) = self.store.entry(&id) {
            return Ok(e);
        }
        if by_unique_key && let Some(e) = self.store.by_unique_key(&id) {
            return Ok(e);
        }
        Err(GrpcStatus::not_found(format!("no check {id:?}")))
    }
}

impl HeartbeatApi {
    /// An editor's change of one check (delete, pause, resume); a unique
    /// key names it too when `by_unique_key`.
    async fn change(
        &self,
        request: Request<pb::GetCheckRequest>,
        by_unique_key: bool,
        f: fn(&mut crate::store::Batch<'_>, &str, i64) -> Result<Entry, StoreError>,
    ) -> Result<Response<pb::Check>, GrpcStatus> {
        require_role(&request, Role::Editor)?;
        let uuid = self
            .find(&request.get_ref().id, by_unique_key)?
            .uuid()
            .to_owned();
        let now = now_ms();
        let entry = self
            .store
            .write(move |b| f(b, &uuid, now))
            .await
            .map_err(status_of)?;
        (self.on_change)();
        Ok(Response::new(check_message(&entry, now, true)))
    }
}

/// Applies `spec`'s `fields` (all when empty) to `check`.
#[allow(clippy::result_large_err)]
fn apply(
    check: &mut CheckConfig,
    spec: &pb::CheckSpec,
    fields: &[String],
) -> Result<(), GrpcStatus> {
    let all = fields.is_empty();
    let has = |f: &str| all || fields.iter().any(|x| x == f);
    for f in fields {
        if ![
            "name",
            "slug",
            "tags",
            "desc",
            "period_ms",
            "schedule",
            "tz",
            "grace_ms",
            "manual_resume",
            "methods",
        ]
        .contains(&f.as_str())
        {
            return Err(GrpcStatus::invalid_argument(format!(
                "fields: no field {f:?} in CheckSpec"
            )));
        }
    }
    let duration = |field: &str, v: i64| {
        u64::try_from(v)
            .map(Duration::from_millis)
            .map_err(|_| GrpcStatus::invalid_argument(format!("{field} must not be negative")))
    };
    if has("name") {
        check.name.clone_from(&spec.name);
    }
    if has("slug") {
        check.slug.clone_from(&spec.slug);
    }
    if has("tags") {
        check.tags.clone_from(&spec.tags);
    }
    if has("desc") {
        check.desc.clone_from(&spec.desc);
    }
    if has("tz") && !spec.tz.is_empty() {
        check.tz.clone_from(&spec.tz);
    }
    if has("grace_ms") {
        check.grace = duration("grace_ms", spec.grace_ms)?;
    }
    if has("manual_resume") {
        check.manual_resume = spec.manual_resume;
    }
    if has("methods") {
        check.methods.clone_from(&spec.methods);
    }
    if has("schedule") && !spec.schedule.is_empty() {
        check.schedule = Some(spec.schedule.clone());
        check.period = None;
    } else if has("period_ms") && spec.period_ms != 0 {
        check.period = Some(duration("period_ms", spec.period_ms)?);
        check.schedule = None;
    }
    Ok(())
}

#[tonic::async_trait]
impl HeartbeatService for HeartbeatApi {
    async fn list_checks(
        &self,
        request: Request<pb::ListChecksRequest>,
    ) -> Result<Response<pb::ListChecksResponse>, GrpcStatus> {
        let caller = require_role(&request, Role::Viewer)?;
        let tags = request.into_inner().tags;
        let now = now_ms();
        let checks = self
            .store
            .entries()
            .iter()
            .filter(|e| {
                let own: Vec<&str> = e.check.tags.split_whitespace().collect();
                tags.iter().all(|t| own.contains(&t.as_str()))
            })
            .map(|e| check_message(e, now, caller.role >= Role::Editor))
            .collect();
        Ok(Response::new(pb::ListChecksResponse { checks }))
    }

    async fn get_check(
        &self,
        request: Request<pb::GetCheckRequest>,
    ) -> Result<Response<pb::Check>, GrpcStatus> {
        let caller = require_role(&request, Role::Viewer)?;
        let e = self.find(&request.get_ref().id, true)?;
        Ok(Response::new(check_message(
            &e,
            now_ms(),
            caller.role >= Role::Editor,
        )))
    }

    async fn create_check(
        &self,
        request: Request<pb::CreateCheckRequest>,
    ) -> Result<Response<pb::CreateCheckResponse>, GrpcStatus> {
        require_role(&request, Role::Editor)?;
        let request = request.into_inner();
        let spec = request.spec.unwrap_or_default();
        let uuid = uuid::Uuid::new_v4().to_string();
        let mut check = CheckConfig::every(
            &spec.name,
            &uuid,
            Duration::from_secs(86_400),
            Duration::from_secs(3_600),
        );
        apply(&mut check, &spec, &[])?;
        // Unset (zero) period and grace take healthchecks.io's defaults.
        if spec.period_ms == 0 && spec.schedule.is_empty() {
            check.period = Some(Duration::from_secs(86_400));
        }
        if spec.grace_ms == 0 {
            check.grace = Duration::from_secs(3_600);
        }
        let check = check.revalidated().map_err(GrpcStatus::invalid_argument)?;
        for f in &request.unique {
            if !["name", "slug", "tags", "timeout", "grace"].contains(&f.as_str()) {
                return Err(GrpcStatus::invalid_argument(format!(
                    "unique: {f:?} is not one of name, slug, tags, timeout, grace"
                )));
            }
        }
        let unique = request.unique;
        let now = now_ms();
        let (entry, created) = self
            .store
            .write(move |b| {
                let (entry, created) = b.create(check.clone(), &unique, now)?;
                // A declared or probe check that matches is returned as it is.
                if created || entry.origin != Origin::Api {
                    return Ok((entry, created));
                }
                let uuid = entry.uuid().to_owned();
                Ok((b.update(&uuid, |c| *c = check)?, false))
            })
            .await
            .map_err(status_of)?;
        (self.on_change)();
        Ok(Response::new(pb::CreateCheckResponse {
            check: Some(check_message(&entry, now, true)),
            created,
        }))
    }

    async fn update_check(
        &self,
        request: Request<pb::UpdateCheckRequest>,
    ) -> Result<Response<pb::Check>, GrpcStatus> {
        require_role(&request, Role::Editor)?;
        let request = request.into_inner();
        let e = self.find(&request.id, false)?;
        let spec = request.spec.unwrap_or_default();
        // Checked on a copy for a clear error; applied in the batch to the
        // definition as it is then, so a concurrent change is not undone.
        let mut check = (*e.check).clone();
        apply(&mut check, &spec, &request.fields)?;
        check.revalidated().map_err(GrpcStatus::invalid_argument)?;
        let uuid = e.uuid().to_owned();
        let fields = request.fields;
        let entry = self
            .store
            .write(move |b| {
                b.update(&uuid, |c| {
                    let _ = apply(c, &spec, &fields);
                })
            })
            .await
            .map_err(status_of)?;
        (self.on_change)();
        Ok(Response::new(check_message(&entry, now_ms(), true)))
    }

    async fn delete_check(
        &self,
        request: Request<pb::GetCheckRequest>,
    ) -> Result<Response<pb::Check>, GrpcStatus> {
        self.change(request, false, |b, uuid, _| b.delete(uuid))
            .await
    }

    async fn pause_check(
        &self,
        request: Request<pb::GetCheckRequest>,
    ) -> Result<Response<pb::Check>, GrpcStatus> {
        self.change(request, true, |b, uuid, now| b.pause(uuid, now))
            .await
    }

    async fn resume_check(
        &self,
        request: Request<pb::GetCheckRequest>,
    ) -> Result<Response<pb::Check>, GrpcStatus> {
        self.change(request, true, |b, uuid, now| b.resume(uuid, now))
            .await
    }

    async fn list_pings(
        &self,
        request: Request<pb::GetCheckRequest>,
    ) -> Result<Response<pb::ListPingsResponse>, GrpcStatus> {
        require_role(&request, Role::Editor)?;
        let e = self.find(&request.get_ref().id, true)?;
        let pings = self
            .store
            .pings(e.uuid())
            .map_err(status_of)?
            .into_iter()
            .map(|p| pb::Ping {
                n: p.n,
                time_ms: p.at_ms,
                r#type: match p.kind {
                    PingKind::Success => pb::PingType::Success,
                    PingKind::Start => pb::PingType::Start,
                    PingKind::Fail => pb::PingType::Fail,
                    PingKind::Log => pb::PingType::Log,
                    PingKind::Ignored => pb::PingType::Ignored,
                } as i32,
                exit_status: p.exit_status.map_or(-1, i32::from),
                rid: p.rid.unwrap_or_default(),
                duration_ms: p.duration_ms.unwrap_or(0),
                scheme: p.scheme,
                method: p.method,
                remote_addr: p.remote_addr,
                user_agent: p.user_agent,
                body: p.body,
                body_truncated: p.truncated,
            })
            .collect();
        Ok(Response::new(pb::ListPingsResponse { pings }))
    }

    async fn list_flips(
        &self,
        request: Request<pb::GetCheckRequest>,
    ) -> Result<Response<pb::ListFlipsResponse>, GrpcStatus> {
        require_role(&request, Role::Viewer)?;
        let e = self.find(&request.get_ref().id, true)?;
        let flips = self
            .store
            .flips(e.uuid())
            .map_err(status_of)?
            .into_iter()
            .map(|f| pb::Flip {
                time_ms: f.at_ms,
                up: f.to == Side::Up,
            })
            .collect();
        Ok(Response::new(pb::ListFlipsResponse { flips }))
    }
}
