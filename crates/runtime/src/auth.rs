//! API keys per project. Keys are kept only as SHA-256 digests in memory and
//! are never logged; a request names its project by presenting one of its
//! keys as `authorization: Bearer <key>` (gRPC metadata or HTTP header).
//!
//! A UI gateway acts for its signed-in users: it presents a gateway key
//! (`[access] gateway_keys`) and asserts the user's project, role and name in
//! `x-vigil-project`, `x-vigil-role` and `x-vigil-user`. Those headers are
//! believed only with a gateway key; with a project key a caller can lower its
//! role but never name another project.

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::config::{ConfigError, Validate, key};

/// Shortest API key accepted in configuration.
pub const MIN_API_KEY_LEN: usize = 16;

/// `[[projects]]`: a project and the API keys that write to it.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProjectConfig {
    pub name: String,
    pub api_keys: Vec<String>,
    /// A file with more keys, one per line (`#` starts a comment): a mounted
    /// Kubernetes secret, so keys stay out of the config file.
    pub api_keys_file: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for ProjectConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectConfig")
            .field("name", &self.name)
            .field(
                "api_keys",
                &format_args!("[{} redacted]", self.api_keys.len()),
            )
            .field("api_keys_file", &self.api_keys_file)
            .finish()
    }
}

impl ProjectConfig {
    /// The project's first key: inline, else the first in `api_keys_file`
    /// (`index` is the project's place in `projects`, for errors).
    pub fn first_key(&self, index: usize) -> Result<Option<String>, ConfigError> {
        if let Some(k) = self.api_keys.first() {
            return Ok(Some(k.clone()));
        }
        match &self.api_keys_file {
            Some(path) => Ok(
                keys_from_file(&format!("projects[{index}]"), "api_keys_file", path)?
                    .into_iter()
                    .next(),
            ),
            None => Ok(None),
        }
    }
}

/// Whether `name` can name a project: 1–63 of `[a-z0-9-]`, not starting with `-`.
pub fn is_valid_project_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

impl Validate for ProjectConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        if !is_valid_project_name(&self.name) {
            return Err(ConfigError::invalid(
                key(prefix, "name"),
                format!(
                    "{:?} is not a project name: use 1-63 of a-z, 0-9 and '-', not starting with '-'",
                    self.name
                ),
            ));
        }
        for (i, api_key) in self.api_keys.iter().enumerate() {
            if api_key.len() < MIN_API_KEY_LEN || api_key.chars().any(char::is_whitespace) {
                return Err(ConfigError::invalid(
                    format!("{prefix}.api_keys[{i}]"),
                    format!(
                        "an API key needs at least {MIN_API_KEY_LEN} characters and no whitespace"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The project a request was authenticated for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project(pub String);

/// What a caller may do in its project. Ordered: each role can do what the
/// ones before it can.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads everything in the project.
    Viewer,
    /// Also acts: acknowledges incidents, sends test notifications.
    Editor,
    /// Also sees and changes how access is set up.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Editor, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("{s:?} is not a role: use viewer, editor or admin"))
    }
}

/// Who made a call, next to its [`Project`] in the request extensions: a
/// project's API key is an admin of its project; a gateway asserts its
/// user's role and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub role: Role,
    /// The signed-in user a gateway acts for; `None` for an API key.
    pub user: Option<String>,
}

/// gRPC metadata a gateway asserts its user with.
pub const PROJECT_HEADER: &str = "x-vigil-project";
pub const ROLE_HEADER: &str = "x-vigil-role";
pub const USER_HEADER: &str = "x-vigil-user";

/// Longest user name a gateway may assert.
const MAX_USER_LEN: usize = 256;

/// `[access]`: who may act for signed-in users.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessConfig {
    /// Keys of UI gateways. A call with one of them names its project and
    /// role in metadata, for any configured project: keep them as secret as
    /// the strongest project key.
    pub gateway_keys: Vec<String>,
    /// A file with more gateway keys, one per line (a mounted secret).
    pub gateway_keys_file: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for AccessConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessConfig")
            .field(
                "gateway_keys",
                &format_args!("[{} redacted]", self.gateway_keys.len()),
            )
            .field("gateway_keys_file", &self.gateway_keys_file)
            .finish()
    }
}

