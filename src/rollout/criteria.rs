//! Success criteria read from a Prometheus text endpoint (SPEC §3).
//!
//! A team writes its targets down before migrating ("memory under 500 MB"):
//! each `[[routes.rollout.criteria]]` names a URL (usually the rewrite's own
//! `/metrics`) and a sample. At every evaluation the controller calls
//! [`read`], which GETs the URL within [`READ_TIMEOUT`], parses the text
//! exposition format and picks the sample. Anything that keeps a value from
//! being read (unreachable endpoint, non-2xx answer, timeout, text that holds
//! no samples, absent sample) gives a [`Reading`] without a value: the gate
//! is "not judged", which blocks promotion and never causes a rollback.
//!
//! Parsing is done by the `prometheus-parse` crate. It accepts both the
//! Prometheus 0.0.4 text format and OpenMetrics text (`# EOF`, `_total`
//! counters, `# UNIT`), skips lines it cannot read instead of failing the
//! whole scrape, and regroups histogram buckets and summary quantiles into
//! one value per label set; `flatten` turns those back into the samples
//! that were on the wire (`name_bucket{le="…"}`, `name{quantile="…"}`).
//! Its known limits: a label value holding `,`, `=` or `}` is split wrongly,
//! so a selector on such a value finds nothing (the criterion is not
//! judged); values keep their escapes, which the comparison accounts for.
//!
//! Selection rule: a sample matches when its name is the selector's name and
//! it carries every label the selector gives with the same value (other
//! labels may be present). When several samples match, the first one in the
//! exposition wins: the values are not summed, since adding up e.g. gauges
//! per label would rarely mean what the criterion's author meant. Regrouped
//! histogram and summary samples come after the plain ones, ordered by name
//! and labels, so the choice is stable from one scrape to the next.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Uri};
use http_body_util::{BodyExt, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use prometheus_parse::{Scrape, Value};

use crate::proxy::body::UpstreamBody;

/// The whole budget of one reading: connect, request and body.
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// Metrics pages larger than this are not read (a runaway exposition must
/// not make the controller buffer without bound).
const MAX_BODY: usize = 16 * 1024 * 1024;

/// A pooled HTTP/1.1 + HTTP/2 client for `http://` and `https://` URLs
/// (rustls, the system's roots or Mozilla's), shared by criteria reads and
/// webhook deliveries. Same type as an upstream's client.
pub type HttpClient = crate::proxy::upstream::HttpClient;

/// Builds the client used for criteria and webhooks.
///
/// Call it once and clone the result: clones share one connection pool.
pub fn http_client() -> HttpClient {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(READ_TIMEOUT));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(connector)
}

/// One criterion value, or why there is none.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// `None`: the criterion is not judged.
    pub value: Option<f64>,
    /// For people: the value and where it came from, or "not judged: …".
    pub detail: String,
}

impl Reading {
    fn not_judged(why: impl std::fmt::Display) -> Reading {
        Reading {
            value: None,
            detail: format!("not judged: {why}"),
        }
    }
}

/// Reads `metric` (a selector, `name` or `name{label="v",…}`) from the
/// Prometheus text endpoint at `url`. Never fails: see [`Reading`].
pub async fn read(client: &HttpClient, url: &str, metric: &str) -> Reading {
    let selector = match Selector::parse(metric) {
        Ok(selector) => selector,
        Err(error) => return Reading::not_judged(error),
    };
    let text = match tokio::time::timeout(READ_TIMEOUT, fetch(client, url)).await {
        Ok(Ok(text)) => text,
        Ok(Err(error)) => return Reading::not_judged(error),
        Err(_) => {
            return Reading::not_judged(format!(
                "{url} did not answer within {}s",
                READ_TIMEOUT.as_secs()
            ))
        }
    };
    let lines = text.lines().map(|line| Ok(line.to_owned()));
    let scrape = match Scrape::parse(lines) {
        Ok(scrape) => scrape,
        Err(error) => return Reading::not_judged(format!("{url}: unreadable metrics: {error}")),
    };
    let samples = flatten(&scrape);
    if samples.is_empty() {
        return Reading::not_judged(format!("{url} holds no Prometheus samples"));
    }
    match samples.iter().find(|sample| selector.matches(sample)) {
        Some(sample) => Reading {
            value: Some(sample.value),
            detail: format!("{metric} = {} at {url}", sample.value),
        },
        None => Reading::not_judged(format!("no sample {metric} at {url}")),
    }
}

