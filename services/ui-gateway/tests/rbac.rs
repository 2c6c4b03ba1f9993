//! The role matrix: every route of the gateway, for every kind of caller —
//! nobody (forward-auth headers from an address that is not a trusted
//! proxy), a signed-in user without a role, viewer, editor and admin — with
//! the real query service (on redb) and alerting worker behind it. A call a
//! role may make must get past both checks (the gateway's, then the
//! backend's on the asserted role); one it may not is refused with 403. The
//! backends' own check is also tried directly, bypassing the gateway.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use tonic::{Code, Request};
use vigil_proto::alerting::v1::{self as al, alerting_service_client::AlertingServiceClient};
use vigil_runtime::{
    Shutdown,
    auth::{Role, assert_caller},
};
use vigil_ui_gateway::{AuthMode, RoleGrant, api::ROUTES};

const TRUSTED: &str = "127.0.0.2";

mod common;
use common::GATEWAY_KEY;

struct Suite {
    gateway: String,
    alerting: SocketAddr,
    shutdown: Shutdown,
    _dir: tempfile::TempDir,
}

async fn start() -> Suite {
    let dir = tempfile::tempdir().unwrap();
    let shutdown = Shutdown::new();
    let store = Arc::new(vigil_storage::redb::RedbStore::open(&dir.path().join("q.redb")).unwrap());
    let (query_grpc, alerting_grpc) = common::backends(store, dir.path(), &shutdown).await;

    let mut ui = common::gateway_config(&query_grpc.to_string(), &alerting_grpc.to_string());
    ui.auth.mode = AuthMode::ForwardAuth;
    ui.auth.forward_auth.trusted_proxies = vec![format!("{TRUSTED}/32")];
    ui.auth.roles = [
        ("viewers", Role::Viewer),
        ("editors", Role::Editor),
        ("admins", Role::Admin),
    ]
    .into_iter()
    .map(|(group, role)| RoleGrant {
        project: "default".into(),
        role,
        users: vec![],
        groups: vec![group.into()],
        everyone: false,
    })
    .collect();
    let gateway = common::start_gateway(ui, &shutdown).await;
    Suite {
        gateway,
        alerting: alerting_grpc,
        shutdown,
        _dir: dir,
    }
}

/// Who calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    /// Admin headers, but not from a trusted proxy.
    Nobody,
    /// Signed in, in no group that has a role.
    NoRole,
    Viewer,
    Editor,
    Admin,
}

impl Who {
    fn role(self) -> Option<Role> {
        match self {
            Who::Nobody | Who::NoRole => None,
            Who::Viewer => Some(Role::Viewer),
            Who::Editor => Some(Role::Editor),
            Who::Admin => Some(Role::Admin),
        }
    }

    fn group(self) -> &'static str {
        match self {
            Who::Nobody | Who::Admin => "admins",
            Who::NoRole => "interns",
            Who::Viewer => "viewers",
            Who::Editor => "editors",
        }
    }
}

struct Caller {
    http: reqwest::Client,
    who: Who,
    csrf: String,
    cookie: String,
}

impl Caller {
    async fn new(gateway: &str, who: Who) -> Self {
        let _ = vigil_runtime::http_client::build("installs the TLS provider");
        let from: IpAddr = if who == Who::Nobody {
            "127.0.0.1"
        } else {
            TRUSTED
        }
        .parse()
        .unwrap();
        let http = reqwest::Client::builder()
            .local_address(from)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let mut c = Self {
            http,
            who,
            csrf: String::new(),
            cookie: String::new(),
        };
        let r = c
            .send(
                reqwest::Method::GET,
                &format!("{gateway}/api/v1/session"),
                None,
                true,
            )
            .await;
        if let Some(set) = r.headers().get("set-cookie") {
            c.cookie = set.to_str().unwrap().split(';').next().unwrap().to_owned();
        }
        if r.status() == 200 {
            let me: serde_json::Value = r.json().await.unwrap();
            c.csrf = me["csrf"].as_str().unwrap().to_owned();
        }
        c
    }

    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<&str>,
        csrf: bool,
    ) -> reqwest::Response {
        let mut r = self
            .http
            .request(method, url)
            .header(
                "x-forwarded-user",
                format!("{:?}@example.com", self.who).to_lowercase(),
            )
            .header(
                "x-forwarded-groups",
                format!("everyone, {}", self.who.group()),
            )
            .header("cookie", &self.cookie);
        if csrf {
            r = r.header("x-csrf-token", &self.csrf);
        }
        if let Some(b) = body {
            r = r
                .header("content-type", "application/json")
                .body(b.to_owned());
        }
        r.send().await.unwrap()
    }
}

