//! The weighted sticky split of SPEC §3, the QA override.

use xxhash_rust::xxh3::xxh3_64;

use crate::support::backend::Backend;
use crate::support::{client, upstreams, Proxy};

fn route(extra: &str) -> String {
    format!(
        r#"
[[routes]]
name = "orders"
path_prefix = "/orders"
legacy = "legacy"
candidate = "candidate"
stage = "canary"
{extra}

# The two test upstreams answer differently on purpose: no shadowing, so
# the match-rate gate has no evidence. The p99_ratio gate does (both sides
# serve live traffic) and would roll the route back on one scheduling
# hiccup (default ×1.5 or +5 ms, failure_limit 1): no automatic rollback,
# so the split stays where it is put.
[routes.shadow]
sample = 0.0

[routes.rollout]
failure_limit = 1000000
"#
    )
}

/// The side the SPEC formula predicts for a key.
fn expected_candidate(salt: &str, key: &str, weight: f64) -> bool {
    let mut input = salt.as_bytes().to_vec();
    input.push(0);
    input.extend_from_slice(key.as_bytes());
    ((xxh3_64(&input) % 10_000) as f64) < weight * 100.0
}

#[tokio::test]
async fn per_request_split_follows_the_weight() {
    let legacy = Backend::named("legacy").await;
    let candidate = Backend::named("candidate").await;
    let proxy = Proxy::start(&format!(
        "{}{}",
        upstreams(legacy.addr, candidate.addr),
        route("weight = 20")
    ))
    .await;
    let http = client();
    let total = 2000;
    let mut to_candidate = 0;
    for _ in 0..total {
        let body = http
            .get(proxy.url("/orders"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        to_candidate += usize::from(body == "candidate");
    }
    // Binomial(2000, 0.2): mean 400, sd ≈ 17.9; ±5 sd.
    assert!(
        (310..=490).contains(&to_candidate),
        "{to_candidate} of {total} went to the candidate"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn header_cohorts_follow_the_formula_and_only_move_forward() {
    let legacy = Backend::named("legacy").await;
    let candidate = Backend::named("candidate").await;
    let toml = format!(
        "{}{}",
        upstreams(legacy.addr, candidate.addr),
        route("weight = 10\nsticky = \"header:x-user-id\"\nsticky_salt = \"s1\"")
    );
    let proxy = Proxy::start(&toml).await;
    let http = client();
    let users: Vec<String> = (0..300).map(|i| format!("user-{i}")).collect();
    let mut at_10 = Vec::new();
    for user in &users {
        // Twice: the same user lands on the same side.
        let first = http
            .get(proxy.url("/orders"))
            .header("x-user-id", user)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let second = http
            .get(proxy.url("/orders/1"))
            .header("x-user-id", user)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(first, second, "{user} switched sides");
        assert_eq!(
            first == "candidate",
            expected_candidate("s1", user, 10.0),
            "{user} at 10%"
        );
        at_10.push(first == "candidate");
    }
    let moved = http
        .post(proxy.admin_url("/api/routes/orders/weight"))
        .json(&serde_json::json!({ "weight": 50 }))
        .send()
        .await
        .unwrap();
    assert_eq!(moved.status(), 200);
    let mut at_50 = 0;
    for (user, was_candidate) in users.iter().zip(&at_10) {
        let body = http
            .get(proxy.url("/orders"))
            .header("x-user-id", user)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let is_candidate = body == "candidate";
        assert_eq!(
            is_candidate,
            expected_candidate("s1", user, 50.0),
            "{user} at 50%"
        );
        assert!(
            is_candidate || !was_candidate,
            "{user} moved back to legacy when the weight rose"
        );
        at_50 += usize::from(is_candidate);
    }
    assert!((100..=200).contains(&at_50), "{at_50} of 300 users at 50%");
    proxy.stop().await;
}

#[tokio::test]
async fn cookie_and_ip_keys_and_missing_keys() {
    let legacy = Backend::named("legacy").await;
    let candidate = Backend::named("candidate").await;
    let toml = format!(
        "{}{}{}",
        upstreams(legacy.addr, candidate.addr),
        route("weight = 50\nsticky = \"cookie:uid\"\nsticky_missing = \"legacy\""),
        r#"
[[routes]]
name = "byip"
path_prefix = "/byip"
legacy = "legacy"
candidate = "candidate"
stage = "canary"
weight = 50
sticky = "ip"
"#
    );
    let proxy = Proxy::start(&toml).await;
    let http = client();
    for i in 0..100 {
        let user = format!("u{i}");
        let body = http
            .get(proxy.url("/orders"))
            .header("cookie", format!("theme=dark; uid={user}; x=1"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(
            body == "candidate",
            expected_candidate("", &user, 50.0),
            "cookie {user}"
        );
    }
    // Without the cookie, sticky_missing = legacy.
    for _ in 0..50 {
        let body = http
            .get(proxy.url("/orders"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(body, "legacy");
    }
    // By IP: every request from 127.0.0.1 lands on the same side, the formula's.
    let expected = if expected_candidate("", "127.0.0.1", 50.0) {
        "candidate"
    } else {
        "legacy"
    };
    for _ in 0..20 {
        let body = http
            .get(proxy.url("/byip"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(body, expected);
    }
    // The 50 requests without the cookie were counted; those with a key
    // (and the route keyed by IP) were not.
    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains(r#"strangler_sticky_missing_total{route="orders"} 50"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"strangler_sticky_missing_total{route="byip"} 0"#),
        "{metrics}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn qa_override_needs_the_token_and_is_never_forwarded() {
    let legacy = Backend::named("legacy").await;
    let candidate = Backend::named("candidate").await;
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\noverride_token = \"qa-secret\"\n{}{}",
        upstreams(legacy.addr, candidate.addr),
        route("weight = 0")
    );
    let proxy = Proxy::start(&toml).await;
    let http = client();
    let ask = |side: &'static str, token: &'static str| {
        http.get(proxy.url("/orders"))
            .header("x-strangler-side", side)
            .header("x-strangler-token", token)
            .send()
    };
    assert_eq!(
        ask("candidate", "qa-secret")
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "candidate"
    );
    assert_eq!(
        ask("candidate", "wrong")
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "legacy"
    );
    assert_eq!(
        ask("legacy", "qa-secret")
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "legacy"
    );
    // Client x-strangler-* headers never reach an upstream; only mirrored
    // copies (of the canary's legacy share) carry x-strangler-shadow.
    for seen in legacy.seen().iter().chain(candidate.seen().iter()) {
        let ours: Vec<_> = seen
            .headers
            .keys()
            .filter(|k| k.as_str().starts_with("x-strangler-"))
            .collect();
        assert!(
            ours.is_empty() || ours == ["x-strangler-shadow"],
            "{:?}",
            seen.headers
        );
    }
    // Overridden requests are left out of the route's window.
    let route: serde_json::Value = proxy.admin_json("/api/routes/orders").await;
    assert_eq!(route["candidate"]["requests"], 0);
    assert_eq!(route["legacy"]["requests"], 1);
    // ... and counted apart, by the side that served them.
    let metrics = proxy.metrics().await;
    for (upstream, count) in [("candidate", 1), ("legacy", 1)] {
        let line = format!(
            r#"strangler_override_requests_total{{route="orders",upstream="{upstream}"}} {count}"#
        );
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }
    proxy.stop().await;
}
