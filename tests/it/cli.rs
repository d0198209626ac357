//! The operator CLI against a running cluster: every admin subcommand prints
//! JSON, and what it creates is enough to receive a signed webhook and watch
//! it arrive with the token `faro token` issued.

use std::process::Command;

use serde_json::Value;

use crate::cluster::{Cluster, JWT_SECRET, Tenant, whatsapp_text};

pub fn faro(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_faro"))
        .args(args)
        .env("RUST_LOG", "warn")
        .env("FARO_PLAINTEXT", "true")
        .output()
        .expect("faro runs");
    assert!(
        out.status.success(),
        "faro {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("faro {args:?} prints JSON: {e}"))
}

#[tokio::test]
async fn admin_commands_print_json_and_set_up_a_working_channel() {
    let c = Cluster::start().await;
    let url = format!("http://{}", c.conversations);
    let (tenant, location, app, channel, token) = tokio::task::spawn_blocking(move || {
        let target = ["--conversations-url", url.as_str()];
        let tenant = faro(
            &[
                &["admin", "create-tenant", "--name", "Costa Agency"],
                &target[..],
            ]
            .concat(),
        );
        let t = tenant["id"].as_str().expect("tenant id").to_owned();
        let location = faro(
            &[
                &[
                    "admin",
                    "create-location",
                    "--tenant",
                    &t,
                    "--name",
                    "Tulum",
                ],
                &target[..],
            ]
            .concat(),
        );
        let l = location["id"].as_str().expect("location id").to_owned();
        let app = faro(
            &[
                &[
                    "admin",
                    "create-app",
                    "--meta-app-id",
                    "777",
                    "--app-secret",
                    "cli-secret",
                    "--verify-token",
                    "cli-verify",
                ],
                &target[..],
            ]
            .concat(),
        );
        let a = app["id"].as_str().expect("app id").to_owned();
        let channel = faro(
            &[
                &[
                    "admin",
                    "connect",
                    "--tenant",
                    &t,
                    "--location",
                    &l,
                    "--channel",
                    "whatsapp",
                    "--app",
                    &a,
                    "--account",
                    "555000",
                ],
                &target[..],
            ]
            .concat(),
        );
        let token = faro(&[
            "token",
            "--tenant",
            &t,
            "--sub",
            "ana",
            "--jwt-secret",
            JWT_SECRET,
        ]);
        (tenant, location, app, channel, token)
    })
    .await
    .expect("cli");
    assert_eq!(tenant["name"], "Costa Agency");
    assert_eq!(location["tenant_id"], tenant["id"]);
    assert_eq!(app["meta_app_id"], "777");
    assert!(
        app.get("app_secret").is_none(),
        "the secret is never printed back"
    );
    assert_eq!(channel["channel"], "whatsapp");
    assert_eq!(channel["external_account_id"], "555000");
    assert_eq!(token["sub"], "ana");

    let mut ws = c.websocket(token["token"].as_str().expect("token")).await;
    let t = Tenant {
        id: tenant["id"].as_str().unwrap_or_default().into(),
        location_id: location["id"].as_str().unwrap_or_default().into(),
        phone_number_id: "555000".into(),
        app_secret: "cli-secret".into(),
    };
    let (status, _) = c
        .post_signed(
            &whatsapp_text(&t, "wamid.CLI1", "1", "hola", 1_700_000_000),
            "cli-secret",
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        ws.next_event().await["message"]["channel_message_id"],
        "wamid.CLI1"
    );

    // A second connect of the same number is refused with a clear error.
    let url = format!("http://{}", c.conversations);
    let (t_id, l_id, a_id) = (
        t.id.clone(),
        t.location_id.clone(),
        app["id"].as_str().unwrap_or_default().to_owned(),
    );
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_faro"))
            .args([
                "admin",
                "connect",
                "--tenant",
                &t_id,
                "--location",
                &l_id,
                "--channel",
                "whatsapp",
            ])
            .args([
                "--app",
                &a_id,
                "--account",
                "555000",
                "--conversations-url",
                &url,
            ])
            .env("FARO_PLAINTEXT", "true")
            .output()
            .expect("faro runs")
    })
    .await
    .expect("cli");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already connected"));
    c.stop().await;
}
