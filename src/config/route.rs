//! Validation of `[[routes]]`: matching, upstream references, the sticky
//! split, and the `shadow`, `compare` and `rollout` sub-tables.
//!
//! Split from `validate.rs` only to keep files short; it uses the same
//! [`Checker`], so every problem is collected rather than the first one.

use std::collections::HashMap;
use std::time::Duration;

use http::Method;

use super::file::{FileCompare, FileCriterion, FileRollout, FileRoute, FileShadow};
use super::locate::KeyPath;
use super::model::*;
use super::validate::Checker;

/// Validates every route, in file order.
pub(super) fn routes(c: &mut Checker<'_>, p: &KeyPath, raw: &[FileRoute]) -> Vec<RouteConfig> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    raw.iter()
        .enumerate()
        .map(|(i, r)| route(c, &p.index(i), r, i, &mut seen))
        .collect()
}

/// `[a-z0-9_-]+`
fn valid_route_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn route(
    c: &mut Checker<'_>,
    p: &KeyPath,
    r: &FileRoute,
    index: usize,
    seen: &mut HashMap<String, usize>,
) -> RouteConfig {
    let name = c
        .required(p, "name", &r.name)
        .unwrap_or_default()
        .to_owned();
    if r.name.is_some() {
        if !valid_route_name(&name) {
            c.error(
                p.key("name"),
                format!("`{name}` is not a valid route name (use lowercase letters, digits, `_` and `-`)"),
            );
        } else if name == "_default" {
            c.error(
                p.key("name"),
                "`_default` is reserved for requests that match no route",
            );
        } else if let Some(first) = seen.get(&name) {
            c.error(
                p.key("name"),
                format!("duplicate route name `{name}` (also routes[{first}])"),
            );
        } else {
            seen.insert(name.clone(), index);
        }
    }

    let path = path_match(c, p, r);
    let methods = c.methods(p.key("methods"), &r.methods);

    let mut headers = Vec::new();
    for (key, value) in &r.headers.0 {
        match http::HeaderName::from_bytes(key.as_bytes()) {
            Ok(h) => headers.push((h, value.clone())),
            Err(_) => c.error(
                p.key("headers").key(key),
                format!("`{key}` is not a header name"),
            ),
        }
        if http::HeaderValue::from_str(value).is_err() {
            c.error(
                p.key("headers").key(key),
                format!("{value:?} is not a valid header value"),
            );
        }
    }

    let legacy = upstream_key(c, p, "legacy", &r.legacy);
    let candidate = upstream_key(c, p, "candidate", &r.candidate);
    if !legacy.is_empty() && legacy == candidate {
        c.warn(
            p.key("candidate"),
            format!("legacy and candidate are the same upstream (`{legacy}`): every comparison will match"),
        );
    }

    let stage = match r.stage.as_deref() {
        None => Stage::Legacy,
        Some(s) => Stage::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .unwrap_or_else(|| {
                c.error(
                    p.key("stage"),
                    format!("`{s}` is not a stage (legacy, shadow, canary or candidate)"),
                );
                Stage::Legacy
            }),
    };

    let weight = match r.weight {
        None => 0.0,
        Some(w) if (0.0..=100.0).contains(&w) => w,
        Some(w) => {
            c.error(p.key("weight"), format!("{w} is not a percentage (0–100)"));
            0.0
        }
    };

    let sticky = match r.sticky.as_deref() {
        None => StickyKey::None,
        Some(s) => sticky_key(s).unwrap_or_else(|| {
            c.error(
                p.key("sticky"),
                format!("`{s}` is not a sticky key (\"header:NAME\", \"cookie:NAME\" or \"ip\")"),
            );
            StickyKey::None
        }),
    };
    let sticky_missing = match r.sticky_missing.as_deref() {
        None | Some("random") => StickyMissing::Random,
        Some("legacy") => StickyMissing::Legacy,
        Some(other) => {
            c.error(
                p.key("sticky_missing"),
                format!("`{other}` is not one of \"random\" or \"legacy\""),
            );
            StickyMissing::Random
        }
    };

    let mut fallback_statuses = Vec::new();
    for (i, &s) in r.fallback_statuses.iter().enumerate() {
        match u16::try_from(s) {
            Ok(code) if (100..=599).contains(&code) => fallback_statuses.push(code),
            _ => c.error(
                p.key("fallback_statuses").index(i),
                format!("{s} is not an HTTP status (100–599)"),
            ),
        }
    }

    RouteConfig {
        name,
        path,
        methods,
        headers,
        legacy,
        candidate,
        stage,
        weight,
        sticky,
        sticky_missing,
        sticky_salt: r.sticky_salt.clone().unwrap_or_default(),
        fallback_statuses,
        endpoints: c.url_paths(p.key("endpoints"), &r.endpoints),
        max_endpoints: c.count(p.key("max_endpoints"), r.max_endpoints, 200, 1),
        shadow: shadow(c, &p.key("shadow"), &r.shadow),
        compare: compare(c, &p.key("compare"), &r.compare),
        rollout: rollout(c, &p.key("rollout"), &r.rollout),
    }
}

