//! Test bodies every backend must pass, written against `Arc<dyn Store>`
//! and the fixtures they share: `tests.rs` runs each on a fresh SQLite file,
//! `tests/postgres.rs` on a fresh PostgreSQL database (when one is
//! configured).

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::config::Stage;
use crate::rollout::state::{Actor, RolloutState};
use crate::runtime::now_rfc3339;
use crate::store::*;

pub(crate) const DAY: Duration = Duration::from_secs(86_400);
pub(crate) const OLD: &str = "2000-01-01T00:00:00.000Z";

pub(crate) fn route_state(route: &str) -> RouteStateRow {
    RouteStateRow {
        route: route.to_string(),
        stage: Stage::Canary,
        weight: 12.5,
        state: RolloutState::Paused,
        reason: Some("weight pinned at 12.5%".into()),
        stage_started_at_ms: 1_700_000_000_000,
        window: Some(json!({"legacy": {"requests": 10, "errors": 1}, "candidate": [1, 2.5]})),
        updated_at_ms: 1_700_000_000_500,
    }
}

pub(crate) fn event(route: &str, at: &str, reason: &str) -> EventRow {
    EventRow {
        id: 0,
        at: at.to_string(),
        route: route.to_string(),
        from: Stage::Shadow,
        to: Stage::Canary,
        weight: 1.0,
        state: RolloutState::Progressing,
        reason: reason.to_string(),
        actor: Actor::Auto,
        instance: Some("host-a:8080".into()),
    }
}

pub(crate) fn sample(route: &str, endpoint: &str, kind: SampleKind, at: &str, n: u32) -> SampleRow {
    SampleRow {
        id: 0,
        at: at.to_string(),
        route: route.to_string(),
        endpoint: endpoint.to_string(),
        kind,
        method: "GET".into(),
        path: format!("/api/v1/orders/{n}"),
        request: json!({"method": "GET", "path": format!("/api/v1/orders/{n}"), "headers": {"authorization": "[redacted]"}}),
        legacy_response: json!({"status": 200, "body": {"id": n, "total": 10.5}}),
        candidate_response: json!({"status": 200, "body": {"id": n, "total": 10.25}}),
        differences: json!([{"kind": "body", "path": "$.total", "change": "changed", "legacy": 10.5, "candidate": 10.25}]),
    }
}

pub(crate) fn aggregate(route: &str, bucket: i64, side: &str, requests: u64) -> AggregateRow {
    AggregateRow {
        route: route.to_string(),
        bucket_start_ms: bucket,
        side: side.to_string(),
        requests,
        errors: 1,
        p50_ms: Some(2.0),
        p99_ms: Some(9.0),
        compared: 4,
        matched: 3,
        mismatched: 1,
    }
}

pub(crate) fn endpoint_stat(
    endpoint: &str,
    requests: u64,
    p99: Option<f64>,
    last: i64,
) -> EndpointStatRow {
    EndpointStatRow {
        route: "orders".into(),
        endpoint: endpoint.to_string(),
        side: "legacy".into(),
        requests,
        errors: 1,
        bytes: 1000,
        latency_sum_ms: 50.0,
        p50_ms: Some(1.0),
        p99_ms: p99,
        last_bucket_ms: last,
    }
}

pub(crate) fn now_bucket() -> i64 {
    let ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("the clock is after 1970")
            .as_millis(),
    )
    .expect("now fits in i64");
    ms - ms % 10_000
}

// --- round trips ---

