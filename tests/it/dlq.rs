//! The dead-letter queue an operator drives over ingest's gRPC API: real
//! dead letters (written by the workers), listed with every filter, shown,
//! retried after the cause is fixed, purged; and the queue's figures.

use faro_proto::ingest::v1::{
    self as pb, DeadLetterFilter, DeadLetterSelection, Provider, Route, SubmitRequest,
    dead_letter_selection::Target, ingest_service_client::IngestServiceClient,
};
use tonic::{Code, transport::Channel};

use crate::cluster::{Cluster, Options, Tenant, whatsapp_text};

pub type Ingest = IngestServiceClient<Channel>;

pub async fn ingest(c: &Cluster) -> Ingest {
    IngestServiceClient::connect(format!("http://{}", c.ingest))
        .await
        .expect("ingest client")
}

/// A trigger that makes the database refuse `tenant`'s messages (a
/// permanent error, so their jobs are dead-lettered); `fix` removes it.
pub async fn refuse_messages_of(c: &Cluster, tenant: &Tenant) {
    sqlx::raw_sql(&format!(
        "CREATE FUNCTION dlq_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'refused for the test' USING ERRCODE = 'check_violation'; END $$;
         CREATE TRIGGER dlq_refuse BEFORE INSERT ON messages FOR EACH ROW
         WHEN (NEW.tenant_id = '{}') EXECUTE FUNCTION dlq_refuse();",
        tenant.id
    ))
    .execute(&c.db.owner)
    .await
    .expect("trigger");
}

pub async fn fix(c: &Cluster) {
    sqlx::raw_sql("DROP TRIGGER dlq_refuse ON messages; DROP FUNCTION dlq_refuse();")
        .execute(&c.db.owner)
        .await
        .expect("drop trigger");
}

/// Two dead letters of different platforms, tenants and classes: tenant a's
/// WhatsApp message refused by the database, and a Messenger job for tenant
/// b whose body is not a Messenger envelope.
pub async fn two_dead_letters(c: &Cluster) -> (Tenant, Tenant) {
    let a = c.tenant("alpha").await;
    let b = c.tenant("bravo").await;
    refuse_messages_of(c, &a).await;
    let body = whatsapp_text(&a, "wamid.DLQ1", "34600000001", "hola", 1_700_000_000);
    assert_eq!(c.post_signed(&body, &a.app_secret).await.0, 200);
    c.drained().await;
    ingest(c)
        .await
        .submit(SubmitRequest {
            provider: Provider::Messenger.into(),
            payload: br#"{"object":"whatsapp_business_account","entry":[]}"#.to_vec(),
            routes: vec![Route {
                external_account_id: "PAGE-B".into(),
                tenant_id: b.id.clone(),
                location_id: b.location_id.clone(),
                channel_account_id: String::new(),
                channel: faro_proto::conversations::v1::Channel::FacebookMessenger.into(),
            }],
            ..Default::default()
        })
        .await
        .expect("queued");
    c.drained().await;
    (a, b)
}

fn filter(f: DeadLetterFilter) -> Option<DeadLetterFilter> {
    Some(f)
}

