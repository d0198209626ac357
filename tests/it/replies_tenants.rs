//! One reply worker's claims and one recorder's answers span tenants (issue
//! 14): a `ClaimReplies` or `RecordReplyResults` call naming several tenants
//! runs them in one database call (migrations 0023 and 0025), which must switch the
//! tenant RLS sees before each of them. Every tenant's reply is claimed and
//! recorded in its own tenant, and a claim or an answer naming another
//! tenant's reply changes nothing. And what a claim guarantees: one job at
//! a time gets a reply to send.

use faro_proto::{conversations::v1 as pb, mtls::Identity};
use serde_json::Value;

use crate::replies_support::{Platform, start};

const TENANTS: usize = 9;

#[tokio::test]
async fn one_claim_call_and_one_record_call_serve_every_tenant_in_its_own_tenant() {
    let s = start().await;
    let mut threads = Vec::new();
    for _ in 0..TENANTS {
        threads.push(
            s.thread(Platform::WhatsApp, false, chrono::Duration::hours(1))
                .await,
        );
    }
    let mut replies = faro_proto::client::replies(
        s.cluster
            .grpc(s.cluster.conversations, Identity::Ingest)
            .await,
    );
    // Stored through conversations alone: no job is queued, so the reply
    // worker never claims them; this test's calls are the only ones.
    let mut ids = Vec::new();
    for (i, t) in threads.iter().enumerate() {
        let created = replies
            .create_reply(pb::CreateReplyRequest {
                tenant_id: t.tenant.clone(),
                location_ids: Vec::new(),
                conversation_id: t.conversation.clone(),
                idempotency_key: format!("key-{i}"),
                content: Some(pb::ReplyContent {
                    text: format!("hello {i}"),
                    ..Default::default()
                }),
                agent_id: "agent-1".into(),
            })
            .await
            .expect("stored")
            .into_inner();
        let m = created.stored.and_then(|s| s.message).expect("a message");
        assert_eq!(m.status, "pending");
        ids.push(m.id);
    }

    // One call: every tenant's claim, and first a claim naming the second
    // tenant's reply as the first tenant's.
    let claim = |tenant: &str, id: &str, by: &str| pb::GetReplyDeliveryRequest {
        tenant_id: tenant.to_owned(),
        message_id: id.to_owned(),
        claim: by.to_owned(),
    };
    let mut claims = vec![claim(&threads[0].tenant, &ids[1], "job-foreign")];
    for (t, id) in threads.iter().zip(&ids) {
        claims.push(claim(&t.tenant, id, &format!("job-{id}")));
    }
    let got = replies
        .claim_replies(pb::ClaimRepliesRequest { claims })
        .await
        .expect("claimed")
        .into_inner()
        .deliveries;
    assert_eq!(got.len(), TENANTS + 1);
    assert!(
        !got[0].claimed,
        "another tenant's reply is not claimed: {:?}",
        got[0].message
    );
    for (i, (d, (t, id))) in got[1..].iter().zip(threads.iter().zip(&ids)).enumerate() {
        assert!(d.claimed, "tenant {i}'s reply is claimed");
        let m = d.message.as_ref().expect("the message");
        assert_eq!((&m.id, &m.tenant_id), (id, &t.tenant));
        assert_eq!(d.credential, t.credential, "tenant {i}'s own credential");
        assert_eq!(d.external_account_id, t.account);
        assert_eq!(
            d.content.as_ref().map(|c| c.text.as_str()),
            Some(format!("hello {i}").as_str())
        );
    }

    // One call: every tenant's answer (even ones sent, odd ones failed),
    // then an answer naming the second tenant's reply as the first's.
    let answer = |tenant: &str, id: &str, pid: &str, error: &str| pb::RecordReplyResultRequest {
        tenant_id: tenant.to_owned(),
        message_id: id.to_owned(),
        platform_message_id: pid.to_owned(),
        error_json: error.to_owned(),
    };
    let mut results = Vec::new();
    for (i, (t, id)) in threads.iter().zip(&ids).enumerate() {
        results.push(if i % 2 == 0 {
            answer(&t.tenant, id, &format!("wamid.{i}"), "")
        } else {
            answer(&t.tenant, id, "", r#"{"code": 131026}"#)
        });
    }
    results.push(answer(&threads[0].tenant, &ids[1], "wamid.foreign", ""));
    let recorded = replies
        .record_reply_results(pb::RecordReplyResultsRequest { results })
        .await
        .expect("recorded")
        .into_inner();
    assert_eq!(
        recorded.replies.len(),
        TENANTS,
        "one reply for each tenant's answer, none for the foreign one"
    );
    for (i, (r, (t, id))) in recorded
        .replies
        .iter()
        .zip(threads.iter().zip(&ids))
        .enumerate()
    {
        let m = r.message.as_ref().expect("the message");
        let thread = r.conversation.as_ref().expect("its thread");
        assert_eq!((&m.id, &m.tenant_id), (id, &t.tenant));
        assert_eq!(
            (&thread.id, &thread.tenant_id),
            (&t.conversation, &t.tenant)
        );
        if i % 2 == 0 {
            assert_eq!(
                (m.status.as_str(), m.channel_message_id.as_str()),
                ("sent", format!("wamid.{i}").as_str())
            );
        } else {
            assert_eq!(m.status, "failed", "tenant {i}");
            let error: Value = serde_json::from_str(&m.status_error_json).expect("json");
            assert_eq!(error["code"], 131026, "{error}");
        }
    }

    // What the database holds: the foreign answer changed nothing.
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT tenant_id::text, status, channel_message_id FROM messages
         WHERE id = ANY($1::uuid[]) ORDER BY id",
    )
    .bind(&ids)
    .fetch_all(&s.cluster.db.owner)
    .await
    .expect("rows");
    assert_eq!(rows.len(), TENANTS);
    assert!(
        rows.iter().all(|r| r.2 != "wamid.foreign"),
        "the foreign answer gave no reply its id: {rows:?}"
    );
    let second = rows
        .iter()
        .find(|r| r.0 == threads[1].tenant)
        .expect("the second tenant's reply");
    assert_eq!(second.1, "failed", "its own answer, not the foreign one");
}

