//! Statuses, reactions, edits and revokes: applied to their message whatever
//! the order they arrive in, kept until it arrives, never stranded by a race,
//! dropped once they can no longer meet it.

use faro_proto::conversations::v1::Channel;
use serde_json::Value;

use crate::{
    cluster::{Cluster, Options, fixture},
    whatsapp::{META_APP, PHONE, SECRET, post, setup, ts},
};

const CUSTOMER: &str = "16505551234";
const BUSINESS: &str = "15550783881";

#[tokio::test]
async fn reactions_edits_and_revokes_apply_to_their_message_in_any_order() {
    let (c, _) = setup().await;
    let text = "wamid.HBgLMTY1MDU1NTEyMzQVAgASGBQzTEXT0000000000000100";
    let image = "wamid.HBgLMTY1MDU1NTEyMzQVAgASGBQzIMAGE000000000000300";
    // The reaction, the edit and the revoke arrive before their messages.
    for k in ["reaction", "edit", "revoke"] {
        post(&c, k).await;
    }
    c.drained().await;
    assert_eq!(c.count("SELECT count(*) FROM messages").await, 0);
    assert_eq!(
        c.count("SELECT count(*) FROM pending_message_events").await,
        3
    );
    for k in ["text", "image"] {
        post(&c, k).await;
    }
    c.drained().await;
    assert_eq!(
        c.count("SELECT count(*) FROM pending_message_events").await,
        0
    );

    let m = c.message(text).await;
    assert_eq!(m["reactions"][CUSTOMER]["emoji"], "👍");
    assert_eq!(m["text"], "¿Tienen habitación doble para el sábado 14? 🏖️");
    assert_eq!(
        m["edit_history"][0]["text"],
        "¿Tienen habitación para el sábado? 🏖️"
    );
    assert_eq!(ts(&m["edited_at"]), 1_749_416_403);
    let img = c.message(image).await;
    assert_eq!(ts(&img["deleted_at"]), 1_749_416_404);
    assert_eq!(
        img["text"], "Así es la vista que buscamos 🌅",
        "a revoked message keeps its row"
    );

    // Removing the reaction (newer) clears it; replaying the older one does not bring it back.
    post(&c, "reaction_removed").await;
    post(&c, "reaction").await;
    c.drained().await;
    let m = c.message(text).await;
    assert_eq!(m["reactions"][CUSTOMER]["emoji"], "");
    assert_eq!(
        c.count("SELECT count(*) FROM messages").await,
        2,
        "reactions and edits are not messages"
    );
    c.stop().await;
}

/// An outbound message (a Business-app echo) with the id the status fixtures name.
fn outbound(id: &str, at: i64) -> String {
    serde_json::json!({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [{
        "field": "smb_message_echoes", "value": {"messaging_product": "whatsapp",
        "metadata": {"display_phone_number": BUSINESS, "phone_number_id": PHONE},
        "message_echoes": [{"from": BUSINESS, "to": CUSTOMER, "id": id, "timestamp": at.to_string(),
                            "type": "text", "text": {"body": "Confirmado ✅"}}]}}]}]})
    .to_string()
}

#[tokio::test]
async fn statuses_move_forward_only_whatever_order_they_arrive_in() {
    let (c, _) = setup().await;
    let mut ws = c.websocket(&c.token(&c.count_tenant().await, 300)).await;
    let outbound_id = "wamid.HBgLMTY1MDU1NTEyMzQVAgARGBJBQkNERUYxMjM0NTY3ODkwAA==";
    // read, then delivered, then sent — all before the message itself.
    for k in ["status_read", "status_delivered", "status_sent"] {
        post(&c, k).await;
    }
    c.drained().await;
    assert_eq!(
        c.count("SELECT count(*) FROM pending_message_events").await,
        3
    );
    let status = c
        .post_meta(
            "whatsapp",
            outbound(outbound_id, 1_749_416_405).as_bytes(),
            SECRET,
        )
        .await;
    assert_eq!(status, 200);
    c.drained().await;
    let m = c.message(outbound_id).await;
    assert_eq!(m["status"], "read");
    assert_eq!(ts(&m["delivered_at"]), 1_749_416_407);
    assert_eq!(ts(&m["read_at"]), 1_749_416_408);
    let created = ws.next_event().await;
    assert_eq!(created["type"], "message.created");
    assert_eq!(
        created["message"]["status"], "read",
        "announced with the statuses applied"
    );

    // A late "delivered" changes nothing visible; the agent still hears of no regression.
    post(&c, "status_delivered").await;
    c.drained().await;
    assert_eq!(c.message(outbound_id).await["status"], "read");

    // "played" (a voice message listened to) comes after read.
    let played = String::from_utf8(fixture("whatsapp/status_played.json"))
        .expect("utf8")
        .replace(
            "wamid.HBgLMTY1MDU1NTEyMzQVAgASGBQzVOICE000000000000400",
            outbound_id,
        );
    assert_eq!(
        c.post_meta("whatsapp", played.as_bytes(), SECRET).await,
        200
    );
    c.drained().await;
    let m = c.message(outbound_id).await;
    assert_eq!(m["status"], "played");
    assert_eq!(ts(&m["played_at"]), 1_749_416_409);
    post(&c, "status_read").await;
    c.drained().await;
    assert_eq!(
        c.message(outbound_id).await["status"],
        "played",
        "no step back to read"
    );

    // failed keeps its error and is not erased by a later delivered.
    let failing = "wamid.HBgLMTY1MDU1NTEyMzQVAgASGBQzTEXT0000000000000100";
    let status = c
        .post_meta(
            "whatsapp",
            outbound(failing, 1_749_416_383).as_bytes(),
            SECRET,
        )
        .await;
    assert_eq!(status, 200);
    // Stored first, so the failure arrives as a change to an announced message.
    c.drained().await;
    post(&c, "status_failed").await;
    c.drained().await;
    let late = fixture("whatsapp/status_delivered.json");
    let late = String::from_utf8(late)
        .expect("utf8")
        .replace(outbound_id, failing);
    assert_eq!(c.post_meta("whatsapp", late.as_bytes(), SECRET).await, 200);
    c.drained().await;
    let f = c.message(failing).await;
    assert_eq!(f["status"], "failed");
    assert_eq!(f["status_error"][0]["code"], 131047);
    assert_eq!(ts(&f["failed_at"]), 1_749_416_410);

    // Every change reached the agent as message.updated, in the end state.
    let mut last_failed = None;
    for _ in 0..10 {
        let e = ws.next_event().await;
        if e["message"]["channel_message_id"] == failing && e["message"]["status"] == "failed" {
            last_failed = Some(e);
            break;
        }
    }
    let e = last_failed.expect("the failure is announced");
    assert_eq!(e["type"], "message.updated");
    assert_eq!(e["message"]["status_error"][0]["code"], 131047);
    c.stop().await;
}

