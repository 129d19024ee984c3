//! The binary as an operator runs it: exit codes, signals, and start-up errors.

// A test that cannot set up its world should stop there, loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;
use std::time::Duration;

use hookrelay_tests::{amqp_url, TestDb};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The binary with a clean environment: only the settings a test gives, none inherited.
fn hookrelay(db: &TestDb) -> Command {
    hookrelay_in(db, &hookrelay_tests::unique_namespace())
}

fn hookrelay_in(db: &TestDb, namespace: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hookrelay"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .env("HOOKRELAY_DATABASE_URL", db.url())
        .env("HOOKRELAY_AMQP_URL", amqp_url())
        .env("HOOKRELAY_LISTEN", "127.0.0.1:0")
        .env("HOOKRELAY_NAMESPACE", namespace)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Waits for the service's "listening" log line and answers what it printed until then;
/// panics with that otherwise.
async fn wait_listening(child: &mut Child) -> Vec<String> {
    let stderr = child.stderr.take().expect("piped stderr");
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = Vec::new();
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(line)) = lines.next_line().await {
            let listening = line.contains("hookrelay is listening");
            seen.push(line);
            if listening {
                return true;
            }
        }
        false
    })
    .await;
    assert!(
        matches!(found, Ok(true)),
        "the service did not start:\n{}",
        seen.join("\n")
    );
    // Keep draining so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    seen
}

async fn signal(child: &Child, name: &str) {
    let pid = child.id().expect("a running child").to_string();
    let status = Command::new("kill")
        .args([format!("-{name}"), pid])
        .status()
        .await
        .expect("kill runs");
    assert!(status.success());
}

#[tokio::test]
async fn sigterm_and_sigint_stop_the_service_with_exit_code_0() {
    for sig in ["TERM", "INT"] {
        let db = TestDb::new();
        let namespace = hookrelay_tests::unique_namespace();
        // A platform's stray variable is not fatal, only noted.
        let mut child = hookrelay_in(&db, &namespace)
            .env("HOOKRELAY_PORT", "tcp://10.0.0.1:80")
            .arg("serve")
            .spawn()
            .expect("the binary starts");
        let printed = wait_listening(&mut child).await;
        assert!(
            printed
                .iter()
                .any(|l| l.contains("ignoring HOOKRELAY_PORT")),
            "{printed:?}"
        );
        signal(&child, sig).await;
        let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
            .await
            .unwrap_or_else(|_| panic!("still running 20s after SIG{sig}"))
            .expect("an exit status");
        assert_eq!(status.code(), Some(0), "SIG{sig}");
        hookrelay_tests::delete_namespace(&amqp_url(), &namespace, &[]).await;
    }
}

async fn run_to_end(mut cmd: Command) -> (Option<i32>, String) {
    let output = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("the command ends")
        .expect("the command runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn bad_settings_stop_start_up_naming_the_setting() {
    let db = TestDb::new();
    let cases = [
        ("HOOKRELAY_REQUEST_TIMEOUT", "soon"),
        ("HOOKRELAY_DATABASE_URL", "not a url"),
        ("HOOKRELAY_AMQP_URL", "http://broker"),
        ("HOOKRELAY_LISTEN", "everywhere"),
        ("HOOKRELAY_RETRY_SCHEDULE", "5s,never"),
        ("HOOKRELAY_ALLOW_PRIVATE_NETWORKS", "perhaps"),
    ];
    for (name, value) in cases {
        let mut cmd = hookrelay(&db);
        cmd.env(name, value).arg("serve");
        let (code, stderr) = run_to_end(cmd).await;
        assert_eq!(code, Some(2), "{name}={value}: {stderr}");
        assert!(stderr.contains(name), "{name}={value}: {stderr}");
    }

    let dir = std::env::temp_dir().join(format!("hookrelay-cli-{}", uuid_like()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let file = dir.join("hookrelay.toml");
    std::fs::write(&file, "namespace = \"ok\"\nreqest_timeout = \"5s\"\n").expect("a config file");
    let mut cmd = hookrelay(&db);
    cmd.arg("--config").arg(&file).arg("serve");
    let (code, stderr) = run_to_end(cmd).await;
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("reqest_timeout"), "{stderr}");
}

#[tokio::test]
async fn an_unreachable_database_is_reported_without_its_password() {
    let db = TestDb::new();
    let mut cmd = hookrelay(&db);
    // Port 1 refuses connections at once.
    cmd.env(
        "HOOKRELAY_DATABASE_URL",
        "postgres://postgres:hunter2@127.0.0.1:1/x",
    )
    .arg("migrate");
    let (code, stderr) = run_to_end(cmd).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("127.0.0.1:1/x"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

#[tokio::test]
async fn migrate_twice_succeeds() {
    let db = TestDb::new();
    for _ in 0..2 {
        let mut cmd = hookrelay(&db);
        cmd.arg("migrate");
        let (code, stderr) = run_to_end(cmd).await;
        assert_eq!(code, Some(0), "{stderr}");
    }
}

fn uuid_like() -> String {
    format!("{}-{:?}", std::process::id(), std::time::SystemTime::now())
        .replace(|c: char| !c.is_ascii_alphanumeric(), "")
}

#[tokio::test]
async fn a_command_run_by_hand_says_what_is_wrong_once() {
    let db = TestDb::new();
    let mut cmd = hookrelay(&db);
    cmd.args([
        "publish",
        "--type",
        "Contact.created",
        "--account",
        "acc",
        "--data",
        "not json",
    ]);
    let (code, stderr) = run_to_end(cmd).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stderr.matches("--data is not JSON").count(), 1, "{stderr}");
}

#[tokio::test]
async fn the_help_says_where_the_settings_come_from() {
    let db = TestDb::new();
    for args in [&["--help"][..], &["serve", "--help"]] {
        let mut cmd = hookrelay(&db);
        cmd.args(args);
        let output = tokio::time::timeout(Duration::from_secs(60), cmd.output())
            .await
            .expect("the command ends")
            .expect("the command runs");
        let help = String::from_utf8_lossy(&output.stdout);
        assert_eq!(output.status.code(), Some(0), "{args:?}: {help}");
        for needed in ["HOOKRELAY_", "--config", "deploy/hookrelay.example.toml"] {
            assert!(help.contains(needed), "{args:?} lacks {needed}: {help}");
        }
    }
}
