//! The binary: `check` exit codes and messages, `run` refusing bad
//! configuration, client commands against a live admin API.

use std::process::Command;

use crate::support::backend::Backend;
use crate::support::ports::serving;
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

/// Starts the binary on ports of its choosing (port 0, read back from its
/// JSON log) and waits until it is ready.
async fn spawn_binary(
    dir: &tempfile::TempDir,
    routes: &str,
) -> (
    std::process::Child,
    std::net::SocketAddr,
    std::net::SocketAddr,
) {
    spawn_with(dir, routes, |config| {
        let mut command = strangler();
        command
            .args(["--log-format", "json", "run", "-c"])
            .arg(config);
        command
    })
    .await
}

/// As [`spawn_binary`], with the command line `command` builds from the
/// configuration file's path (it must log in JSON).
async fn spawn_with(
    dir: &tempfile::TempDir,
    routes: &str,
    command: impl Fn(&std::path::Path) -> Command,
) -> (
    std::process::Child,
    std::net::SocketAddr,
    std::net::SocketAddr,
) {
    let stderr_path = dir.path().join("stderr.log");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_grace = \"10s\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[store]\nurl = \"sqlite://{}\"\n{routes}",
        dir.path().join("s.db").display()
    );
    let path = write(dir, &text);
    let mut child = command(&path)
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    for _ in 0..200 {
        let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        if let Some((proxy, admin)) = serving(&stderr) {
            if reqwest::get(format!("http://{admin}/readyz"))
                .await
                .is_ok_and(|r| r.status() == 200)
            {
                return (child, proxy, admin);
            }
        }
        if matches!(child.try_wait(), Ok(Some(_))) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    panic!("strangler did not become ready:\n{stderr}");
}

fn signal(child: &std::process::Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn sighup_reloads_and_sigterm_drains_then_exits_0() {
    let slow = Backend::start(|_req| async {
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
        http::Response::new(crate::support::backend::full("slow"))
    })
    .await;
    let candidate = Backend::named("candidate").await;
    let dir = tempfile::tempdir().unwrap();
    let routes = |stage: &str| {
        format!(
            "{}[[routes]]\nname = \"orders\"\npath_prefix = \"/orders\"\nlegacy = \"legacy\"\ncandidate = \"candidate\"\nstage = \"{stage}\"\n[routes.shadow]\nsample = 0.0\n",
            upstreams(slow.addr, candidate.addr)
        )
    };
    let (mut child, proxy, admin) = spawn_binary(&dir, &routes("legacy")).await;

    // SIGHUP: a new route appears without a restart.
    let path = dir.path().join("strangler.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("[[routes]]", "[[routes]]\nname = \"new\"\npath = \"/new\"\nlegacy = \"candidate\"\ncandidate = \"candidate\"\n\n[[routes]]")).unwrap();
    signal(&child, "HUP");
    let mut seen = false;
    for _ in 0..100 {
        let routes: serde_json::Value = reqwest::get(format!("http://{admin}/api/routes"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if routes
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "new")
        {
            seen = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(seen, "SIGHUP reloaded the configuration");

    // SIGTERM with a request in flight: it is answered, then the process exits 0.
    let in_flight = tokio::spawn(async move {
        reqwest::get(format!("http://{proxy}/orders/1"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    // In flight means the upstream has it (it answers 700 ms later), not
    // "200 ms have passed".
    for _ in 0..1000 {
        if slow.count() == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(slow.count(), 1, "the request reached the upstream");
    signal(&child, "TERM");
    assert_eq!(in_flight.await.unwrap(), "slow");
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

/// The soft open-files limit of a running process, and its hard limit
/// (`None`: unlimited), from `/proc/PID/limits`.
fn open_files_limits(pid: u32) -> (Option<u64>, Option<u64>) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .expect("/proc/PID/limits lists open files");
    let mut numbers = line["Max open files".len()..]
        .split_whitespace()
        .map(|n| n.parse::<u64>().ok());
    (numbers.next().unwrap(), numbers.next().unwrap())
}

#[tokio::test]
async fn run_raises_the_open_files_soft_limit_to_the_hard_limit() {
    let (_, hard) = open_files_limits(std::process::id());
    if hard.is_some_and(|hard| hard <= 512) {
        eprintln!("skipped: the hard open-files limit here is {hard:?}, not above 512");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let legacy = Backend::named("legacy").await;
    let routes = format!(
        "[upstreams.legacy]\nurl = \"http://{}\"\n[defaults]\nupstream = \"legacy\"\n",
        legacy.addr
    );
    // Started as a service manager would with the usual soft limit: low.
    let (mut child, proxy, _admin) = spawn_with(&dir, &routes, |config| {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg("ulimit -S -n 512 && exec \"$0\" --log-format json run -c \"$1\"")
            .arg(env!("CARGO_BIN_EXE_strangler"))
            .arg(config);
        command
    })
    .await;

    let (soft, child_hard) = open_files_limits(child.id());
    assert_eq!(child_hard, hard, "the hard limit is the operator's");
    assert_eq!(soft, hard, "the soft limit was raised from 512");
    let answer = reqwest::get(format!("http://{proxy}/")).await.unwrap();
    assert_eq!(answer.text().await.unwrap(), "legacy");

    signal(&child, "TERM");
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
}
