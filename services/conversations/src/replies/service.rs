//! `RepliesService` over the reply store: ingest's reply path, and operators'
//! credential changes.

use faro_proto::conversations::v1::{self as pb, replies_service_server::RepliesService};
use tonic::{Request, Response, Status};

use crate::grpc::Service;

#[tonic::async_trait]
impl RepliesService for Service {
    async fn create_reply(
        &self,
        request: Request<pb::CreateReplyRequest>,
    ) -> Result<Response<pb::CreateReplyResponse>, Status> {
        Ok(Response::new(
            self.replies.create(request.into_inner()).await?,
        ))
    }

    async fn get_reply_delivery(
        &self,
        request: Request<pb::GetReplyDeliveryRequest>,
    ) -> Result<Response<pb::ReplyDelivery>, Status> {
        Ok(Response::new(
            super::get_delivery(&self.pool, &self.secrets, request.into_inner()).await?,
        ))
    }

    async fn record_reply_result(
        &self,
        request: Request<pb::RecordReplyResultRequest>,
    ) -> Result<Response<pb::StoredMessage>, Status> {
        Ok(Response::new(
            super::record_result(&self.pool, request.into_inner()).await?,
        ))
    }

    async fn claim_replies(
        &self,
        request: Request<pb::ClaimRepliesRequest>,
    ) -> Result<Response<pb::ClaimRepliesResponse>, Status> {
        let deliveries =
            super::claim_batch(&self.pool, &self.secrets, request.into_inner().claims).await?;
        Ok(Response::new(pb::ClaimRepliesResponse { deliveries }))
    }

    async fn record_reply_results(
        &self,
        request: Request<pb::RecordReplyResultsRequest>,
    ) -> Result<Response<pb::RecordReplyResultsResponse>, Status> {
        Ok(Response::new(
            super::record_batch(&self.pool, request.into_inner().results).await?,
        ))
    }

    async fn set_channel_credential(
        &self,
        request: Request<pb::SetChannelCredentialRequest>,
    ) -> Result<Response<pb::ChannelCredentialInfo>, Status> {
        Ok(Response::new(
            super::set_credential(&self.pool, &self.secrets, request.into_inner()).await?,
        ))
    }
}
