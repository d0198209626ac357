//! Postgres dies (`pg_ctl -m immediate`, a crash as far as Postgres knows)
//! and comes back while webhooks flow: the edge keeps answering 200 from its
//! route cache, stores fail, jobs wait in the retry set, and the same ingest
//! process (and conversations) store every webhook answered 200 exactly once
//! once it is back.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use faro_proto::{
    conversations::v1::{Channel, ResolveChannelAccountsRequest},
    ingest::v1::Route,
};

use crate::{
    cluster::{Cluster, Options, Tenant, whatsapp_text},
    crash::scheduled,
    dead_letter::dead_letters,
    process::{free_addr, wait_listening},
    retry::spawn_ingest,
};

/// A Postgres cluster of the test's own, in a temporary directory, on its
/// own port; stopped and removed on drop.
struct OwnPostgres {
    dir: PathBuf,
    port: u16,
}

/// The directory of `initdb` and `pg_ctl` (the newest installed version).
fn pg_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("postgres is installed under /usr/lib/postgresql")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().expect("an initdb")
}

/// `program args` as the `postgres` user when we are root (Postgres refuses
/// to run as root), as ourselves otherwise.
fn as_postgres(program: &Path, args: &[&str]) -> Command {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program).args(args);
        c
    } else {
        let mut c = Command::new(program);
        c.args(args);
        c
    }
}

impl OwnPostgres {
    fn init() -> Self {
        let dir = std::env::temp_dir().join(format!("faro-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let _ = Command::new("chown").arg("postgres").arg(&dir).status();
        let data = dir.join("data");
        let status = as_postgres(
            &pg_bin().join("initdb"),
            &[
                "-D",
                data.to_str().expect("utf-8 path"),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        )
        .stdout(std::process::Stdio::null())
        .status()
        .expect("initdb runs");
        assert!(status.success(), "initdb");
        let port = free_addr().port();
        let pg = Self { dir, port };
        pg.start();
        pg
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn pg_ctl(&self, args: &[&str]) -> bool {
        let data = self.dir.join("data");
        let mut all = vec!["-D", data.to_str().expect("utf-8 path")];
        all.extend_from_slice(args);
        as_postgres(&pg_bin().join("pg_ctl"), &all)
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn start(&self) {
        let log = self.dir.join("postgres.log");
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off",
            self.port,
            self.dir.to_str().expect("utf-8 path")
        );
        assert!(
            self.pg_ctl(&[
                "-w",
                "-l",
                log.to_str().expect("utf-8 path"),
                "-o",
                &options,
                "start"
            ]),
            "postgres starts (log: {})",
            log.display()
        );
    }

    /// Every Postgres process killed at once: no checkpoint, recovery from
    /// the WAL at the next start.
    fn crash(&self) {
        assert!(self.pg_ctl(&["-m", "immediate", "stop"]), "postgres stops");
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["-m", "immediate", "stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn post_range(c: &Cluster, a: &Tenant, range: std::ops::Range<i64>) -> Vec<String> {
    let mut accepted = Vec::new();
    for i in range {
        let id = format!("wamid.P{i:04}");
        let body = whatsapp_text(
            a,
            &id,
            "16315551181",
            &format!("msg {i}"),
            1_700_000_000 + i,
        );
        match c.post_signed(&body, &a.app_secret).await.0 {
            200 => accepted.push(id),
            503 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    accepted
}

/// The route the edge would give ingest for `a`'s number.
pub(crate) async fn route_of(c: &Cluster, a: &Tenant) -> Route {
    let mut conversations = faro_proto::client::conversations(
        faro_proto::client::channel(
            "conversations",
            &format!("http://{}", c.conversations),
            Duration::from_secs(10),
            None,
        )
        .expect("channel"),
    );
    let r = conversations
        .resolve_channel_accounts(ResolveChannelAccountsRequest {
            channel: Channel::Whatsapp.into(),
            external_account_ids: vec![a.phone_number_id.clone()],
        })
        .await
        .expect("resolve")
        .into_inner()
        .routes
        .pop()
        .expect("the number is connected");
    Route {
        external_account_id: r.external_account_id,
        tenant_id: r.tenant_id,
        location_id: r.location_id,
        channel_account_id: r.channel_account_id,
        channel: r.channel,
    }
}

/// Postgres crashes while webhooks flow and comes back: stores fail and
/// their jobs wait in the retry set; the same ingest process, never
/// restarted, then stores every acked webhook exactly once.
#[tokio::test]
async fn webhooks_answered_200_survive_postgres_crashing_mid_stream() {
    let pg = tokio::task::spawn_blocking(OwnPostgres::init)
        .await
        .expect("initdb");
    let c = Cluster::start_with(Options {
        postgres_url: Some(pg.url()),
        ingest: false,
        ..Options::default()
    })
    .await;
    let a = c.tenant("alpha").await;
    let mut ingest = spawn_ingest(&c, c.ingest, "2", "30", "100");
    wait_listening(c.ingest).await;

    let mut accepted = post_range(&c, &a, 0..100).await;
    // pg_ctl blocks this thread for a moment: the services only pause.
    pg.crash();
    assert!(
        <sqlx::PgConnection as sqlx::Connection>::connect(&pg.url())
            .await
            .is_err(),
        "postgres is really down"
    );
    // The edge answers from its route cache; ingest queues in Redis.
    let during = post_range(&c, &a, 100..200).await;
    assert!(
        !during.is_empty(),
        "webhooks are acked while postgres is down"
    );
    accepted.extend(during);
    // The workers' stores fail; the jobs move to the retry set.
    for _ in 0..600 {
        if scheduled(&c).await > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        scheduled(&c).await > 0,
        "failed stores are scheduled for a retry"
    );
    pg.start();
    accepted.extend(post_range(&c, &a, 200..300).await);
    assert!(
        accepted.len() > 200,
        "webhooks flow again ({})",
        accepted.len()
    );

    c.drained().await;
    let stored: Vec<String> =
        sqlx::query_scalar("SELECT channel_message_id FROM messages ORDER BY \"timestamp\"")
            .fetch_all(&c.db.owner)
            .await
            .expect("ids");
    assert_eq!(stored, accepted, "exactly the accepted webhooks, once each");
    assert_eq!(dead_letters(&c).await.len(), 0);
    assert!(
        ingest.running(),
        "the ingest process recovered without a restart (log: {})",
        ingest.log
    );
    drop(ingest);
    c.stop().await;
    drop(pg);
}