/// A required reference to an upstream (`legacy`, `candidate`).
fn upstream_key(c: &mut Checker<'_>, p: &KeyPath, key: &str, raw: &Option<String>) -> String {
    let Some(name) = c.required(p, key, raw) else {
        return String::new();
    };
    c.upstream_ref(p.key(key), name);
    name.to_owned()
}

/// Exactly one of `path`, `path_prefix` or `path_regex`.
fn path_match(c: &mut Checker<'_>, p: &KeyPath, r: &FileRoute) -> PathMatch {
    let given: Vec<(&str, &str)> = [
        ("path", &r.path),
        ("path_prefix", &r.path_prefix),
        ("path_regex", &r.path_regex),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
    .collect();
    let placeholder = PathMatch::Exact("/".to_owned());
    let Some(&(kind, value)) = given.first() else {
        c.error(
            p.clone(),
            "needs one of `path`, `path_prefix` or `path_regex`",
        );
        return placeholder;
    };
    for (other, _) in &given[1..] {
        c.error(
            p.key(other),
            format!("`{kind}` and `{other}` are both set: a route matches on exactly one of path, path_prefix or path_regex"),
        );
    }
    match kind {
        "path" | "path_prefix" => {
            if !value.starts_with('/') {
                c.error(p.key(kind), format!("`{value}` must start with `/`"));
                return placeholder;
            }
            if kind == "path" {
                PathMatch::Exact(value.to_owned())
            } else {
                PathMatch::Prefix(value.to_owned())
            }
        }
        _ => match regex::Regex::new(value) {
            Ok(re) => PathMatch::Regex(re),
            Err(e) => {
                c.error(
                    p.key(kind),
                    format!("invalid regex `{value}`: {}", regex_reason(&e)),
                );
                placeholder
            }
        },
    }
}

/// The one-line reason of a regex error (its Display spans several lines).
fn regex_reason(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .map(str::to_owned)
        .unwrap_or_else(|| text.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// `header:NAME`, `cookie:NAME` or `ip`.
fn sticky_key(s: &str) -> Option<StickyKey> {
    if s == "ip" {
        return Some(StickyKey::Ip);
    }
    if let Some(name) = s.strip_prefix("header:") {
        return http::HeaderName::from_bytes(name.as_bytes())
            .ok()
            .map(StickyKey::Header);
    }
    if let Some(name) = s.strip_prefix("cookie:") {
        let token = |b: u8| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b);
        if !name.is_empty() && name.bytes().all(token) {
            return Some(StickyKey::Cookie(name.to_owned()));
        }
    }
    None
}

fn shadow(c: &mut Checker<'_>, p: &KeyPath, raw: &FileShadow) -> ShadowConfig {
    let methods = match &raw.methods {
        None => vec![Method::GET, Method::HEAD],
        Some(list) => c.methods(p.key("methods"), list),
    };
    let allow_writes = raw.allow_writes.unwrap_or(false);
    if !allow_writes {
        let unsafe_methods: Vec<&str> = methods
            .iter()
            .filter(|m| !m.is_safe())
            .map(Method::as_str)
            .collect();
        if !unsafe_methods.is_empty() {
            c.warn(
                p.key("methods"),
                format!(
                    "{} will not be mirrored unless shadow.allow_writes = true",
                    unsafe_methods.join(", ")
                ),
            );
        }
    }
    let mut reference = |key: &str, value: &Option<String>| {
        if let Some(name) = value {
            c.upstream_ref(p.key(key), name);
        }
        value.clone()
    };
    let upstream = reference("upstream", &raw.upstream);
    let secondary = reference("secondary", &raw.secondary);
    ShadowConfig {
        sample: c.fraction(p.key("sample"), raw.sample, 1.0),
        methods,
        allow_writes,
        upstream,
        exclude: c.url_paths(p.key("exclude"), &raw.exclude),
        secondary,
        noise_sample: c.fraction(p.key("noise_sample"), raw.noise_sample, 0.0),
        timeout: c.positive_duration(p.key("timeout"), &raw.timeout, Duration::from_secs(5)),
        max_in_flight: c.count(p.key("max_in_flight"), raw.max_in_flight, 1024, 1),
    }
}

fn compare(c: &mut Checker<'_>, p: &KeyPath, raw: &FileCompare) -> CompareConfig {
    let ignore_headers = match &raw.ignore_headers {
        None => ["date", "server", "x-request-id"]
            .map(str::to_owned)
            .to_vec(),
        Some(list) => c.header_names(p.key("ignore_headers"), list),
    };
    let float_tolerance = match raw.float_tolerance {
        None => 1e-9,
        Some(t) if t >= 0.0 && t.is_finite() => t,
        Some(t) => {
            c.error(
                p.key("float_tolerance"),
                format!("{t} is not a tolerance: it must be zero or more"),
            );
            1e-9
        }
    };
    CompareConfig {
        ignore_headers,
        ignore_json: c.json_paths(p.key("ignore_json"), &raw.ignore_json),
        unordered_arrays: c.json_paths(p.key("unordered_arrays"), &raw.unordered_arrays),
        float_tolerance,
    }
}

fn rollout(c: &mut Checker<'_>, p: &KeyPath, raw: &FileRollout) -> RolloutConfig {
    let steps = steps(c, &p.key("steps"), raw.steps.as_deref());
    let min_requests: u64 = c.count(p.key("min_requests"), raw.min_requests, 200, 0);
    let min_match_rate = c.fraction(p.key("min_match_rate"), raw.min_match_rate, 0.999);
    if min_match_rate < 1.0 {
        // Rule of three: with n requests and no failure, the 95% upper bound
        // on the failure rate is about 3/n.
        let needed = (3.0 / (1.0 - min_match_rate) - 1e-6).ceil();
        if (min_requests as f64) < needed {
            c.warn(
                p.key("min_requests"),
                format!(
                    "{min_requests} is too small to demonstrate min_match_rate {min_match_rate}: \
                     even with no mismatch it takes at least {needed} requests (rule of three)"
                ),
            );
        }
    }
    let max_p99_ratio = match raw.max_p99_ratio {
        None => 1.5,
        Some(r) if r >= 1.0 && r.is_finite() => r,
        Some(r) => {
            c.error(
                p.key("max_p99_ratio"),
                format!("{r} is less than 1: the ratio of the candidate's p99 to legacy's must be allowed at least 1"),
            );
            1.5
        }
    };
    let max_p99 = raw
        .max_p99
        .as_ref()
        .map(|_| c.positive_duration(p.key("max_p99"), &raw.max_p99, Duration::from_secs(1)));
    RolloutConfig {
        auto: raw.auto.unwrap_or(true),
        steps,
        interval: c.duration(p.key("interval"), &raw.interval, Duration::from_secs(60)),
        warmup: c.duration(p.key("warmup"), &raw.warmup, Duration::ZERO),
        min_requests,
        min_match_rate,
        max_error_rate: c.fraction(p.key("max_error_rate"), raw.max_error_rate, 0.01),
        max_error_rate_increase: c.fraction(
            p.key("max_error_rate_increase"),
            raw.max_error_rate_increase,
            0.005,
        ),
        max_4xx_rate_increase: raw
            .max_4xx_rate_increase
            .map(|v| c.fraction(p.key("max_4xx_rate_increase"), Some(v), 0.0)),
        max_p99_ratio,
        p99_slack: c.duration(p.key("p99_slack"), &raw.p99_slack, Duration::from_millis(5)),
        rollback_window: c.positive_duration(
            p.key("rollback_window"),
            &raw.rollback_window,
            Duration::from_secs(30),
        ),
        failure_limit: c.count(p.key("failure_limit"), raw.failure_limit, 1, 1),
        bake: c.duration(p.key("bake"), &raw.bake, Duration::from_secs(7 * 86_400)),
        max_p99,
        criteria: criteria(c, &p.key("criteria"), &raw.criteria),
    }
}

/// Non-empty, strictly increasing, each in (0, 100].
fn steps(c: &mut Checker<'_>, p: &KeyPath, raw: Option<&[f64]>) -> Vec<f64> {
    let default = vec![1.0, 10.0, 50.0, 100.0];
    let Some(list) = raw else { return default };
    if list.is_empty() {
        c.error(
            p.clone(),
            "must list at least one step (e.g. [1, 10, 50, 100])",
        );
        return default;
    }
    let before = c.errors.len();
    for (i, &s) in list.iter().enumerate() {
        if !(s > 0.0 && s <= 100.0) {
            c.error(
                p.index(i),
                format!("step {s} is not a percentage in (0, 100]"),
            );
        }
    }
    for pair in list.windows(2) {
        if pair[1] <= pair[0] {
            c.error(
                p.clone(),
                format!(
                    "steps must be strictly increasing: {} comes after {}",
                    pair[1], pair[0]
                ),
            );
            break;
        }
    }
    if c.errors.len() > before {
        return default;
    }
    list.to_vec()
}

/// `[[routes.rollout.criteria]]`: unique names, an http(s) url, a metric,
/// and exactly one of `max` or `min`.
fn criteria(c: &mut Checker<'_>, p: &KeyPath, raw: &[FileCriterion]) -> Vec<CriterionConfig> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut out = Vec::new();
    for (i, cr) in raw.iter().enumerate() {
        let cp = p.index(i);
        let name = c.required(&cp, "name", &cr.name).unwrap_or_default();
        if cr.name.is_some() {
            if name.is_empty() {
                c.error(cp.key("name"), "must not be empty");
            } else if let Some(first) = seen.get(name) {
                c.error(
                    cp.key("name"),
                    format!("duplicate criterion name `{name}` (also criteria[{first}])"),
                );
            } else {
                seen.insert(name, i);
            }
        }
        if let Some(url) = c.required(&cp, "url", &cr.url) {
            c.http_url(cp.key("url"), url);
        }
        let metric = c.required(&cp, "metric", &cr.metric).unwrap_or_default();
        if cr.metric.is_some() && !valid_metric(metric) {
            c.error(
                cp.key("metric"),
                format!("`{metric}` is not a sample name (e.g. 'process_resident_memory_bytes' or 'up{{job=\"api\"}}')"),
            );
        }
        match (cr.max, cr.min) {
            (Some(_), Some(_)) => c.error(cp.key("min"), "set one of `max` or `min`, not both"),
            (None, None) => c.error(cp.clone(), "needs a bound: `max = …` or `min = …`"),
            _ => {}
        }
        out.push(CriterionConfig {
            name: name.to_owned(),
            url: cr.url.clone().unwrap_or_default(),
            metric: metric.trim().to_owned(),
            max: cr.max,
            min: cr.min,
        });
    }
    out
}

/// A Prometheus sample name, optionally followed by `{label="v",…}`.
fn valid_metric(metric: &str) -> bool {
    let metric = metric.trim();
    let (name, labels) = match metric.find('{') {
        Some(i) => (&metric[..i], Some(&metric[i..])),
        None => (metric, None),
    };
    let mut chars = name.chars();
    let name_ok = matches!(chars.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_' || ch == ':')
        && chars.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':');
    name_ok && labels.is_none_or(|l| l.ends_with('}'))
}
