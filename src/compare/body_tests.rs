//! Tests of body decoding and of the body comparison methods.

use std::io::Write;

use bytes::Bytes;
use serde_json::json;

use super::*;
use crate::compare::{compare, Change};
use crate::config::CompareConfig;

const LIMIT: u64 = 64 * 1024;

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("write to Vec");
    e.finish().expect("finish gzip")
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("write to Vec");
    e.finish().expect("finish zlib")
}

fn raw_deflate(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("write to Vec");
    e.finish().expect("finish deflate")
}

fn br(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
        w.write_all(data).expect("write to Vec");
    }
    out
}

fn zstd(data: &[u8]) -> Vec<u8> {
    ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
}

fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
    let mut m = http::HeaderMap::new();
    for (k, v) in pairs {
        m.append(
            http::HeaderName::from_bytes(k.as_bytes()).expect("test header name"),
            http::HeaderValue::from_str(v).expect("test header value"),
        );
    }
    m
}

fn captured(pairs: &[(&str, &str)], body: impl Into<Bytes>) -> Captured {
    Captured {
        status: 200,
        headers: headers(pairs),
        trailers: None,
        body: CapturedBody::Full(body.into()),
    }
}

/// The body differences only (these tests vary headers freely).
fn body_diffs(l: &Captured, c: &Captured) -> Vec<Difference> {
    compare(l, c, &rules())
        .into_iter()
        .filter(|d| d.kind == DiffKind::Body)
        .collect()
}

fn rules() -> Rules {
    let config = CompareConfig {
        ignore_headers: vec!["content-encoding".to_owned()],
        ignore_json: vec![],
        unordered_arrays: vec![],
        float_tolerance: 1e-9,
    };
    Rules::new(&config, LIMIT).expect("valid rules")
}

#[test]
fn decodes_each_coding() {
    let text = b"hello hello hello hello".as_slice();
    let cases: [(&str, Vec<u8>); 6] = [
        ("gzip", gzip(text)),
        ("x-gzip", gzip(text)),
        ("deflate", zlib(text)),
        ("deflate", raw_deflate(text)),
        ("br", br(text)),
        ("zstd", zstd(text)),
    ];
    for (coding, encoded) in cases {
        let got = decode_body(&headers(&[("content-encoding", coding)]), &encoded, LIMIT);
        assert_eq!(got.as_deref(), Ok(text), "{coding}");
    }
    let got = decode_body(&headers(&[("content-encoding", "identity")]), text, LIMIT);
    assert_eq!(got.as_deref(), Ok(text));
}

#[test]
fn decodes_stacked_codings_in_reverse_order() {
    let text = b"{\"a\": 1}".as_slice();
    // `gzip, br`: gzip applied first, then br.
    let encoded = br(&gzip(text));
    let got = decode_body(
        &headers(&[("content-encoding", "gzip, br")]),
        &encoded,
        LIMIT,
    );
    assert_eq!(got.as_deref(), Ok(text));
    // The same as two header lines.
    let h = headers(&[("content-encoding", "gzip"), ("content-encoding", "br")]);
    assert_eq!(decode_body(&h, &encoded, LIMIT).as_deref(), Ok(text));
    // The wrong order fails.
    let h = headers(&[("content-encoding", "br, gzip")]);
    assert!(decode_body(&h, &encoded, LIMIT).is_err());
}

#[test]
fn decompression_bomb_stops_at_the_cap() {
    let zeros = vec![0u8; 10 * 1024 * 1024];
    for (coding, bomb) in [
        ("gzip", gzip(&zeros)),
        ("br", br(&zeros)),
        ("zstd", zstd(&zeros)),
    ] {
        assert!(
            bomb.len() < 100 * 1024,
            "{coding} bomb is small on the wire"
        );
        let got = decode_body(&headers(&[("content-encoding", coding)]), &bomb, LIMIT);
        assert_eq!(got, Err(DecodeError::TooLarge { limit: LIMIT }), "{coding}");
    }
    // Exactly at the cap is fine.
    let exact = vec![7u8; LIMIT as usize];
    let encoded = gzip(&exact);
    let got = decode_body(&headers(&[("content-encoding", "gzip")]), &encoded, LIMIT);
    assert_eq!(got.map(|d| d.len()), Ok(exact.len()));
}

#[test]
fn corrupt_and_unknown_codings_are_errors() {
    let h = headers(&[("content-encoding", "gzip")]);
    assert!(matches!(
        decode_body(&h, b"not gzip", LIMIT),
        Err(DecodeError::Corrupt { .. })
    ));
    let h = headers(&[("content-encoding", "compress")]);
    assert!(matches!(
        decode_body(&h, b"x", LIMIT),
        Err(DecodeError::Unsupported { .. })
    ));
}

#[test]
fn json_content_types() {
    for (ct, json) in [
        ("application/json", true),
        ("application/json; charset=utf-8", true),
        ("Application/JSON", true),
        ("application/problem+json", true),
        ("application/vnd.api+json;v=2", true),
        ("text/plain", false),
        ("application/jsonp", false),
        ("text/html; x=+json", false),
    ] {
        assert_eq!(is_json_content_type(ct), json, "{ct}");
    }
}