impl Validate for AccessConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        for (i, k) in self.gateway_keys.iter().enumerate() {
            if k.len() < MIN_API_KEY_LEN || k.chars().any(char::is_whitespace) {
                return Err(ConfigError::invalid(
                    format!("{prefix}.gateway_keys[{i}]"),
                    format!("a key needs at least {MIN_API_KEY_LEN} characters and no whitespace"),
                ));
            }
        }
        Ok(())
    }
}

/// Puts a gateway's assertion of its user into a call's metadata.
#[allow(clippy::result_large_err)]
pub fn assert_caller<T>(
    request: &mut tonic::Request<T>,
    project: &str,
    role: Role,
    user: &str,
) -> Result<(), tonic::Status> {
    let bad = |what: &str| tonic::Status::invalid_argument(format!("cannot send the {what}"));
    let metadata = request.metadata_mut();
    metadata.insert(PROJECT_HEADER, project.parse().map_err(|_| bad("project"))?);
    metadata.insert(ROLE_HEADER, role.as_str().parse().map_err(|_| bad("role"))?);
    let user: String =
        percent_encoding::utf8_percent_encode(user, percent_encoding::NON_ALPHANUMERIC).collect();
    metadata.insert(USER_HEADER, user.parse().map_err(|_| bad("user name"))?);
    Ok(())
}

/// The [`Caller`] of a call, refused with PERMISSION_DENIED below `role`.
#[allow(clippy::result_large_err)]
pub fn require_role<T>(request: &tonic::Request<T>, role: Role) -> Result<Caller, tonic::Status> {
    let Some(caller) = request.extensions().get::<Caller>() else {
        return Err(tonic::Status::unauthenticated(
            "missing API key: send `authorization: Bearer <api key>`",
        ));
    };
    if caller.role < role {
        return Err(tonic::Status::permission_denied(format!(
            "this needs the {role} role; the caller is {}",
            caller.role
        )));
    }
    Ok(caller.clone())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing API key: send `x-api-key: <api key>` or `authorization: Bearer <api key>`")]
    Missing,
    #[error("malformed authorization: expected `Bearer <api key>`")]
    Malformed,
    #[error("unknown API key")]
    Unknown,
}

/// Maps API keys (by digest) to their projects.
#[derive(Clone, Default)]
pub struct ApiKeys {
    /// SHA-256 of each key, with its project (`None`: a gateway key). Every
    /// lookup compares against all of them in constant time.
    digests: Vec<([u8; 32], Option<String>)>,
    /// Every configured project, with keys or not: what a gateway may name.
    projects: Vec<String>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys)", self.digests.len())
    }
}

/// What a key is.
enum KeyOf {
    Project(String),
    Gateway,
}

fn digest(api_key: &str) -> [u8; 32] {
    Sha256::digest(api_key.as_bytes()).into()
}

/// The keys of a keys file (`field`): one per line, blank lines and `#`
/// comments skipped.
fn keys_from_file(
    prefix: &str,
    field: &str,
    path: &std::path::Path,
) -> Result<Vec<String>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::invalid(
            key(prefix, field),
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    let keys: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    if let Some(line) = keys
        .iter()
        .position(|k| k.len() < MIN_API_KEY_LEN || k.chars().any(char::is_whitespace))
    {
        return Err(ConfigError::invalid(
            key(prefix, field),
            format!(
                "key {} in {} needs at least {MIN_API_KEY_LEN} characters and no whitespace",
                line + 1,
                path.display()
            ),
        ));
    }
    Ok(keys)
}

impl ApiKeys {
    /// Indexes every project's keys (inline and from `api_keys_file`); a key
    /// shared by two projects is refused.
    pub fn new(projects: &[ProjectConfig]) -> Result<Self, ConfigError> {
        let mut digests: Vec<([u8; 32], Option<String>)> = Vec::new();
        for (i, project) in projects.iter().enumerate() {
            let prefix = format!("projects[{i}]");
            let mut keys: Vec<(String, &str)> = project
                .api_keys
                .iter()
                .enumerate()
                .map(|(j, k)| (format!("{prefix}.api_keys[{j}]"), k.as_str()))
                .collect();
            let from_file = match &project.api_keys_file {
                Some(path) => keys_from_file(&prefix, "api_keys_file", path)?,
                None => Vec::new(),
            };
            keys.extend(
                from_file
                    .iter()
                    .map(|k| (key(&prefix, "api_keys_file"), k.as_str())),
            );
            for (at, api_key) in keys {
                let d = digest(api_key);
                match digests.iter().find(|(other, _)| *other == d) {
                    Some((_, Some(other))) if *other != project.name => {
                        return Err(ConfigError::invalid(
                            at,
                            format!("this key is also a key of project {other:?}"),
                        ));
                    }
                    Some(_) => {}
                    None => digests.push((d, Some(project.name.clone()))),
                }
            }
        }
        Ok(Self {
            digests,
            projects: projects.iter().map(|p| p.name.clone()).collect(),
        })
    }

