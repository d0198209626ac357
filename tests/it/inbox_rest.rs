//! The inbox through the edge with real JWTs: every filter and the search,
//! and refusals that name their parameter.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::{
    cluster::Cluster,
    inbox_support::{agent, call, customers, get, names, post, shop, token},
};

const ANN: &str = "15550001111";
const BOB: &str = "15550002222";
const CARA: &str = "15550003333";

#[tokio::test]
async fn every_filter_and_the_search_narrow_the_list() {
    let c = Cluster::start().await;
    let s = shop(&c, "filters").await;
    post(
        &c,
        &s.one,
        "wamid.F1",
        ANN,
        "Ann Lee",
        "hello about a booking",
        1_700_000_100,
    )
    .await;
    post(
        &c,
        &s.one,
        "wamid.F2",
        BOB,
        "Bob Stone",
        "price please",
        1_700_000_200,
    )
    .await;
    post(
        &c,
        &s.two,
        "wamid.F3",
        CARA,
        "Cara Diaz",
        "a quote for the WEDDING",
        1_700_000_300,
    )
    .await;
    c.drained().await;
    agent(&c, s.id(), "agent-x", &[]).await;
    let me = token(s.id(), "agent-1", None);
    let list = |q: &str| format!("/api/v1/conversations?{q}");

    let all = get(&c, &list(""), &me).await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.body);
    assert_eq!(customers(&all.body), [CARA, BOB, ANN], "newest first");
    assert!(all.body["next_cursor"].is_null());
    let bob = all.body["conversations"][1]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_eq!(all.body["conversations"][1]["unread_count"], 1);

    let edit = call(
        &c,
        Method::PATCH,
        &format!("/api/v1/conversations/{bob}"),
        &me,
        &[],
        Some(
            json!({"status": "open", "assigned_to_user_id": "agent-x", "add_tags": ["vip"],
                    "lead_status": "interested"}),
        ),
    )
    .await;
    assert_eq!(edit.status, StatusCode::OK, "{}", edit.body);
    let edited_at = edit.body["updated_at"]
        .as_str()
        .expect("updated_at")
        .to_owned();

    let cases: Vec<(String, Vec<&str>)> = vec![
        (format!("location_id={}", s.two.location_id), vec![CARA]),
        (
            format!("location_id={},{}", s.one.location_id, s.two.location_id),
            vec![CARA, BOB, ANN],
        ),
        ("status=open".into(), vec![BOB]),
        ("status=new".into(), vec![CARA, ANN]),
        ("status=new&status=open".into(), vec![CARA, BOB, ANN]),
        ("channel=whatsapp".into(), vec![CARA, BOB, ANN]),
        ("channel=sms".into(), vec![]),
        ("assignee=agent-x".into(), vec![BOB]),
        ("unassigned=true".into(), vec![CARA, ANN]),
        ("tag=vip".into(), vec![BOB]),
        ("lead_status=interested".into(), vec![BOB]),
        (
            format!("updated_since={}", urlencode(&edited_at)),
            vec![BOB],
        ),
        ("query=stone".into(), vec![BOB]),
        ("query=wedding".into(), vec![CARA]),
        ("query=0001111".into(), vec![ANN]),
        ("query=about%20a%20book".into(), vec![ANN]),
        ("query=100%25".into(), vec![]),
        ("status=open&tag=vip&assignee=agent-x".into(), vec![BOB]),
        ("status=archived&tag=vip".into(), vec![]),
    ];
    for (q, want) in cases {
        let a = get(&c, &list(&q), &me).await;
        assert_eq!(a.status, StatusCode::OK, "{q}: {}", a.body);
        assert_eq!(customers(&a.body), want, "{q}");
    }

    // Unread is per agent: agent-1 reads Cara's thread, agent-2 has read nothing.
    let cara = all.body["conversations"][0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let read = call(
        &c,
        Method::POST,
        &format!("/api/v1/conversations/{cara}/read"),
        &me,
        &[],
        None,
    )
    .await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    assert_eq!(read.body["unread_count"], 0);
    assert_eq!(
        customers(&get(&c, &list("unread_only=true"), &me).await.body),
        [BOB, ANN]
    );
    let other = token(s.id(), "agent-2", None);
    assert_eq!(
        customers(&get(&c, &list("unread_only=true"), &other).await.body),
        [CARA, BOB, ANN]
    );
    // A newer inbound message makes the thread unread again, counting one.
    post(
        &c,
        &s.two,
        "wamid.F4",
        CARA,
        "Cara Diaz",
        "still there?",
        1_700_000_400,
    )
    .await;
    c.drained().await;
    let a = get(&c, &list("unread_only=true"), &me).await;
    assert_eq!(customers(&a.body), [CARA, BOB, ANN]);
    assert_eq!(a.body["conversations"][0]["unread_count"], 1);

    // Paging: a cursor per page, no overlap, and a bad cursor is named.
    let first = get(&c, &list("limit=2"), &me).await;
    assert_eq!(customers(&first.body), [CARA, BOB]);
    let cursor = first.body["next_cursor"].as_str().expect("more").to_owned();
    let second = get(&c, &list(&format!("limit=2&cursor={cursor}")), &me).await;
    assert_eq!(customers(&second.body), [ANN]);
    assert!(second.body["next_cursor"].is_null());

    for (q, field) in [
        ("cursor=not-a-cursor", "cursor"),
        ("channel=pigeon", "channel"),
        ("status=won", "status"),
        ("lead_status=hot", "lead_status"),
        ("location_id=nowhere", "location_id"),
        ("query=ab", "query"),
        ("limit=0", "limit"),
        ("limit=x", "limit"),
        ("unread_only=maybe", "unread_only"),
        ("updated_since=yesterday", "updated_since"),
        ("assignee=agent-x&unassigned=true", "assignee"),
        ("colour=red", "colour"),
    ] {
        names(&get(&c, &list(q), &me).await, field);
    }
    c.stop().await;
}

