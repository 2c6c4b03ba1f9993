//! API keys per project. Keys are kept only as SHA-256 digests in memory and
//! are never logged; a request names its project by presenting one of its
//! keys as `authorization: Bearer <key>` (gRPC metadata or HTTP header).

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
    /// SHA-256 of each key, with its project. Every lookup compares against
    /// all of them in constant time.
    digests: Vec<([u8; 32], String)>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys)", self.digests.len())
    }
}

fn digest(api_key: &str) -> [u8; 32] {
    Sha256::digest(api_key.as_bytes()).into()
}

/// The keys of `api_keys_file`: one per line, blank lines and `#` comments
/// skipped.
fn keys_from_file(prefix: &str, path: &std::path::Path) -> Result<Vec<String>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::invalid(
            key(prefix, "api_keys_file"),
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
            key(prefix, "api_keys_file"),
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
        let mut digests: Vec<([u8; 32], String)> = Vec::new();
        for (i, project) in projects.iter().enumerate() {
            let prefix = format!("projects[{i}]");
            let mut keys: Vec<(String, &str)> = project
                .api_keys
                .iter()
                .enumerate()
                .map(|(j, k)| (format!("{prefix}.api_keys[{j}]"), k.as_str()))
                .collect();
            let from_file = match &project.api_keys_file {
                Some(path) => keys_from_file(&prefix, path)?,
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
                    Some((_, other)) if *other != project.name => {
                        return Err(ConfigError::invalid(
                            at,
                            format!("this key is also a key of project {other:?}"),
                        ));
                    }
                    Some(_) => {}
                    None => digests.push((d, project.name.clone())),
                }
            }
        }
        Ok(Self { digests })
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// The project of a key, comparing its digest with every known digest
    /// in constant time.
    fn project_of(&self, api_key: &str) -> Result<Project, AuthError> {
        use subtle::ConstantTimeEq;
        let d = digest(api_key);
        let mut found = None;
        for (known, project) in &self.digests {
            if bool::from(known.ct_eq(&d)) {
                found = Some(project);
            }
        }
        found
            .map(|name| Project(name.clone()))
            .ok_or(AuthError::Unknown)
    }

    /// The project of an `authorization: Bearer <key>` header value.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Project, AuthError> {
        let value = authorization.ok_or(AuthError::Missing)?;
        let api_key = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or(AuthError::Malformed)?;
        self.project_of(api_key)
    }

    /// The project of a request carrying `x-api-key: <key>` or
    /// `authorization: Bearer <key>` (as HTTP headers or gRPC metadata).
    pub fn authenticate_request(
        &self,
        x_api_key: Option<&[u8]>,
        authorization: Option<&[u8]>,
    ) -> Result<Project, AuthError> {
        fn text(v: &[u8]) -> Result<&str, AuthError> {
            std::str::from_utf8(v).map_err(|_| AuthError::Malformed)
        }
        match x_api_key {
            Some(v) => self.project_of(text(v)?.trim()),
            None => self.authenticate(authorization.map(text).transpose()?),
        }
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
    /// [`Project`] in the request extensions.
    #[allow(clippy::result_large_err)] // tonic's interceptor signature
    pub fn intercept(
        &self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        let metadata = request.metadata();
        let found = self.authenticate_request(
            metadata.get("x-api-key").map(|v| v.as_bytes()),
            metadata.get("authorization").map(|v| v.as_bytes()),
        );
        match found {
            Ok(project) => {
                request.extensions_mut().insert(project);
                Ok(request)
            }
            Err(e) => Err(tonic::Status::unauthenticated(e.to_string())),
        }
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

    #[test]
    fn generated_keys_are_distinct_and_valid() {
        let (a, b) = (generate_api_key(), generate_api_key());
        assert_ne!(a, b);
        assert!(a.starts_with("vgl_") && a.len() == 68);
    }
}
