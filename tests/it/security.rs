//! Security details checked from outside: what a verify token opens, who may
//! expire pending events, which JWTs the edge accepts, YCloud's signed clock,
//! and what a location-scoped agent sees.

use std::process::Command;

use faro_proto::conversations::v1::{self as pb, Channel};
use tokio_tungstenite::tungstenite::{
    Error as WsError, client::IntoClientRequest, http::HeaderValue,
};
use tokio_util::sync::CancellationToken;

use crate::cluster::{Cluster, EdgeLimits, JWT_SECRET, Tenant, edge_config, whatsapp_text};

/// Meta's handshake on `/api/v1/webhooks/<platform>`: the HTTP status.
async fn handshake(c: &Cluster, platform: &str, token: &str) -> u16 {
    c.http
        .get(c.url(&format!(
            "/api/v1/webhooks/{platform}?hub.mode=subscribe&hub.verify_token={token}&hub.challenge=31"
        )))
        .send()
        .await
        .expect("edge answers")
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_verify_token_opens_only_its_apps_channels_and_never_a_ycloud_placeholder() {
    let c = Cluster::start().await;
    let alpha = c.bare_tenant("alpha").await;
    let wa = c.app("meta-wa", "secret-wa", "verify-wa").await;
    c.connect(&alpha, Channel::Whatsapp, "pn-alpha-1", &wa)
        .await;
    let ycloud = c.app("ycloud-1", "secret-yc", "any-placeholder").await;
    c.connect(&alpha, Channel::Whatsapp, "+15550001111", &ycloud)
        .await;
    let page = c.app("meta-page", "secret-page", "verify-page").await;

    assert_eq!(handshake(&c, "whatsapp", "verify-wa").await, 200);
    for platform in ["facebook", "instagram"] {
        assert_eq!(
            handshake(&c, platform, "verify-wa").await,
            403,
            "a WhatsApp app's token on {platform}"
        );
    }
    for platform in ["whatsapp", "facebook", "instagram"] {
        assert_eq!(
            handshake(&c, platform, "any-placeholder").await,
            403,
            "a YCloud endpoint's placeholder on {platform}"
        );
        assert_eq!(
            handshake(&c, platform, "verify-page").await,
            403,
            "an app with no account yet on {platform}"
        );
    }
    c.connect(&alpha, Channel::FacebookMessenger, "page-1", &page)
        .await;
    assert_eq!(handshake(&c, "facebook", "verify-page").await, 200);
    assert_eq!(handshake(&c, "whatsapp", "verify-page").await, 403);
    assert_eq!(handshake(&c, "instagram", "verify-page").await, 403);
    c.stop().await;
}

#[tokio::test]
async fn only_the_sweeper_role_can_expire_pending_events() {
    let c = Cluster::start().await;
    let (alpha, _) = c.bare_tenant("alpha").await;
    let (beta, _) = c.bare_tenant("beta").await;
    // Six days old: inside the cluster's own 7-day TTL (its sweeper must not
    // race this test), past the one-day TTL of the service started below.
    for tenant in [&alpha, &beta] {
        sqlx::query(
            "INSERT INTO pending_message_events
                 (tenant_id, channel, target_channel_message_id, kind, event_key, payload, received_at)
             VALUES ($1::uuid, 'whatsapp', 'wamid.GONE', 'status', 'read', '{}', now() - interval '6 days')",
        )
        .bind(tenant)
        .execute(&c.db.owner)
        .await
        .expect("an old pending event");
    }

    // The service's own role, as any session of it (no tenant set, or one set).
    let app = sqlx::PgPool::connect_with(c.db.app_options())
        .await
        .expect("app pool");
    let denied =
        sqlx::query_scalar::<_, i64>("SELECT faro_expire_pending_events(interval '1 hour')")
            .fetch_one(&app)
            .await
            .expect_err("faro_app may not expire across tenants");
    let code = denied
        .as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.into_owned());
    assert_eq!(code.as_deref(), Some("42501"), "{denied}");
    let week = std::time::Duration::from_secs(7 * 24 * 3600);
    assert!(
        faro_conversations::expire_pending(&app, week)
            .await
            .is_err()
    );
    app.close().await;
    let left = "SELECT count(*) FROM pending_message_events";
    assert_eq!(c.count(left).await, 2);

    // The sweeper's role can do exactly this, and read or delete nothing itself.
    let sweeper = sqlx::PgPool::connect_with(
        c.db.app_options()
            .username(faro_conversations::SWEEPER_ROLE),
    )
    .await
    .expect("sweeper pool");
    for sql in [
        "SELECT count(*) FROM pending_message_events",
        "DELETE FROM pending_message_events",
        "SELECT count(*) FROM messages",
    ] {
        assert!(
            sqlx::query(sql).execute(&sweeper).await.is_err(),
            "the sweeper may not run {sql}"
        );
    }
    sweeper.close().await;

    // The service's sweeper (first sweep at start) connects as that role.
    let conversations = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let stop = CancellationToken::new();
    let config = faro_conversations::Config {
        database_url: c.db.owner_url.clone(),
        app_database_url: None,
        encryption_keys: crate::cluster::encryption_keys(),
        db_max_connections: 2,
        pending_ttl: std::time::Duration::from_secs(24 * 3600),
        sweeper_database_url: None,
        operator_database_url: None,
        tls: None,
    };
    let service = tokio::spawn(faro_conversations::run(config, conversations, stop.clone()));
    let mut remaining = 2;
    for _ in 0..400 {
        remaining = c.count(left).await;
        if remaining == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(
        remaining, 0,
        "the service's sweeper expired both tenants' events"
    );
    stop.cancel();
    service
        .await
        .expect("task")
        .expect("conversations stops cleanly");
    c.stop().await;
}

/// Opens the WebSocket at `edge` with `token`: Ok on 101, else the refusal.
async fn open(
    edge: std::net::SocketAddr,
    token: &str,
) -> Result<crate::cluster::Ws, (u16, serde_json::Value)> {
    let mut req = format!("ws://{edge}/api/v1/messages/stream")
        .into_client_request()
        .expect("request");
    req.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
    );
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(crate::cluster::Ws(ws)),
        Err(WsError::Http(resp)) => {
            let body = resp.body().clone().unwrap_or_default();
            Err((
                resp.status().as_u16(),
                serde_json::from_slice(&body).unwrap_or_default(),
            ))
        }
        Err(e) => panic!("unexpected error {e}"),
    }
}