/// Why an endpoint gave no text.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("invalid url {0}")]
    Url(String),
    #[error("{url} is unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{url} answered {status}")]
    Status {
        url: String,
        status: http::StatusCode,
    },
    #[error("{url}: body unreadable or over {MAX_BODY} bytes")]
    Body { url: String },
}

/// GETs `url` and returns its body as text (lossy UTF-8).
async fn fetch(client: &HttpClient, url: &str) -> Result<String, FetchError> {
    let uri: Uri = url.parse().map_err(|_| FetchError::Url(url.to_owned()))?;
    let request = Request::builder()
        .method(Method::GET)
        .uri(uri)
        .header(
            header::ACCEPT,
            "text/plain;version=0.0.4;q=0.9, application/openmetrics-text;q=0.5, */*;q=0.1",
        )
        .body(UpstreamBody::bytes(Bytes::new()))
        .map_err(|_| FetchError::Url(url.to_owned()))?;
    let response = client
        .request(request)
        .await
        .map_err(|error| FetchError::Unreachable {
            url: url.to_owned(),
            reason: error_chain(&error),
        })?;
    let status = response.status();
    if !status.is_success() {
        return Err(FetchError::Status {
            url: url.to_owned(),
            status,
        });
    }
    let body = Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|_| FetchError::Body {
            url: url.to_owned(),
        })?
        .to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// An error and its sources on one line ("client error (Connect): tcp
/// connect error: Connection refused").
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

// === impl Selector ===

/// A parsed `metric` setting: a sample name and the labels it must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    pub name: String,
    /// Label name and unescaped value, as written.
    pub labels: Vec<(String, String)>,
}

/// Why a `metric` setting is not a selector.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("metric {0:?}: a sample name is [a-zA-Z_:][a-zA-Z0-9_:]*")]
    Name(String),
    #[error("metric {0:?}: labels are written {{name=\"value\",…}}")]
    Labels(String),
}

impl Selector {
    /// Parses `name` or `name{label="v",other="w"}` (only `=`; values use
    /// the exposition's escapes `\\`, `\"` and `\n`).
    pub fn parse(text: &str) -> Result<Selector, SelectorError> {
        let text_err = || SelectorError::Labels(text.to_owned());
        let trimmed = text.trim();
        let (name, rest) = match trimmed.find('{') {
            Some(at) => (trimmed[..at].trim_end(), Some(&trimmed[at + 1..])),
            None => (trimmed, None),
        };
        if !is_name(name, true) {
            return Err(SelectorError::Name(text.to_owned()));
        }
        let mut labels = Vec::new();
        if let Some(rest) = rest {
            let mut chars = rest.chars().peekable();
            loop {
                skip_spaces(&mut chars);
                match chars.peek() {
                    Some('}') => {
                        chars.next();
                        break;
                    }
                    None => return Err(text_err()),
                    Some(_) => {}
                }
                let mut label = String::new();
                while let Some(&c) = chars.peek() {
                    if c == '=' || c.is_whitespace() {
                        break;
                    }
                    label.push(c);
                    chars.next();
                }
                skip_spaces(&mut chars);
                if chars.next() != Some('=') || !is_name(&label, false) {
                    return Err(text_err());
                }
                skip_spaces(&mut chars);
                if chars.next() != Some('"') {
                    return Err(text_err());
                }
                let mut value = String::new();
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some('n') => value.push('\n'),
                            Some(c @ ('\\' | '"')) => value.push(c),
                            _ => return Err(text_err()),
                        },
                        Some(c) => value.push(c),
                        None => return Err(text_err()),
                    }
                }
                labels.push((label, value));
                skip_spaces(&mut chars);
                match chars.next() {
                    Some(',') => {}
                    Some('}') => break,
                    _ => return Err(text_err()),
                }
            }
            if chars.any(|c| !c.is_whitespace()) {
                return Err(text_err());
            }
        }
        Ok(Selector {
            name: name.to_owned(),
            labels,
        })
    }

    /// True when `sample` has this name and every label given here.
    fn matches(&self, sample: &FlatSample<'_>) -> bool {
        sample.name == self.name
            && self.labels.iter().all(|(name, wanted)| {
                sample
                    .labels
                    .iter()
                    .any(|(have_name, have)| have_name == name && same_value(name, have, wanted))
            })
    }
}

fn skip_spaces(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    while chars.next_if(|c| c.is_whitespace()).is_some() {}
}

/// A metric name (colons allowed) or a label name (no colons).
fn is_name(text: &str, metric: bool) -> bool {
    let ok_first = |c: char| c.is_ascii_alphabetic() || c == '_' || (metric && c == ':');
    let mut chars = text.chars();
    chars.next().is_some_and(ok_first) && chars.all(|c| ok_first(c) || c.is_ascii_digit())
}

