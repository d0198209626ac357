//! Jobs reclaimed from a dead worker are handled one by one; the ones still
//! waiting their turn are kept fresh, so that other live workers never take
//! them over again, however slow each store is.

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use faro_proto::ingest::v1::{Job, Provider, SubmitRequest};
use fred::interfaces::StreamsInterface;
use prost::Message;

use crate::{
    cluster::{Cluster, Options, whatsapp_text},
    crash::{hold_stores, pending},
    dead_letter::dead_letters,
    postgres_restart::route_of,
    process::{Faro, free_addr, wait_listening},
};

/// A `faro ingest` process whose stores give up after 450 ms (twice per
/// pass), reclaiming jobs idle for 2 s.
fn spawn_ingest(c: &Cluster, listen: SocketAddr) -> Faro {
    crate::process::spawn_ingest(
        c,
        listen,
        &format!("http://{}", c.conversations),
        &[
            "--ingest-workers",
            "1",
            "--claim-idle-ms",
            "2000",
            "--store-deadline-ms",
            "450",
            "--retry-attempts",
            "50",
            "--retry-base-ms",
            "100",
            "--retry-max-ms",
            "500",
        ],
    )
}

/// Jobs reclaimed, by the `reclaimed abandoned jobs` lines of a log.
fn reclaimed(log: &str) -> i64 {
    crate::process::log_sum(log, "reclaimed abandoned jobs", "count")
}

/// A worker died holding 20 jobs (a consumer read them and vanished). Two
/// live processes share the group; every store is slow (each call hits its
/// deadline on a locked table), so working through the reclaimed jobs one by
/// one takes far longer than `claim_idle`. Each job is still reclaimed once:
/// the live worker keeps the ones waiting their turn fresh.
#[tokio::test]
async fn jobs_reclaimed_from_a_dead_worker_are_not_reclaimed_again_from_a_live_one() {
    let c = Cluster::start_with(Options {
        ingest: false,
        ..Options::default()
    })
    .await;
    let a = c.tenant("alpha").await;
    let route = route_of(&c, &a).await;
    let keys = faro_ingest::Keys::new(&c.prefix);
    let _: () = c
        .redis
        .xgroup_create(&keys.jobs, "workers", "$", true)
        .await
        .expect("group");
    const N: i64 = 20;
    for i in 0..N {
        let job = Job {
            submission: Some(SubmitRequest {
                provider: Provider::WhatsappCloud.into(),
                payload: whatsapp_text(&a, &format!("wamid.R{i:02}"), "1", "hi", 1_700_000_000 + i)
                    .into_bytes(),
                routes: vec![route.clone()],
                ..Default::default()
            }),
            ..Default::default()
        };
        let _: String = c
            .redis
            .xadd(
                &keys.jobs,
                false,
                None,
                "*",
                vec![("job", Bytes::from(job.encode_to_vec()))],
            )
            .await
            .expect("xadd");
    }
    let _: fred::types::Value = c
        .redis
        .xreadgroup(
            "workers",
            "dead",
            Some(N as u64),
            None,
            false,
            &keys.jobs,
            ">",
        )
        .await
        .expect("read by a worker that dies");
    assert_eq!(pending(&c).await, N);

    let held = hold_stores(&c).await;
    let second = free_addr();
    let one = spawn_ingest(&c, c.ingest);
    let two = spawn_ingest(&c, second);
    wait_listening(c.ingest).await;
    wait_listening(second).await;
    // Every reclaimed job has had its slow turn once no entry of the stream is
    // an original job any more (a failed one comes back as a new entry).
    let originals = || async {
        let entries: Vec<(String, std::collections::HashMap<String, Bytes>)> = c
            .redis
            .xrange(&keys.jobs, "-", "+", None)
            .await
            .expect("xrange");
        entries
            .into_iter()
            .filter_map(|(_, f)| Job::decode(f.get("job")?.clone()).ok())
            .filter(|j| j.attempt == 0)
            .count()
    };
    for _ in 0..1200 {
        if originals().await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(originals().await, 0, "every reclaimed job was handled");
    held.commit().await.expect("release the lock");
    c.drained().await;
    assert_eq!(c.count("SELECT count(*) FROM messages").await, N);
    assert!(dead_letters(&c).await.is_empty());

    let logs = (one.log.clone(), two.log.clone());
    drop((one, two));
    let taken = (reclaimed(&logs.0), reclaimed(&logs.1));
    assert_eq!(
        taken.0 + taken.1,
        N,
        "each job was reclaimed once, from the dead worker only ({taken:?})"
    );
    c.stop().await;
}
