//! The auditor's report, rendered by a real browser: headless Chromium (Debian's
//! `chromium`) loads the generated page, and the test reads the DOM it built and checks the
//! screenshot it took.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Sandbox, signal, wait_for};

const CHROMIUM: &str = "/usr/bin/chromium";

fn chromium(profile: &Path, args: &[&str]) -> std::process::Output {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: install it with `apt-get install chromium` (.ci/test does)"
    );
    Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run chromium")
}

#[test]
fn the_html_report_renders_in_a_browser_with_history_and_chain_status() {
    let sandbox = Sandbox::new(
        r#"
[[secrets]]
name = "svc/fast"
schedule = { every = "1s" }
owner = "team-fast"

[[secrets]]
name = "svc/slow"
schedule = { every = "30d" }
owner = "team-slow"
"#,
    );
    let child = sandbox
        .command(&["run"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("daemon");
    wait_for("a few scheduled rotations", Duration::from_secs(30), || {
        (sandbox.events("rotation_succeeded", "svc/fast").len() >= 3).then_some(())
    });
    let mut child = child;
    signal(&child, "TERM");
    wait_for("daemon exit", Duration::from_secs(30), || {
        child.try_wait().unwrap()
    });
    sandbox.ok(&["rotate", "svc/slow", "--by", "alice@example"]);

    let html = sandbox.path("report.html");
    sandbox.ok(&["audit", "report", "--output", html.to_str().unwrap()]);
    let csv = sandbox.ok(&["audit", "report", "--format", "csv"]);
    assert!(csv.starts_with("secret,owner,kind,time,version"));
    assert!(csv.contains("svc/slow,team-slow,rotation,") && csv.contains("alice@example"));

    let profile = sandbox.path("chromium-profile");
    let url = format!("file://{}", html.display());
    let dom = chromium(&profile, &["--dump-dom", &url]);
    assert!(
        dom.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let dom = String::from_utf8_lossy(&dom.stdout);
    for needle in [
        "Secret rotation report",
        "hash chain verified",
        "svc/fast",
        "svc/slow",
        "team-slow",
        "alice@example",
        "<svg",
    ] {
        assert!(dom.contains(needle), "rendered page lacks {needle:?}");
    }
    let fast_rows =
        dom.matches("<td>schedule</td>").count() + dom.matches("<td>initial</td>").count();
    assert!(fast_rows >= 3, "rotation rows rendered: {fast_rows}");

    let shot = sandbox.path("report.png");
    let out = chromium(
        &profile,
        &[
            "--window-size=1280,1400",
            &format!("--screenshot={}", shot.display()),
            &url,
        ],
    );
    assert!(
        out.status.success(),
        "screenshot failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    assert!(
        png.len() > 20_000,
        "a page with content, not a blank image ({} bytes)",
        png.len()
    );
    if let Ok(dir) = std::env::var("REKEYD_KEEP_SCREENSHOT") {
        std::fs::copy(&shot, Path::new(&dir).join("report.png")).expect("keep screenshot");
    }
}
