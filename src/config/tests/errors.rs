//! One test per class of configuration error, each checking the key path
//! and the line the message points at.

use super::{errors, expect_error, line_of, load_ok, minimal_with_route, MINIMAL};

#[test]
fn syntax_error_has_line_and_column() {
    let text = "[server]\nlisten = \"127.0.0.1:8080\"\nshutdown_grace = \n";
    let errs = errors(text);
    assert_eq!(errs.len(), 1);
    let e = &errs[0];
    assert_eq!(e.key_path, "");
    assert_eq!(e.line, Some(3));
    assert!(e.column.is_some());
    assert!(e.message.starts_with("invalid TOML"), "{e}");
    assert!(e.to_string().starts_with("conf/strangler.toml:3:"), "{e}");
}

#[test]
fn every_error_of_a_file_is_reported_not_only_the_first() {
    // Two unknown keys, a wrong type and a validation error, in one file.
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:1\"\nshutdwn_grace = \"5s\"\n{}",
        minimal_with_route("weight = 150\nstikcy = \"ip\"")
    );
    let errs = errors(&text);
    expect_error(&errs, "server.shutdwn_grace", 3);
    expect_error(&errs, "routes[0].stikcy", line_of(&text, "stikcy"));
    expect_error(&errs, "routes[0].weight", line_of(&text, "weight"));
    assert_eq!(errs.len(), 3, "{errs:#?}");

    // A wrong type is reported with the unknown keys; the validation of
    // what remains is not (the key with the wrong value is gone from it).
    let text = minimal_with_route("weight = \"half\"\nstikcy = \"ip\"\nstgae = \"shadow\"");
    let errs = errors(&text);
    expect_error(&errs, "routes[0].weight", line_of(&text, "weight"));
    expect_error(&errs, "routes[0].stikcy", line_of(&text, "stikcy"));
    expect_error(&errs, "routes[0].stgae", line_of(&text, "stgae"));
    assert_eq!(errs.len(), 3, "{errs:#?}");

    // A required key with a wrong value: no "missing field" after it.
    let text = MINIMAL.replace("legacy = \"legacy\"", "legacy = 5");
    let errs = errors(&text);
    expect_error(&errs, "routes[0].legacy", line_of(&text, "legacy = 5"));
    assert_eq!(errs.len(), 1, "{errs:#?}");
}

#[test]
fn unknown_key_points_at_the_key_with_a_suggestion() {
    let text = minimal_with_route("stikcy = \"ip\"");
    let errs = errors(&text);
    let e = expect_error(&errs, "routes[0].stikcy", line_of(&text, "stikcy"));
    assert_eq!(e.column, Some(1));
    assert!(e.message.contains("unknown key `stikcy`"), "{e}");
    assert!(e.message.contains("did you mean `sticky`?"), "{e}");

    let text = format!("[server]\nlisten = \"127.0.0.1:1\"\nfrobnicate = 1\n{MINIMAL}");
    let errs = errors(&text);
    let e = expect_error(&errs, "server.frobnicate", 3);
    assert!(!e.message.contains("did you mean"), "{e}");
    assert!(e.message.contains("`listen`"), "{e}");

    let text = format!("[admn]\nlisten = \"127.0.0.1:1\"\n{MINIMAL}");
    let e = expect_error(&errors(&text), "admn", 1).clone();
    assert!(e.message.contains("did you mean `admin`?"), "{e}");
}

#[test]
fn unset_variable_names_key_and_variable() {
    let text = format!("{MINIMAL}\n[[routes]]\nname = \"b\"\npath = \"/b\"\nlegacy = \"legacy\"\ncandidate = \"candidate\"\nsticky_salt = \"${{SALT_B}}\"\n");
    let errs = errors(&text);
    let e = expect_error(&errs, "routes[1].sticky_salt", line_of(&text, "SALT_B"));
    assert!(
        e.message.contains("`SALT_B`") && e.message.contains("not set"),
        "{e}"
    );
    // `$${` is a literal, comments are never expanded.
    let text = minimal_with_route("sticky_salt = \"$${SALT}\" # ${ALSO_UNSET}");
    assert_eq!(load_ok(&text).config.routes[0].sticky_salt, "${SALT}");
}

