//! `faro admin connect --waba` and `faro admin account-events`: the CLI
//! connects a number with its WhatsApp Business Account, and lists what that
//! account's webhooks stored.

use crate::{
    account_events::{WABA, post_meta},
    cli,
    cluster::{Cluster, fixture},
    whatsapp::{self, PHONE, SECRET},
};

#[tokio::test]
async fn the_cli_connects_a_number_with_its_waba_and_lists_account_events() {
    let c = Cluster::start().await;
    let (tenant, location) = c.bare_tenant("alpha").await;
    let app = c.app(whatsapp::META_APP, SECRET, "verify-alpha").await;
    let url = format!("http://{}", c.conversations);
    let target = ["--conversations-url".to_owned(), url];
    let args = |a: &[&str]| -> Vec<String> {
        a.iter()
            .map(|s| (*s).to_owned())
            .chain(target.iter().cloned())
            .collect()
    };
    let connect = args(&[
        "admin",
        "connect",
        "--tenant",
        &tenant,
        "--location",
        &location,
        "--channel",
        "whatsapp",
        "--app",
        &app,
        "--account",
        PHONE,
        "--waba",
        WABA,
    ]);
    let connected = tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = connect.iter().map(String::as_str).collect();
        cli::faro(&a)
    })
    .await
    .expect("cli");
    assert_eq!(connected["waba_id"], WABA);
    assert_eq!(connected["kind"], "messaging");

    let body = fixture("whatsapp_account/message_template_status_update.json");
    assert_eq!(post_meta(&c, &body).await.0, 200);
    c.drained().await;

    let list = args(&["admin", "account-events", "--tenant", &tenant]);
    let listed = tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = list.iter().map(String::as_str).collect();
        cli::faro(&a)
    })
    .await
    .expect("cli");
    let events = listed.as_array().expect("a JSON array");
    assert_eq!(events.len(), 1, "{listed:#}");
    assert_eq!(events[0]["field"], "message_template_status_update");
    assert_eq!(events[0]["external_account_id"], WABA);
    assert_eq!(events[0]["value"]["event"], "APPROVED");
    assert_eq!(events[0]["timestamp"], "2025-02-12T00:43:44.000Z");
    c.stop().await;
}