fn claims(tenant: &str, locations: Option<Vec<uuid::Uuid>>) -> faro_edge::auth::Claims {
    faro_edge::auth::Claims {
        sub: "agent-1".into(),
        tenant_id: tenant.parse().expect("uuid"),
        location_ids: locations,
        exp: u64::try_from(chrono::Utc::now().timestamp() + 300).unwrap_or_default(),
    }
}

fn faro_token(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_faro"))
        .arg("token")
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("FARO_JWT_ISSUER")
        .env_remove("FARO_JWT_AUDIENCE")
        .output()
        .expect("faro token runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    json["token"].as_str().expect("a token").to_owned()
}

#[tokio::test]
async fn the_edge_refuses_tokens_before_their_nbf_or_for_another_issuer_or_audience() {
    let c = Cluster::start().await;
    let a = c.tenant("alpha").await;
    let now = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or_default();
    let keys = faro_edge::auth::JwtKeys::new(JWT_SECRET.as_bytes()).expect("keys");
    let early = keys
        .issue_not_before(&claims(&a.id, None), Some(now + 3600))
        .expect("token");
    let (status, json) = open(c.edge, &early).await.err().expect("refused");
    assert_eq!(
        (status, json["error"]["message"].as_str()),
        (401, Some("token not valid yet (nbf)"))
    );
    let started = keys
        .issue_not_before(&claims(&a.id, None), Some(now - 5))
        .expect("token");
    assert!(open(c.edge, &started).await.is_ok());

    // A second edge in front of the same services, requiring an issuer and an audience.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let scoped_edge = listener.local_addr().expect("addr");
    let stop = CancellationToken::new();
    let mut config = edge_config(c.conversations, c.ingest, c.stream, EdgeLimits::default());
    config.jwt_issuer = Some("https://auth.faro.test".into());
    config.jwt_audience = Some("faro-edge".into());
    let edge = tokio::spawn(faro_edge::run(config, listener, stop.clone()));

    let tenant = a.id.clone();
    let mint = move |extra: &[&str]| {
        let args = [
            &["--tenant", tenant.as_str(), "--jwt-secret", JWT_SECRET][..],
            extra,
        ]
        .concat();
        faro_token(&args)
    };
    let (plain, minted, wrong_aud, no_aud) = tokio::task::spawn_blocking(move || {
        (
            mint(&[]),
            mint(&[
                "--issuer",
                "https://auth.faro.test",
                "--audience",
                "faro-edge",
            ]),
            mint(&[
                "--issuer",
                "https://auth.faro.test",
                "--audience",
                "billing",
            ]),
            mint(&["--issuer", "https://auth.faro.test"]),
        )
    })
    .await
    .expect("faro token");
    assert!(
        open(scoped_edge, &minted).await.is_ok(),
        "faro token mints what the edge requires"
    );
    for (name, token) in [
        ("no iss/aud", &plain),
        ("another audience", &wrong_aud),
        ("no aud", &no_aud),
    ] {
        let (status, json) = open(scoped_edge, token).await.err().expect(name);
        assert_eq!(
            (status, json["error"]["code"].as_str()),
            (401, Some("invalid_token")),
            "{name}"
        );
    }
    // The edge without an audience cannot tell it is the one a token is meant for.
    assert!(open(c.edge, &minted).await.is_err());
    assert!(open(c.edge, &plain).await.is_ok());

    stop.cancel();
    edge.await.expect("task").expect("edge stops cleanly");
    c.stop().await;
}

#[tokio::test]
async fn a_ycloud_signature_dated_in_the_future_is_stale() {
    let c = Cluster::start().await;
    let alpha = c.bare_tenant("alpha").await;
    let secret = "ycloud-endpoint-secret";
    let app = c.app("ycloud-endpoint", secret, "placeholder").await;
    c.connect(&alpha, Channel::Whatsapp, "+15550783881", &app)
        .await;
    let body = crate::cluster::fixture("ycloud/inbound_text.json");
    let now = chrono::Utc::now().timestamp();
    for ahead in [301, 3600, 86_400 * 365] {
        let sig = faro_edge::sign_ycloud(secret.as_bytes(), now + ahead, &body);
        let (status, json) = c
            .post_raw("ycloud", &body, ("ycloud-signature", &sig))
            .await;
        assert_eq!(
            (status, json["error"]["code"].as_str()),
            (401, Some("stale_signature")),
            "t = now + {ahead} s"
        );
    }
    assert_eq!(c.jobs_added().await, 0, "nothing was queued");
    // The same body signed now is taken, so the refusals above were about the clock.
    let sig = faro_edge::sign_ycloud(secret.as_bytes(), now, &body);
    let (status, json) = c
        .post_raw("ycloud", &body, ("ycloud-signature", &sig))
        .await;
    assert_eq!(status, 200, "{json}");
    c.stop().await;
}

#[tokio::test]
async fn a_location_scoped_agent_gets_only_its_locations_events() {
    let c = Cluster::start().await;
    let (tenant, north) = c.bare_tenant("alpha").await;
    let south = c
        .admin()
        .await
        .create_location(pb::CreateLocationRequest {
            tenant_id: tenant.clone(),
            name: "South".into(),
        })
        .await
        .expect("location")
        .into_inner()
        .id;
    let secret = "secret-two-locations";
    let app = c.app("meta-two-locations", secret, "verify-two").await;
    let number = |location: &str, pn: &str| Tenant {
        id: tenant.clone(),
        location_id: location.to_owned(),
        phone_number_id: pn.to_owned(),
        app_secret: secret.to_owned(),
    };
    let (n, s) = (number(&north, "pn-north"), number(&south, "pn-south"));
    for t in [&n, &s] {
        c.connect(
            &(t.id.clone(), t.location_id.clone()),
            Channel::Whatsapp,
            &t.phone_number_id,
            &app,
        )
        .await;
    }
    let keys = faro_edge::auth::JwtKeys::new(JWT_SECRET.as_bytes()).expect("keys");
    let scoped = keys
        .issue(&claims(&tenant, Some(vec![north.parse().expect("uuid")])))
        .expect("token");
    let mut north_agent = open(c.edge, &scoped).await.expect("scoped socket");
    let mut everyone = c.websocket(&c.token(&tenant, 300)).await;

    // South's message is stored and announced before North's is even posted:
    // had the scoped socket been sent it, it would come first.
    let post = |t: &Tenant, id: &str| {
        let body = whatsapp_text(t, id, "34600000001", "hola", 1_700_000_000);
        let c = &c;
        async move {
            let (status, _) = c.post_signed(&body, secret).await;
            assert_eq!(status, 200);
            c.drained().await;
        }
    };
    post(&s, "wamid.SOUTH1").await;
    post(&n, "wamid.NORTH1").await;
    let first = north_agent.next_event().await;
    assert_eq!(
        first["message"]["channel_message_id"], "wamid.NORTH1",
        "{first}"
    );
    assert_eq!(
        first["message"]["location_id"].as_str(),
        Some(north.as_str()),
        "{first}"
    );

    // The tenant-wide agent sees both, in order.
    let ids = [
        everyone.next_event().await["message"]["channel_message_id"].clone(),
        everyone.next_event().await["message"]["channel_message_id"].clone(),
    ];
    assert_eq!(ids, ["wamid.SOUTH1", "wamid.NORTH1"]);
    c.stop().await;
}