/// The claim is what keeps a reply sent once when its job is read twice (a
/// worker's retry, a reclaim from a worker thought dead, a repeated request
/// queueing it again): only the job holding the claim gets the reply to
/// send, until the claim is five minutes old or the reply is no longer
/// pending.
#[tokio::test]
async fn a_reply_is_handed_to_one_job_at_a_time_until_its_claim_is_stale() {
    let s = start().await;
    let t = s
        .thread(Platform::WhatsApp, false, chrono::Duration::hours(1))
        .await;
    let mut replies = faro_proto::client::replies(
        s.cluster
            .grpc(s.cluster.conversations, Identity::Ingest)
            .await,
    );
    let id = replies
        .create_reply(pb::CreateReplyRequest {
            tenant_id: t.tenant.clone(),
            location_ids: Vec::new(),
            conversation_id: t.conversation.clone(),
            idempotency_key: "claimed-once".into(),
            content: Some(pb::ReplyContent {
                text: "once".into(),
                ..Default::default()
            }),
            agent_id: "agent-1".into(),
        })
        .await
        .expect("stored")
        .into_inner()
        .stored
        .and_then(|s| s.message)
        .expect("a message")
        .id;
    // One call per list of jobs; which of them got the reply to send.
    let mut claimer = replies.clone();
    let mut claim = async |jobs: &[&str]| -> Vec<bool> {
        let claims = jobs
            .iter()
            .map(|job| pb::GetReplyDeliveryRequest {
                tenant_id: t.tenant.clone(),
                message_id: id.clone(),
                claim: (*job).to_owned(),
            })
            .collect();
        claimer
            .claim_replies(pb::ClaimRepliesRequest { claims })
            .await
            .expect("answered")
            .into_inner()
            .deliveries
            .iter()
            .map(|d| d.claimed)
            .collect()
    };
    let both = claim(&["job-a", "job-b"]).await;
    assert_eq!(
        both.iter().filter(|c| **c).count(),
        1,
        "two jobs for one reply in one call: one gets it ({both:?})"
    );
    let (holder, other) = if both[0] {
        ("job-a", "job-b")
    } else {
        ("job-b", "job-a")
    };
    assert_eq!(claim(&[other]).await, [false], "another job waits");
    assert_eq!(
        claim(&[holder]).await,
        [true],
        "the holder's retry gets it again"
    );

    // Five minutes pass (the claim's time is set back: the test's clock).
    sqlx::query(
        "UPDATE messages SET metadata = jsonb_set(metadata, '{reply,claim,at}',
                 to_jsonb(extract(epoch FROM now()) - 301))
         WHERE id = $1::uuid",
    )
    .bind(&id)
    .execute(&s.cluster.db.owner)
    .await
    .expect("an old claim");
    assert_eq!(claim(&[other]).await, [true], "a stale claim is taken over");
    assert_eq!(
        claim(&[holder]).await,
        [false],
        "and the old holder loses it"
    );

    // Once the platform answered, no job gets it again.
    replies
        .record_reply_results(pb::RecordReplyResultsRequest {
            results: vec![pb::RecordReplyResultRequest {
                tenant_id: t.tenant.clone(),
                message_id: id.clone(),
                platform_message_id: "wamid.once".into(),
                error_json: String::new(),
            }],
        })
        .await
        .expect("recorded");
    assert_eq!(
        claim(&[other, holder]).await,
        [false, false],
        "sent: nobody"
    );
    s.cluster.stop().await;
}

