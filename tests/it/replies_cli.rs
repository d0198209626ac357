//! Send credentials through `faro admin set-credential`: sealed at rest,
//! never printed, and a rotation is what the next reply is sent with.

use std::{io::Write, process::Command, process::Stdio};

use chrono::Duration;
use serde_json::{Value, json};

use crate::replies_support::{Platform, start};

fn set_credential(url: &str, tenant: &str, account: &str, how: (&str, &str)) -> (Value, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_faro"));
    cmd.args([
        "admin",
        "set-credential",
        "--conversations-url",
        url,
        "--tenant",
        tenant,
    ])
    .args(["--channel-account", account, "--human-agent"])
    .env("RUST_LOG", "debug")
    .env("FARO_PLAINTEXT", "true")
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    match how {
        ("env", secret) => {
            cmd.env("FARO_CHANNEL_CREDENTIAL", secret);
        }
        (_, _) => {
            cmd.arg("--credential-stdin");
        }
    }
    let mut child = cmd.spawn().expect("faro runs");
    if how.0 == "stdin" {
        writeln!(child.stdin.take().expect("stdin"), "{}", how.1).expect("written");
    }
    let out = child.wait_with_output().expect("faro ends");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    (
        serde_json::from_str(&stdout).expect("JSON"),
        stdout + &stderr,
    )
}

#[tokio::test]
async fn the_cli_seals_a_credential_never_shows_it_and_a_rotation_takes_effect() {
    let s = start().await;
    let t = s
        .thread(Platform::WhatsApp, false, Duration::hours(1))
        .await;
    let account: String =
        sqlx::query_scalar("SELECT id::text FROM channel_accounts WHERE tenant_id = $1::uuid")
            .bind(&t.tenant)
            .fetch_one(&s.cluster.db.owner)
            .await
            .expect("account");
    let url = format!("http://{}", s.cluster.conversations);
    let (tenant, acc, u) = (t.tenant.clone(), account.clone(), url.clone());
    let (first, printed) = tokio::task::spawn_blocking(move || {
        set_credential(&u, &tenant, &acc, ("env", "EAAG-first-secret-token"))
    })
    .await
    .expect("cli");
    assert_eq!(first["has_credential"], true);
    assert_eq!(first["human_agent"], true);
    assert!(
        !printed.contains("first-secret"),
        "never printed or logged: {printed}"
    );

    let (tenant, acc) = (t.tenant.clone(), account.clone());
    let (second, printed) = tokio::task::spawn_blocking(move || {
        set_credential(&url, &tenant, &acc, ("stdin", "EAAG-rotated-secret-token"))
    })
    .await
    .expect("cli");
    assert_eq!(second["has_credential"], true);
    assert!(!printed.contains("rotated-secret"), "{printed}");
    let sealed: Vec<u8> =
        sqlx::query_scalar("SELECT send_credential_enc FROM channel_accounts WHERE id = $1::uuid")
            .bind(&account)
            .fetch_one(&s.cluster.db.owner)
            .await
            .expect("sealed");
    assert!(
        !String::from_utf8_lossy(&sealed).contains("rotated-secret"),
        "sealed at rest"
    );

    let (status, body) = s.reply(&t, "after-rotation", json!({"text": "hi"})).await;
    assert_eq!(status, 202, "{body}");
    assert!(!body.to_string().contains("secret-token"), "never returned");
    let got = s.fake.wait_requests(1).await;
    assert_eq!(
        got[0].authorization.as_deref(),
        Some("Bearer EAAG-rotated-secret-token")
    );
    s.cluster.stop().await;
}