/// A message and a reaction to it, posted at the same moment, land in two
/// concurrent transactions; whichever commits second must see the first.
#[tokio::test]
async fn events_racing_their_message_are_never_stranded() {
    // One job per transaction and four workers: most pairs race.
    let c = Cluster::start_with(Options {
        ingest_workers: 4,
        ingest_batch: 1,
        ..Options::default()
    })
    .await;
    let alpha = c.bare_tenant("alpha").await;
    let app = c.app(META_APP, SECRET, "verify-alpha").await;
    c.connect(&alpha, Channel::Whatsapp, PHONE, &app).await;
    const N: usize = 60;
    let posts = (0..N).flat_map(|i| {
        let id = format!("wamid.RACE{i:04}");
        let message = crate::cluster::whatsapp_text(
            &crate::cluster::Tenant {
                id: String::new(),
                location_id: String::new(),
                phone_number_id: PHONE.into(),
                app_secret: SECRET.into(),
            },
            &id,
            CUSTOMER,
            "race",
            1_749_416_500 + i as i64,
        );
        let mut reaction: Value = serde_json::from_str(&message).expect("json");
        let m = &mut reaction["entry"][0]["changes"][0]["value"]["messages"][0];
        m["id"] = format!("{id}-r").into();
        m["type"] = "reaction".into();
        m["reaction"] = serde_json::json!({"message_id": id, "emoji": "🔥"});
        if let Some(obj) = m.as_object_mut() {
            obj.remove("text");
        }
        [message, reaction.to_string()]
    });
    futures::future::join_all(posts.map(|body| {
        let c = &c;
        async move { assert_eq!(c.post_meta("whatsapp", body.as_bytes(), SECRET).await, 200) }
    }))
    .await;
    c.drained().await;
    assert_eq!(c.count("SELECT count(*) FROM messages").await, N as i64);
    assert_eq!(
        c.count("SELECT count(*) FROM pending_message_events").await,
        0,
        "no event stranded"
    );
    let reacted = c
        .count("SELECT count(*) FROM messages WHERE reactions ? '16505551234'")
        .await;
    assert_eq!(reacted, N as i64);
    c.stop().await;
}

/// Events that never meet their message are dropped once Meta would have
/// stopped retrying; younger ones stay. Only the sweeper's role can do this
/// across tenants, through the narrow expiry function.
#[tokio::test]
async fn events_waiting_past_their_ttl_are_dropped() {
    let (c, _) = setup().await;
    for k in ["status_sent", "reaction", "edit"] {
        post(&c, k).await;
    }
    c.drained().await;
    assert_eq!(
        c.count("SELECT count(*) FROM pending_message_events").await,
        3
    );
    sqlx::query("UPDATE pending_message_events SET received_at = now() - interval '8 days' WHERE kind <> 'edit'")
        .execute(&c.db.owner)
        .await
        .expect("age two events");
    let sweeper =
        c.db.app_options()
            .username(faro_conversations::SWEEPER_ROLE);
    let sweeper = sqlx::PgPool::connect_with(sweeper)
        .await
        .expect("sweeper pool");
    let week = std::time::Duration::from_secs(7 * 24 * 3600);
    assert_eq!(
        faro_conversations::expire_pending(&sweeper, week)
            .await
            .expect("expire"),
        2
    );
    let left: Vec<String> = sqlx::query_scalar("SELECT kind FROM pending_message_events")
        .fetch_all(&c.db.owner)
        .await
        .expect("left");
    assert_eq!(left, ["edit"]);
    sweeper.close().await;
    // The service role still cannot delete pending events directly without a tenant.
    let app = sqlx::PgPool::connect_with(c.db.app_options())
        .await
        .expect("app pool");
    let deleted = sqlx::query("DELETE FROM pending_message_events")
        .execute(&app)
        .await
        .expect("delete runs")
        .rows_affected();
    assert_eq!(deleted, 0);
    app.close().await;
    c.stop().await;
}
