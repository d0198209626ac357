//! `faro dlq`: the dead-letter queue and the queue's figures, from a running
//! ingest service. Prints JSON (the same as the edge's admin routes), or a
//! table for a terminal with `--table`.

use std::time::Duration;

use clap::{Args, Subcommand};
use faro_proto::{
    dead_letters::{self as dl, FilterText},
    ingest::v1::{
        DeadLetterSelection, GetDeadLetterRequest, ListDeadLettersRequest, PurgeDeadLettersRequest,
        QueueStatsRequest, RetryDeadLettersRequest, dead_letter_selection::Target,
        ingest_service_client::IngestServiceClient,
    },
};
use serde_json::Value;
use tonic::transport::Channel;

#[derive(Args)]
pub struct Common {
    /// gRPC URL of the ingest service.
    #[arg(
        long = "ingest-url",
        env = "FARO_INGEST_URL",
        default_value = "http://127.0.0.1:7101"
    )]
    pub ingest_url: String,
    /// The operator's certificate (`spiffe://faro/operator`), or --plaintext.
    #[command(flatten)]
    pub tls: crate::mtls::TlsArgs,
    /// Print a table instead of JSON.
    #[arg(long)]
    pub table: bool,
}

#[derive(Args, Default)]
pub struct Filter {
    /// whatsapp, messenger, instagram or ycloud.
    #[arg(long)]
    pub platform: Option<String>,
    /// A tenant the job was routed to (UUID).
    #[arg(long)]
    pub tenant: Option<String>,
    /// undecodable, unparseable, refused, rejected_parts, exhausted or other.
    #[arg(long = "error-class")]
    pub error_class: Option<String>,
    /// Dead-lettered at or after this RFC 3339 time.
    #[arg(long)]
    pub since: Option<String>,
    /// Dead-lettered before this RFC 3339 time.
    #[arg(long)]
    pub until: Option<String>,
}

impl Filter {
    fn text(&self) -> FilterText<'_> {
        FilterText {
            platform: self.platform.as_deref(),
            tenant: self.tenant.as_deref(),
            error_class: self.error_class.as_deref(),
            since: self.since.as_deref(),
            until: self.until.as_deref(),
        }
    }
}

/// One entry (`--id`), every entry a filter matches, or `--all`.
#[derive(Args)]
pub struct Selection {
    #[arg(long, conflicts_with = "all")]
    pub id: Option<String>,
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub filter: Filter,
}

#[derive(Subcommand)]
pub enum DlqCommand {
    /// Dead letters, oldest first, a page at a time.
    List {
        #[command(flatten)]
        filter: Filter,
        /// `next_cursor` of the previous page.
        #[arg(long)]
        cursor: Option<String>,
        /// 1..=1000.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[command(flatten)]
        common: Common,
    },
    /// One dead letter with its payload.
    Show {
        id: String,
        #[command(flatten)]
        common: Common,
    },
    /// Move dead letters back to the live stream, attempts reset. Parts of a
    /// job already stored are not stored twice: storage is idempotent.
    Retry {
        #[command(flatten)]
        selection: Selection,
        #[command(flatten)]
        common: Common,
    },
    /// Delete dead letters for good.
    Purge {
        #[command(flatten)]
        selection: Selection,
        #[command(flatten)]
        common: Common,
    },
    /// The queue's figures: length, pending, retries, dead letters, consumers.
    Stats {
        #[command(flatten)]
        common: Common,
    },
}

async fn client(common: &Common) -> anyhow::Result<IngestServiceClient<Channel>> {
    // Retrying or purging a large queue is one call.
    let channel = crate::mtls::connect(
        "ingest",
        &common.ingest_url,
        &common.tls,
        Duration::from_secs(300),
    )
    .await?;
    Ok(IngestServiceClient::new(channel))
}

fn selection(s: &Selection) -> anyhow::Result<DeadLetterSelection> {
    let filter = dl::parse_filter(&s.filter.text()).map_err(anyhow::Error::msg)?;
    let target = match (&s.id, s.all) {
        (Some(id), false) if dl::filter_is_empty(&filter) => Target::Id(id.clone()),
        (None, true) if dl::filter_is_empty(&filter) => Target::All(true),
        (None, false) if !dl::filter_is_empty(&filter) => Target::Filter(filter),
        _ => anyhow::bail!("select exactly one of --id, --all, or filter flags"),
    };
    Ok(DeadLetterSelection {
        target: Some(target),
    })
}

