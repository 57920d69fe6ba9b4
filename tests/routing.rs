//! Route precedence (SPEC §2): exact, then longest prefix on whole segments,
//! then regex in file order; method and header conditions; `_default`.

use crate::support::backend::Backend;
use crate::support::{client, Proxy};

#[tokio::test]
async fn the_most_specific_route_wins() {
    let names = [
        "exact", "orders", "api", "regex", "beta", "posts", "default",
    ];
    let mut backends = Vec::new();
    for name in names {
        backends.push(Backend::named(name).await);
    }
    let mut toml = String::from("[defaults]\nupstream = \"default\"\n\n");
    for (name, backend) in names.iter().zip(&backends) {
        toml.push_str(&format!(
            "[upstreams.{name}]\nurl = \"http://{}\"\n",
            backend.addr
        ));
    }
    toml.push_str(
        r#"
[[routes]]
name = "beta"
path_prefix = "/api/v1/orders"
headers = { "x-tenant" = "beta" }
legacy = "beta"
candidate = "beta"

[[routes]]
name = "regex"
path_regex = "^/api/v1/orders/[0-9]+$"
legacy = "regex"
candidate = "regex"

[[routes]]
name = "items"
path_regex = "^/items/[0-9]+$"
legacy = "regex"
candidate = "regex"

[[routes]]
name = "orders"
path_prefix = "/api/v1/orders"
legacy = "orders"
candidate = "orders"

[[routes]]
name = "api"
path_prefix = "/api/v1/"
legacy = "api"
candidate = "api"

[[routes]]
name = "export"
path = "/api/v1/orders/export"
legacy = "exact"
candidate = "exact"

[[routes]]
name = "posts"
path = "/submit"
methods = ["POST"]
legacy = "posts"
candidate = "posts"
"#,
    );
    let proxy = Proxy::start(&toml).await;
    let http = client();
    let cases: &[(&str, &str, Option<&str>, &str)] = &[
        ("GET", "/api/v1/orders/export", None, "exact"),
        ("GET", "/api/v1/orders/export?x=1", None, "exact"),
        ("GET", "/api/v1/orders/42", None, "orders"),
        ("GET", "/api/v1/orders", None, "orders"),
        ("GET", "/api/v1/orders/", None, "orders"),
        ("GET", "/api/v1/ordersX", None, "api"),
        ("GET", "/api/v1", None, "api"),
        ("GET", "/api/v1/orders/42", Some("beta"), "beta"),
        ("GET", "/api/v1/orders/42", Some("gamma"), "orders"),
        ("GET", "/items/7", None, "regex"),
        ("GET", "/items/seven", None, "default"),
        ("POST", "/submit", None, "posts"),
        ("GET", "/submit", None, "default"),
        ("GET", "/elsewhere", None, "default"),
        ("GET", "/", None, "default"),
    ];
    for (method, path, tenant, expected) in cases {
        let mut request = http.request(method.parse().unwrap(), proxy.url(path));
        if let Some(tenant) = tenant {
            request = request.header("x-tenant", *tenant);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200, "{method} {path}");
        let body = response.text().await.unwrap();
        assert_eq!(body, *expected, "{method} {path} tenant={tenant:?}");
    }
    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains(
            r#"strangler_requests_total{route="_default",upstream="default",code="200"} 4"#
        ),
        "{metrics}"
    );
    assert!(metrics
        .contains(r#"strangler_requests_total{route="orders",upstream="orders",code="200"} 4"#));
    proxy.stop().await;
}

#[tokio::test]
async fn stages_pick_the_serving_side() {
    let legacy = Backend::named("legacy").await;
    let candidate = Backend::named("candidate").await;
    let toml = format!(
        "{}{}",
        crate::support::upstreams(legacy.addr, candidate.addr),
        r#"
[[routes]]
name = "old"
path_prefix = "/old"
legacy = "legacy"
candidate = "candidate"
stage = "legacy"

[[routes]]
name = "shadowed"
path_prefix = "/shadowed"
legacy = "legacy"
candidate = "candidate"
stage = "shadow"

[[routes]]
name = "new"
path_prefix = "/new"
legacy = "legacy"
candidate = "candidate"
stage = "candidate"

# The two sides answer differently on purpose: the GET's copy mirrored to
# legacy is a mismatch, and 0 of 1 matched is already a rollback (one
# evaluation, every 500 ms): the route must stay where the test put it.
[routes.rollout]
failure_limit = 1000000
"#
    );
    let proxy = Proxy::start(&toml).await;
    let http = client();
    for (path, expected) in [
        ("/old/x", "legacy"),
        ("/shadowed/x", "legacy"),
        ("/new/x", "candidate"),
    ] {
        let body = http
            .get(proxy.url(path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(body, expected, "{path}");
    }
    let routes: serde_json::Value = proxy.admin_json("/api/routes").await;
    let new = routes
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "new")
        .unwrap();
    assert_eq!(new["stage"], "candidate");
    assert_eq!(new["weight"], 100.0);
    assert_eq!(new["candidate"]["requests"], 1);
    assert_eq!(new["legacy"]["requests"], 0);
    proxy.stop().await;
}