pub(crate) async fn route_state_upserts_and_deletes(store: Arc<dyn Store>) {
    assert!(store.load_route_states().await.unwrap().is_empty());

    let mut orders = route_state("orders");
    store.save_route_state(&orders).await.unwrap();
    let mut users = route_state("users");
    users.window = None;
    users.reason = None;
    store.save_route_state(&users).await.unwrap();
    assert_eq!(
        store.load_route_states().await.unwrap(),
        vec![orders.clone(), users.clone()]
    );

    orders.stage = Stage::Shadow;
    orders.weight = 0.0;
    orders.state = RolloutState::RolledBack;
    orders.reason = Some("error_rate 0.2 > 0.01".into());
    orders.window = Some(json!({"fresh": true}));
    orders.updated_at_ms += 1;
    store.save_route_state(&orders).await.unwrap();
    assert_eq!(
        store.load_route_states().await.unwrap(),
        vec![orders, users.clone()]
    );

    assert!(store.delete_route_state("orders").await.unwrap());
    assert!(!store.delete_route_state("orders").await.unwrap());
    assert_eq!(store.load_route_states().await.unwrap(), vec![users]);

    let mut bad = route_state("bad");
    bad.weight = f64::NAN;
    let err = store.save_route_state(&bad).await.expect_err("NaN refused");
    assert!(matches!(err, StoreError::Invalid { .. }), "{err:?}");
}

pub(crate) async fn events_are_newest_first_filtered_and_limited(store: Arc<dyn Store>) {
    let mut ids = vec![];
    for (i, route) in ["orders", "users", "orders", "orders"].iter().enumerate() {
        let mut e = event(
            route,
            &format!("2024-05-01T12:00:0{i}.123Z"),
            &format!("step {i}"),
        );
        e.actor = if i % 2 == 0 {
            Actor::Auto
        } else {
            Actor::Admin
        };
        e.instance = (i != 3).then(|| "host-a:8080".to_string());
        ids.push(store.append_event(&e).await.unwrap());
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids grow: {ids:?}");

    let all = store.events(None, 100).await.unwrap();
    let reasons: Vec<&str> = all.iter().map(|e| e.reason.as_str()).collect();
    assert_eq!(reasons, ["step 3", "step 2", "step 1", "step 0"]);

    let orders = store.events(Some("orders"), 2).await.unwrap();
    assert_eq!(orders.len(), 2);
    let mut expected = event("orders", "2024-05-01T12:00:03.123Z", "step 3");
    expected.id = ids[3];
    expected.actor = Actor::Admin;
    expected.instance = None;
    assert_eq!(orders[0], expected);
    assert_eq!(orders[1].reason, "step 2");
    assert!(store.events(Some("nobody"), 10).await.unwrap().is_empty());

    let err = store
        .append_event(&event("orders", "yesterday", "x"))
        .await
        .expect_err("a bad timestamp is refused");
    assert!(
        err.to_string().contains("\"yesterday\" is not an RFC 3339"),
        "{err}"
    );
}

pub(crate) async fn samples_round_trip_and_filter_by_kind(store: Arc<dyn Store>) {
    let at = now_rfc3339();
    let ep = "GET /api/v1/orders/{id}";
    let m1 = store
        .insert_sample(&sample("orders", ep, SampleKind::Mismatch, &at, 1), 10)
        .await
        .unwrap()
        .expect("stored");
    let ok = store
        .insert_sample(&sample("orders", ep, SampleKind::Match, &at, 2), 10)
        .await
        .unwrap()
        .expect("stored");
    let m3 = store
        .insert_sample(&sample("orders", ep, SampleKind::Mismatch, &at, 3), 10)
        .await
        .unwrap()
        .expect("stored");
    store
        .insert_sample(&sample("users", ep, SampleKind::Mismatch, &at, 4), 10)
        .await
        .unwrap();

    let mut expected = sample("orders", ep, SampleKind::Mismatch, &at, 1);
    expected.id = m1;
    assert_eq!(store.sample(m1).await.unwrap(), Some(expected));
    assert_eq!(store.sample(9_999).await.unwrap(), None);

    let ids = |rows: Vec<SampleRow>| rows.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.samples("orders", None, 10).await.unwrap()),
        [m3, ok, m1]
    );
    assert_eq!(
        ids(store
            .samples("orders", Some(SampleKind::Mismatch), 10)
            .await
            .unwrap()),
        [m3, m1]
    );
    assert_eq!(
        ids(store
            .samples("orders", Some(SampleKind::Match), 10)
            .await
            .unwrap()),
        [ok]
    );
    assert_eq!(ids(store.samples("orders", None, 1).await.unwrap()), [m3]);
}

