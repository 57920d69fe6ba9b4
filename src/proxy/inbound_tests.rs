use super::*;

fn parse(text: &str) -> Result<Option<Head>, Unsupported> {
    let mut buf = BytesMut::from(text.as_bytes());
    let parsed = parse_head(&mut buf, &mut Scratch::default());
    if parsed.is_err() {
        assert_eq!(&buf[..], text.as_bytes(), "a head for hyper stays whole");
    }
    parsed
}

fn head(text: &str) -> Head {
    match parse(text) {
        Ok(Some(head)) => head,
        Ok(None) => panic!("partial head: {text:?}"),
        Err(Unsupported) => panic!("unsupported head: {text:?}"),
    }
}

#[test]
fn plain_heads_are_parsed_as_hyper_parses_them() {
    let mut buf = BytesMut::from(
        &b"GET /a/b?c=d HTTP/1.1\r\nHost: x\r\nX-Two: 1\r\nx-two: 2\r\n\r\nGET /next HTTP/1.1\r\n"
            [..],
    );
    let mut scratch = Scratch {
        headers: Some(HeaderMap::with_capacity(64)),
        lines: Vec::new(),
    };
    let Ok(Some(first)) = parse_head(&mut buf, &mut scratch) else {
        panic!("a complete head");
    };
    assert_eq!(first.request.method(), Method::GET);
    assert_eq!(first.request.uri(), "/a/b?c=d");
    assert_eq!(first.request.version(), Version::HTTP_11);
    assert_eq!(first.request.headers()["host"], "x");
    let twos: Vec<_> = first.request.headers().get_all("x-two").iter().collect();
    assert_eq!(twos, ["1", "2"]);
    assert_eq!((first.length, first.keep_alive), (0, true));
    // The pipelined rest stays for the next head.
    assert_eq!(&buf[..], b"GET /next HTTP/1.1\r\n");
    assert!(matches!(parse_head(&mut buf, &mut scratch), Ok(None)));
    assert!(
        first.request.headers().capacity() >= 64,
        "the spare map was reused"
    );

    let post = head("POST /p HTTP/1.1\r\nContent-Length: 12\r\nConnection: close\r\n\r\n");
    assert_eq!((post.length, post.keep_alive), (12, false));
    let old = head("GET / HTTP/1.0\r\n\r\n");
    assert_eq!(
        (old.request.version(), old.keep_alive),
        (Version::HTTP_10, false)
    );
    let old_kept = head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
    assert!(old_kept.keep_alive);
    let absolute = head("GET http://example.com/x HTTP/1.1\r\n\r\n");
    assert_eq!(
        absolute.request.uri().authority().map(|a| a.as_str()),
        Some("example.com")
    );
}

#[test]
fn what_hyper_must_answer_is_handed_over() {
    for text in [
        // Chunked uploads, smuggling attempts and 100-continue.
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n",
        // Upgrades and tunnels.
        "GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        "CONNECT example.com:443 HTTP/1.1\r\n\r\n",
        // Framing errors hyper answers with 400.
        "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
        // Malformed heads, a target httparse takes and `Uri` refuses, and
        // HTTP/2's preface.
        "GET http://[::1/ HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
        "G@T / HTTP/1.1\r\n\r\n",
        "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    ] {
        assert!(
            matches!(parse(text), Err(Unsupported)),
            "{text:?} should go to hyper"
        );
    }
    let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: y\r\n")).collect();
    let text = format!("GET / HTTP/1.1\r\n{many}\r\n");
    assert!(matches!(parse(&text), Err(Unsupported)));
}

fn encoded(
    response: Response<()>,
    version: Version,
    head: bool,
    length: Option<Option<u64>>,
    last: bool,
) -> (String, BodyFraming, bool) {
    let (mut parts, ()) = response.into_parts();
    let mut out = Vec::new();
    let asked = Asked { version, head };
    let (framing, last) = encode_head(&mut out, &mut parts, asked, length, last);
    let text = String::from_utf8(out).expect("heads are ASCII");
    // The date changes: check its shape, then leave it out.
    let date = text
        .lines()
        .find(|line| line.starts_with("date: "))
        .expect("a date line")
        .to_owned();
    assert!(
        httpdate::parse_http_date(&date["date: ".len()..]).is_ok(),
        "{date}"
    );
    (text.replace(&format!("{date}\r\n"), ""), framing, last)
}

