//! The admin API: token, Host and Origin checks, manual control, events.

use crate::support::backend::Backend;
use crate::support::{client, raw_exchange, upstreams, Proxy};

const ROUTE: &str = "\n[[routes]]\nname = \"orders\"\npath_prefix = \"/orders\"\nlegacy = \"legacy\"\ncandidate = \"candidate\"\nstage = \"shadow\"\n";

#[tokio::test]
async fn token_guards_the_api_but_not_health_or_metrics() {
    let legacy = Backend::named("legacy").await;
    let candidate = Backend::named("candidate").await;
    let toml = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"s3cret\"\n{}{ROUTE}",
        upstreams(legacy.addr, candidate.addr)
    );
    let proxy = Proxy::start(&toml).await;
    let http = client();
    let denied = proxy.admin_get("/api/routes").await;
    assert_eq!(denied.status(), 401);
    let body: serde_json::Value = denied.json().await.unwrap();
    assert!(body["error"].is_string());
    let wrong = http
        .get(proxy.admin_url("/api/routes"))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let ok = http
        .get(proxy.admin_url("/api/routes"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let routes: serde_json::Value = ok.json().await.unwrap();
    assert_eq!(routes[0]["name"], "orders");
    assert_eq!(routes[0]["stage"], "shadow");
    for open in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(proxy.admin_get(open).await.status(), 200, "{open}");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn foreign_hosts_and_origins_are_refused() {
    let legacy = Backend::named("legacy").await;
    let candidate = Backend::named("candidate").await;
    let proxy = Proxy::start(&format!(
        "{}{ROUTE}",
        upstreams(legacy.addr, candidate.addr)
    ))
    .await;
    let rebinding = raw_exchange(
        proxy.admin,
        b"GET /api/routes HTTP/1.1\r\nHost: evil.example:9090\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(rebinding.starts_with("HTTP/1.1 421"), "{rebinding}");
    let health = raw_exchange(
        proxy.admin,
        b"GET /healthz HTTP/1.1\r\nHost: lb.internal\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");

    let http = client();
    let cross = http
        .post(proxy.admin_url("/api/routes/orders/promote"))
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), 403);
    let null_origin = http
        .post(proxy.admin_url("/api/routes/orders/promote"))
        .header("origin", "null")
        .send()
        .await
        .unwrap();
    assert_eq!(null_origin.status(), 403);
    let own = http
        .post(proxy.admin_url("/api/routes/orders/promote"))
        .header("origin", format!("http://{}", proxy.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 200);
    proxy.stop().await;
}

#[tokio::test]
async fn manual_control_moves_the_route_and_records_events() {
    let legacy = Backend::named("legacy").await;
    let candidate = Backend::named("candidate").await;
    let proxy = Proxy::start(&format!(
        "{}{ROUTE}",
        upstreams(legacy.addr, candidate.addr)
    ))
    .await;
    let http = client();
    let post = |verb: &str| {
        http.post(proxy.admin_url(&format!("/api/routes/orders/{verb}")))
            .send()
    };

    let promoted: serde_json::Value = post("promote").await.unwrap().json().await.unwrap();
    assert_eq!(
        (promoted["stage"].as_str(), promoted["weight"].as_f64()),
        (Some("canary"), Some(1.0))
    );
    let paused: serde_json::Value = post("pause").await.unwrap().json().await.unwrap();
    assert_eq!(paused["state"], "paused");
    assert_eq!(
        post("pause").await.unwrap().status(),
        409,
        "pausing twice conflicts"
    );
    let rolled: serde_json::Value = post("rollback").await.unwrap().json().await.unwrap();
    assert_eq!(
        (rolled["stage"].as_str(), rolled["state"].as_str()),
        (Some("shadow"), Some("rolled_back"))
    );
    assert_eq!(rolled["weight"], 0.0);
    let resumed: serde_json::Value = post("resume").await.unwrap().json().await.unwrap();
    assert_eq!(resumed["state"], "progressing");

    let bad = http
        .post(proxy.admin_url("/api/routes/orders/weight"))
        .json(&serde_json::json!({ "weight": 150 }))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let missing = http
        .post(proxy.admin_url("/api/routes/nope/promote"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    let events: serde_json::Value = proxy.admin_json("/api/events?route=orders").await;
    let events = events.as_array().unwrap();
    assert_eq!(events.len(), 4, "{events:?}");
    assert_eq!(events[0]["reason"], "resumed", "newest first");
    assert_eq!(events[3]["from"], "shadow");
    assert_eq!(events[3]["to"], "canary");
    assert_eq!(events[3]["actor"], "admin");
    let at = events[3]["at"].as_str().unwrap();
    assert!(
        at.ends_with('Z') && at.contains('.'),
        "RFC 3339 UTC with milliseconds: {at}"
    );

    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains(r#"strangler_route_stage{route="orders",stage="shadow"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"strangler_route_weight{route="orders"} 0"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"strangler_rollout_transitions_total{route="orders",to="canary",actor="admin"} 2"#
        ),
        "promote and pause: {metrics}"
    );

    let instances: serde_json::Value = proxy.admin_json("/api/instances").await;
    assert_eq!(instances[0]["leader"], true);
    assert!(instances[0]["config_hash"]
        .as_str()
        .is_some_and(|h| !h.is_empty()));
    proxy.stop().await;
}

#[tokio::test]
async fn every_error_is_json_even_a_bad_query_or_a_wrong_method() {
    let legacy = Backend::named("legacy").await;
    let candidate = Backend::named("candidate").await;
    let toml = format!("{}{ROUTE}", upstreams(legacy.addr, candidate.addr));
    let proxy = Proxy::start(&toml).await;
    let bad_query = proxy.admin_get("/api/events?limit=-1").await;
    assert_eq!(bad_query.status(), 400);
    let body: serde_json::Value = bad_query.json().await.unwrap();
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("limit")),
        "{body}"
    );
    let wrong_method = proxy.admin_get("/api/routes/orders/promote").await;
    assert_eq!(wrong_method.status(), 405);
    assert_eq!(
        wrong_method
            .headers()
            .get("allow")
            .map(|v| v.to_str().unwrap()),
        Some("POST")
    );
    let body: serde_json::Value = wrong_method.json().await.unwrap();
    assert!(body["error"].is_string(), "{body}");
    let unknown = proxy.admin_get("/api/nothing").await;
    assert_eq!(unknown.status(), 404);
    assert!(unknown.json::<serde_json::Value>().await.unwrap()["error"].is_string());
    proxy.stop().await;
}