pub(crate) async fn samples_are_bounded_per_endpoint_and_kind_newest_win(store: Arc<dyn Store>) {
    let at = now_rfc3339();
    let a = "GET /api/v1/orders/{id}";
    let b = "GET /api/v1/orders";
    let mut a_ids = vec![];
    for n in 0..7 {
        a_ids.push(
            store
                .insert_sample(&sample("orders", a, SampleKind::Mismatch, &at, n), 3)
                .await
                .unwrap()
                .expect("stored"),
        );
    }
    for n in 0..2 {
        store
            .insert_sample(&sample("orders", b, SampleKind::Mismatch, &at, n), 3)
            .await
            .unwrap();
        store
            .insert_sample(&sample("orders", a, SampleKind::Match, &at, n), 3)
            .await
            .unwrap();
    }
    let kept = store
        .samples("orders", Some(SampleKind::Mismatch), 100)
        .await
        .unwrap();
    let kept_a: Vec<i64> = kept
        .iter()
        .filter(|s| s.endpoint == a)
        .map(|s| s.id)
        .collect();
    assert_eq!(kept_a, [a_ids[6], a_ids[5], a_ids[4]]);
    assert_eq!(kept.iter().filter(|s| s.endpoint == b).count(), 2);
    let matches = store
        .samples("orders", Some(SampleKind::Match), 100)
        .await
        .unwrap();
    assert_eq!(
        matches.len(),
        2,
        "the reservoir of matches has its own bound"
    );
    for old in &a_ids[..4] {
        assert_eq!(store.sample(*old).await.unwrap(), None);
    }

    // A bound of 0 stores nothing (request data is never kept).
    let none = store
        .insert_sample(&sample("quiet", a, SampleKind::Mismatch, &at, 1), 0)
        .await
        .unwrap();
    assert_eq!(none, None);
    assert!(store.samples("quiet", None, 10).await.unwrap().is_empty());
}

pub(crate) async fn accept_is_an_idempotent_upsert(store: Arc<dyn Store>) {
    let first = AcceptedRow {
        route: "orders".into(),
        endpoint: "GET /api/v1/orders/{id}".into(),
        path: "$.meta.version".into(),
        note: "v2 reports its own version".into(),
        at: "2024-05-01T12:00:00.000Z".into(),
    };
    assert_eq!(store.accept(&first).await.unwrap(), first);
    assert_eq!(store.accept(&first).await.unwrap(), first);
    assert_eq!(store.accepted(None).await.unwrap(), vec![first.clone()]);

    // Again with a new note: one row, the new note, the first `at`.
    let mut again = first.clone();
    again.note = "intended: see ADR-12".into();
    again.at = "2024-06-01T00:00:00.000Z".into();
    let stored = store.accept(&again).await.unwrap();
    assert_eq!(stored.note, "intended: see ADR-12");
    assert_eq!(stored.at, first.at);
    assert_eq!(
        store.accepted(Some("orders")).await.unwrap(),
        vec![stored.clone()]
    );

    let mut other = first.clone();
    other.route = "users".into();
    other.path = "$.a".into();
    store.accept(&other).await.unwrap();
    assert_eq!(
        store.accepted(None).await.unwrap(),
        vec![stored.clone(), other]
    );
    assert_eq!(store.accepted(Some("orders")).await.unwrap(), vec![stored]);
}

