//! One reply worker's claims and one recorder's answers span tenants (issue
//! 14): a `ClaimReplies` or `RecordReplyResults` call naming more tenants
//! than it has transactions (`db::BATCH_SHARES`, four) runs several tenants
//! in one database call (migrations 0023 and 0025), which must switch the
//! tenant RLS sees before each of them. Every tenant's reply is claimed and
//! recorded in its own tenant, and a claim or an answer naming another
//! tenant's reply changes nothing.

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