async fn list(ingest: &mut Ingest, f: DeadLetterFilter) -> Vec<pb::DeadLetter> {
    ingest
        .list_dead_letters(pb::ListDeadLettersRequest {
            filter: filter(f),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .dead_letters
}

fn at(seconds: i64) -> Option<prost_types::Timestamp> {
    chrono::DateTime::from_timestamp(seconds, 0).map(faro_proto::to_timestamp)
}

fn select(target: Target) -> Option<DeadLetterSelection> {
    Some(DeadLetterSelection {
        target: Some(target),
    })
}

#[tokio::test]
async fn dead_letters_are_listed_by_filter_shown_retried_after_a_fix_and_purged() {
    let c = Cluster::start_with(Options {
        ingest_workers: 1,
        ..Options::default()
    })
    .await;
    let (a, b) = two_dead_letters(&c).await;
    let mut ingest = ingest(&c).await;

    let all = list(&mut ingest, DeadLetterFilter::default()).await;
    assert_eq!(all.len(), 2, "{all:?}");
    let refused = &all[0];
    assert_eq!(
        (
            refused.error_class.as_str(),
            refused.provider(),
            refused.tenant_ids.clone()
        ),
        ("refused", Provider::WhatsappCloud, vec![a.id.clone()])
    );
    assert!(refused.retryable && !refused.explanation.is_empty() && !refused.job_id.is_empty());
    let unparseable = &all[1];
    assert_eq!(unparseable.error_class, "unparseable");
    assert!(
        unparseable.error.starts_with("unexpected envelope"),
        "{}",
        unparseable.error
    );

    // Every filter, alone.
    let ids = |v: Vec<pb::DeadLetter>| v.into_iter().map(|d| d.id).collect::<Vec<_>>();
    for (f, expected) in [
        (
            DeadLetterFilter {
                provider: Provider::Messenger.into(),
                ..Default::default()
            },
            vec![unparseable.id.clone()],
        ),
        (
            DeadLetterFilter {
                tenant_id: a.id.clone(),
                ..Default::default()
            },
            vec![refused.id.clone()],
        ),
        (
            DeadLetterFilter {
                tenant_id: b.id.to_uppercase(),
                ..Default::default()
            },
            vec![unparseable.id.clone()],
        ),
        (
            DeadLetterFilter {
                error_class: "refused".into(),
                ..Default::default()
            },
            vec![refused.id.clone()],
        ),
        (
            DeadLetterFilter {
                error_class: "exhausted".into(),
                ..Default::default()
            },
            vec![],
        ),
        (
            DeadLetterFilter {
                since: at(4_000_000_000),
                ..Default::default()
            },
            vec![],
        ),
        (
            DeadLetterFilter {
                until: at(1_000_000_000),
                ..Default::default()
            },
            vec![],
        ),
        (
            DeadLetterFilter {
                since: at(1_000_000_000),
                until: at(4_000_000_000),
                provider: Provider::WhatsappCloud.into(),
                ..Default::default()
            },
            vec![refused.id.clone()],
        ),
    ] {
        assert_eq!(ids(list(&mut ingest, f.clone()).await), expected, "{f:?}");
    }

    // Pages.
    let first = ingest
        .list_dead_letters(pb::ListDeadLettersRequest {
            limit: 1,
            ..Default::default()
        })
        .await
        .expect("page 1")
        .into_inner();
    assert_eq!(ids(first.dead_letters), [refused.id.as_str()]);
    let second = ingest
        .list_dead_letters(pb::ListDeadLettersRequest {
            limit: 1,
            cursor: first.next_cursor,
            ..Default::default()
        })
        .await
        .expect("page 2")
        .into_inner();
    assert_eq!(ids(second.dead_letters), [unparseable.id.as_str()]);
    let third = ingest
        .list_dead_letters(pb::ListDeadLettersRequest {
            limit: 1,
            cursor: second.next_cursor,
            ..Default::default()
        })
        .await
        .expect("page 3")
        .into_inner();
    assert!(third.dead_letters.is_empty() && third.next_cursor.is_empty());

    // One, with the webhook exactly as received.
    let shown = ingest
        .get_dead_letter(pb::GetDeadLetterRequest {
            id: refused.id.clone(),
        })
        .await
        .expect("get")
        .into_inner();
    let body: serde_json::Value = serde_json::from_slice(&shown.payload).expect("JSON");
    assert_eq!(
        body["entry"][0]["changes"][0]["value"]["messages"][0]["id"],
        "wamid.DLQ1"
    );

    // Fixed: the retried job is stored; the other stays dead.
    fix(&c).await;
    let retried = ingest
        .retry_dead_letters(pb::RetryDeadLettersRequest {
            selection: select(Target::Id(refused.id.clone())),
        })
        .await
        .expect("retry")
        .into_inner();
    assert_eq!(retried.retried.len(), 1, "{retried:?}");
    c.drained().await;
    assert_eq!(
        c.count("SELECT count(*) FROM messages WHERE channel_message_id = 'wamid.DLQ1'")
            .await,
        1
    );
    assert_eq!(
        ids(list(&mut ingest, DeadLetterFilter::default()).await),
        [unparseable.id.as_str()]
    );
    let gone = ingest
        .get_dead_letter(pb::GetDeadLetterRequest {
            id: refused.id.clone(),
        })
        .await
        .expect_err("retried away");
    assert_eq!(gone.code(), Code::NotFound);

    // A job that fails again is dead-lettered again, once: a retry of a
    // filter covers what was dead when it started, so it ends.
    let again = ingest
        .retry_dead_letters(pb::RetryDeadLettersRequest {
            selection: select(Target::Filter(DeadLetterFilter {
                error_class: "unparseable".into(),
                ..Default::default()
            })),
        })
        .await
        .expect("retry by filter")
        .into_inner();
    assert_eq!(again.retried.len(), 1);
    c.drained().await;
    let dead = list(&mut ingest, DeadLetterFilter::default()).await;
    assert_eq!(dead.len(), 1);
    assert_ne!(dead[0].id, unparseable.id, "a new dead letter");
    assert_eq!(dead[0].tenant_ids, [b.id.as_str()]);

    let purged = ingest
        .purge_dead_letters(pb::PurgeDeadLettersRequest {
            selection: select(Target::All(true)),
        })
        .await
        .expect("purge")
        .into_inner();
    assert_eq!(purged.purged, 1);
    assert!(
        list(&mut ingest, DeadLetterFilter::default())
            .await
            .is_empty()
    );
    c.stop().await;
}

/// Many operators retrying one entry at once: it goes back to the stream once.
#[tokio::test]
async fn a_dead_letter_retried_concurrently_is_queued_exactly_once() {
    let c = Cluster::start_with(Options {
        ingest_workers: 1,
        ..Options::default()
    })
    .await;
    let (_, _) = two_dead_letters(&c).await;
    fix(&c).await;
    let mut ingest = ingest(&c).await;
    let id = list(&mut ingest, DeadLetterFilter::default()).await[0]
        .id
        .clone();
    let calls = (0..8).map(|_| {
        let mut client = ingest.clone();
        let id = id.clone();
        async move {
            client
                .retry_dead_letters(pb::RetryDeadLettersRequest {
                    selection: select(Target::Id(id)),
                })
                .await
        }
    });
    let mut retried = 0;
    for r in futures::future::join_all(calls).await {
        match r {
            Ok(r) => retried += r.into_inner().retried.len(),
            Err(s) => assert_eq!(s.code(), Code::NotFound, "{s:?}"),
        }
    }
    assert_eq!(retried, 1, "queued exactly once");
    c.drained().await;
    assert_eq!(c.count("SELECT count(*) FROM messages").await, 1);
    c.stop().await;
}

#[tokio::test]
async fn bad_requests_are_refused_naming_the_problem() {
    let c = Cluster::start().await;
    let mut ingest = ingest(&c).await;
    let bad_lists = [
        (
            pb::ListDeadLettersRequest {
                filter: filter(DeadLetterFilter {
                    error_class: "boom".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            "error_class",
        ),
        (
            pb::ListDeadLettersRequest {
                filter: filter(DeadLetterFilter {
                    tenant_id: "acme".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            "tenant_id",
        ),
        (
            pb::ListDeadLettersRequest {
                filter: filter(DeadLetterFilter {
                    since: at(20),
                    until: at(10),
                    ..Default::default()
                }),
                ..Default::default()
            },
            "until",
        ),
        (
            pb::ListDeadLettersRequest {
                limit: 5000,
                ..Default::default()
            },
            "limit",
        ),
        (
            pb::ListDeadLettersRequest {
                cursor: "zz".into(),
                ..Default::default()
            },
            "cursor",
        ),
    ];
    for (request, named) in bad_lists {
        let e = ingest
            .list_dead_letters(request)
            .await
            .expect_err("refused");
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains(named), "{named}: {}", e.message());
    }
    let e = ingest
        .get_dead_letter(pb::GetDeadLetterRequest { id: "abc".into() })
        .await
        .expect_err("not an id");
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = ingest
        .get_dead_letter(pb::GetDeadLetterRequest { id: "1-0".into() })
        .await
        .expect_err("absent");
    assert_eq!(e.code(), Code::NotFound);
    for selection in [
        None,
        select(Target::All(false)),
        select(Target::Filter(DeadLetterFilter::default())),
    ] {
        let e = ingest
            .retry_dead_letters(pb::RetryDeadLettersRequest {
                selection: selection.clone(),
            })
            .await
            .expect_err("refused");
        assert_eq!(e.code(), Code::InvalidArgument, "{selection:?}");
        let e = ingest
            .purge_dead_letters(pb::PurgeDeadLettersRequest { selection })
            .await
            .expect_err("refused");
        assert_eq!(e.code(), Code::InvalidArgument);
    }
    c.stop().await;
}

/// The figures while a worker holds a job (its store waits on a lock), and
/// once everything is done.
#[tokio::test]
async fn queue_stats_show_what_is_pending_dead_and_who_holds_it() {
    let c = Cluster::start_with(Options {
        ingest_workers: 1,
        ..Options::default()
    })
    .await;
    let mut ingest = ingest(&c).await;
    let a = c.tenant("alpha").await;
    let mut lock = c.db.owner.begin().await.expect("begin");
    sqlx::query("LOCK TABLE messages IN SHARE MODE")
        .execute(&mut *lock)
        .await
        .expect("lock");
    let body = whatsapp_text(&a, "wamid.HELD", "34600000001", "hola", 1_700_000_000);
    assert_eq!(c.post_signed(&body, &a.app_secret).await.0, 200);
    let mut stats = pb::QueueStatsResponse::default();
    for _ in 0..600 {
        stats = ingest
            .queue_stats(pb::QueueStatsRequest {})
            .await
            .expect("stats")
            .into_inner();
        if stats.pending == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!((stats.stream_length, stats.pending), (1, 1), "{stats:?}");
    assert_eq!(stats.consumers.len(), 1, "{stats:?}");
    assert_eq!(stats.consumers[0].pending, 1);
    assert_eq!(stats.scheduled_retries, 0);
    lock.rollback().await.expect("release");
    c.drained().await;
    let stats = ingest
        .queue_stats(pb::QueueStatsRequest {})
        .await
        .expect("stats")
        .into_inner();
    assert_eq!(
        (
            stats.stream_length,
            stats.pending,
            stats.oldest_pending_age_ms,
            stats.dead_letters
        ),
        (0, 0, 0, 0)
    );
    c.stop().await;
}