/// Compares a label value as the parser kept it (still escaped, every
/// leading and trailing `"` stripped) with a selector's unescaped value.
/// `le` and `quantile` compare as numbers, so `le="0.1"` finds a bucket
/// written `0.10` or regrouped.
fn same_value(label: &str, have: &str, wanted: &str) -> bool {
    if matches!(label, "le" | "quantile") {
        if let (Ok(a), Ok(b)) = (parse_float(have), parse_float(wanted)) {
            return a == b;
        }
    }
    have == wanted || have == escape(wanted).trim_matches('"')
}

/// Go's float syntax, as the exposition format uses it (`+Inf`, `NaN`).
fn parse_float(text: &str) -> Result<f64, std::num::ParseFloatError> {
    match text.trim() {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        other => other.parse(),
    }
}

fn escape(value: &str) -> Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return Cow::Borrowed(value);
    }
    Cow::Owned(
        value
            .replace('\\', r"\\")
            .replace('"', r#"\""#)
            .replace('\n', r"\n"),
    )
}

// === flattening ===

/// One sample as it was on the wire.
#[derive(Debug)]
struct FlatSample<'a> {
    name: Cow<'a, str>,
    labels: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    value: f64,
}

/// The scrape's samples in exposition order, then its regrouped histogram
/// buckets and summary quantiles, ordered by name and labels (the parser
/// keeps those in a hash map, so their order on the wire is lost).
fn flatten(scrape: &Scrape) -> Vec<FlatSample<'_>> {
    let mut flat = Vec::with_capacity(scrape.samples.len());
    let mut grouped = Vec::new();
    for sample in &scrape.samples {
        let labels = || {
            sample
                .labels
                .iter()
                .map(|(k, v)| (Cow::Borrowed(k.as_str()), Cow::Borrowed(v.as_str())))
                .collect::<Vec<_>>()
        };
        match &sample.value {
            Value::Counter(value) | Value::Gauge(value) | Value::Untyped(value) => {
                flat.push(FlatSample {
                    name: Cow::Borrowed(sample.metric.as_str()),
                    labels: labels(),
                    value: *value,
                });
            }
            Value::Histogram(buckets) => {
                grouped.push((sample.metric.as_str(), sample.labels.to_string(), {
                    buckets
                        .iter()
                        .map(|bucket| {
                            let mut labels = labels();
                            labels.push((
                                Cow::Borrowed("le"),
                                Cow::Owned(go_float(bucket.less_than)),
                            ));
                            FlatSample {
                                name: Cow::Owned(format!("{}_bucket", sample.metric)),
                                labels,
                                value: bucket.count,
                            }
                        })
                        .collect::<Vec<_>>()
                }));
            }
            Value::Summary(quantiles) => {
                grouped.push((sample.metric.as_str(), sample.labels.to_string(), {
                    quantiles
                        .iter()
                        .map(|quantile| {
                            let mut labels = labels();
                            labels.push((
                                Cow::Borrowed("quantile"),
                                Cow::Owned(go_float(quantile.quantile)),
                            ));
                            FlatSample {
                                name: Cow::Borrowed(sample.metric.as_str()),
                                labels,
                                value: quantile.count,
                            }
                        })
                        .collect::<Vec<_>>()
                }));
            }
        }
    }
    grouped.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    flat.extend(grouped.into_iter().flat_map(|(_, _, samples)| samples));
    flat
}