#[test]
fn answers_are_framed_by_hyper_rules() {
    let ok = || {
        Response::builder()
            .header("x-a", "1")
            .body(())
            .expect("a valid response")
    };
    // Known length: Content-Length; kept alive.
    let (text, framing, last) = encoded(ok(), Version::HTTP_11, false, Some(Some(5)), false);
    assert_eq!(
        text,
        "HTTP/1.1 200 OK\r\nx-a: 1\r\ncontent-length: 5\r\n\r\n"
    );
    assert_eq!((framing, last), (BodyFraming::Length(5), false));
    // Unknown length: chunked for HTTP/1.1, until close for HTTP/1.0.
    let (text, framing, _) = encoded(ok(), Version::HTTP_11, false, Some(None), false);
    assert_eq!(
        text,
        "HTTP/1.1 200 OK\r\nx-a: 1\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    assert_eq!(framing, BodyFraming::Chunked);
    let (text, framing, last) = encoded(ok(), Version::HTTP_10, false, Some(None), false);
    assert_eq!(
        text,
        "HTTP/1.0 200 OK\r\nx-a: 1\r\nconnection: keep-alive\r\n\r\n"
    );
    assert_eq!((framing, last), (BodyFraming::Close, true));
    // An empty body: an explicit zero, except after HEAD.
    let (text, framing, _) = encoded(ok(), Version::HTTP_11, false, None, false);
    assert_eq!(
        text,
        "HTTP/1.1 200 OK\r\nx-a: 1\r\ncontent-length: 0\r\n\r\n"
    );
    assert_eq!(framing, BodyFraming::Length(0));
    // HEAD keeps the upstream's length but sends no body.
    let mut head_answer = ok();
    head_answer
        .headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from_static("42"));
    let (text, framing, _) = encoded(head_answer, Version::HTTP_11, true, None, false);
    assert_eq!(
        text,
        "HTTP/1.1 200 OK\r\nx-a: 1\r\ncontent-length: 42\r\n\r\n"
    );
    assert_eq!(framing, BodyFraming::Length(0));
    // 304: no length at all, no body.
    let not_modified = Response::builder()
        .status(304)
        .body(())
        .expect("a valid response");
    let (text, framing, _) = encoded(not_modified, Version::HTTP_11, false, None, false);
    assert_eq!(text, "HTTP/1.1 304 Not Modified\r\n\r\n");
    assert_eq!(framing, BodyFraming::Length(0));
    // Closing: said on HTTP/1.1; an upstream's own `close` closes too.
    let (text, _, last) = encoded(ok(), Version::HTTP_11, false, Some(Some(1)), true);
    assert_eq!(
        text,
        "HTTP/1.1 200 OK\r\nx-a: 1\r\nconnection: close\r\ncontent-length: 1\r\n\r\n"
    );
    assert!(last);
    let mut closing = ok();
    closing
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    assert!(encoded(closing, Version::HTTP_11, false, Some(Some(1)), false).2);
    // An HTTP/1.0 client that did not ask to keep the connection.
    let (text, _, last) = encoded(ok(), Version::HTTP_10, false, Some(Some(1)), true);
    assert_eq!(
        text,
        "HTTP/1.0 200 OK\r\nx-a: 1\r\ncontent-length: 1\r\n\r\n"
    );
    assert!(last);
    // A custom reason phrase passes through.
    let mut teapot = Response::builder()
        .status(418)
        .body(())
        .expect("a valid response");
    teapot.extensions_mut().insert(
        hyper::ext::ReasonPhrase::try_from(&b"Short And Stout"[..]).expect("a valid reason"),
    );
    let (text, _, _) = encoded(teapot, Version::HTTP_11, false, None, false);
    assert!(
        text.starts_with("HTTP/1.1 418 Short And Stout\r\n"),
        "{text}"
    );
}
