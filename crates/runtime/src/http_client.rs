//! The HTTP client for calls to third parties (notification targets,
//! identity providers): rustls on ring with the system's CA store, and no
//! redirects followed, so a target cannot bounce a request (and its
//! secrets) elsewhere.

/// Builds the client; `user_agent` names the caller.
pub fn build(user_agent: &str) -> Result<reqwest::Client, String> {
    // reqwest is built without a default crypto provider; use ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .user_agent(user_agent)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))
}