/// A float written the way the exposition format writes it.
fn go_float(value: f64) -> String {
    if value == f64::INFINITY {
        "+Inf".to_owned()
    } else if value == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::net::SocketAddr;

    use axum::http::StatusCode;
    use axum::routing::get;
    use axum::Router;

    use super::*;

    const METRICS: &str = r#"# HELP http_requests_total Requests served.
# TYPE http_requests_total counter
http_requests_total{method="get",code="200"} 1027 1395066363000
http_requests_total{method="post",code="200"} 3
http_requests_total{method="post",code="500"} 7
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 4.2e+08
odd_label{path="say \"hi\""} 5
# TYPE latency_seconds histogram
latency_seconds_bucket{route="a",le="0.1"} 10
latency_seconds_bucket{route="a",le="+Inf"} 12
latency_seconds_sum{route="a"} 1.5
latency_seconds_count{route="a"} 12
# TYPE rpc_seconds summary
rpc_seconds{quantile="0.99"} 0.25
rpc_seconds_sum 9
rpc_seconds_count 40
# TYPE om counter
om_total 42
# EOF
"#;

    /// Serves `app` on 127.0.0.1:0 and returns its address.
    async fn serve(app: Router) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener
            .local_addr()
            .expect("bound listener has an address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    async fn metrics_server() -> String {
        let app = Router::new()
            .route("/metrics", get(|| async { METRICS }))
            .route(
                "/broken",
                get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, METRICS) }),
            )
            .route("/html", get(|| async { "<html><body>hello</body></html>" }))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    Ok::<_, Infallible>(METRICS)
                }),
            );
        format!("http://{}", serve(app).await)
    }

    #[tokio::test]
    async fn reads_samples_by_name_and_labels() {
        let base = metrics_server().await;
        let url = format!("{base}/metrics");
        let client = http_client();
        let cases = [
            ("process_resident_memory_bytes", 4.2e8),
            // First match wins: no labels given, the first sample.
            ("http_requests_total", 1027.0),
            (r#"http_requests_total{method="post"}"#, 3.0),
            (
                r#"http_requests_total{ code = "500" , method="post", }"#,
                7.0,
            ),
            (r#"odd_label{path="say \"hi\""}"#, 5.0),
            (r#"latency_seconds_bucket{le="0.1"}"#, 10.0),
            (r#"latency_seconds_bucket{route="a",le="+Inf"}"#, 12.0),
            (r#"latency_seconds_count{route="a"}"#, 12.0),
            (r#"rpc_seconds{quantile="0.99"}"#, 0.25),
            ("om_total", 42.0),
        ];
        for (metric, want) in cases {
            let reading = read(&client, &url, metric).await;
            assert_eq!(reading.value, Some(want), "{metric}: {}", reading.detail);
        }
    }

    #[tokio::test]
    async fn absent_or_unreadable_is_not_judged() {
        let base = metrics_server().await;
        let client = http_client();
        let url = format!("{base}/metrics");
        for metric in [
            "nope",
            r#"http_requests_total{method="put"}"#,
            r#"http_requests_total{other="x"}"#,
        ] {
            let reading = read(&client, &url, metric).await;
            assert_eq!(reading.value, None, "{metric}");
            assert!(
                reading.detail.starts_with("not judged: no sample"),
                "{}",
                reading.detail
            );
        }

        let reading = read(&client, &format!("{base}/broken"), "om_total").await;
        assert_eq!(reading.value, None);
        assert!(reading.detail.contains("500"), "{}", reading.detail);

        let reading = read(&client, &format!("{base}/html"), "om_total").await;
        assert_eq!(reading.value, None);
        assert!(
            reading.detail.contains("no Prometheus samples"),
            "{}",
            reading.detail
        );

        let reading = read(&client, &url, "bad{selector").await;
        assert_eq!(reading.value, None);
        assert!(
            reading.detail.starts_with("not judged: metric"),
            "{}",
            reading.detail
        );
    }

    #[tokio::test]
    async fn unreachable_endpoint_is_not_judged() {
        // Bind then drop: nothing listens on the port any more.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener
            .local_addr()
            .expect("bound listener has an address");
        drop(listener);
        let reading = read(&http_client(), &format!("http://{addr}/metrics"), "up").await;
        assert_eq!(reading.value, None);
        assert!(reading.detail.contains("unreachable"), "{}", reading.detail);
    }

    #[tokio::test]
    async fn slow_endpoint_is_not_judged() {
        let base = metrics_server().await;
        let reading = read(&http_client(), &format!("{base}/slow"), "om_total").await;
        assert_eq!(reading.value, None);
        assert!(reading.detail.contains("within 2s"), "{}", reading.detail);
    }

    #[test]
    fn selectors() {
        let ok = |text: &str, name: &str, labels: &[(&str, &str)]| {
            let selector = Selector::parse(text).expect(text);
            assert_eq!(selector.name, name, "{text}");
            let labels: Vec<_> = labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            assert_eq!(selector.labels, labels, "{text}");
        };
        ok("up", "up", &[]);
        ok("a:b_c{}", "a:b_c", &[]);
        ok(
            r#"x{a="1",b="two words"}"#,
            "x",
            &[("a", "1"), ("b", "two words")],
        );
        ok(r#" x { a = "q\"\\\n" , } "#, "x", &[("a", "q\"\\\n")]);
        for bad in [
            "",
            "9up",
            "up{",
            r#"up{a="1""#,
            r#"up{a!="1"}"#,
            r#"up{a=~"1"}"#,
            r#"up{a=1}"#,
            r#"up{a="1"} extra"#,
            r#"up{a:b="1"}"#,
        ] {
            assert!(Selector::parse(bad).is_err(), "{bad:?} parsed");
        }
    }
}
