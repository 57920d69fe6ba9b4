//! The weighted sticky split of SPEC §3.
//!
//! A request goes to the candidate iff
//! `xxh3_64(sticky_salt ‖ 0x00 ‖ key) mod 10000 < weight × 100`.
//! The bucket of a key never changes, so raising the weight only moves
//! cohorts from legacy to the candidate, and every instance agrees.

use std::net::IpAddr;

use http::HeaderMap;
use ipnet::IpNet;
use xxhash_rust::xxh3::Xxh3;

use crate::config::StickyKey;

/// Number of cohorts the key space is cut into.
pub const BUCKETS: u64 = 10_000;

/// The cohort of a sticky key under a salt: `0..BUCKETS`.
pub fn bucket(salt: &str, key: &[u8]) -> u64 {
    let mut hasher = Xxh3::new();
    hasher.update(salt.as_bytes());
    hasher.update(&[0]);
    hasher.update(key);
    hasher.digest() % BUCKETS
}

/// Whether a bucket falls in the candidate's share at `weight` percent.
pub fn bucket_is_candidate(bucket: u64, weight: f64) -> bool {
    // weight × 100 may be fractional (weights allow decimals): compare in f64.
    (bucket as f64) < weight * 100.0
}

/// Extracts the sticky key of a request, borrowing from it where possible.
/// Returns `None` when the request carries no key.
pub fn sticky_key<'a>(
    key: &StickyKey,
    headers: &'a HeaderMap,
    client_ip: IpAddr,
    scratch: &'a mut [u8; 39],
) -> Option<&'a [u8]> {
    match key {
        StickyKey::None => None,
        StickyKey::Header(name) => headers.get(name).map(|v| v.as_bytes()),
        StickyKey::Cookie(name) => cookie(headers, name),
        StickyKey::Ip => {
            use std::io::Write;
            let mut cursor = std::io::Cursor::new(&mut scratch[..]);
            // An IPv6 address is at most 39 characters, so this always fits.
            write!(cursor, "{client_ip}").ok()?;
            let len = cursor.position() as usize;
            Some(&scratch[..len])
        }
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii_start();
            let (k, v) = pair.split_at(pair.iter().position(|b| *b == b'=')?);
            (k.trim_ascii() == name.as_bytes()).then(|| v[1..].trim_ascii())
        })
}

/// The client address per SPEC §3: the peer, or, when the peer is a trusted
/// proxy, the nearest untrusted address in `x-forwarded-for`.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    if !is_trusted(peer, trusted) {
        return peer;
    }
    let mut nearest = peer;
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect::<Vec<_>>();
    for hop in hops.iter().rev() {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) => {
                nearest = ip;
                if !is_trusted(ip, trusted) {
                    return ip;
                }
            }
            Err(_) => return nearest,
        }
    }
    nearest
}

pub fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    let ip = ip.to_canonical();
    trusted.iter().any(|net| net.contains(&ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_is_xxh3_of_salt_nul_key() {
        let expected = xxhash_rust::xxh3::xxh3_64(b"salt\0user-1") % BUCKETS;
        assert_eq!(bucket("salt", b"user-1"), expected);
        assert_ne!(bucket("", b"user-1"), bucket("other", b"user-1"));
    }

    #[test]
    fn raising_the_weight_only_moves_cohorts_to_the_candidate() {
        for i in 0..2000 {
            let b = bucket("", format!("u{i}").as_bytes());
            let mut was = false;
            for w in [0.0, 0.5, 1.0, 10.0, 50.0, 99.99, 100.0] {
                let now = bucket_is_candidate(b, w);
                assert!(now || !was, "cohort {b} moved back at weight {w}");
                was = now;
            }
            assert!(!bucket_is_candidate(b, 0.0));
            assert!(bucket_is_candidate(b, 100.0));
        }
    }

    #[test]
    fn cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert("cookie", "a=1; uid=abc ; b=2".parse().unwrap());
        assert_eq!(cookie(&h, "uid"), Some(&b"abc"[..]));
        assert_eq!(cookie(&h, "x"), None);
    }

    #[test]
    fn client_ip_walks_trusted_hops() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "1.2.3.4, 10.0.0.7".parse().unwrap());
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(
            client_ip(peer, &h, &trusted),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        let untrusted: IpAddr = "5.5.5.5".parse().unwrap();
        assert_eq!(client_ip(untrusted, &h, &trusted), untrusted);
    }
}