pub(crate) async fn aggregates_upsert_adds_counts(store: Arc<dyn Store>) {
    store
        .record_aggregates(&[
            aggregate("orders", 10_000, "legacy", 5),
            aggregate("orders", 10_000, "candidate", 2),
            aggregate("orders", 20_000, "legacy", 1),
            aggregate("users", 10_000, "legacy", 7),
        ])
        .await
        .unwrap();
    let mut more = aggregate("orders", 10_000, "legacy", 3);
    more.p50_ms = Some(1.0);
    more.p99_ms = Some(20.0);
    store.record_aggregates(&[more]).await.unwrap();
    let mut no_latency = aggregate("orders", 10_000, "candidate", 1);
    no_latency.p50_ms = None;
    no_latency.p99_ms = None;
    store.record_aggregates(&[no_latency]).await.unwrap();
    store.record_aggregates(&[]).await.unwrap();

    let rows = store.aggregates(Some("orders"), 0).await.unwrap();
    let legacy = AggregateRow {
        route: "orders".into(),
        bucket_start_ms: 10_000,
        side: "legacy".into(),
        requests: 8,
        errors: 2,
        p50_ms: Some(2.0),
        p99_ms: Some(20.0),
        compared: 8,
        matched: 6,
        mismatched: 2,
    };
    let mut candidate = aggregate("orders", 10_000, "candidate", 3);
    candidate.errors = 2;
    candidate.compared = 8;
    candidate.matched = 6;
    candidate.mismatched = 2;
    assert_eq!(
        rows,
        vec![candidate, legacy, aggregate("orders", 20_000, "legacy", 1)]
    );

    assert_eq!(
        store
            .aggregates(Some("orders"), 20_000)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(store.aggregates(None, 0).await.unwrap().len(), 4);
    assert_eq!(store.aggregates(None, 0).await.unwrap()[3].route, "users");
}

pub(crate) async fn endpoint_stats_accumulate(store: Arc<dyn Store>) {
    let ep = "GET /api/v1/orders/{id}";
    store
        .add_endpoint_stats(&[endpoint_stat(ep, 10, Some(10.0), 20_000)])
        .await
        .unwrap();
    store
        .add_endpoint_stats(&[
            endpoint_stat(ep, 30, Some(30.0), 10_000),
            endpoint_stat("GET /api/v1/orders", 1, None, 5),
        ])
        .await
        .unwrap();
    let rows = store.endpoint_stats(Some("orders")).await.unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0], endpoint_stat("GET /api/v1/orders", 1, None, 5));
    let total = &rows[1];
    assert_eq!(total.requests, 40);
    assert_eq!(total.errors, 2);
    assert_eq!(total.bytes, 2000);
    assert_eq!(total.latency_sum_ms, 100.0);
    // (10 × 10 + 30 × 30) / 40
    assert_eq!(total.p99_ms, Some(25.0));
    assert_eq!(total.p50_ms, Some(1.0));
    assert_eq!(total.last_bucket_ms, 20_000, "the later bucket is kept");
    assert!(store
        .endpoint_stats(Some("users"))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.endpoint_stats(None).await.unwrap(), rows);
}

// --- pruning ---

pub(crate) async fn prune_deletes_what_is_older_than_the_retention(store: Arc<dyn Store>) {
    let now = now_rfc3339();
    let ep = "GET /api/v1/orders/{id}";
    store
        .insert_sample(&sample("orders", ep, SampleKind::Mismatch, OLD, 1), 10)
        .await
        .unwrap();
    let fresh = store
        .insert_sample(&sample("orders", ep, SampleKind::Mismatch, &now, 2), 10)
        .await
        .unwrap()
        .expect("stored");
    store
        .record_aggregates(&[
            aggregate("orders", 0, "legacy", 1),
            aggregate("orders", now_bucket(), "legacy", 1),
        ])
        .await
        .unwrap();
    store
        .append_event(&event("orders", OLD, "old"))
        .await
        .unwrap();
    store
        .append_event(&event("orders", &now, "new"))
        .await
        .unwrap();
    store
        .add_endpoint_stats(&[
            endpoint_stat("GET /gone", 1, None, 0),
            endpoint_stat(ep, 1, None, now_bucket()),
        ])
        .await
        .unwrap();
    store
        .save_route_state(&route_state("orders"))
        .await
        .unwrap();

    let stats = store.prune(14 * DAY, u64::MAX).await.unwrap();
    assert_eq!(
        (
            stats.samples,
            stats.aggregates,
            stats.events,
            stats.endpoint_stats
        ),
        (1, 1, 0, 1),
        "events are the audit trail and are never pruned"
    );
    let samples = store.samples("orders", None, 10).await.unwrap();
    assert_eq!(samples.iter().map(|s| s.id).collect::<Vec<_>>(), [fresh]);
    let aggregates = store.aggregates(None, 0).await.unwrap();
    assert_eq!(aggregates.len(), 1);
    assert_eq!(aggregates[0].bucket_start_ms, now_bucket());
    let events = store.events(None, 10).await.unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].reason, "new");
    let stats_rows = store.endpoint_stats(None).await.unwrap();
    assert_eq!(stats_rows.len(), 1);
    assert_eq!(stats_rows[0].endpoint, ep);
    assert_eq!(store.load_route_states().await.unwrap().len(), 1);

    // Nothing left to prune.
    let again = store.prune(14 * DAY, u64::MAX).await.unwrap();
    assert_eq!((again.samples, again.aggregates, again.events), (0, 0, 0));
}