#[test]
fn bad_duration_shows_value_and_example() {
    let text =
        format!("{MINIMAL}\n[upstreams.other]\nurl = \"http://x:1\"\ntimeout = \"30 seconds\"\n");
    let errs = errors(&text);
    let e = expect_error(
        &errs,
        "upstreams.other.timeout",
        line_of(&text, "30 seconds"),
    );
    assert_eq!(e.column, Some(11));
    assert!(
        e.message.contains("`30 seconds`") && e.message.contains("\"5s\""),
        "{e}"
    );
    // A number where a duration is expected is a type error at its key.
    let text = format!("[server]\nshutdown_grace = 10\n{MINIMAL}");
    let errs = errors(&text);
    let e = expect_error(&errs, "server.shutdown_grace", 2);
    assert!(e.message.contains("duration"), "{e}");
}

#[test]
fn bad_size_shows_value_and_example() {
    let text = format!("[server]\nmax_body_buffer = \"1 MegaByte\"\nshadow_memory = -5\n{MINIMAL}");
    let errs = errors(&text);
    let e = expect_error(&errs, "server.max_body_buffer", 2);
    assert!(
        e.message.contains("`1 MegaByte`") && e.message.contains("\"1MiB\""),
        "{e}"
    );
    expect_error(&errs, "server.shadow_memory", 3);
}

#[test]
fn weight_out_of_range_names_the_route_and_line() {
    let text = format!(
        "{MINIMAL}\n[[routes]]\nname = \"items\"\npath = \"/items\"\nlegacy = \"legacy\"\ncandidate = \"candidate\"\nweight = 150\n"
    );
    let errs = errors(&text);
    let line = line_of(&text, "weight = 150");
    let e = expect_error(&errs, "routes[1].weight", line);
    assert_eq!(e.column, Some(10));
    assert_eq!(
        e.to_string(),
        format!("conf/strangler.toml:{line}:10: routes[1].weight: 150 is not a percentage (0–100)")
    );
}

#[test]
fn steps_must_increase() {
    let text = minimal_with_route("[routes.rollout]\nsteps = [1, 50, 10, 100]");
    let errs = errors(&text);
    let e = expect_error(&errs, "routes[0].rollout.steps", line_of(&text, "steps ="));
    assert!(e.message.contains("strictly increasing"), "{e}");
    let text = minimal_with_route("[routes.rollout]\nsteps = [0, 10, 150]");
    let errs = errors(&text);
    expect_error(
        &errs,
        "routes[0].rollout.steps[0]",
        line_of(&text, "steps ="),
    );
    expect_error(
        &errs,
        "routes[0].rollout.steps[2]",
        line_of(&text, "steps ="),
    );
    let text = minimal_with_route("[routes.rollout]\nsteps = []");
    expect_error(
        &errors(&text),
        "routes[0].rollout.steps",
        line_of(&text, "steps ="),
    );
}

#[test]
fn unknown_upstream_reference_suggests_a_name() {
    let text = MINIMAL.replace("candidate = \"candidate\"", "candidate = \"candiate\"");
    let errs = errors(&text);
    let e = expect_error(&errs, "routes[0].candidate", line_of(&text, "candiate\""));
    assert!(
        e.message
            .contains("unknown upstream `candiate`; did you mean `candidate`?"),
        "{e}"
    );

    let text = minimal_with_route("[routes.shadow]\nsecondary = \"zzz\"");
    let e = expect_error(
        &errors(&text),
        "routes[0].shadow.secondary",
        line_of(&text, "zzz"),
    )
    .clone();
    assert!(e.message.contains("defined: `legacy`, `candidate`"), "{e}");

    let text = format!("[defaults]\nupstream = \"legcy\"\n{MINIMAL}");
    expect_error(&errors(&text), "defaults.upstream", 2);
}