#[test]
fn encoded_bodies_are_compared_decoded() {
    let plain = br#"{"b": 2, "a": 1}"#.as_slice();
    let l = captured(
        &[
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ],
        gzip(plain),
    );
    let c = captured(
        &[
            ("content-type", "application/json"),
            ("content-encoding", "zstd"),
        ],
        zstd(br#"{"a":1,"b":2}"#),
    );
    assert!(compare(&l, &c, &rules()).is_empty());
    let c = captured(
        &[
            ("content-type", "application/json"),
            ("content-encoding", "br"),
        ],
        br(br#"{"a":1,"b":3}"#),
    );
    let d = compare(&l, &c, &rules());
    assert_eq!(d.len(), 1);
    assert_eq!(
        (d[0].path.as_str(), &d[0].legacy, &d[0].candidate),
        ("$.b", &json!(2), &json!(3))
    );
}

#[test]
fn json_without_content_type_when_both_parse() {
    let l = captured(&[("content-type", "text/plain")], r#"{"n": 1}"#);
    let c = captured(&[], r#"{"n": 1.0}"#);
    assert!(body_diffs(&l, &c).is_empty());
    assert_eq!(body_diffs(&l, &captured(&[], r#"{"n": 2}"#)).len(), 1);
}

#[test]
fn non_json_bodies_compare_byte_for_byte_at_the_root() {
    let l = captured(&[("content-type", "application/json")], r#"{"n": 1}"#);
    let c = captured(&[("content-type", "application/json")], "<html>oops</html>");
    let d = compare(&l, &c, &rules());
    assert_eq!(d.len(), 1);
    assert_eq!(
        (d[0].kind, d[0].path.as_str(), d[0].change),
        (DiffKind::Body, "$", Change::Changed)
    );
    assert_eq!(d[0].candidate, json!("<html>oops</html>"));

    let l = captured(&[("content-type", "text/plain")], "a\nb\n");
    assert!(body_diffs(&l, &captured(&[], "a\nb\n")).is_empty());
    assert_eq!(body_diffs(&l, &captured(&[], "a\nB\n")).len(), 1);
}

#[test]
fn long_text_is_truncated_and_binary_is_base64() {
    let long_l = "x".repeat(10_000);
    let long_c = format!("{}y", "x".repeat(9_999));
    let d = compare(&captured(&[], long_l), &captured(&[], long_c), &rules());
    let shown = d[0].legacy.as_str().expect("text value");
    assert!(
        shown.len() < 4200 && shown.contains("truncated: 10000 bytes"),
        "{shown}"
    );

    let d = compare(
        &captured(&[], vec![0xff, 0x00]),
        &captured(&[], vec![0xfe]),
        &rules(),
    );
    assert_eq!(d[0].legacy, json!("base64:/wA="));
    assert_eq!(d[0].candidate, json!("base64:/g=="));
}

#[test]
fn hashed_bodies_compare_by_length_and_sha256() {
    let data = Bytes::from(vec![1u8; 5000]);
    let sha: [u8; 32] = Sha256::digest(&data).into();
    let hashed = |len, sha256| Captured {
        status: 200,
        headers: http::HeaderMap::new(),
        trailers: None,
        body: CapturedBody::Hashed { len, sha256 },
    };
    // Both hashed, same.
    assert!(compare(&hashed(5000, sha), &hashed(5000, sha), &rules()).is_empty());
    // One side full: its bytes are hashed to compare.
    assert!(compare(&hashed(5000, sha), &captured(&[], data), &rules()).is_empty());
    // Different: both sides shown as `sha256:HEX (N bytes)`.
    let d = compare(&hashed(5000, sha), &captured(&[], vec![2u8; 10]), &rules());
    assert_eq!(d.len(), 1);
    let expected = format!("sha256:{} (5000 bytes)", hex::encode(sha));
    assert_eq!(d[0].legacy, json!(expected));
    let c = d[0].candidate.as_str().expect("string");
    assert!(c.starts_with("sha256:") && c.ends_with("(10 bytes)"), "{c}");
}

#[test]
fn undecodable_bodies_compare_raw_by_hash_and_say_so() {
    let zeros = vec![0u8; 1024 * 1024];
    let bomb = gzip(&zeros);
    let l = captured(&[("content-encoding", "gzip")], bomb.clone());
    // The same raw bytes on both sides: no difference.
    assert!(compare(&l, &l.clone(), &rules()).is_empty());
    let other = captured(
        &[("content-encoding", "gzip")],
        gzip(&vec![1u8; 1024 * 1024]),
    );
    let d = compare(&l, &other, &rules());
    assert_eq!(d.len(), 1);
    let shown = d[0].legacy.as_str().expect("string");
    assert!(shown.starts_with("sha256:") && shown.contains(&format!("({} bytes)", bomb.len())));
    assert!(shown.contains("too large to decode"), "{shown}");
}

#[test]
fn text_diff_is_unified() {
    let out = text_diff("a\nb\nc\n", "a\nB\nc\n");
    assert!(
        out.contains("--- legacy") && out.contains("+++ candidate"),
        "{out}"
    );
    assert!(out.contains("-b\n") && out.contains("+B\n"), "{out}");
    assert!(text_diff("same\n", "same\n").is_empty());
}
