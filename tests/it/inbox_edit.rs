//! Editing threads through the edge: the status table, unknown values,
//! stale versions (If-Match and `version`), and every change reaching the
//! tenant's agents live, a location-limited agent only for its locations.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    cluster::Cluster,
    inbox_support::{agent, call, get, names, post, shop, token},
};

async fn version(c: &Cluster, id: &str) -> i64 {
    sqlx::query_scalar("SELECT version FROM conversations WHERE id = $1::uuid")
        .bind(id)
        .fetch_one(&c.db.owner)
        .await
        .expect("version")
}

#[tokio::test]
async fn status_moves_follow_the_table_and_a_stale_edit_changes_nothing() {
    let c = Cluster::start().await;
    let s = shop(&c, "edits").await;
    post(
        &c,
        &s.one,
        "wamid.E1",
        "15550001111",
        "Ann",
        "hi",
        1_700_000_100,
    )
    .await;
    c.drained().await;
    agent(&c, s.id(), "agent-x", &[]).await;
    agent(&c, s.id(), "elsewhere", &[&s.two.location_id]).await;
    let me = token(s.id(), "agent-1", None);
    let list = get(&c, "/api/v1/conversations", &me).await;
    let id = list.body["conversations"][0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let path = format!("/api/v1/conversations/{id}");
    let one = get(&c, &path, &me).await;
    assert_eq!(
        (one.status, one.etag.as_deref()),
        (StatusCode::OK, Some("\"1\""))
    );
    assert_eq!(one.body["status"], "new");
    let patch = |body: Value, headers: Vec<(&'static str, String)>| {
        let (c, path, me) = (&c, path.clone(), me.clone());
        async move {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            call(c, Method::PATCH, &path, &me, &h, Some(body)).await
        }
    };

    // Refused, each naming its field, and nothing changes.
    for (body, field) in [
        (json!({"status": "converted"}), "status"),
        (json!({"status": "won"}), "status"),
        (json!({"status": 3}), "status"),
        (
            json!({"assigned_to_user_id": "nobody"}),
            "assigned_to_user_id",
        ),
        (
            json!({"assigned_to_user_id": "elsewhere"}),
            "assigned_to_user_id",
        ),
        (json!({"lead_status": "hot"}), "lead_status"),
        (json!({"source_type": "billboard"}), "source_type"),
        (json!({"add_tags": [""]}), "tags"),
        (json!({"add_tags": "vip"}), "add_tags"),
        (
            json!({"add_roi_links": [{"kind": "tweet", "external_id": "1"}]}),
            "add_roi_links.kind",
        ),
        (json!({"colour": "red"}), "colour"),
        (json!({"version": 0}), "version"),
    ] {
        names(&patch(body.clone(), vec![]).await, field);
    }
    names(
        &patch(json!({}), vec![("if-match", "soon".into())]).await,
        "If-Match",
    );
    assert_eq!(version(&c, &id).await, 1, "refusals change nothing");

    // Allowed moves; every change adds one to the version (the ETag).
    let a = patch(json!({"status": "open", "add_tags": ["vip", "wedding"],
                         "add_roi_links": [{"kind": "review", "external_id": "g-123", "source": "google"}],
                         "source_type": "review_response"}),
                  vec![("if-match", "\"1\"".into())]).await;
    assert_eq!(
        (a.status, a.etag.as_deref()),
        (StatusCode::OK, Some("\"2\"")),
        "{}",
        a.body
    );
    assert_eq!(a.body["tags"], json!(["vip", "wedding"]));
    assert_eq!(a.body["roi_links"][0]["external_id"], "g-123");
    assert_eq!(a.body["source_type"], "review_response");
    // Nothing to change: the version stays.
    let same = patch(json!({"status": "open", "add_tags": ["vip"]}), vec![]).await;
    assert_eq!(same.etag.as_deref(), Some("\"2\""));

    // Two agents edit at once from version 2: one wins, the other is told.
    let (x, y) = tokio::join!(
        patch(
            json!({"status": "quoted"}),
            vec![("if-match", "\"2\"".into())]
        ),
        patch(
            json!({"status": "booked"}),
            vec![("if-match", "\"2\"".into())]
        ),
    );
    let mut statuses = [x.status, y.status];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::OK, StatusCode::PRECONDITION_FAILED],
        "{} {}",
        x.body,
        y.body
    );
    let winner = if x.status == StatusCode::OK { &x } else { &y };
    assert_eq!(version(&c, &id).await, 3);
    let now = get(&c, &path, &me).await;
    assert_eq!(
        now.body["status"], winner.body["status"],
        "the loser changed nothing"
    );
    // The same with `version` in the body: 409.
    let stale = patch(json!({"version": 2, "lead_status": "qualified"}), vec![]).await;
    assert_eq!(stale.status, StatusCode::CONFLICT, "{}", stale.body);
    assert!(get(&c, &path, &me).await.body["lead_status"].is_null());
    let both = patch(json!({"version": 3}), vec![("if-match", "\"2\"".into())]).await;
    names(&both, "version");

    // Converted threads may only be archived; archived ones reopen.
    for (to, ok) in [
        ("converted", true),
        ("open", false),
        ("archived", true),
        ("open", true),
    ] {
        let a = patch(json!({"status": to}), vec![]).await;
        assert_eq!(a.status == StatusCode::OK, ok, "to {to}: {}", a.body);
    }
    // Unassign with null, remove a tag and a link.
    let a = patch(json!({"assigned_to_user_id": "agent-x"}), vec![]).await;
    assert_eq!(a.body["assigned_to_user_id"], "agent-x");
    let a = patch(
        json!({"assigned_to_user_id": null, "remove_tags": ["vip"],
                         "remove_roi_links": [{"kind": "review", "external_id": "g-123"}]}),
        vec![],
    )
    .await;
    assert!(a.body["assigned_to_user_id"].is_null());
    assert_eq!(
        (a.body["tags"].clone(), a.body["roi_links"].clone()),
        (json!(["wedding"]), json!([]))
    );
    c.stop().await;
}