#[test]
fn missing_legacy_upstream_needs_defaults() {
    let text = MINIMAL
        .replace("[upstreams.legacy]", "[upstreams.old]")
        .replace("legacy = \"legacy\"", "legacy = \"old\"");
    let errs = errors(&text);
    let e = errs
        .iter()
        .find(|e| e.key_path == "defaults.upstream")
        .expect("defaults error");
    assert_eq!(e.line, None);
    let fixed = format!("[defaults]\nupstream = \"old\"\n{text}");
    assert_eq!(load_ok(&fixed).config.defaults.upstream, "old");
}

#[test]
fn duplicate_route_name() {
    let text = format!("{MINIMAL}\n[[routes]]\nname = \"orders\"\npath = \"/o\"\nlegacy = \"legacy\"\ncandidate = \"candidate\"\n");
    let errs = errors(&text);
    let line = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains("name = \"orders\""))
        .nth(1)
        .map(|(i, _)| i + 1);
    let e = expect_error(&errs, "routes[1].name", line.expect("second name line"));
    assert!(e.message.contains("duplicate route name `orders`"), "{e}");
    let text = MINIMAL.replace("name = \"orders\"", "name = \"Orders!\"");
    expect_error(&errors(&text), "routes[0].name", line_of(&text, "Orders!"));
}

#[test]
fn two_path_kinds_and_none() {
    let text = minimal_with_route("path = \"/exact\"");
    let errs = errors(&text);
    // Reported at the later kind in the order path, path_prefix, path_regex.
    let e = expect_error(
        &errs,
        "routes[0].path_prefix",
        line_of(&text, "path_prefix"),
    );
    assert!(
        e.message.contains("`path` and `path_prefix` are both set"),
        "{e}"
    );

    let text = MINIMAL.replace("path_prefix = \"/api/v1/orders\"\n", "");
    let errs = errors(&text);
    let e = expect_error(&errs, "routes[0]", line_of(&text, "[[routes]]"));
    assert!(
        e.message
            .contains("one of `path`, `path_prefix` or `path_regex`"),
        "{e}"
    );

    let text = MINIMAL.replace("\"/api/v1/orders\"", "\"api\"");
    expect_error(
        &errors(&text),
        "routes[0].path_prefix",
        line_of(&text, "\"api\""),
    );
}

#[test]
fn bad_regex_shows_the_reason() {
    let text = MINIMAL.replace(
        "path_prefix = \"/api/v1/orders\"",
        "path_regex = '^/api/(v1'",
    );
    let errs = errors(&text);
    let e = expect_error(&errs, "routes[0].path_regex", line_of(&text, "path_regex"));
    assert!(
        e.message
            .contains("invalid regex `^/api/(v1`: unclosed group"),
        "{e}"
    );
    assert!(!e.message.contains('\n'), "{e}");
}

#[test]
fn bad_sticky() {
    for bad in ["header:bad header", "cookie:", "user", "ip:x"] {
        let text = minimal_with_route(&format!("sticky = \"{bad}\""));
        let errs = errors(&text);
        let e = expect_error(&errs, "routes[0].sticky", line_of(&text, "sticky ="));
        assert!(
            e.message.contains(&format!("`{bad}` is not a sticky key")),
            "{e}"
        );
    }
    let text = minimal_with_route("sticky_missing = \"candidate\"");
    expect_error(
        &errors(&text),
        "routes[0].sticky_missing",
        line_of(&text, "sticky_missing"),
    );
}

