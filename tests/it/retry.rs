//! Bounded retries with real `faro ingest` processes: a job that always fails
//! transiently is dead-lettered after its attempts without holding up its
//! batch, a job that can never succeed after one, and two processes on one
//! consumer group handle each job once.

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use bytes::Bytes;
use faro_proto::ingest::v1::{
    DeadLetterSelection, Job, Provider, RetryDeadLettersRequest, SubmitRequest,
    dead_letter_selection::Target, ingest_service_client::IngestServiceClient,
};
use fred::interfaces::{SortedSetsInterface, StreamsInterface};
use prost::Message;

use crate::{
    cluster::{Cluster, Options, Tenant, redis_url, whatsapp_text},
    crash::{hold_stores, store_in_flight},
    dead_letter::dead_letters,
    process::{Faro, free_addr, wait_listening},
};

/// A `faro ingest` process with `workers` workers, `attempts` per job and
/// retries due within `base_ms`·2^n (tests cannot wait minutes).
pub(crate) fn spawn_ingest(
    c: &Cluster,
    listen: SocketAddr,
    workers: &str,
    attempts: &str,
    base_ms: &str,
) -> Faro {
    crate::process::spawn_ingest(
        c,
        listen,
        &format!("http://{}", c.conversations),
        &[
            "--ingest-workers",
            workers,
            "--ingest-batch",
            "64",
            "--retry-attempts",
            attempts,
            "--retry-base-ms",
            base_ms,
            "--retry-max-ms",
            "2000",
        ],
    )
}

/// Every insert into `messages` by `tenant` fails inside Postgres with an
/// exception conversations does not know: it answers `Internal`, every time.
async fn poison_tenant(c: &Cluster, tenant: &Tenant) {
    sqlx::query(
        "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'poisoned row'; END $$",
    )
    .execute(&c.db.owner)
    .await
    .expect("function");
    sqlx::query(&format!(
        "CREATE TRIGGER poison BEFORE INSERT ON messages FOR EACH ROW
         WHEN (NEW.tenant_id = '{}') EXECUTE FUNCTION poison()",
        tenant.id
    ))
    .execute(&c.db.owner)
    .await
    .expect("trigger");
}

