//! Load, streaming, reload and shutdown.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::Response;
use http_body_util::BodyExt;

use crate::support::backend::{full, Backend};
use crate::support::{client, upstreams, Proxy};

const ROUTE: &str = "\n[[routes]]\nname = \"all\"\npath_prefix = \"/\"\nlegacy = \"legacy\"\ncandidate = \"candidate\"\n";

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[tokio::test]
async fn a_100_mb_body_streams_both_ways_without_memory_growth() {
    const SIZE: u64 = 100 * 1024 * 1024;
    const CHUNK: usize = 64 * 1024;
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let backend = Backend::start(move |req| {
        let counter = counter.clone();
        async move {
            if req.method() == http::Method::POST {
                // Count the upload as it arrives, then answer with its size.
                let mut body = req.into_body();
                while let Some(frame) = body.frame().await {
                    if let Ok(data) = frame.unwrap().into_data() {
                        counter.fetch_add(data.len() as u64, Ordering::Relaxed);
                    }
                }
                return Response::new(full(counter.load(Ordering::Relaxed).to_string()));
            }
            let chunk = Bytes::from(vec![b'x'; CHUNK]);
            let chunks = (SIZE / CHUNK as u64) as usize;
            let stream = futures_util::stream::iter(
                (0..chunks)
                    .map(move |_| Ok::<_, std::io::Error>(http_body::Frame::data(chunk.clone()))),
            );
            Response::new(
                http_body_util::StreamBody::new(stream)
                    .map_err(|e| Box::new(e) as _)
                    .boxed(),
            )
        }
    })
    .await;
    let proxy = Proxy::start(&format!("{}{ROUTE}", upstreams(backend.addr, backend.addr))).await;
    let http = client();
    let before = rss_bytes();

    let response = http.get(proxy.url("/download")).send().await.unwrap();
    let mut stream = response.bytes_stream();
    let mut total = 0u64;
    while let Some(chunk) = stream.next().await {
        total += chunk.unwrap().len() as u64;
    }
    assert_eq!(total, SIZE);

    let chunk = Bytes::from(vec![b'y'; CHUNK]);
    let chunks = (SIZE / CHUNK as u64) as usize;
    let upload = futures_util::stream::iter(
        (0..chunks).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
    );
    let response = http
        .post(proxy.url("/upload"))
        .body(reqwest::Body::wrap_stream(upload))
        .send()
        .await
        .unwrap();
    assert_eq!(response.text().await.unwrap(), SIZE.to_string());

    let growth = rss_bytes().saturating_sub(before);
    assert!(
        growth < 40 * 1024 * 1024,
        "memory grew by {} MiB while streaming 2 × 100 MiB",
        growth / (1024 * 1024)
    );
    proxy.stop().await;
}

#[tokio::test]
async fn two_hundred_concurrent_requests_all_succeed() {
    // About 600 descriptors at the peak: raise the soft limit as `run` does,
    // in case the test runner left it at 1024 for all the tests at once.
    let _ = strangler::limits::raise_open_files();
    let legacy = Backend::start(|_req| async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        Response::new(full("legacy"))
    })
    .await;
    let candidate = Backend::named("candidate").await;
    let proxy = Proxy::start(&format!(
        "{}{ROUTE}",
        upstreams(legacy.addr, candidate.addr)
    ))
    .await;
    let http = client();
    let requests = (0..200).map(|i| {
        let http = http.clone();
        let url = proxy.url(&format!("/r/{i}"));
        tokio::spawn(async move { http.get(url).send().await.map(|r| r.status().as_u16()) })
    });
    let statuses = futures_util::future::join_all(requests).await;
    let ok = statuses.iter().filter(|s| matches!(s, Ok(Ok(200)))).count();
    assert_eq!(ok, 200, "{statuses:?}");
    assert_eq!(legacy.count(), 200);
    proxy.stop().await;
}

#[tokio::test]
async fn reload_under_load_drops_nothing_and_keeps_admin_state() {
    let legacy = Backend::named("legacy").await;
    let candidate = Backend::named("candidate").await;
    let base = upstreams(legacy.addr, candidate.addr);
    let toml =
        format!("{base}{ROUTE}\nstage = \"canary\"\nweight = 0\n[routes.shadow]\nsample = 0.0\n");
    let proxy = Proxy::start(&toml).await;
    let http = client();

    // An admin decision that must survive reloads.
    let pinned = http
        .post(proxy.admin_url("/api/routes/all/weight"))
        .json(&serde_json::json!({ "weight": 100 }))
        .send()
        .await
        .unwrap();
    assert_eq!(pinned.status(), 200);

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (http, url, stop, failures, done) = (
            http.clone(),
            proxy.url("/x"),
            stop.clone(),
            failures.clone(),
            done.clone(),
        );
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match http.get(&url).send().await {
                    Ok(r) if r.status() == 200 => {}
                    _ => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for i in 0..5 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Each reload adds a route, so the swap is observable.
        let extra = format!(
            "\n[[routes]]\nname = \"extra{i}\"\npath = \"/extra\"\nlegacy = \"legacy\"\ncandidate = \"candidate\"\nstage = \"candidate\"\n"
        );
        proxy.rewrite_config(&format!("{toml}{extra}"));
        let reloaded = http
            .post(proxy.admin_url("/api/reload"))
            .send()
            .await
            .unwrap();
        assert_eq!(reloaded.status(), 200, "{}", reloaded.text().await.unwrap());
    }
    // An invalid file is refused and the running configuration stays.
    proxy.rewrite_config(&format!("{toml}\n[[routes]]\nname = \"bad\"\n"));
    let refused = http
        .post(proxy.admin_url("/api/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let error = refused.text().await.unwrap();
    assert!(error.contains("routes[1]"), "{error}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "of {} requests",
        done.load(Ordering::Relaxed)
    );
    assert!(done.load(Ordering::Relaxed) > 20);
    assert_eq!(
        http.get(proxy.url("/extra"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "candidate"
    );
    let route: serde_json::Value = proxy.admin_json("/api/routes/all").await;
    assert_eq!(
        route["weight"], 100.0,
        "the admin's weight survived the reloads: {route}"
    );
    assert_eq!(route["state"], "paused");
    proxy.stop().await;
}

#[tokio::test]
async fn shutdown_finishes_in_flight_requests_then_refuses_new_ones() {
    let legacy = Backend::start(|_req| async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        Response::new(full("finished"))
    })
    .await;
    let candidate = Backend::named("candidate").await;
    let mut proxy = Proxy::start(&format!(
        "{}{ROUTE}",
        upstreams(legacy.addr, candidate.addr)
    ))
    .await;
    let addr = proxy.addr;
    let url = proxy.url("/slow");
    let in_flight = tokio::spawn(async move {
        client()
            .get(url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    // In flight means the upstream has it (it answers 500 ms later).
    for _ in 0..1000 {
        if legacy.count() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(legacy.count(), 1, "the request reached the upstream");
    let app = proxy.app.take().unwrap();
    let stopping = tokio::spawn(app.stop());
    assert_eq!(in_flight.await.unwrap(), "finished");
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("shutdown completes")
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );
}
