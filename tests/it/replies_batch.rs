//! Replies that arrive together are stored in one transaction across tenants
//! (issue 14): each request still gets its own answer — its reply, its
//! broken rule, its 404, its first reply again — and each reply is stored
//! and sent once.

use std::{collections::HashMap, time::Duration};

use serde_json::{Value, json};

use crate::replies_support::{Platform, Thread, start};

#[derive(Debug)]
enum Want {
    Created,
    WindowClosed,
    NotFound,
    /// Two requests with one key and one body: one creates, one replays.
    SameKey,
    /// One key, two bodies: one creates, the other is refused.
    KeyReused,
}

#[tokio::test]
async fn replies_stored_together_each_get_their_own_answer_and_are_sent_once() {
    let s = start().await;
    let open = [
        s.thread(Platform::WhatsApp, false, chrono::Duration::hours(1))
            .await,
        s.thread(Platform::Messenger, false, chrono::Duration::hours(1))
            .await,
        s.thread(Platform::Instagram, false, chrono::Duration::hours(1))
            .await,
    ];
    let closed = s
        .thread(Platform::WhatsApp, false, chrono::Duration::hours(25))
        .await;

    let mut calls: Vec<(&Thread, &str, String, Value, Want)> = Vec::new();
    for i in 0..12 {
        let t = &open[i % 3];
        calls.push((
            t,
            &t.token,
            format!("k-{i}"),
            json!({"text": format!("batch {i}")}),
            Want::Created,
        ));
    }
    for i in 0..3 {
        calls.push((
            &closed,
            &closed.token,
            format!("late-{i}"),
            json!({"text": "late"}),
            Want::WindowClosed,
        ));
    }
    for _ in 0..2 {
        let t = &open[0];
        calls.push((
            t,
            &t.token,
            "dup".into(),
            json!({"text": "dup"}),
            Want::SameKey,
        ));
    }
    for text in ["first body", "second body"] {
        let t = &open[1];
        calls.push((
            t,
            &t.token,
            "reused".into(),
            json!({"text": text}),
            Want::KeyReused,
        ));
    }
    // Another tenant's conversation, in the same rush.
    calls.push((
        &open[1],
        &open[0].token,
        "foreign".into(),
        json!({"text": "x"}),
        Want::NotFound,
    ));

    // Hold every insert of a key until the requests have gathered behind
    // the first batch, so that the batches stored after it are mixed.
    let mut lock = s.cluster.db.owner.begin().await.expect("begin");
    sqlx::query("LOCK TABLE reply_requests IN EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .expect("lock");
    let answers = tokio::spawn({
        let http = s.cluster.http.clone();
        let requests: Vec<_> = calls
            .iter()
            .map(|(t, token, key, body, _)| {
                http.post(s.cluster.url(&format!(
                    "/api/v1/conversations/{}/messages",
                    t.conversation
                )))
                .bearer_auth(token)
                .header("idempotency-key", key.as_str())
                .json(body)
            })
            .collect();
        async move {
            futures::future::join_all(requests.into_iter().map(|r| async move {
                let r = r.send().await.expect("edge answers");
                let status = r.status().as_u16();
                (status, r.json::<Value>().await.unwrap_or(Value::Null))
            }))
            .await
        }
    });
    let mut waited = 0;
    while waited < 100 {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&s.cluster.db.owner)
        .await
        .expect("activity");
        if waiting > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 1;
    }
    lock.rollback().await.expect("unlock");
    let answers = answers.await.expect("requests");

    let mut created: HashMap<String, String> = HashMap::new();
    let mut same_key = Vec::new();
    let mut reused = Vec::new();
    for ((t, _, _, body, want), (status, answer)) in calls.iter().zip(&answers) {
        match want {
            Want::Created => {
                assert_eq!(*status, 202, "{want:?}: {answer}");
                let m = &answer["message"];
                assert_eq!(m["conversation_id"], t.conversation.as_str(), "{answer}");
                assert_eq!(m["text"], body["text"], "its own reply: {answer}");
                created.insert(
                    m["id"].as_str().expect("id").to_owned(),
                    m["text"].as_str().expect("text").to_owned(),
                );
            }
            Want::WindowClosed => {
                assert_eq!(*status, 422, "{answer}");
                assert_eq!(answer["error"]["code"], "window_closed", "{answer}");
            }
            Want::NotFound => {
                assert_eq!(*status, 404, "{answer}");
            }
            Want::SameKey => same_key.push((*status, answer["message"]["id"].clone())),
            Want::KeyReused => reused.push((*status, answer.clone())),
        }
    }
    same_key.sort_by_key(|a| a.0);
    assert_eq!(
        (same_key[0].0, same_key[1].0),
        (200, 202),
        "one created, one replayed: {same_key:?}"
    );
    assert_eq!(same_key[0].1, same_key[1].1, "both name one reply");
    reused.sort_by_key(|a| a.0);
    assert_eq!(reused[0].0, 202, "{reused:?}");
    assert_eq!(
        (reused[1].0, &reused[1].1["error"]["code"]),
        (422, &json!("idempotency_key_reused")),
        "{reused:?}"
    );

    // 12 replies, one "dup", one of the "reused" bodies: stored and sent once each.
    s.fake.wait_requests(14).await;
    s.replies_drained().await;
    let sent = s.fake.requests();
    assert_eq!(sent.len(), 14, "each reply sent once");
    let texts: Vec<String> = sent
        .iter()
        .map(|r| {
            r.body
                .pointer("/text/body")
                .or_else(|| r.body.pointer("/message/text"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    for i in 0..12 {
        let text = format!("batch {i}");
        let at: Vec<_> = sent
            .iter()
            .zip(&texts)
            .filter(|(_, t)| **t == text)
            .collect();
        assert_eq!(at.len(), 1, "{text} sent once: {texts:?}");
        assert!(
            at[0].0.path.contains(&open[i % 3].account),
            "{text} through its own account: {}",
            at[0].0.path
        );
    }
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT m.id::text, coalesce(m.text, ''), count(*) OVER ()
         FROM messages m JOIN reply_requests r ON r.tenant_id = m.tenant_id AND r.message_id = m.id",
    )
    .fetch_all(&s.cluster.db.owner)
    .await
    .expect("replies");
    assert_eq!(rows.len(), 14, "one row and one key per reply: {rows:?}");
    for (id, text) in &created {
        assert!(
            rows.iter().any(|(i, t, _)| i == id && t == text),
            "{id} stored as answered"
        );
    }
    let outbound: i64 =
        sqlx::query_scalar("SELECT count(*) FROM messages WHERE direction = 'outbound'")
            .fetch_one(&s.cluster.db.owner)
            .await
            .expect("count");
    assert_eq!(outbound, 14, "nothing refused was stored");

    // The gatherer's batches, as an operator sees them: every call went
    // through one (retries after a taken key are stored alone, not counted).
    let m = crate::metrics::scrape(&s.cluster.http, s.cluster.metrics.conversations).await;
    assert_eq!(
        m.get("conversations_reply_batch_calls_sum", &[]),
        calls.len() as f64
    );
    let batches = m.get("conversations_reply_batch_calls_count", &[]);
    assert!(
        (1.0..=calls.len() as f64).contains(&batches),
        "{batches} batches"
    );
    assert_eq!(
        m.get("conversations_reply_batch_duration_seconds_count", &[]),
        batches
    );
    s.cluster.stop().await;
}
