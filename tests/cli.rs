//! The binary: `check` exit codes and messages, `run` refusing bad
//! configuration, client commands against a live admin API.

use std::process::Command;

use crate::support::backend::Backend;
use crate::support::{upstreams, Proxy};

fn strangler() -> Command {
    Command::new(env!("CARGO_BIN_EXE_strangler"))
}

fn write(dir: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
    let path = dir.path().join("strangler.toml");
    std::fs::write(&path, text).unwrap();
    path
}

const VALID: &str = r#"
[upstreams.legacy]
url = "http://127.0.0.1:8001"

[upstreams.candidate]
url = "http://127.0.0.1:8002"

[[routes]]
name = "orders"
path_prefix = "/api/v1/orders"
legacy = "legacy"
candidate = "candidate"
"#;

#[test]
fn check_accepts_a_valid_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = strangler()
        .args(["check", "-c"])
        .arg(write(&dir, VALID))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_names_file_line_and_key_path() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("{VALID}weight = 150\n");
    let path = write(&dir, &text);
    let out = strangler()
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = text.lines().count();
    assert!(
        stderr.contains(&format!("strangler.toml:{line}:")),
        "{stderr}"
    );
    assert!(stderr.contains("routes[0].weight"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn check_refuses_unknown_keys_with_a_suggestion() {
    let dir = tempfile::tempdir().unwrap();
    let out = strangler()
        .args(["check", "-c"])
        .arg(write(&dir, &format!("{VALID}stikcy = \"ip\"\n")))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("routes[0].stikcy") && stderr.contains("sticky"),
        "{stderr}"
    );
}

#[test]
fn run_refuses_a_public_admin_listener_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("[admin]\nlisten = \"0.0.0.0:0\"\n{VALID}");
    let out = strangler()
        .args(["run", "-c"])
        .arg(write(&dir, &text))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("admin.token"), "{stderr}");
}

#[test]
fn missing_file_is_a_configuration_error() {
    let out = strangler()
        .args(["check", "-c", "/nonexistent/strangler.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/strangler.toml"));
}

#[tokio::test]
async fn client_commands_drive_the_admin_api() {
    let legacy = Backend::named("legacy").await;
    let candidate = Backend::named("candidate").await;
    let proxy = Proxy::start(&format!(
        "{}[[routes]]\nname = \"orders\"\npath_prefix = \"/orders\"\nlegacy = \"legacy\"\ncandidate = \"candidate\"\nstage = \"shadow\"\n",
        upstreams(legacy.addr, candidate.addr)
    ))
    .await;
    let admin = format!("http://{}", proxy.admin);
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || strangler().args(args).output().unwrap())
    };
    let out = run(vec![
        "weight".into(),
        "orders".into(),
        "12.5".into(),
        "--admin".into(),
        admin.clone(),
    ])
    .await
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(vec!["status".into(), "--admin".into(), admin.clone()])
        .await
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("orders") && table.contains("canary") && table.contains("12.5"),
        "{table}"
    );
    let out = run(vec![
        "pause".into(),
        "orders".into(),
        "--admin".into(),
        admin.clone(),
    ])
    .await
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "pausing a paused route is refused"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("409"));
    let out = run(vec![
        "promote".into(),
        "nope".into(),
        "--admin".into(),
        admin,
    ])
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    proxy.stop().await;
}