/// A refused call, in the words the service used.
fn refused(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", s.code(), s.message())
}

pub async fn run(cmd: DlqCommand) -> anyhow::Result<()> {
    let (value, common, kind) = match cmd {
        DlqCommand::List {
            filter,
            cursor,
            limit,
            common,
        } => {
            let request = ListDeadLettersRequest {
                filter: Some(dl::parse_filter(&filter.text()).map_err(anyhow::Error::msg)?),
                cursor: cursor.unwrap_or_default(),
                limit,
            };
            let r = client(&common)
                .await?
                .list_dead_letters(request)
                .await
                .map_err(refused)?;
            (dl::list_json(&r.into_inner()), common, Kind::List)
        }
        DlqCommand::Show { id, common } => {
            let r = client(&common)
                .await?
                .get_dead_letter(GetDeadLetterRequest { id })
                .await
                .map_err(refused)?;
            (
                dl::dead_letter_detail_json(&r.into_inner()),
                common,
                Kind::Record,
            )
        }
        DlqCommand::Retry {
            selection: s,
            common,
        } => {
            let selection = Some(selection(&s)?);
            let r = client(&common)
                .await?
                .retry_dead_letters(RetryDeadLettersRequest { selection })
                .await
                .map_err(refused)?;
            (dl::retry_json(&r.into_inner()), common, Kind::Retry)
        }
        DlqCommand::Purge {
            selection: s,
            common,
        } => {
            let selection = Some(selection(&s)?);
            let r = client(&common)
                .await?
                .purge_dead_letters(PurgeDeadLettersRequest { selection })
                .await
                .map_err(refused)?;
            (dl::purge_json(&r.into_inner()), common, Kind::Record)
        }
        DlqCommand::Stats { common } => {
            let r = client(&common)
                .await?
                .queue_stats(QueueStatsRequest {})
                .await
                .map_err(refused)?;
            (dl::stats_json(&r.into_inner()), common, Kind::Record)
        }
    };
    if common.table {
        print!("{}", table(&value, kind));
    } else {
        println!("{value:#}");
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Kind {
    List,
    Retry,
    Record,
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// Columns padded to their widest cell; cells past `max` characters cut.
fn rows(header: &[&str], body: Vec<Vec<String>>, max: usize) -> String {
    let cut = |s: &str| -> String {
        let one_line = s.replace('\n', " ");
        if one_line.chars().count() > max {
            one_line.chars().take(max - 1).chain(['…']).collect()
        } else {
            one_line
        }
    };
    let all: Vec<Vec<String>> = std::iter::once(header.iter().map(|h| (*h).to_owned()).collect())
        .chain(body.into_iter().map(|r| r.iter().map(|c| cut(c)).collect()))
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| all.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in all {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn table(v: &Value, kind: Kind) -> String {
    match kind {
        Kind::List => {
            let header = ["ID", "DEAD_AT", "PLATFORM", "CLASS", "TENANTS", "ERROR"];
            let body = v["dead_letters"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|d| {
                            [
                                "id",
                                "dead_at",
                                "platform",
                                "error_class",
                                "tenant_ids",
                                "error",
                            ]
                            .iter()
                            .map(|k| cell(&d[*k]))
                            .collect()
                        })
                        .collect()
                })
                .unwrap_or_default();
            let mut out = rows(&header, body, 60);
            if let Some(c) = v["next_cursor"].as_str() {
                out.push_str(&format!("next page: --cursor {c}\n"));
            }
            out
        }
        Kind::Retry => {
            let mut body: Vec<Vec<String>> = Vec::new();
            for r in v["retried"].as_array().into_iter().flatten() {
                body.push(vec![cell(&r["id"]), "retried".into(), cell(&r["job_id"])]);
            }
            for r in v["skipped"].as_array().into_iter().flatten() {
                body.push(vec![cell(&r["id"]), "skipped".into(), cell(&r["reason"])]);
            }
            rows(&["ID", "OUTCOME", "JOB_ID / REASON"], body, 80)
        }
        Kind::Record => {
            let body = v
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, x)| {
                            let text = match x {
                                Value::Object(_) | Value::Array(_) if k != "tenant_ids" => {
                                    x.to_string()
                                }
                                other => cell(other),
                            };
                            vec![k.clone(), text]
                        })
                        .collect()
                })
                .unwrap_or_default();
            rows(&["FIELD", "VALUE"], body, 400)
        }
    }
}