    /// Adds the gateway keys of `[access]`; a key that is also a project's
    /// key is refused.
    pub fn with_gateways(mut self, access: &AccessConfig) -> Result<Self, ConfigError> {
        let mut keys: Vec<(String, String)> = access
            .gateway_keys
            .iter()
            .enumerate()
            .map(|(i, k)| (format!("access.gateway_keys[{i}]"), k.clone()))
            .collect();
        if let Some(path) = &access.gateway_keys_file {
            keys.extend(
                keys_from_file("access", "gateway_keys_file", path)?
                    .into_iter()
                    .map(|k| ("access.gateway_keys_file".to_owned(), k)),
            );
        }
        for (at, gateway_key) in keys {
            let d = digest(&gateway_key);
            match self.digests.iter().find(|(other, _)| *other == d) {
                Some((_, Some(project))) => {
                    return Err(ConfigError::invalid(
                        at,
                        format!("this key is also a key of project {project:?}"),
                    ));
                }
                Some((_, None)) => {}
                None => self.digests.push((d, None)),
            }
        }
        Ok(self)
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// What a key is, comparing its digest with every known digest in
    /// constant time.
    fn key_of(&self, api_key: &str) -> Result<KeyOf, AuthError> {
        use subtle::ConstantTimeEq;
        let d = digest(api_key);
        let mut found = None;
        for (known, project) in &self.digests {
            if bool::from(known.ct_eq(&d)) {
                found = Some(project);
            }
        }
        match found {
            Some(Some(name)) => Ok(KeyOf::Project(name.clone())),
            Some(None) => Ok(KeyOf::Gateway),
            None => Err(AuthError::Unknown),
        }
    }

    /// The project of a project key; a gateway key is not one (it needs
    /// metadata only gRPC calls carry).
    fn project_of(&self, api_key: &str) -> Result<Project, AuthError> {
        match self.key_of(api_key)? {
            KeyOf::Project(name) => Ok(Project(name)),
            KeyOf::Gateway => Err(AuthError::Unknown),
        }
    }

    /// The key of a call: `x-api-key`, else `authorization: Bearer`.
    fn presented<'a>(
        x_api_key: Option<&'a [u8]>,
        authorization: Option<&'a [u8]>,
    ) -> Result<&'a str, AuthError> {
        fn text(v: &[u8]) -> Result<&str, AuthError> {
            std::str::from_utf8(v).map_err(|_| AuthError::Malformed)
        }
        match x_api_key {
            Some(v) => Ok(text(v)?.trim()),
            None => {
                let value = text(authorization.ok_or(AuthError::Missing)?)?;
                value
                    .strip_prefix("Bearer ")
                    .or_else(|| value.strip_prefix("bearer "))
                    .map(str::trim)
                    .filter(|k| !k.is_empty())
                    .ok_or(AuthError::Malformed)
            }
        }
    }

    /// The project of an `authorization: Bearer <key>` header value.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Project, AuthError> {
        self.project_of(Self::presented(None, authorization.map(str::as_bytes))?)
    }

    /// The project of a request carrying `x-api-key: <key>` or
    /// `authorization: Bearer <key>` (as HTTP headers or gRPC metadata).
    pub fn authenticate_request(
        &self,
        x_api_key: Option<&[u8]>,
        authorization: Option<&[u8]>,
    ) -> Result<Project, AuthError> {
        self.project_of(Self::presented(x_api_key, authorization)?)
    }

    /// The project of an HTTP request's headers.
    pub fn authenticate_headers(&self, headers: &http::HeaderMap) -> Result<Project, AuthError> {
        self.authenticate_request(
            headers.get("x-api-key").map(|v| v.as_bytes()),
            headers
                .get(http::header::AUTHORIZATION)
                .map(|v| v.as_bytes()),
        )
    }

    /// A tonic interceptor: authenticates the call and stores its
    /// [`Project`] and [`Caller`] in the request extensions.
    #[allow(clippy::result_large_err)] // tonic's interceptor signature
    pub fn intercept(
        &self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        let metadata = request.metadata();
        let key = Self::presented(
            metadata.get("x-api-key").map(|v| v.as_bytes()),
            metadata.get("authorization").map(|v| v.as_bytes()),
        )
        .and_then(|k| self.key_of(k))
        .map_err(|e| tonic::Status::unauthenticated(e.to_string()))?;
        let asserted = |name: &str| -> Result<Option<&str>, tonic::Status> {
            metadata
                .get(name)
                .map(|v| {
                    v.to_str().map_err(|_| {
                        tonic::Status::invalid_argument(format!("{name} is not ASCII text"))
                    })
                })
                .transpose()
        };
        let role = asserted(ROLE_HEADER)?
            .map(str::parse::<Role>)
            .transpose()
            .map_err(|e| tonic::Status::invalid_argument(format!("{ROLE_HEADER}: {e}")))?;
        let named = asserted(PROJECT_HEADER)?;
        let (project, caller) = match key {
            KeyOf::Project(project) => {
                if let Some(named) = named.filter(|n| *n != project) {
                    return Err(tonic::Status::permission_denied(format!(
                        "the API key belongs to project {project:?}, not {named:?}; only a gateway key may name a project"
                    )));
                }
                // A project key is its project's admin; it may ask for less.
                let role = role.unwrap_or(Role::Admin);
                (project, Caller { role, user: None })
            }
            KeyOf::Gateway => {
                let project = named.ok_or_else(|| {
                    tonic::Status::invalid_argument(format!(
                        "a gateway key must name the project in {PROJECT_HEADER}"
                    ))
                })?;
                if !self.projects.iter().any(|p| p == project) {
                    return Err(tonic::Status::permission_denied(format!(
                        "no project {project:?} is configured"
                    )));
                }
                let role = role.ok_or_else(|| {
                    tonic::Status::invalid_argument(format!(
                        "a gateway key must assert the user's role in {ROLE_HEADER}"
                    ))
                })?;
                let user = asserted(USER_HEADER)?
                    .map(|u| {
                        percent_encoding::percent_decode_str(u)
                            .decode_utf8()
                            .map(|u| u.into_owned())
                            .map_err(|_| {
                                tonic::Status::invalid_argument(format!(
                                    "{USER_HEADER} is not percent-encoded UTF-8"
                                ))
                            })
                    })
                    .transpose()?
                    .filter(|u| !u.is_empty());
                if user.as_ref().is_some_and(|u| u.len() > MAX_USER_LEN) {
                    return Err(tonic::Status::invalid_argument(format!(
                        "{USER_HEADER} is over {MAX_USER_LEN} bytes"
                    )));
                }
                (project.to_owned(), Caller { role, user })
            }
        };
        request.extensions_mut().insert(Project(project));
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

/// A secret from configuration (an API key a client sends): never shown by
/// `Debug`, so it stays out of logs.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() {
            "[empty]"
        } else {
            "[redacted]"
        })
    }
}