/// Replays in batches of several tenants: a reply whose key was used is
/// read again in its tenant after the batch's look-up ran through every
/// tenant of the batch, so the look-up must leave the transaction seeing
/// the tenant it saw before (`faro_lookup_replies` restores it). Which
/// tenants share a batch depends on timing, so a broken restore is caught
/// in most runs, not all.
#[tokio::test]
async fn replays_in_batches_of_several_tenants_find_their_first_reply() {
    let s = start().await;
    // Twelve tenants over two gatherers: batches hold several tenants.
    let mut threads = Vec::new();
    for _ in 0..12 {
        threads.push(
            s.thread(Platform::WhatsApp, false, chrono::Duration::hours(1))
                .await,
        );
    }
    let body = serde_json::json!({"text": "first"});
    let mut first = Vec::new();
    for t in &threads {
        let (status, answer) = s.reply(t, "used", body.clone()).await;
        assert_eq!(status, 202, "{answer}");
        first.push(answer["message"]["id"].clone());
    }
    // Stall the gatherers' inserts so that the requests below gather
    // behind them and are stored in batches that mix tenants.
    let mut lock = s.cluster.db.owner.begin().await.expect("begin");
    sqlx::query("LOCK TABLE reply_requests IN EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .expect("lock");
    let db = s.cluster.db.owner.clone();
    let release = tokio::spawn(async move {
        for _ in 0..100 {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(&db)
            .await
            .expect("activity");
            if waiting > 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        lock.rollback().await.expect("unlock");
    });
    let requests = threads.iter().flat_map(|t| {
        [
            s.reply(t, "used", body.clone()),
            s.reply(t, "fresh", serde_json::json!({"text": "second"})),
        ]
    });
    let answers = futures::future::join_all(requests).await;
    release.await.expect("released");
    for (i, pair) in answers.chunks(2).enumerate() {
        let ((replayed, again), (created, fresh)) = (&pair[0], &pair[1]);
        assert_eq!(*replayed, 200, "tenant {i}'s replay: {again}");
        assert_eq!(again["message"]["id"], first[i], "its first reply");
        assert_eq!(*created, 202, "tenant {i}'s new reply: {fresh}");
    }
    s.cluster.stop().await;
}