/// `updated_at` as a query value (its `+` must not become a space).
pub fn urlencode(s: &str) -> String {
    s.replace('+', "%2B")
}

#[tokio::test]
async fn a_thread_pages_back_and_forth_and_around_a_message() {
    let c = Cluster::start().await;
    let s = shop(&c, "thread").await;
    for n in 0..25 {
        post(
            &c,
            &s.one,
            &format!("wamid.T{n:02}"),
            ANN,
            "Ann",
            &format!("m{n:02}"),
            1_700_000_000 + n,
        )
        .await;
    }
    c.drained().await;
    let me = token(s.id(), "agent-1", None);
    let id = get(&c, "/api/v1/conversations", &me).await.body["conversations"][0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let path = |q: &str| format!("/api/v1/conversations/{id}/messages?{q}");
    let texts = |b: &serde_json::Value| -> Vec<String> {
        b["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .map(|m| m["text"].as_str().expect("text").to_owned())
            .collect()
    };
    // Backwards from the newest page.
    let mut seen: Vec<String> = Vec::new();
    let mut q = "limit=10".to_owned();
    loop {
        let a = get(&c, &path(&q), &me).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        let mut page = texts(&a.body);
        page.extend(seen);
        seen = page;
        match a.body["before_cursor"].as_str() {
            Some(b) => q = format!("limit=10&before={b}"),
            None => break,
        }
    }
    let all: Vec<String> = (0..25).map(|n| format!("m{n:02}")).collect();
    assert_eq!(seen, all, "every message once, in order");
    // Forwards from the oldest.
    names(
        &get(&c, &path("around=not-a-uuid"), &me).await,
        "around_message_id",
    );
    let first = get(&c, &path("limit=25"), &me).await;
    let ids: Vec<String> = first.body["messages"]
        .as_array()
        .expect("m")
        .iter()
        .map(|m| m["id"].as_str().expect("id").to_owned())
        .collect();
    let around = get(&c, &path(&format!("limit=5&around={}", ids[12])), &me).await;
    assert_eq!(texts(&around.body), ["m10", "m11", "m12", "m13", "m14"]);
    let after = around.body["after_cursor"]
        .as_str()
        .expect("after")
        .to_owned();
    let next = get(&c, &path(&format!("limit=5&after={after}")), &me).await;
    assert_eq!(texts(&next.body), ["m15", "m16", "m17", "m18", "m19"]);
    let before = around.body["before_cursor"]
        .as_str()
        .expect("before")
        .to_owned();
    let prev = get(&c, &path(&format!("limit=5&before={before}")), &me).await;
    assert_eq!(texts(&prev.body), ["m05", "m06", "m07", "m08", "m09"]);
    // A conversations cursor is not a messages cursor, and two positions are refused.
    names(&get(&c, &path("before=AAAA"), &me).await, "before");
    names(
        &get(&c, &path(&format!("before={before}&after={after}")), &me).await,
        "before",
    );
    c.stop().await;
}