/// A secret from `file` (a mounted secret) if set, else `inline`, trimmed.
/// `field` names the inline key in errors (e.g. `agent.api_key`); the file
/// is `<field>_file`. An empty secret is refused.
pub fn resolve_secret(
    field: &str,
    inline: &str,
    file: Option<&std::path::Path>,
) -> Result<String, ConfigError> {
    let value = match file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| {
                ConfigError::invalid(format!("{field}_file"), format!("{}: {e}", path.display()))
            })?
            .trim()
            .to_owned(),
        None => inline.trim().to_owned(),
    };
    if value.is_empty() {
        return Err(ConfigError::invalid(
            field,
            format!("is needed: set {field} or {field}_file"),
        ));
    }
    Ok(value)
}

/// The API key a client sends: a secret ([`resolve_secret`]) without
/// whitespace.
pub fn resolve_api_key(
    field: &str,
    inline: &str,
    file: Option<&std::path::Path>,
) -> Result<String, ConfigError> {
    let api_key = resolve_secret(field, inline, file)?;
    if api_key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ConfigError::invalid(
            field,
            "an API key cannot hold whitespace",
        ));
    }
    Ok(api_key)
}

/// A tonic interceptor that sends `authorization: Bearer <api key>` on
/// every call.
#[derive(Clone)]
pub struct BearerAuth(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl std::fmt::Debug for BearerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerAuth([redacted])")
    }
}

