//! Sessions and sign-in flows in cookies: JSON, encrypted and authenticated
//! with AES-256-GCM (the `cookie` crate's private jar, which also binds each
//! value to its cookie's name), HttpOnly, SameSite=Lax, Secure unless turned
//! off, with an expiry inside the value that the gateway checks (a browser
//! may keep a cookie longer than told).

use axum::http::{HeaderMap, HeaderValue, header};
use cookie::{Cookie, CookieJar, Key, SameSite};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// The session cookie.
pub const SESSION: &str = "vigil_session";
/// A sign-in in progress (state, nonce, PKCE verifier), for 10 minutes.
pub const FLOW: &str = "vigil_signin";
/// The CSRF token of modes without a session cookie.
pub const CSRF: &str = "vigil_csrf";

/// How a session was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    Oidc,
    Token,
    ForwardAuth,
    Anonymous,
}

/// What a session cookie holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub subject: String,
    pub name: Option<String>,
    pub email: Option<String>,
    /// Only the groups some role grant names: the rest are of no use here
    /// and would only grow the cookie.
    pub groups: Vec<String>,
    pub method: Method,
    pub issued_ms: i64,
    pub expires_ms: i64,
    /// The token state-changing calls must echo in `x-csrf-token`.
    pub csrf: String,
    pub oidc: Option<OidcTokens>,
    /// Token mode: which login token opened the session (a digest prefix),
    /// so that changing the token ends the sessions it opened.
    #[serde(default)]
    pub token_tag: Option<String>,
}

/// What the provider gave that the session still needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OidcTokens {
    pub refresh_token: Option<String>,
    /// When to ask the provider again (the access token's expiry).
    pub refresh_at_ms: i64,
    /// For the provider's logout (`id_token_hint`); dropped when too big
    /// for a cookie.
    pub id_token: Option<String>,
}

/// A sign-in in progress.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Flow {
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
    pub return_to: String,
    pub expires_ms: i64,
}

/// A CSRF token for modes without a session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CsrfCookie {
    pub token: String,
    pub expires_ms: i64,
}

/// Values that carry their own expiry.
pub trait Expiring {
    fn expires_ms(&self) -> i64;
}

impl Expiring for Session {
    fn expires_ms(&self) -> i64 {
        self.expires_ms
    }
}

impl Expiring for Flow {
    fn expires_ms(&self) -> i64 {
        self.expires_ms
    }
}

impl Expiring for CsrfCookie {
    fn expires_ms(&self) -> i64 {
        self.expires_ms
    }
}

/// Largest cookie value written; browsers keep about 4 KiB per cookie.
pub const MAX_COOKIE_BYTES: usize = 3800;

/// Reads and writes the gateway's cookies.
#[derive(Clone)]
pub struct Cookies {
    key: Key,
    secure: bool,
}

impl std::fmt::Debug for Cookies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cookies")
            .field("secure", &self.secure)
            .finish_non_exhaustive()
    }
}

impl Cookies {
    /// `secret`: at least 32 bytes, stretched into the encryption key.
    pub fn new(secret: &str, secure: bool) -> Self {
        Self {
            key: Key::derive_from(secret.as_bytes()),
            secure,
        }
    }

    /// The value of cookie `name` if it decrypts, parses and has not
    /// expired at `now_ms`.
    pub fn read<T: DeserializeOwned + Expiring>(
        &self,
        headers: &HeaderMap,
        name: &str,
        now_ms: i64,
    ) -> Option<T> {
        let mut jar = CookieJar::new();
        for value in headers.get_all(header::COOKIE) {
            let Ok(text) = value.to_str() else { continue };
            for cookie in Cookie::split_parse(text.to_owned()).flatten() {
                if cookie.name() == name {
                    jar.add_original(cookie);
                }
            }
        }
        let cookie = jar.private(&self.key).get(name)?;
        let value: T = serde_json::from_str(cookie.value()).ok()?;
        (value.expires_ms() > now_ms).then_some(value)
    }