/// Waits (at most 60 s, a bound on a hang) until `n` jobs are dead-lettered.
async fn dead_lettered(c: &Cluster, n: usize) -> Vec<HashMap<String, Bytes>> {
    for _ in 0..1200 {
        let dead = dead_letters(c).await;
        if dead.len() >= n {
            return dead;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{n} jobs were not dead-lettered within 60 s");
}

fn job_of(entry: &HashMap<String, Bytes>) -> Job {
    Job::decode(entry["job"].clone()).expect("the dead letter keeps the job whole")
}

fn field(entry: &HashMap<String, Bytes>, name: &str) -> String {
    String::from_utf8_lossy(&entry[name]).into_owned()
}

/// A job that conversations fails with `Internal` every time is tried its
/// attempts, alone after the first, then dead-lettered whole with its first
/// and last error; the jobs read in the same batch are stored by that first
/// pass, before the poison's last attempt.
#[tokio::test]
async fn a_poison_job_is_dead_lettered_after_its_attempts_and_its_batch_is_stored() {
    let c = Cluster::start_with(Options {
        ingest: false,
        ..Options::default()
    })
    .await;
    let good = c.tenant("good").await;
    let bad = c.tenant("bad").await;
    poison_tenant(&c, &bad).await;
    let ingest = spawn_ingest(&c, c.ingest, "1", "3", "300");
    wait_listening(c.ingest).await;

    // The one worker is held storing a first job while the batch builds up
    // behind it, so that the poison job is read with its neighbours.
    let held = hold_stores(&c).await;
    let first = whatsapp_text(&good, "wamid.G000", "1", "first", 1_700_000_000);
    assert_eq!(c.post_signed(&first, &good.app_secret).await.0, 200);
    store_in_flight(&c).await;
    const N: i64 = 40;
    for i in 1..N {
        if i == N / 2 {
            let poison = whatsapp_text(&bad, "wamid.POISON", "2", "poison", 1_700_000_000);
            assert_eq!(c.post_signed(&poison, &bad.app_secret).await.0, 200);
        }
        let body = whatsapp_text(
            &good,
            &format!("wamid.G{i:03}"),
            "1",
            "hi",
            1_700_000_000 + i,
        );
        assert_eq!(c.post_signed(&body, &good.app_secret).await.0, 200);
    }
    held.commit().await.expect("release the lock");

    let dead = dead_lettered(&c, 1).await;
    assert_eq!(dead.len(), 1, "only the poison job is dead-lettered");
    assert_eq!(field(&dead[0], "class"), "exhausted");
    let job = job_of(&dead[0]);
    assert_eq!(job.attempt, 3, "dead-lettered after its 3 attempts");
    assert!(job.first_error.contains("Internal"), "{}", job.first_error);
    assert!(job.last_error.contains("Internal"), "{}", job.last_error);
    let (first_at, last_at) = (
        faro_proto::from_timestamp(job.first_error_at.as_ref()).expect("first error time"),
        faro_proto::from_timestamp(job.last_error_at.as_ref()).expect("last error time"),
    );
    assert!(first_at < last_at, "{first_at} < {last_at}");
    let payload = job.submission.as_ref().expect("submission").payload.clone();
    assert!(String::from_utf8_lossy(&payload).contains("wamid.POISON"));

    assert_eq!(c.count("SELECT count(*) FROM messages").await, N);
    assert_eq!(
        c.jobs_added().await,
        N + 1 + 2,
        "the jobs posted, then the poison's 2 retries: no neighbour was retried"
    );
    let last_stored: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT max(created_at) FROM messages")
            .fetch_one(&c.db.owner)
            .await
            .expect("created_at");
    assert!(
        last_stored < last_at,
        "the neighbours were stored ({last_stored}) before the poison's last attempt ({last_at})"
    );
    c.drained().await;

    // The cause fixed, the operator re-drives it: attempts reset, stored.
    sqlx::query("DROP TRIGGER poison ON messages")
        .execute(&c.db.owner)
        .await
        .expect("fix the cause");
    let mut client = IngestServiceClient::connect(format!("http://{}", c.ingest))
        .await
        .expect("client");
    let retried = client
        .retry_dead_letters(RetryDeadLettersRequest {
            selection: Some(DeadLetterSelection {
                target: Some(Target::All(true)),
            }),
        })
        .await
        .expect("retry")
        .into_inner();
    assert_eq!(retried.retried.len(), 1, "{retried:?}");
    c.drained().await;
    assert_eq!(c.count("SELECT count(*) FROM messages").await, N + 1);
    assert!(dead_letters(&c).await.is_empty());
    drop(ingest);
    c.stop().await;
}

/// A job conversations rejects as invalid, and one that cannot be parsed,
/// are dead-lettered after one attempt: no retry can help them.
#[tokio::test]
async fn a_permanent_error_is_dead_lettered_after_one_attempt() {
    let c = Cluster::start_with(Options {
        ingest: false,
        ..Options::default()
    })
    .await;
    let ingest = spawn_ingest(&c, c.ingest, "1", "5", "300");
    wait_listening(c.ingest).await;
    let mut client = IngestServiceClient::connect(format!("http://{}", c.ingest))
        .await
        .expect("client");
    let (route, [invalid, unparseable]) = crate::dead_letter::never_storable();
    for payload in [invalid, unparseable] {
        client
            .submit(SubmitRequest {
                provider: Provider::WhatsappCloud.into(),
                payload: payload.to_vec(),
                routes: vec![route.clone()],
                ..Default::default()
            })
            .await
            .expect("queued");
    }
    let dead = dead_lettered(&c, 2).await;
    for entry in &dead {
        assert_eq!(field(entry, "class"), "permanent");
        let job = job_of(entry);
        assert_eq!(job.attempt, 1, "one attempt: {}", field(entry, "error"));
        assert_eq!(job.first_error, job.last_error);
        assert!(!job.first_error.is_empty());
    }
    let scheduled: i64 = c
        .redis
        .zcard(faro_ingest::Keys::new(&c.prefix).retry)
        .await
        .expect("zcard");
    assert_eq!(scheduled, 0, "nothing was scheduled for a retry");
    c.drained().await;
    drop(ingest);
    c.stop().await;
}

/// The jobs' batch sizes a process logged as done (`batch done`, jobs=n).
fn jobs_done(log: &str) -> i64 {
    crate::process::log_sum(log, "batch done", "jobs")
}

/// Two `faro ingest` processes on one consumer group, webhooks posted
/// concurrently: every message's insert reaches Postgres once (a trigger
/// counts the inserts conversations attempts, conflicts included), and the
/// batches each process acknowledged add up to the jobs queued.
#[tokio::test]
async fn two_ingest_processes_on_one_group_handle_each_job_once() {
    let c = Cluster::start_with(Options {
        ingest: false,
        ..Options::default()
    })
    .await;
    let a = c.tenant("alpha").await;
    for sql in [
        "CREATE TABLE store_calls (channel_message_id text NOT NULL)",
        "CREATE FUNCTION count_store() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
         BEGIN INSERT INTO store_calls VALUES (NEW.channel_message_id); RETURN NEW; END $$",
        "CREATE TRIGGER count_store BEFORE INSERT ON messages FOR EACH ROW EXECUTE FUNCTION count_store()",
    ] {
        sqlx::query(sql).execute(&c.db.owner).await.expect(sql);
    }
    let second_addr = free_addr();
    let one = spawn_ingest(&c, c.ingest, "2", "5", "300");
    let two = spawn_ingest(&c, second_addr, "2", "5", "300");
    wait_listening(c.ingest).await;
    wait_listening(second_addr).await;

    const N: i64 = 600;
    const POSTERS: i64 = 6;
    let posters: Vec<_> = (0..POSTERS)
        .map(|p| {
            let (http, url, a) = (
                c.http.clone(),
                c.url("/api/v1/webhooks/whatsapp"),
                a.clone(),
            );
            tokio::spawn(async move {
                for i in (p..N).step_by(POSTERS as usize) {
                    let body =
                        whatsapp_text(&a, &format!("wamid.T{i:04}"), "1", "hi", 1_700_000_000 + i);
                    let sig =
                        faro_edge::sign_meta_payload(a.app_secret.as_bytes(), body.as_bytes());
                    let status = http
                        .post(&url)
                        .header("content-type", "application/json")
                        .header("x-hub-signature-256", sig)
                        .body(body)
                        .send()
                        .await
                        .expect("edge answers")
                        .status();
                    assert_eq!(status, 200, "webhook {i} queued");
                }
            })
        })
        .collect();
    for p in posters {
        p.await.expect("poster");
    }
    c.drained().await;

    assert_eq!(c.count("SELECT count(*) FROM messages").await, N);
    assert_eq!(
        c.count("SELECT count(*) FROM store_calls").await,
        N,
        "each message was inserted once: no job was handled twice"
    );
    assert_eq!(
        c.count("SELECT count(DISTINCT channel_message_id) FROM store_calls")
            .await,
        N
    );
    assert_eq!(dead_letters(&c).await.len(), 0);
    let logs = (one.log.clone(), two.log.clone());
    drop((one, two));
    // Read the logs once the processes are gone: every line is written.
    let done = (jobs_done(&logs.0), jobs_done(&logs.1));
    assert_eq!(
        done.0 + done.1,
        N,
        "the batches acknowledged add up to the jobs: none twice ({done:?})"
    );
    assert!(
        done.0 > 0 && done.1 > 0,
        "both processes took jobs ({done:?})"
    );
    c.stop().await;
}

/// A conversations that accepts connections and never answers: the store
/// call fails at its deadline and the job waits in the retry set, its error
/// saying so, rather than the worker waiting forever.
#[tokio::test]
async fn a_store_call_that_never_answers_fails_at_its_deadline_and_is_retried_later() {
    let c = Cluster::start_with(Options {
        ingest: false,
        ..Options::default()
    })
    .await;
    let a = c.tenant("alpha").await;
    let blackhole = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let blackhole_url = format!("http://{}", blackhole.local_addr().expect("addr"));
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = blackhole.accept().await {
            held.push(s);
        }
    });
    let (listen, redis) = (c.ingest.to_string(), redis_url());
    let ingest = Faro::spawn(
        &c.db.name,
        "ingest",
        &[
            "--ingest-listen",
            &listen,
            "--conversations-url",
            &blackhole_url,
            "--redis-url",
            &redis,
            "--redis-prefix",
            &c.prefix,
            "--claim-idle-ms",
            "1000",
            "--store-deadline-ms",
            "300",
            "--retry-base-ms",
            "60000",
        ],
    );
    wait_listening(c.ingest).await;
    let body = whatsapp_text(&a, "wamid.D1", "1", "hi", 1_700_000_000);
    assert_eq!(c.post_signed(&body, &a.app_secret).await.0, 200);

    let retry = faro_ingest::Keys::new(&c.prefix).retry;
    let mut members: Vec<Bytes> = Vec::new();
    for _ in 0..400 {
        members = c
            .redis
            .zrange(&retry, 0, -1, None, false, None, false)
            .await
            .expect("zrange");
        if !members.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let member = members.first().expect("the job was scheduled for a retry");
    let sep = member.iter().position(|b| *b == b'|').expect("id|job");
    let job = Job::decode(&member[sep + 1..]).expect("job");
    assert_eq!(job.attempt, 1);
    assert!(job.last_error.contains("deadline"), "{}", job.last_error);
    drop(ingest);
    hold.abort();
    c.stop().await;
}

/// A job whose workers keep dying on it (here: a consumer that read it and
/// vanished, with Redis counting 5 deliveries) is not handed out forever:
/// the delivery count Redis keeps is its attempts, and it is dead-lettered.
#[tokio::test]
async fn a_job_its_workers_keep_dying_on_is_dead_lettered_after_its_attempts() {
    let c = Cluster::start_with(Options {
        ingest: false,
        ..Options::default()
    })
    .await;
    let a = c.tenant("alpha").await;
    let route = crate::postgres_restart::route_of(&c, &a).await;
    let keys = faro_ingest::Keys::new(&c.prefix);
    let job = Job {
        submission: Some(SubmitRequest {
            provider: Provider::WhatsappCloud.into(),
            payload: whatsapp_text(&a, "wamid.Z1", "1", "hi", 1_700_000_000).into_bytes(),
            routes: vec![route],
            ..Default::default()
        }),
        ..Default::default()
    };
    let _: () = c
        .redis
        .xgroup_create(&keys.jobs, "workers", "$", true)
        .await
        .expect("group");
    let id: String = c
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
    let _: fred::types::Value = c
        .redis
        .xreadgroup("workers", "ghost", Some(1), None, false, &keys.jobs, ">")
        .await
        .expect("read by a worker that dies");
    // Four more workers took it over and died: delivered 5 times, idle long.
    let _: fred::types::Value = c
        .redis
        .xclaim(
            &keys.jobs,
            "workers",
            "ghost",
            0,
            id.clone(),
            Some(60_000),
            None,
            Some(5),
            false,
            true,
        )
        .await
        .expect("xclaim");

    let ingest = spawn_ingest(&c, c.ingest, "1", "5", "300");
    let dead = dead_lettered(&c, 1).await;
    assert_eq!(field(&dead[0], "class"), "exhausted");
    assert_eq!(field(&dead[0], "source_id"), id);
    let job = job_of(&dead[0]);
    assert_eq!(job.attempt, 5, "{}", field(&dead[0], "error"));
    assert!(
        job.last_error.contains("delivered 6 times"),
        "{}",
        job.last_error
    );
    assert_eq!(
        c.count("SELECT count(*) FROM messages").await,
        0,
        "not tried a 6th time"
    );
    c.drained().await;
    drop(ingest);
    c.stop().await;
}