impl BearerAuth {
    pub fn new(api_key: &str) -> Result<Self, ConfigError> {
        format!("Bearer {api_key}")
            .parse()
            .map(Self)
            .map_err(|_| ConfigError::invalid("api_key", "not a valid header value"))
    }
}

impl tonic::service::Interceptor for BearerAuth {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// A fresh random API key: `vgl_` and 32 bytes from a CSPRNG, in hex.
pub fn generate_api_key() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("vgl_{}", hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn projects() -> Vec<ProjectConfig> {
        vec![
            ProjectConfig {
                name: "prod".into(),
                api_keys: vec!["prod-key-0123456789".into()],
                api_keys_file: None,
            },
            ProjectConfig {
                name: "staging".into(),
                api_keys: vec!["staging-key-0123456789".into()],
                api_keys_file: None,
            },
        ]
    }

    #[test]
    fn keys_map_to_their_project() {
        let keys = ApiKeys::new(&projects()).unwrap();
        assert_eq!(
            keys.authenticate(Some("Bearer staging-key-0123456789")),
            Ok(Project("staging".into()))
        );
        assert_eq!(keys.authenticate(None), Err(AuthError::Missing));
        assert_eq!(
            keys.authenticate(Some("Basic abc")),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            keys.authenticate(Some("Bearer nope")),
            Err(AuthError::Unknown)
        );
    }

    #[test]
    fn shared_key_and_bad_names_are_refused() {
        let mut p = projects();
        p[1].api_keys.push("prod-key-0123456789".into());
        let err = ApiKeys::new(&p).unwrap_err().to_string();
        assert!(err.contains("projects[1].api_keys[1]"), "{err}");
        let bad = ProjectConfig {
            name: "Prod!".into(),
            api_keys: vec!["short".into()],
            api_keys_file: None,
        };
        assert!(
            bad.validate("projects[0]")
                .unwrap_err()
                .to_string()
                .contains("projects[0].name")
        );
        let short = ProjectConfig {
            name: "ok".into(),
            api_keys: vec!["short".into()],
            api_keys_file: None,
        };
        assert!(
            short
                .validate("projects[0]")
                .unwrap_err()
                .to_string()
                .contains("api_keys[0]")
        );
    }

    #[test]
    fn x_api_key_header_and_bearer_both_work() {
        let keys = ApiKeys::new(&projects()).unwrap();
        let mut headers = http::HeaderMap::new();
        assert_eq!(keys.authenticate_headers(&headers), Err(AuthError::Missing));
        headers.insert("x-api-key", "prod-key-0123456789".parse().unwrap());
        assert_eq!(
            keys.authenticate_headers(&headers),
            Ok(Project("prod".into()))
        );
        headers.insert("x-api-key", "wrong-key-0123456789".parse().unwrap());
        assert_eq!(keys.authenticate_headers(&headers), Err(AuthError::Unknown));
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            "Bearer staging-key-0123456789".parse().unwrap(),
        );
        assert_eq!(
            keys.authenticate_headers(&headers),
            Ok(Project("staging".into()))
        );
    }

