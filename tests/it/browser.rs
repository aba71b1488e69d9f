//! The browser journey in headless Chromium (Debian's `chromium`, driven by
//! playwright-core): a fresh app → setup page → owner created → sign out → wrong
//! password refused → sign in → dashboard → reload keeps the session → Outbox in
//! capture mode → a Korean test mail previewed at desktop and mobile widths → sent by
//! the real sender (running in the background, as in production) → read back in the
//! Outbox.

use std::{path::Path, process::Command};

use crate::harness::{TestApp, tmp_root};

fn chromium() -> Option<String> {
    if let Ok(p) = std::env::var("CHROMIUM") {
        return Some(p);
    }
    [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ]
    .iter()
    .find(|p| Path::new(p).exists())
    .map(|p| p.to_string())
}

#[tokio::test]
async fn owner_sets_up_signs_out_and_back_in_in_a_real_browser() {
    // In CI a missing browser is a failure, not a skip: .ci/run installs it.
    let in_ci = std::env::var_os("CI").is_some();
    let Some(chromium) = chromium() else {
        assert!(
            !in_ci,
            "CI must run the browser journey, but Chromium is not installed"
        );
        eprintln!(
            "SKIPPED browser journey: Chromium not found (install Debian's `chromium` package, or set CHROMIUM=/path/to/chrome); .ci/run installs it"
        );
        return;
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    if Command::new("node").arg("--version").output().is_err() {
        assert!(
            !in_ci,
            "CI must run the browser journey, but node is not installed"
        );
        eprintln!("SKIPPED browser journey: node is not installed");
        return;
    }
    if !dir.join("node_modules/playwright-core").is_dir() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir)
            .status()
            .expect("running npm ci");
        assert!(status.success(), "npm ci in tests/browser failed");
    }

    let app = TestApp::spawn().await;
    // The sender runs as it does in production: woken by the outbox's NOTIFY.
    tokio::spawn(app.sender.clone().run(app.shutdown.child_token()));
    let shots = tmp_root().join("screenshots");
    let out = tokio::process::Command::new("node")
        .arg(dir.join("journey.mjs"))
        .env("BASE_URL", &app.base)
        .env("CHROMIUM", &chromium)
        .env("OWNER_EMAIL", "대표@example.kr")
        .env("OWNER_PASSWORD", "a long owner passphrase")
        .env("SCREENSHOT_DIR", &shots)
        .output()
        .await
        .expect("running node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "the browser journey failed:\n{stdout}"
    );
    assert!(stdout.contains("all 11 steps passed"));

    let (email, role): (String, String) = sqlx::query_as("SELECT email, role::text FROM users")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        (email.as_str(), role.as_str()),
        ("대표@example.kr", "owner")
    );
    let failures: i64 = sqlx::query_scalar("SELECT count(*) FROM login_failures")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        failures, 0,
        "the wrong-password attempt was recorded, then cleared by the good sign-in"
    );

    // The mail the journey read in the Outbox really went through the capture store.
    let (captured, subject): (i64, Option<String>) = sqlx::query_as(
        "SELECT count(*), max(c.subject) FROM captured_mail c JOIN messages m ON m.id = c.message_id WHERE m.to_email = $1",
    )
    .bind("대표@example.kr")
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(captured, 1);
    assert_eq!(subject.as_deref(), Some("홍길동님께 드리는 소식"));
}