/// The next `conversation.updated` frame, skipping other kinds.
async fn next_update(ws: &mut crate::clients::Ws) -> Value {
    loop {
        let e = ws.next_event().await;
        if e["type"] == "conversation.updated" {
            return e;
        }
    }
}

#[tokio::test]
async fn every_change_reaches_agents_live_within_their_locations() {
    let c = Cluster::start().await;
    let s = shop(&c, "live").await;
    post(
        &c,
        &s.one,
        "wamid.L1",
        "15550001111",
        "Ann",
        "hi",
        1_700_000_100,
    )
    .await;
    post(
        &c,
        &s.two,
        "wamid.L2",
        "15550002222",
        "Bob",
        "hey",
        1_700_000_200,
    )
    .await;
    c.drained().await;
    agent(&c, s.id(), "agent-x", &[]).await;
    let me = token(s.id(), "agent-1", None);
    let list = get(&c, "/api/v1/conversations", &me).await.body;
    let (bob, ann) = (
        list["conversations"][0]["id"]
            .as_str()
            .expect("id")
            .to_owned(),
        list["conversations"][1]["id"]
            .as_str()
            .expect("id")
            .to_owned(),
    );
    let mut everyone = c.websocket(&token(s.id(), "agent-2", None)).await;
    let mut branch = c
        .websocket(&token(
            s.id(),
            "agent-3",
            Some(&[s.two.location_id.as_str()]),
        ))
        .await;

    let edits = [
        (json!({"status": "open"}), "status"),
        (
            json!({"assigned_to_user_id": "agent-x"}),
            "assigned_to_user_id",
        ),
        (json!({"add_tags": ["vip"]}), "tags"),
    ];
    for (body, changed) in &edits {
        let a = call(
            &c,
            Method::PATCH,
            &format!("/api/v1/conversations/{ann}"),
            &me,
            &[],
            Some(body.clone()),
        )
        .await;
        assert_eq!(a.status, StatusCode::OK);
        let e = next_update(&mut everyone).await;
        assert_eq!(e["conversation"]["id"], ann.as_str());
        assert_eq!(e["changed"], json!([changed]), "{e}");
        assert_eq!(e["agent_id"], "agent-1");
        assert!(e["position"].is_string(), "kept in history: {e}");
    }
    let read = call(
        &c,
        Method::POST,
        &format!("/api/v1/conversations/{ann}/read"),
        &me,
        &[],
        None,
    )
    .await;
    assert_eq!(read.status, StatusCode::OK);
    let e = next_update(&mut everyone).await;
    assert_eq!(e["changed"], json!(["read"]));
    assert_eq!(e["last_read_message_id"], read.body["last_read_message_id"]);
    assert!(
        e["conversation"].get("unread_count").is_none(),
        "no agent's own count goes live"
    );

    // The branch agent saw none of Ann's (location one): its first frame is Bob's.
    let a = call(
        &c,
        Method::PATCH,
        &format!("/api/v1/conversations/{bob}"),
        &me,
        &[],
        Some(json!({"status": "open"})),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    let e = next_update(&mut branch).await;
    assert_eq!(e["conversation"]["id"], bob.as_str(), "{e}");
    assert_eq!(e["location_id"], s.two.location_id.as_str());
    c.stop().await;
}
