//! `strangler demo`, the first command a newcomer runs, end to end.

#[test]
fn the_demo_walks_every_phase_and_prints_the_report() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_strangler"))
        .arg("demo")
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "1/6 Measure",
        "body $.total",
        "canary 10.0%",
        "rolled back automatically: gate",
        "candidate 100.0% complete",
        "# Migration report",
        "`$.request_id`: legacy differs from itself",
        "Dashboard: http://127.0.0.1:",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
}
