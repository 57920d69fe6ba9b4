//! Header hygiene between client and upstream (SPEC §8).
//!
//! Hop-by-hop headers, and every header named in `Connection`, concern one
//! connection only and are removed both ways; `x-strangler-*` headers are
//! ours and never reach an upstream; `x-forwarded-*` tell the upstream who
//! the client was.

use http::header::{HeaderName, HeaderValue, CONNECTION, HOST, TE, TRANSFER_ENCODING, UPGRADE};
use http::HeaderMap;

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_STRANGLER_SIDE: HeaderName = HeaderName::from_static("x-strangler-side");
pub const X_STRANGLER_TOKEN: HeaderName = HeaderName::from_static("x-strangler-token");
pub const X_STRANGLER_SHADOW: HeaderName = HeaderName::from_static("x-strangler-shadow");
/// Looked up on every answer: a constant name is hashed without being parsed.
pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const TRAILER: HeaderName = HeaderName::from_static("trailer");

/// RFC 9110 §7.6.1 hop-by-hop headers, plus the non-standard `proxy-connection`.
/// `te` is handled apart: `te: trailers` is kept (gRPC needs it).
/// `CONNECTION` must stay first (see `remove_hop_by_hop`).
const HOP_BY_HOP: [HeaderName; 7] = [
    CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    http::header::PROXY_AUTHENTICATE,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
];

/// Removes hop-by-hop headers and those named in `Connection`.
/// With `keep_upgrade`, `Connection: upgrade` and `Upgrade` survive, for a
/// WebSocket handshake that is passed through.
pub fn remove_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // One pass over the names first: most messages carry none of them, or
    // only `Connection: keep-alive`, and removing an absent name still costs
    // a hash and a probe.
    let mut present = [false; 7];
    let mut te = false;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present[i] = true;
        } else if name == TE {
            te = true;
        }
    }
    if !keep_upgrade && !te && !present.contains(&true) {
        return;
    }
    if present[0] {
        // Usually empty: collecting nothing allocates nothing.
        let named = named_by_connection(
            headers
                .get_all(CONNECTION)
                .iter()
                .map(HeaderValue::as_bytes),
            keep_upgrade,
        );
        for name in named {
            headers.remove(&name);
        }
    }
    for (name, present) in HOP_BY_HOP.iter().zip(present) {
        if !present || (keep_upgrade && (name == CONNECTION || name == UPGRADE)) {
            continue;
        }
        headers.remove(name);
    }
    if keep_upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    }
    if te
        && !headers
            .get(TE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"))
    {
        headers.remove(TE);
    }
}

/// Whether `name` is hop-by-hop (RFC 9110 §7.6.1; `te` aside, see
/// `remove_hop_by_hop`): a message parsed off the wire can leave it out.
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name)
}

/// The headers that `Connection` header values name for removal: every
/// token but the `close` and `keep-alive` options (and `upgrade` when an
/// upgrade is passed through). Never `Host` or `TE`, which stay end-to-end
/// whatever `Connection` says.
pub fn named_by_connection<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
    keep_upgrade: bool,
) -> Vec<HeaderName> {
    let names_headers = |token: &[u8]| {
        let option = token.is_empty()
            || token.eq_ignore_ascii_case(b"close")
            || token.eq_ignore_ascii_case(b"keep-alive")
            || (keep_upgrade && token.eq_ignore_ascii_case(b"upgrade"));
        !option
    };
    values
        .into_iter()
        .flat_map(|v| v.split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|token| names_headers(token))
        .filter_map(|token| HeaderName::from_bytes(token).ok())
        .filter(|name| *name != HOST && *name != TE)
        .collect()
}

/// Removes every `x-strangler-*` header (after the override was read).
pub fn remove_strangler_headers(headers: &mut HeaderMap) {
    let ours: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("x-strangler-"))
        .cloned()
        .collect();
    for name in ours {
        headers.remove(name);
    }
}

/// Sets `x-forwarded-for/-proto/-host`. An incoming `x-forwarded-for` is kept
/// (and appended to) only when the peer is a trusted proxy.
/// `peer` is the peer's canonical IP address as a header value.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    peer: &HeaderValue,
    peer_trusted: bool,
    scheme: &'static str,
    original_host: Option<HeaderValue>,
) {
    let forwarded_for = match headers.get(X_FORWARDED_FOR).filter(|_| peer_trusted) {
        Some(existing) => {
            let mut joined = Vec::with_capacity(existing.len() + peer.len() + 2);
            joined.extend_from_slice(existing.as_bytes());
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(peer.as_bytes());
            HeaderValue::from_bytes(&joined).ok()
        }
        None => Some(peer.clone()),
    };
    if let Some(value) = forwarded_for {
        headers.insert(X_FORWARDED_FOR, value);
    }
    if !(peer_trusted && headers.contains_key(X_FORWARDED_PROTO)) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(scheme));
    }
    if !(peer_trusted && headers.contains_key(X_FORWARDED_HOST)) {
        match original_host {
            Some(host) => {
                headers.insert(X_FORWARDED_HOST, host);
            }
            None => {
                headers.remove(X_FORWARDED_HOST);
            }
        }
    }
}

/// Whether the client asks for a server-sent event stream (never mirrored,
/// left out of latency gates).
pub fn accepts_event_stream(headers: &HeaderMap) -> bool {
    headers.get_all(http::header::ACCEPT).iter().any(|v| {
        v.as_bytes()
            .windows(17)
            .any(|w| w.eq_ignore_ascii_case(b"text/event-stream"))
    })
}

/// Whether the request asks to switch protocols (WebSocket, h2c upgrade…).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(UPGRADE)
        && headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_hop_by_hop_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, "keep-alive, x-private".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("x-private", "1".parse().unwrap());
        h.insert("te", "gzip".parse().unwrap());
        h.insert("x-end-to-end", "1".parse().unwrap());
        remove_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-end-to-end"));
    }

    #[test]
    fn keeps_te_trailers_for_grpc() {
        let mut h = HeaderMap::new();
        h.insert("te", "trailers".parse().unwrap());
        remove_hop_by_hop(&mut h, false);
        assert_eq!(h.get("te").unwrap(), "trailers");
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_peers() {
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, "6.6.6.6".parse().unwrap());
        let peer = HeaderValue::from_static("10.0.0.1");
        set_forwarded(&mut h, &peer, false, "http", None);
        assert_eq!(h.get(X_FORWARDED_FOR).unwrap(), "10.0.0.1");
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, "1.2.3.4".parse().unwrap());
        set_forwarded(
            &mut h,
            &peer,
            true,
            "https",
            Some("a.example".parse().unwrap()),
        );
        assert_eq!(h.get(X_FORWARDED_FOR).unwrap(), "1.2.3.4, 10.0.0.1");
        assert_eq!(h.get(X_FORWARDED_PROTO).unwrap(), "https");
        assert_eq!(h.get(X_FORWARDED_HOST).unwrap(), "a.example");
    }
}
