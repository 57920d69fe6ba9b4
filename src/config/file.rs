//! The configuration file's raw shape, as serde reads it.
//!
//! These structs mirror SPEC §2 key for key and refuse unknown keys
//! (`deny_unknown_fields`), so a typo is an error rather than a silently
//! ignored setting. They hold values as written (durations and sizes as text,
//! required keys as `Option`): checking ranges, units and cross-references is
//! left to `validate.rs`, which can report every problem at once, whereas
//! serde stops at the first.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    #[serde(default)]
    pub server: FileServer,
    #[serde(default)]
    pub admin: FileAdmin,
    #[serde(default)]
    pub store: FileStore,
    #[serde(default)]
    pub upstreams: Ordered<FileUpstream>,
    pub defaults: Option<FileDefaults>,
    #[serde(default)]
    pub routes: Vec<FileRoute>,
    #[serde(default)]
    pub notify: FileNotify,
}

/// `[server]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileServer {
    pub listen: Option<String>,
    pub tls: Option<FileTls>,
    pub max_body_buffer: Option<RawSize>,
    pub shadow_memory: Option<RawSize>,
    pub shutdown_grace: Option<RawDuration>,
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    pub override_token: Option<String>,
}

/// `server.tls = { cert, key }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileTls {
    pub cert: String,
    pub key: String,
}

/// `[admin]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileAdmin {
    pub listen: Option<String>,
    pub token: Option<String>,
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
}

/// `[store]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileStore {
    pub url: Option<String>,
    pub max_samples_per_endpoint: Option<i64>,
    #[serde(default)]
    pub redact_headers: Vec<String>,
    #[serde(default)]
    pub redact_json: Vec<String>,
    #[serde(default)]
    pub redact_params: Vec<String>,
    pub retention: Option<RawDuration>,
    pub max_bytes: Option<RawSize>,
}

/// `[upstreams.NAME]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileUpstream {
    pub url: Option<String>,
    pub connect_timeout: Option<RawDuration>,
    pub timeout: Option<RawDuration>,
    pub idle_timeout: Option<RawDuration>,
    pub host: Option<String>,
    pub protocol: Option<String>,
    pub ca: Option<String>,
    pub health: Option<String>,
    pub health_interval: Option<RawDuration>,
}

/// `[defaults]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileDefaults {
    pub upstream: Option<String>,
}

/// One `[[routes]]` entry.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileRoute {
    pub name: Option<String>,
    pub path: Option<String>,
    pub path_prefix: Option<String>,
    pub path_regex: Option<String>,
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub headers: Ordered<String>,
    pub legacy: Option<String>,
    pub candidate: Option<String>,
    pub stage: Option<String>,
    pub weight: Option<f64>,
    pub sticky: Option<String>,
    pub sticky_missing: Option<String>,
    pub sticky_salt: Option<String>,
    #[serde(default)]
    pub fallback_statuses: Vec<i64>,
    #[serde(default)]
    pub endpoints: Vec<String>,
    pub max_endpoints: Option<i64>,
    #[serde(default)]
    pub shadow: FileShadow,
    #[serde(default)]
    pub compare: FileCompare,
    #[serde(default)]
    pub rollout: FileRollout,
}

/// `[routes.shadow]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileShadow {
    pub sample: Option<f64>,
    pub methods: Option<Vec<String>>,
    pub allow_writes: Option<bool>,
    pub upstream: Option<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    pub secondary: Option<String>,
    pub noise_sample: Option<f64>,
    pub timeout: Option<RawDuration>,
    pub max_in_flight: Option<i64>,
}

/// `[routes.compare]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileCompare {
    pub ignore_headers: Option<Vec<String>>,
    #[serde(default)]
    pub ignore_json: Vec<String>,
    #[serde(default)]
    pub unordered_arrays: Vec<String>,
    pub float_tolerance: Option<f64>,
}

/// `[routes.rollout]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileRollout {
    pub auto: Option<bool>,
    pub steps: Option<Vec<f64>>,
    pub interval: Option<RawDuration>,
    pub warmup: Option<RawDuration>,
    pub min_requests: Option<i64>,
    pub min_match_rate: Option<f64>,
    pub max_error_rate: Option<f64>,
    pub max_error_rate_increase: Option<f64>,
    pub max_4xx_rate_increase: Option<f64>,
    pub max_p99_ratio: Option<f64>,
    pub p99_slack: Option<RawDuration>,
    pub rollback_window: Option<RawDuration>,
    pub failure_limit: Option<i64>,
    pub bake: Option<RawDuration>,
    pub max_p99: Option<RawDuration>,
    #[serde(default)]
    pub criteria: Vec<FileCriterion>,
}

/// One `[[routes.rollout.criteria]]` entry.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileCriterion {
    pub name: Option<String>,
    pub url: Option<String>,
    pub metric: Option<String>,
    pub max: Option<f64>,
    pub min: Option<f64>,
}

/// `[notify]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileNotify {
    #[serde(default)]
    pub webhooks: Vec<String>,
}

/// A duration as written (`"5s"`); only strings are accepted, with an
/// expectation message that says what a duration looks like.
#[derive(Debug, Clone)]
pub(super) struct RawDuration(pub String);

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"250ms\", \"5s\", \"2m\" or \"7d\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawDuration, E> {
                Ok(RawDuration(v.to_owned()))
            }
        }
        d.deserialize_str(V)
    }
}

/// A byte size as written: `"64KiB"` or a plain number of bytes.
#[derive(Debug, Clone)]
pub(super) enum RawSize {
    Bytes(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"64KiB\" or \"1MiB\", or a number of bytes")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawSize, E> {
                Ok(RawSize::Bytes(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawSize, E> {
                i64::try_from(v)
                    .map(RawSize::Bytes)
                    .map_err(|_| E::custom(format!("{v} bytes is too large")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawSize, E> {
                Ok(RawSize::Text(v.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A TOML table read as `(key, value)` pairs in file order (upstream names,
/// header conditions), where a `BTreeMap` would lose the order.
#[derive(Debug)]
pub(super) struct Ordered<V>(pub Vec<(String, V)>);

impl<V> Default for Ordered<V> {
    fn default() -> Self {
        Ordered(Vec::new())
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Ordered<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MapVisitor<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for MapVisitor<V> {
            type Value = Ordered<V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered<V>, A::Error> {
                let mut entries = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, V>()? {
                    entries.push((k, v));
                }
                Ok(Ordered(entries))
            }
        }
        d.deserialize_map(MapVisitor(PhantomData))
    }
}
