//! Query strings of the inbox routes: only known names, each value checked,
//! every refusal naming its parameter.

use bytes::Bytes;
use faro_proto::{
    channel_from_name,
    conversations::v1::{Channel, ListConversationsRequest},
    to_timestamp,
};
use http::{Response, StatusCode};
use http_body_util::Full;
use serde_json::json;

use super::{Agent, conversation_json, from_status};
use crate::{
    State,
    error::{ApiError, json_response},
};

/// A query string's pairs, refused if it names a parameter the route does not take.
pub(crate) struct Params(Vec<(String, String)>);

/// The list's parameters; every route also takes the token as `access_token`.
const LIST: &[&str] = &[
    "location_id",
    "status",
    "channel",
    "assignee",
    "unassigned",
    "tag",
    "lead_status",
    "unread_only",
    "updated_since",
    "query",
    "cursor",
    "limit",
];

fn bad(name: &str, what: &str) -> ApiError {
    ApiError::bad_request("invalid_request", format!("{name} {what}"))
}

impl Params {
    pub(crate) fn parse(query: Option<&str>, known: &[&str]) -> Result<Self, ApiError> {
        let pairs: Vec<(String, String)> =
            url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .filter(|(k, _)| k != "access_token")
                .collect();
        if pairs.len() > 200 {
            return Err(ApiError::bad_request(
                "invalid_request",
                "at most 200 query parameters",
            ));
        }
        if let Some((k, _)) = pairs.iter().find(|(k, _)| !known.contains(&k.as_str())) {
            return Err(ApiError::bad_request(
                "invalid_request",
                format!("unknown query parameter {k:?}; known: {}", known.join(", ")),
            ));
        }
        Ok(Self(pairs))
    }

    /// Every value of `name`, commas splitting values too.
    fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The one value of `name`, if given; twice is refused.
    pub(crate) fn one(&self, name: &str) -> Result<Option<String>, ApiError> {
        let mut it = self
            .0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone());
        let first = it.next();
        if it.next().is_some() {
            return Err(bad(name, "must be given once"));
        }
        Ok(first)
    }

    fn flag(&self, name: &str) -> Result<bool, ApiError> {
        match self.one(name)?.as_deref() {
            None | Some("false" | "0") => Ok(false),
            Some("true" | "1" | "") => Ok(true),
            Some(_) => Err(bad(name, "must be true or false")),
        }
    }

    pub(crate) fn limit(&self) -> Result<u32, ApiError> {
        match self.one("limit")? {
            None => Ok(0),
            Some(v) => v
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=500).contains(n))
                .ok_or_else(|| bad("limit", "must be 1..=500")),
        }
    }
}

fn request(agent: &Agent, p: &Params) -> Result<ListConversationsRequest, ApiError> {
    let locations = p.all("location_id");
    if locations.iter().any(|l| uuid::Uuid::parse_str(l).is_err()) {
        return Err(bad("location_id", "must be a UUID"));
    }
    let channels = p
        .all("channel")
        .iter()
        .map(|c| match channel_from_name(c) {
            Channel::Unspecified => Err(bad(
                "channel",
                "must be whatsapp, facebook_messenger, instagram_dm, google_business, sms or email",
            )),
            ch => Ok(ch as i32),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let updated_since = p
        .one("updated_since")?
        .map(|v| {
            chrono::DateTime::parse_from_rfc3339(&v)
                .map(|t| to_timestamp(t.with_timezone(&chrono::Utc)))
                .map_err(|_| bad("updated_since", "must be an RFC 3339 time"))
        })
        .transpose()?;
    Ok(ListConversationsRequest {
        tenant_id: agent.tenant(),
        location_ids: agent.locations(),
        limit: p.limit()?,
        agent_id: agent.claims.sub.clone(),
        filter_location_ids: locations,
        statuses: p.all("status"),
        channels,
        assignee: p.one("assignee")?.unwrap_or_default(),
        unassigned: p.flag("unassigned")?,
        tag: p.one("tag")?.unwrap_or_default(),
        lead_status: p.one("lead_status")?.unwrap_or_default(),
        unread_only: p.flag("unread_only")?,
        updated_since,
        query: p.one("query")?.unwrap_or_default(),
        cursor: p.one("cursor")?.unwrap_or_default(),
    })
}

pub(crate) async fn list(
    state: &State,
    agent: &Agent,
    query: Option<&str>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let p = Params::parse(query, LIST)?;
    let page = state
        .conversations
        .clone()
        .list_conversations(request(agent, &p)?)
        .await
        .map_err(|s| from_status(&s))?
        .into_inner();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "conversations": page.conversations.iter().map(|c| conversation_json(c, true)).collect::<Vec<_>>(),
            "next_cursor": (!page.next_cursor.is_empty()).then_some(page.next_cursor),
        }),
    ))
}
