//! Concurrent `Submit`s are coalesced into pipelined `XADD`s
//! (`services/ingest/src/submitter.rs`). Batching must neither lose nor
//! duplicate a job, nor hand a caller another caller's entry id: every job
//! below can never be stored, so each is dead-lettered exactly once, under
//! the entry id its own caller was given.

use std::collections::HashMap;

use faro_proto::ingest::v1::{Job, Provider, SubmitRequest, ingest_service_client::IngestServiceClient};
use futures::future::join_all;
use prost::Message;

use crate::{cluster::Cluster, dead_letter::{dead_letters, never_storable}};

const N: usize = 300;

#[tokio::test]
async fn concurrent_submits_are_queued_once_each_under_their_own_ids() {
    let c = Cluster::start().await;
    let ingest = IngestServiceClient::connect(format!("http://{}", c.ingest))
        .await
        .expect("client");
    let (route, _) = never_storable();
    // Not a WhatsApp envelope: dead-lettered at parse, one entry per job.
    let submits = (0..N).map(|n| {
        let mut ingest = ingest.clone();
        let route = route.clone();
        async move {
            let request_id = format!("batch-{n}");
            let answer = ingest
                .submit(SubmitRequest {
                    provider: Provider::WhatsappCloud.into(),
                    payload: format!(r#"{{"object":"page","entry":[],"n":{n}}}"#).into_bytes(),
                    routes: vec![route],
                    request_id: request_id.clone(),
                    ..Default::default()
                })
                .await
                .expect("queued")
                .into_inner();
            (answer.job_id, request_id)
        }
    });
    let given: HashMap<String, String> = join_all(submits).await.into_iter().collect();
    assert_eq!(given.len(), N, "every caller got an entry id of its own");
    c.drained().await;
    let dead = dead_letters(&c).await;
    assert_eq!(dead.len(), N, "each job queued exactly once");
    let mut seen = HashMap::new();
    for fields in &dead {
        let id = String::from_utf8(fields["source_id"].to_vec()).expect("utf-8 id");
        let job = Job::decode(fields["job"].clone()).expect("job");
        let request_id = job.submission.expect("submission").request_id;
        assert_eq!(given.get(&id), Some(&request_id), "entry {id} holds its caller's job");
        assert!(seen.insert(request_id, id).is_none(), "no job queued twice");
    }
    c.stop().await;
}
