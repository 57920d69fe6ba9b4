//! Routing: which route a request belongs to, and which side serves it.
//!
//! A [`RoutingTable`] is compiled from the configuration off the request
//! path and published through an `ArcSwap` (see `app`); lookups never
//! allocate. Precedence follows SPEC §2: an exact path beats any prefix, a
//! longer prefix beats a shorter one, and prefixes beat regexes, which are
//! tried in file order. Method and header conditions must also hold; when
//! they do not, the next most specific candidate is tried.

pub mod split;

use std::collections::HashMap;

use http::request::Parts;

use crate::config::{Config, PathMatch, RouteConfig};

/// Routes compiled for lookup. Indices refer to `Config::routes`.
#[derive(Debug)]
pub struct RoutingTable {
    /// Exact paths → routes with that path, in file order.
    exact: HashMap<String, Vec<usize>>,
    /// Prefix routes grouped by their normalised prefix (no trailing `/`),
    /// looked up by walking the request path's segment boundaries from the
    /// longest to the shortest, so the cost depends on the path's depth and
    /// not on the number of routes.
    prefixes: HashMap<String, Vec<usize>>,
    /// Regex routes in file order.
    regexes: Vec<usize>,
    routes: Vec<RouteConfig>,
}

impl RoutingTable {
    pub fn new(config: &Config) -> Self {
        let mut exact: HashMap<String, Vec<usize>> = HashMap::new();
        let mut prefixes: HashMap<String, Vec<usize>> = HashMap::new();
        let mut regexes = Vec::new();
        for (i, route) in config.routes.iter().enumerate() {
            match &route.path {
                PathMatch::Exact(p) => exact.entry(p.clone()).or_default().push(i),
                PathMatch::Prefix(p) => prefixes
                    .entry(normalise_prefix(p).to_string())
                    .or_default()
                    .push(i),
                PathMatch::Regex(_) => regexes.push(i),
            }
        }
        RoutingTable {
            exact,
            prefixes,
            regexes,
            routes: config.routes.clone(),
        }
    }

    /// The index of the most specific route matching the request, if any.
    pub fn lookup(&self, parts: &Parts) -> Option<usize> {
        let path = parts.uri.path();
        let accepts = |i: &&usize| conditions_hold(&self.routes[**i], parts);
        if let Some(found) = self.exact.get(path).and_then(|c| c.iter().find(accepts)) {
            return Some(*found);
        }
        if !self.prefixes.is_empty() {
            // Try the whole path, then each shorter segment boundary.
            let trimmed = path.strip_suffix('/').unwrap_or(path);
            let mut end = trimmed.len();
            loop {
                let candidate = &trimmed[..end];
                if let Some(found) = self
                    .prefixes
                    .get(candidate)
                    .and_then(|c| c.iter().find(accepts))
                {
                    return Some(*found);
                }
                match candidate.rfind('/') {
                    Some(slash) => end = slash,
                    None => break,
                }
                if end == 0 {
                    // The root prefix "/" is stored as "".
                    if let Some(found) = self.prefixes.get("").and_then(|c| c.iter().find(accepts))
                    {
                        return Some(*found);
                    }
                    break;
                }
            }
        }
        self.regexes
            .iter()
            .find(|i| {
                let route = &self.routes[**i];
                matches!(&route.path, PathMatch::Regex(re) if re.is_match(path))
                    && conditions_hold(route, parts)
            })
            .copied()
    }
}

/// `/api/v1/` and `/api/v1` are the same prefix; `/` is the empty one.
fn normalise_prefix(prefix: &str) -> &str {
    prefix.strip_suffix('/').unwrap_or(prefix)
}

fn conditions_hold(route: &RouteConfig, parts: &Parts) -> bool {
    (route.methods.is_empty() || route.methods.contains(&parts.method))
        && route.headers.iter().all(|(name, value)| {
            parts
                .headers
                .get_all(name)
                .iter()
                .any(|v| v.as_bytes() == value.as_bytes())
        })
}