/// Returns the sizes before any pruning, for backend-specific checks.
pub(crate) async fn prune_by_size_drops_the_oldest_samples_first(
    store: Arc<dyn Store>,
) -> PruneStats {
    let now = now_rfc3339();
    let mut ids = vec![];
    for n in 0..60 {
        let mut s = sample(
            "orders",
            &format!("GET /e{}", n % 3),
            SampleKind::Mismatch,
            &now,
            n,
        );
        s.legacy_response = json!({"status": 200, "body": format!("{n:05}").repeat(2000)});
        ids.push(store.insert_sample(&s, 100).await.unwrap().expect("stored"));
    }
    store
        .record_aggregates(&[aggregate("orders", now_bucket(), "legacy", 1)])
        .await
        .unwrap();
    store
        .append_event(&event("orders", &now, "kept"))
        .await
        .unwrap();

    let before = store.prune(14 * DAY, u64::MAX).await.unwrap();
    assert_eq!(before.samples, 0);
    let limit = before.bytes_after / 2;
    let stats = store.prune(14 * DAY, limit).await.unwrap();
    assert!(stats.bytes_after <= limit, "{stats:?} vs limit {limit}");
    assert!(stats.samples > 0 && stats.samples < 60, "{stats:?}");
    assert_eq!(stats.aggregates, 0, "samples go first");

    let mut kept: Vec<i64> = store
        .samples("orders", None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    kept.sort_unstable();
    assert_eq!(kept.len() as u64, 60 - stats.samples);
    assert_eq!(kept, ids[ids.len() - kept.len()..], "the newest are kept");

    // Down to nothing: samples, then aggregates go; events and state stay.
    let stats = store.prune(14 * DAY, 0).await.unwrap();
    assert_eq!(stats.samples, kept.len() as u64);
    assert_eq!(stats.aggregates, 1);
    assert!(store.samples("orders", None, 100).await.unwrap().is_empty());
    assert_eq!(store.events(None, 10).await.unwrap().len(), 1);
    before
}

// --- persisted data ---

/// Rows of schema version 1, as raw SQL both backends accept: whatever
/// later migrations do, a database holding these rows must still read back
/// the same through the API ([`rows_of_schema_v1_read_back`]).
pub(crate) const V1_ROWS: &str = r#"
    INSERT INTO route_state (route, stage, weight, state, reason, stage_started_at_ms, window_json, updated_at_ms)
    VALUES ('orders', 'canary', 10.0, 'rolled_back', 'error_rate 0.2 > 0.01', 1714564800000, '{"legacy":{"requests":5}}', 1714564801000),
           ('users', 'legacy', 0.0, 'progressing', NULL, 0, NULL, 0);
    INSERT INTO events (id, at, at_ms, route, from_stage, to_stage, weight, state, reason, actor, instance)
    VALUES (7, '2024-05-01T12:00:00.123Z', 1714564800123, 'orders', 'shadow', 'canary', 1.0, 'progressing', 'manual promotion', 'admin', NULL);
    INSERT INTO samples (id, at, at_ms, route, endpoint, kind, method, path, request, legacy_response, candidate_response, differences)
    VALUES (3, '2024-05-01T12:00:01.000Z', 1714564801000, 'orders', 'GET /api/v1/orders/{id}', 'match', 'GET', '/api/v1/orders/42',
            '{"method":"GET"}', '{"status":200}', '{"status":200}', '[]');
    INSERT INTO accepted (route, endpoint, path, note, at)
    VALUES ('orders', 'GET /api/v1/orders/{id}', '$.meta.version', 'intended', '2024-05-01T12:00:02.000Z');
    INSERT INTO aggregates (route, bucket_start_ms, side, requests, errors, p50_ms, p99_ms, compared, matched, mismatched)
    VALUES ('orders', 1714564800000, 'candidate', 100, 2, 1.5, NULL, 50, 49, 1);
    INSERT INTO endpoint_stats (route, endpoint, side, requests, errors, bytes, latency_sum_ms, p50_ms, p99_ms, last_bucket_ms)
    VALUES ('orders', 'GET /api/v1/orders/{id}', 'legacy', 100, 0, 12345, 250.5, 2.0, 9.5, 1714564800000);
    "#;

/// What a store holding [`V1_ROWS`] must answer.
pub(crate) async fn rows_of_schema_v1_read_back(store: Arc<dyn Store>) {
    assert_eq!(
        store.load_route_states().await.unwrap(),
        vec![
            RouteStateRow {
                route: "orders".into(),
                stage: Stage::Canary,
                weight: 10.0,
                state: RolloutState::RolledBack,
                reason: Some("error_rate 0.2 > 0.01".into()),
                stage_started_at_ms: 1_714_564_800_000,
                window: Some(json!({"legacy": {"requests": 5}})),
                updated_at_ms: 1_714_564_801_000,
            },
            RouteStateRow {
                route: "users".into(),
                stage: Stage::Legacy,
                weight: 0.0,
                state: RolloutState::Progressing,
                reason: None,
                stage_started_at_ms: 0,
                window: None,
                updated_at_ms: 0,
            },
        ]
    );
    assert_eq!(
        store.events(None, 10).await.unwrap(),
        vec![EventRow {
            id: 7,
            at: "2024-05-01T12:00:00.123Z".into(),
            route: "orders".into(),
            from: Stage::Shadow,
            to: Stage::Canary,
            weight: 1.0,
            state: RolloutState::Progressing,
            reason: "manual promotion".into(),
            actor: Actor::Admin,
            instance: None,
        }]
    );
    assert_eq!(
        store.sample(3).await.unwrap(),
        Some(SampleRow {
            id: 3,
            at: "2024-05-01T12:00:01.000Z".into(),
            route: "orders".into(),
            endpoint: "GET /api/v1/orders/{id}".into(),
            kind: SampleKind::Match,
            method: "GET".into(),
            path: "/api/v1/orders/42".into(),
            request: json!({"method": "GET"}),
            legacy_response: json!({"status": 200}),
            candidate_response: json!({"status": 200}),
            differences: json!([]),
        })
    );
    assert_eq!(
        store.accepted(None).await.unwrap(),
        vec![AcceptedRow {
            route: "orders".into(),
            endpoint: "GET /api/v1/orders/{id}".into(),
            path: "$.meta.version".into(),
            note: "intended".into(),
            at: "2024-05-01T12:00:02.000Z".into(),
        }]
    );
    assert_eq!(
        store.aggregates(None, 0).await.unwrap(),
        vec![AggregateRow {
            route: "orders".into(),
            bucket_start_ms: 1_714_564_800_000,
            side: "candidate".into(),
            requests: 100,
            errors: 2,
            p50_ms: Some(1.5),
            p99_ms: None,
            compared: 50,
            matched: 49,
            mismatched: 1,
        }]
    );
    assert_eq!(
        store.endpoint_stats(None).await.unwrap(),
        vec![EndpointStatRow {
            route: "orders".into(),
            endpoint: "GET /api/v1/orders/{id}".into(),
            side: "legacy".into(),
            requests: 100,
            errors: 0,
            bytes: 12345,
            latency_sum_ms: 250.5,
            p50_ms: Some(2.0),
            p99_ms: Some(9.5),
            last_bucket_ms: 1_714_564_800_000,
        }]
    );
}