    #[test]
    fn keys_from_a_mounted_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        std::fs::write(&path, "# ci keys\n\nfile-key-0123456789\n").unwrap();
        let mut p = projects();
        p[0].api_keys_file = Some(path.clone());
        let keys = ApiKeys::new(&p).unwrap();
        assert_eq!(
            keys.authenticate(Some("Bearer file-key-0123456789")),
            Ok(Project("prod".into()))
        );
        std::fs::write(&path, "short\n").unwrap();
        let err = ApiKeys::new(&p).unwrap_err().to_string();
        assert!(err.contains("projects[0].api_keys_file"), "{err}");
        p[0].api_keys_file = Some(dir.path().join("missing"));
        let err = ApiKeys::new(&p).unwrap_err().to_string();
        assert!(err.contains("cannot read"), "{err}");
    }

    #[test]
    fn debug_never_shows_keys() {
        let shown = format!("{:?} {:?}", projects(), ApiKeys::new(&projects()).unwrap());
        assert!(!shown.contains("key-0123456789"), "{shown}");
    }

    fn call(
        keys: &ApiKeys,
        metadata: &[(&'static str, &str)],
    ) -> Result<(Project, Caller), tonic::Status> {
        let mut request = tonic::Request::new(());
        for (name, value) in metadata {
            request.metadata_mut().insert(*name, value.parse().unwrap());
        }
        let request = keys.intercept(request)?;
        Ok((
            request.extensions().get::<Project>().unwrap().clone(),
            request.extensions().get::<Caller>().unwrap().clone(),
        ))
    }

    #[test]
    fn gateways_assert_project_role_and_user_and_nobody_else_can() {
        let mut p = projects();
        p.push(ProjectConfig {
            name: "keyless".into(),
            ..ProjectConfig::default()
        });
        let access = AccessConfig {
            gateway_keys: vec!["gateway-key-0123456789".into()],
            gateway_keys_file: None,
        };
        let keys = ApiKeys::new(&p).unwrap().with_gateways(&access).unwrap();
        let gw = "Bearer gateway-key-0123456789";

        // The gateway names any configured project (even one without keys).
        let mut request = tonic::Request::new(());
        request
            .metadata_mut()
            .insert("authorization", gw.parse().unwrap());
        assert_caller(
            &mut request,
            "keyless",
            Role::Editor,
            "Zoë <zoe@example.com>",
        )
        .unwrap();
        let request = keys.intercept(request).unwrap();
        assert_eq!(
            request.extensions().get::<Project>(),
            Some(&Project("keyless".into()))
        );
        assert_eq!(
            request.extensions().get::<Caller>(),
            Some(&Caller {
                role: Role::Editor,
                user: Some("Zoë <zoe@example.com>".into())
            })
        );
        assert!(require_role(&request, Role::Editor).is_ok());
        let denied = require_role(&request, Role::Admin).unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        assert!(denied.message().contains("admin"), "{denied:?}");

        // ... but must name one that exists, and a role.
        let err = call(&keys, &[("authorization", gw), (ROLE_HEADER, "viewer")]).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        let err = call(
            &keys,
            &[
                ("authorization", gw),
                (PROJECT_HEADER, "other"),
                (ROLE_HEADER, "viewer"),
            ],
        )
        .unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
        let err = call(&keys, &[("authorization", gw), (PROJECT_HEADER, "prod")]).unwrap_err();
        assert!(err.message().contains(ROLE_HEADER), "{err:?}");
        let err = call(
            &keys,
            &[
                ("authorization", gw),
                (PROJECT_HEADER, "prod"),
                (ROLE_HEADER, "root"),
            ],
        )
        .unwrap_err();
        assert!(err.message().contains("not a role"), "{err:?}");

        // A project key is its project's admin, may lower its role, and can
        // never name another project.
        let prod = "Bearer prod-key-0123456789";
        let (project, caller) = call(&keys, &[("authorization", prod)]).unwrap();
        assert_eq!(
            (project.0.as_str(), caller.role, caller.user),
            ("prod", Role::Admin, None)
        );
        let (_, caller) = call(&keys, &[("authorization", prod), (ROLE_HEADER, "viewer")]).unwrap();
        assert_eq!(caller.role, Role::Viewer);
        let err = call(
            &keys,
            &[("authorization", prod), (PROJECT_HEADER, "staging")],
        )
        .unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
        assert!(err.message().contains("only a gateway key"), "{err:?}");

        // A gateway key is no project key on the Prometheus HTTP API.
        assert_eq!(keys.authenticate(Some(gw)), Err(AuthError::Unknown));
        // A gateway key may not also be a project's key.
        let clash = AccessConfig {
            gateway_keys: vec!["prod-key-0123456789".into()],
            gateway_keys_file: None,
        };
        let err = ApiKeys::new(&p)
            .unwrap()
            .with_gateways(&clash)
            .unwrap_err()
            .to_string();
        assert!(err.contains("access.gateway_keys[0]"), "{err}");
        assert!(!format!("{access:?}").contains("0123456789"));
    }

    #[test]
    fn generated_keys_are_distinct_and_valid() {
        let (a, b) = (generate_api_key(), generate_api_key());
        assert_ne!(a, b);
        assert!(a.starts_with("vgl_") && a.len() == 68);
    }
}