#[test]
fn non_loopback_admin_needs_a_token() {
    let text = format!("[admin]\nlisten = \"0.0.0.0:9090\"\n{MINIMAL}");
    let errs = errors(&text);
    let e = errs
        .iter()
        .find(|e| e.key_path == "admin.token")
        .expect("admin.token error");
    assert_eq!(
        e.message,
        "required when admin.listen (0.0.0.0:9090) is not a loopback address"
    );
    // Absent key: it points at the [admin] table.
    assert_eq!(e.line, Some(1));
    let ok = format!("[admin]\nlisten = \"[::1]:9090\"\n{MINIMAL}");
    assert!(load_ok(&ok).config.admin.token.is_none());
    let ok = format!("[admin]\nlisten = \"localhost:9191\"\n{MINIMAL}");
    assert_eq!(
        load_ok(&ok).config.admin.listen.to_string(),
        "127.0.0.1:9191"
    );
}

#[test]
fn h2_needs_https_and_h2c_needs_http() {
    let text = MINIMAL.replace(
        "url = \"http://127.0.0.1:8002\"",
        "url = \"http://127.0.0.1:8002\"\nprotocol = \"h2\"",
    );
    let errs = errors(&text);
    let e = expect_error(
        &errs,
        "upstreams.candidate.protocol",
        line_of(&text, "protocol"),
    );
    assert!(e.message.contains("h2 needs an https:// url"), "{e}");
    let text = MINIMAL.replace(
        "url = \"http://127.0.0.1:8002\"",
        "url = \"https://x:8002\"\nprotocol = \"h2c\"",
    );
    expect_error(
        &errors(&text),
        "upstreams.candidate.protocol",
        line_of(&text, "protocol"),
    );
    let text = MINIMAL.replace(
        "url = \"http://127.0.0.1:8002\"",
        "url = \"ftp://x\"\nprotocol = \"spdy\"",
    );
    let errs = errors(&text);
    expect_error(&errs, "upstreams.candidate.url", line_of(&text, "ftp://"));
    expect_error(
        &errs,
        "upstreams.candidate.protocol",
        line_of(&text, "spdy"),
    );
}

#[test]
fn every_validation_error_is_reported_in_file_order() {
    let text = r#"
[server]
listen = "proxy.internal:8080"
trusted_proxies = ["10.0.0.0/33"]

[upstreams.legacy]
url = "http://127.0.0.1:8001"

[upstreams.candidate]

[[routes]]
name = "a"
path = "/a"
legacy = "legacy"
candidate = "candidate"
fallback_statuses = [404, 700]

[routes.shadow]
sample = 1.5
max_in_flight = 0

[routes.rollout]
min_match_rate = 2
max_p99_ratio = 0.5
failure_limit = 0

[[routes.rollout.criteria]]
name = "mem"
url = "http://x/metrics"
metric = "rss"
max = 1
min = 0
"#;
    let errs = errors(text);
    let paths: Vec<&str> = errs.iter().map(|e| e.key_path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "server.listen",
            "server.trusted_proxies[0]",
            "upstreams.candidate",
            "routes[0].fallback_statuses[1]",
            "routes[0].shadow.sample",
            "routes[0].shadow.max_in_flight",
            "routes[0].rollout.min_match_rate",
            "routes[0].rollout.max_p99_ratio",
            "routes[0].rollout.failure_limit",
            "routes[0].rollout.criteria[0].min",
        ]
    );
    let missing_url = &errs[2];
    assert_eq!(missing_url.message, "missing required key `url`");
    assert_eq!(
        missing_url.line,
        Some(line_of(text, "[upstreams.candidate]"))
    );
}

#[test]
fn type_errors_carry_the_key_path() {
    let text = minimal_with_route("[routes.shadow]\nsample = \"all\"");
    let errs = errors(&text);
    assert_eq!(errs.len(), 1);
    expect_error(&errs, "routes[0].shadow.sample", line_of(&text, "sample"));
    let text = minimal_with_route("methods = [\"GET\", 3]");
    expect_error(
        &errors(&text),
        "routes[0].methods[1]",
        line_of(&text, "methods"),
    );
}
