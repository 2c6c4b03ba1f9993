//! API keys per project. Keys are kept only as SHA-256 digests in memory and
//! are never logged; a request names its project by presenting one of its
//! keys as `authorization: Bearer <key>` (gRPC metadata or HTTP header).

use std::collections::HashMap;

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
}

impl std::fmt::Debug for ProjectConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectConfig")
            .field("name", &self.name)
            .field(
                "api_keys",
                &format_args!("[{} redacted]", self.api_keys.len()),
            )
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
    #[error("missing API key: send `authorization: Bearer <api key>`")]
    Missing,
    #[error("malformed authorization: expected `Bearer <api key>`")]
    Malformed,
    #[error("unknown API key")]
    Unknown,
}

/// Maps API keys (by digest) to their projects.
#[derive(Clone, Default)]
pub struct ApiKeys {
    by_digest: HashMap<[u8; 32], String>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys)", self.by_digest.len())
    }
}

fn digest(api_key: &str) -> [u8; 32] {
    Sha256::digest(api_key.as_bytes()).into()
}

impl ApiKeys {
    /// Builds the key table; a key given to two projects is refused.
    pub fn new(projects: &[ProjectConfig]) -> Result<Self, ConfigError> {
        let mut by_digest = HashMap::new();
        for (i, project) in projects.iter().enumerate() {
            for (j, api_key) in project.api_keys.iter().enumerate() {
                if let Some(other) = by_digest.insert(digest(api_key), project.name.clone())
                    && other != project.name
                {
                    return Err(ConfigError::invalid(
                        format!("projects[{i}].api_keys[{j}]"),
                        format!("this key is also a key of project {other:?}"),
                    ));
                }
            }
        }
        Ok(Self { by_digest })
    }

    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }

    /// Resolves an `authorization` header value to its project.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Project, AuthError> {
        let value = authorization.ok_or(AuthError::Missing)?;
        let api_key = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or(AuthError::Malformed)?;
        self.by_digest
            .get(&digest(api_key))
            .map(|name| Project(name.clone()))
            .ok_or(AuthError::Unknown)
    }

    /// A tonic interceptor that puts the [`Project`] in the request's
    /// extensions, or answers UNAUTHENTICATED.
    #[allow(clippy::result_large_err)] // tonic's interceptor signature
    pub fn intercept(
        &self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        let header = request
            .metadata()
            .get("authorization")
            .map(|v| v.to_str().map_err(|_| AuthError::Malformed))
            .transpose()
            .and_then(|v| self.authenticate(v));
        match header {
            Ok(project) => {
                request.extensions_mut().insert(project);
                Ok(request)
            }
            Err(e) => Err(tonic::Status::unauthenticated(e.to_string())),
        }
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
            },
            ProjectConfig {
                name: "staging".into(),
                api_keys: vec!["staging-key-0123456789".into()],
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