    /// A `Set-Cookie` value holding `value` until its expiry; `None` when it
    /// would be too big.
    pub fn write<T: Serialize + Expiring>(
        &self,
        name: &'static str,
        value: &T,
        now_ms: i64,
    ) -> Option<HeaderValue> {
        let json = serde_json::to_string(value).ok()?;
        let max_age = ((value.expires_ms() - now_ms) / 1000).max(0);
        let mut jar = CookieJar::new();
        jar.private_mut(&self.key)
            .add(self.cookie(name, json, max_age));
        let cookie = jar.get(name)?;
        let text = cookie.to_string();
        (text.len() <= MAX_COOKIE_BYTES)
            .then(|| HeaderValue::from_str(&text).ok())
            .flatten()
    }

    /// A `Set-Cookie` value that removes cookie `name`.
    pub fn clear(&self, name: &'static str) -> HeaderValue {
        let text = self.cookie(name, String::new(), 0).to_string();
        HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    fn cookie(&self, name: &'static str, value: String, max_age_s: i64) -> Cookie<'static> {
        Cookie::build((name, value))
            .path("/")
            .http_only(true)
            .secure(self.secure)
            .same_site(SameSite::Lax)
            .max_age(cookie::time::Duration::seconds(max_age_s))
            .build()
    }
}

/// A random token: 32 bytes from a CSPRNG, base64url.
pub fn random_token() -> String {
    use base64::Engine as _;
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Whether two tokens are equal, in constant time.
pub fn same_token(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn flow(expires_ms: i64) -> Flow {
        Flow {
            state: "s".into(),
            nonce: "n".into(),
            pkce_verifier: "v".into(),
            return_to: "/".into(),
            expires_ms,
        }
    }

    fn headers(set_cookie: &HeaderValue) -> HeaderMap {
        let pair = set_cookie.to_str().unwrap().split(';').next().unwrap();
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, pair.parse().unwrap());
        h
    }

    #[test]
    fn cookies_round_trip_and_refuse_tampering_other_keys_names_and_age() {
        let cookies = Cookies::new(&"k".repeat(32), true);
        let set = cookies.write(FLOW, &flow(10_000), 1_000).unwrap();
        let text = set.to_str().unwrap();
        assert!(
            text.contains("HttpOnly") && text.contains("Secure") && text.contains("SameSite=Lax"),
            "{text}"
        );
        assert!(text.contains("Max-Age=9"), "{text}");
        assert!(
            !text.contains("pkce") && !text.contains("\"v\""),
            "encrypted: {text}"
        );
        let h = headers(&set);
        assert_eq!(cookies.read::<Flow>(&h, FLOW, 2_000).unwrap().nonce, "n");
        // Expired by its own clock.
        assert!(cookies.read::<Flow>(&h, FLOW, 10_000).is_none());
        // Another key cannot read it.
        let other = Cookies::new(&"x".repeat(32), true);
        assert!(other.read::<Flow>(&h, FLOW, 2_000).is_none());
        // The value cannot move to another cookie name.
        let moved: HeaderMap = {
            let v = h.get(header::COOKIE).unwrap().to_str().unwrap();
            let mut m = HeaderMap::new();
            m.insert(
                header::COOKIE,
                v.replacen(FLOW, SESSION, 1).parse().unwrap(),
            );
            m
        };
        assert!(cookies.read::<Flow>(&moved, SESSION, 2_000).is_none());
        // One flipped character is refused.
        let v = h.get(header::COOKIE).unwrap().to_str().unwrap().to_owned();
        let mut bytes = v.into_bytes();
        let last = bytes.len() - 3;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        let mut m = HeaderMap::new();
        m.insert(header::COOKIE, HeaderValue::from_bytes(&bytes).unwrap());
        assert!(cookies.read::<Flow>(&m, FLOW, 2_000).is_none());
    }

    #[test]
    fn tokens_compare_in_constant_time_and_differ() {
        let (a, b) = (random_token(), random_token());
        assert_ne!(a, b);
        assert!(same_token(&a, &a.clone()));
        assert!(!same_token(&a, &b));
        assert!(!same_token(&a, &a[1..]));
    }
}