#[tokio::test]
async fn every_route_for_every_role() {
    let suite = start().await;
    let gw = &suite.gateway;
    let mut checked = 0;
    for who in [
        Who::Nobody,
        Who::NoRole,
        Who::Viewer,
        Who::Editor,
        Who::Admin,
    ] {
        let c = Caller::new(gw, who).await;
        let signed_in = who != Who::Nobody;

        // The page and the session.
        let page = c
            .send(reqwest::Method::GET, &format!("{gw}/"), None, false)
            .await;
        assert_eq!(
            page.status().as_u16(),
            if signed_in { 200 } else { 303 },
            "{who:?} /"
        );
        let me = c
            .send(
                reqwest::Method::GET,
                &format!("{gw}/api/v1/session"),
                None,
                false,
            )
            .await;
        assert_eq!(
            me.status().as_u16(),
            if signed_in { 200 } else { 401 },
            "{who:?} session"
        );
        if signed_in {
            let me: serde_json::Value = me.json().await.unwrap();
            let role = who.role().map(|r| r.to_string());
            assert_eq!(
                me["roles"]["default"].as_str().map(str::to_owned),
                role,
                "{who:?}: {me}"
            );
        }

        // Convenience reads.
        for path in ["/api/v1/hosts", "/api/v1/incidents"] {
            let r = c
                .send(reqwest::Method::GET, &format!("{gw}{path}"), None, false)
                .await;
            let want = match who.role() {
                _ if !signed_in => 401,
                None => 403,
                Some(_) => 200,
            };
            assert_eq!(
                r.status().as_u16(),
                want,
                "{who:?} {path}: {:?}",
                r.text().await
            );
            checked += 1;
        }

        // Every backend method.
        for (service, method, need) in ROUTES {
            let url = format!("{gw}/api/v1/rpc/{service}/{method}");
            let r = c.send(reqwest::Method::POST, &url, Some("{}"), true).await;
            let status = r.status().as_u16();
            let text = r.text().await.unwrap();
            match who.role() {
                _ if !signed_in => assert_eq!(status, 401, "{who:?} {service}/{method}: {text}"),
                Some(role) if role >= *need => assert!(
                    ![401, 403].contains(&status),
                    "{who:?} may call {service}/{method}: {status} {text}"
                ),
                _ => {
                    assert_eq!(
                        status, 403,
                        "{who:?} may not call {service}/{method}: {text}"
                    );
                    assert!(text.contains("role"), "{text}");
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 5 * (ROUTES.len() + 2));

    // State changes need the CSRF token, from this site.
    let admin = Caller::new(gw, Who::Admin).await;
    let url = format!("{gw}/api/v1/rpc/alerting/AcknowledgeIncident");
    let r = admin
        .send(reqwest::Method::POST, &url, Some("{}"), false)
        .await;
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("CSRF"));
    let r = admin
        .http
        .post(&url)
        .header("x-forwarded-user", "admin@example.com")
        .header("x-forwarded-groups", "admins")
        .header("cookie", &admin.cookie)
        .header("x-csrf-token", &admin.csrf)
        .header("origin", "https://evil.example")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("cross-origin"));
    // An unknown method, and a body that is not the message.
    let r = admin
        .send(
            reqwest::Method::POST,
            &format!("{gw}/api/v1/rpc/query/DropEverything"),
            Some("{}"),
            true,
        )
        .await;
    assert_eq!(r.status(), 404);
    let r = admin
        .send(
            reqwest::Method::POST,
            &format!("{gw}/api/v1/rpc/query/ListHosts"),
            Some("{\"lookback_ms\": \"soon\"}"),
            true,
        )
        .await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("not a valid message"));

    // The backend checks the asserted role itself: a gateway key asserting
    // a viewer cannot acknowledge, nor test an integration.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", suite.alerting))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut alerting = AlertingServiceClient::new(channel);
    let mut ack = Request::new(al::AcknowledgeIncidentRequest {
        project: String::new(),
        id: "x".into(),
        by: "someone".into(),
    });
    ack.metadata_mut().insert(
        "authorization",
        format!("Bearer {GATEWAY_KEY}").parse().unwrap(),
    );
    assert_caller(&mut ack, "default", Role::Viewer, "v@example.com").unwrap();
    let denied = alerting.acknowledge_incident(ack).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    let mut test = Request::new(al::TestIntegrationRequest { name: "x".into() });
    test.metadata_mut().insert(
        "authorization",
        format!("Bearer {GATEWAY_KEY}").parse().unwrap(),
    );
    assert_caller(&mut test, "default", Role::Viewer, "v@example.com").unwrap();
    assert_eq!(
        alerting.test_integration(test).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    // ... and a gateway may only name configured projects.
    let mut list = Request::new(al::ListIncidentsRequest::default());
    list.metadata_mut().insert(
        "authorization",
        format!("Bearer {GATEWAY_KEY}").parse().unwrap(),
    );
    assert_caller(&mut list, "elsewhere", Role::Admin, "a@example.com").unwrap();
    assert_eq!(
        alerting.list_incidents(list).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    suite.shutdown.trigger();
}
