//! Stream positions: every event of a tenant gets (epoch, offset) when it is
//! published and stays in the tenant's bounded history. A client resumes
//! from its last position with no gap and no duplicate, hears OUT_OF_RANGE
//! when history no longer holds it, and reads history with `History`.

use std::{collections::HashSet, time::Duration};

use faro_proto::{
    conversations::v1::{self as pb, Channel},
    stream::v1::{
        Event, HistoryRequest, HistoryResponse, Position, SubscribeRequest, event::Kind,
        stream_service_client::StreamServiceClient,
    },
};
use tonic::{Code, Streaming, transport::Channel as GrpcChannel};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cluster::{Cluster, Options, Tenant, ingest_config, whatsapp_text};

async fn client(c: &Cluster) -> StreamServiceClient<GrpcChannel> {
    StreamServiceClient::connect(format!("http://{}", c.stream))
        .await
        .expect("stream client")
}

pub(crate) async fn subscribe(
    c: &Cluster,
    tenant: &str,
    since: Option<Position>,
) -> Result<Streaming<Event>, tonic::Status> {
    client(c)
        .await
        .subscribe(SubscribeRequest {
            tenant_id: tenant.into(),
            location_ids: vec![],
            since,
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn history(
    c: &Cluster,
    tenant: &str,
    locations: &[&str],
    since: Option<Position>,
    limit: u32,
) -> HistoryResponse {
    client(c)
        .await
        .history(HistoryRequest {
            tenant_id: tenant.into(),
            location_ids: locations.iter().map(|l| (*l).to_owned()).collect(),
            since,
            limit,
        })
        .await
        .expect("history")
        .into_inner()
}

/// The next event; fails the test after 20 s (a hang, not a timing claim).
pub(crate) async fn next(s: &mut Streaming<Event>) -> Event {
    tokio::time::timeout(Duration::from_secs(20), s.message())
        .await
        .expect("an event within 20 s")
        .expect("the stream goes on")
        .expect("the stream is open")
}

pub(crate) fn message_id(e: &Event) -> String {
    match &e.kind {
        Some(Kind::MessageCreated(m)) => m.message.as_ref().map(|m| m.channel_message_id.clone()),
        Some(Kind::MessageUpdated(m)) => m.message.as_ref().map(|m| m.channel_message_id.clone()),
        _ => None,
    }
    .unwrap_or_default()
}

fn pos(e: &Event) -> Position {
    Position {
        epoch: e.epoch.clone(),
        offset: e.offset,
    }
}

pub(crate) async fn post(c: &Cluster, t: &Tenant, id: &str) {
    let (status, _) = c
        .post_signed(&whatsapp_text(t, id, "1", id, 1_700_000_000), &t.app_secret)
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn resuming_replays_exactly_the_missed_events_then_live_ones() {
    let c = Cluster::start().await;
    let a = c.tenant("alpha").await;
    let mut live = subscribe(&c, &a.id, None).await.expect("subscribed");
    post(&c, &a, "wamid.P0").await;
    let first = next(&mut live).await;
    assert_eq!(message_id(&first), "wamid.P0");
    assert!(!first.epoch.is_empty(), "published events carry an epoch");
    assert!(first.offset > 0, "and an offset");
    drop(live); // the laptop sleeps

    let missed: Vec<String> = (1..=5).map(|i| format!("wamid.P{i}")).collect();
    for id in &missed {
        post(&c, &a, id).await;
    }
    c.drained().await;

    let mut resumed = subscribe(&c, &a.id, Some(pos(&first)))
        .await
        .expect("resumed");
    let mut got = Vec::new();
    for i in 1..=5 {
        let e = next(&mut resumed).await;
        assert_eq!(e.epoch, first.epoch);
        assert_eq!(e.offset, first.offset + i, "offsets follow on, one by one");
        got.push(message_id(&e));
    }
    got.sort();
    assert_eq!(got, missed, "exactly the missed events");
    // Then live: the next one is the new event, nothing replayed twice.
    post(&c, &a, "wamid.P6").await;
    let e = next(&mut resumed).await;
    assert_eq!(message_id(&e), "wamid.P6");
    assert_eq!(e.offset, first.offset + 6);
    c.stop().await;
}

#[tokio::test]
async fn no_gap_and_no_duplicate_across_the_switch_from_history_to_live() {
    let c = Cluster::start().await;
    let a = c.tenant("alpha").await;
    let start = history(&c, &a.id, &[], None, 0).await;
    let start = start.latest.expect("latest");
    // Publishing goes on (several webhooks at a time) while clients resume
    // from the start, one after another: some replay more, some less.
    let total = 30u64;
    let cl = &c;
    let posting = futures::future::join_all((0..total).map(|i| {
        let a = &a;
        async move { post(cl, a, &format!("wamid.S{i}")).await }
    }));
    let resuming = async {
        let mut streams = Vec::new();
        for _ in 0..12 {
            streams.push(
                subscribe(cl, &a.id, Some(start.clone()))
                    .await
                    .expect("resumed"),
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        streams
    };
    let ((), streams) = tokio::join!(
        async {
            posting.await;
        },
        resuming
    );
    for mut s in streams {
        for offset in start.offset + 1..=start.offset + total {
            let e = next(&mut s).await;
            assert_eq!(e.offset, offset, "each offset once, in order");
        }
    }
    c.stop().await;
}

#[tokio::test]
async fn a_trimmed_position_or_another_epoch_is_not_recovered() {
    let c = Cluster::start_with(Options {
        history_max_events: 2,
        ..Options::default()
    })
    .await;
    let a = c.tenant("alpha").await;
    let start = history(&c, &a.id, &[], None, 0)
        .await
        .latest
        .expect("latest");
    for i in 0..4 {
        post(&c, &a, &format!("wamid.T{i}")).await;
    }
    c.drained().await;

    // Offsets start+1 and start+2 were trimmed away.
    let h = history(&c, &a.id, &[], Some(start.clone()), 0).await;
    assert!(!h.recovered);
    assert!(h.events.is_empty());
    let latest = h.latest.expect("latest");
    assert_eq!(latest.offset, start.offset + 4);
    let err = subscribe(&c, &a.id, Some(start.clone()))
        .await
        .expect_err("not recovered");
    assert_eq!(err.code(), Code::OutOfRange);

    // Another epoch (history lost since), or a position from the future.
    for stale in [
        Position {
            epoch: "0123456789abcdef0123456789abcdef".into(),
            offset: latest.offset,
        },
        Position {
            epoch: latest.epoch.clone(),
            offset: latest.offset + 1,
        },
    ] {
        let err = subscribe(&c, &a.id, Some(stale.clone()))
            .await
            .expect_err("not recovered");
        assert_eq!(err.code(), Code::OutOfRange);
        assert!(!history(&c, &a.id, &[], Some(stale), 0).await.recovered);
    }

    // What history still holds is recovered.
    let kept = Position {
        epoch: latest.epoch.clone(),
        offset: latest.offset - 2,
    };
    let h = history(&c, &a.id, &[], Some(kept.clone()), 0).await;
    assert!(h.recovered);
    let offsets: Vec<u64> = h.events.iter().map(|e| e.offset).collect();
    assert_eq!(offsets, [latest.offset - 1, latest.offset]);
    let mut s = subscribe(&c, &a.id, Some(kept)).await.expect("recovered");
    assert_eq!(next(&mut s).await.offset, latest.offset - 1);
    assert_eq!(next(&mut s).await.offset, latest.offset);
    c.stop().await;
}

/// A second location of `t`, with its own WhatsApp number and app.
async fn second_location(c: &Cluster, t: &Tenant) -> Tenant {
    let location = c
        .admin()
        .await
        .create_location(pb::CreateLocationRequest {
            tenant_id: t.id.clone(),
            name: "annex".into(),
        })
        .await
        .expect("location")
        .into_inner();
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let secret = format!("secret-{suffix}");
    let app = c
        .app(
            &format!("app-{suffix}"),
            &secret,
            &format!("verify-{suffix}"),
        )
        .await;
    let phone = format!("pn-annex-{}", &suffix[..8]);
    c.connect(
        &(t.id.clone(), location.id.clone()),
        Channel::Whatsapp,
        &phone,
        &app,
    )
    .await;
    Tenant {
        id: t.id.clone(),
        location_id: location.id,
        phone_number_id: phone,
        app_secret: secret,
    }
}

#[tokio::test]
async fn history_returns_the_events_after_a_position_by_location_with_limit() {
    let c = Cluster::start().await;
    let a = c.tenant("alpha").await;
    let annex = second_location(&c, &a).await;
    let b = c.tenant("bravo").await;
    let start = history(&c, &a.id, &[], None, 0).await;
    assert!(start.recovered && start.events.is_empty() && !start.more);
    let start = start.latest.expect("latest");
    assert!(!start.epoch.is_empty());

    for (t, id) in [
        (&a, "wamid.H1"),
        (&annex, "wamid.H2"),
        (&a, "wamid.H3"),
        (&annex, "wamid.H4"),
        (&a, "wamid.H5"),
        (&b, "wamid.B1"),
    ] {
        post(&c, t, id).await;
        c.drained().await; // one at a time: offsets in this order
    }

    let all = history(&c, &a.id, &[], Some(start.clone()), 0).await;
    assert!(all.recovered && !all.more);
    let ids: Vec<String> = all.events.iter().map(message_id).collect();
    assert_eq!(
        ids,
        ["wamid.H1", "wamid.H2", "wamid.H3", "wamid.H4", "wamid.H5"]
    );
    let latest = all.latest.expect("latest");
    assert_eq!(latest.offset, start.offset + 5);
    assert_eq!(pos(all.events.last().expect("events")), latest);

    // The annex only; `latest` is the tenant's whatever the filter.
    let annex_only = history(&c, &a.id, &[&annex.location_id], Some(start.clone()), 0).await;
    let ids: Vec<String> = annex_only.events.iter().map(message_id).collect();
    assert_eq!(ids, ["wamid.H2", "wamid.H4"]);
    assert_eq!(annex_only.latest, Some(latest.clone()));
    assert!(!annex_only.more);

    // Page by page with a limit.
    let mut at = start.clone();
    let mut pages = Vec::new();
    loop {
        let page = history(&c, &a.id, &[], Some(at.clone()), 2).await;
        assert!(page.recovered);
        assert!(page.events.len() <= 2);
        pages.push(page.events.iter().map(message_id).collect::<Vec<_>>());
        if !page.more {
            break;
        }
        at = pos(page.events.last().expect("a page with more has events"));
    }
    assert_eq!(
        pages,
        [
            vec!["wamid.H1", "wamid.H2"],
            vec!["wamid.H3", "wamid.H4"],
            vec!["wamid.H5"]
        ]
    );

    // Nothing new after the latest position; another tenant's are its own.
    let none = history(&c, &a.id, &[], Some(latest), 0).await;
    assert!(none.recovered && none.events.is_empty());
    let other = history(&c, &b.id, &[], None, 0)
        .await
        .latest
        .expect("latest");
    assert_ne!(other.epoch, start.epoch, "each tenant has its own epoch");
    c.stop().await;
}

#[tokio::test]
async fn offsets_increase_by_one_per_tenant_with_concurrent_publishers() {
    let c = Cluster::start_with(Options {
        ingest_workers: 4,
        ingest_batch: 1,
        ..Options::default()
    })
    .await;
    // A second ingest process's workers take jobs from the same queue and
    // publish on connections of their own.
    let second = CancellationToken::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let mut config = ingest_config(&c.prefix, &format!("http://{}", c.conversations));
    (config.workers, config.batch_size) = (4, 1);
    let ingest = tokio::spawn(faro_ingest::run(config, listener, second.clone()));
    let a = c.tenant("alpha").await;
    let b = c.tenant("bravo").await;
    let mut live = subscribe(&c, &a.id, None).await.expect("subscribed");
    let n = 40;
    let cl = &c;
    let posts = (0..n).flat_map(|i| {
        [(&a, "a"), (&b, "b")].map(move |(t, name)| {
            let id = format!("wamid.C{name}{i}");
            async move { post(cl, t, &id).await }
        })
    });
    futures::future::join_all(posts).await;
    c.drained().await;

    for t in [&a, &b] {
        let h = history(
            &c,
            &t.id,
            &[],
            Some(Position {
                epoch: history(&c, &t.id, &[], None, 0)
                    .await
                    .latest
                    .expect("latest")
                    .epoch,
                offset: 0,
            }),
            0,
        )
        .await;
        assert!(h.recovered);
        let offsets: Vec<u64> = h.events.iter().map(|e| e.offset).collect();
        assert_eq!(
            offsets,
            (1..=n).collect::<Vec<u64>>(),
            "1, 2, 3, … per tenant"
        );
        let ids: HashSet<String> = h.events.iter().map(message_id).collect();
        assert_eq!(ids.len(), n as usize, "each message once");
    }
    // Live events arrive in offset order too.
    for offset in 1..=n {
        assert_eq!(next(&mut live).await.offset, offset);
    }
    second.cancel();
    ingest.await.expect("joins").expect("second ingest runs");
    c.stop().await;
}

#[tokio::test]
async fn history_drops_events_older_than_its_age_bound() {
    let c = Cluster::start_with(Options {
        history_max_age_secs: 4,
        ..Options::default()
    })
    .await;
    let a = c.tenant("alpha").await;
    let start = history(&c, &a.id, &[], None, 0)
        .await
        .latest
        .expect("latest");
    // G0; G1 once G0 is 2.2 s old (which keeps the history key alive: an
    // idle history expires as a whole after the bound, and this test is
    // about trimming the oldest entries of a live one); G2 once G0 is older
    // than the bound and G1 is not: G2's publish trims G0 and keeps G1.
    // (Wall time passing is the point here, not a timing claim; the reads
    // come at once, well inside G1's own 4 s: a stall of up to 1.8 s
    // changes nothing; a stall only makes G0 older.)
    post(&c, &a, "wamid.G0").await;
    c.drained().await;
    let g0 = history(&c, &a.id, &[], None, 0)
        .await
        .latest
        .expect("latest");
    tokio::time::sleep(Duration::from_millis(2200)).await;
    post(&c, &a, "wamid.G1").await;
    c.drained().await;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    post(&c, &a, "wamid.G2").await;
    c.drained().await;
    let h = history(&c, &a.id, &[], Some(start), 0).await;
    assert!(!h.recovered, "the oldest event aged out");
    let h = history(&c, &a.id, &[], Some(g0), 0).await;
    assert!(h.recovered);
    let ids: Vec<String> = h.events.iter().map(message_id).collect();
    assert_eq!(ids, ["wamid.G1", "wamid.G2"]);
    c.stop().await;
}
