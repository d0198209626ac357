//! The real `faro admin` binary's lists and refusals: exit codes, JSON and
//! table output, pages, and clear errors for ids that do not exist.

use crate::{
    admin_disable::{admin, admin_json, missing},
    cluster::Cluster,
    inbox_support::agent,
};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn unknown_ids_and_bad_input_exit_non_zero_with_a_clear_message() {
    let c = Cluster::start().await;
    let nobody = missing();
    for args in [
        vec!["list-locations", "--tenant", nobody.as_str()],
        vec!["list-users", "--tenant", nobody.as_str()],
        vec!["list-accounts", "--tenant", nobody.as_str()],
        vec!["disable-tenant", "--tenant", nobody.as_str()],
        vec![
            "disable-location",
            "--tenant",
            nobody.as_str(),
            "--location",
            nobody.as_str(),
        ],
        vec!["disable-user", "--tenant", nobody.as_str(), "--user", "ana"],
    ] {
        let out = admin(&c, &args).await;
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = stderr(&out);
        assert!(
            err.contains(&format!("not found: tenant {nobody}")),
            "{args:?} names the tenant: {err}"
        );
        assert!(out.stdout.is_empty(), "{args:?} prints nothing on stdout");
    }
    let t = c.tenant("alpha").await;
    for (args, says) in [
        (
            vec!["disable-user", "--tenant", t.id.as_str(), "--user", "ghost"],
            "not found: agent ghost".to_owned(),
        ),
        (
            vec!["disable-app", "--app", nobody.as_str()],
            format!("not found: meta app {nobody}"),
        ),
        (
            vec!["list-tenants", "--limit", "5000"],
            "invalid argument: limit must be 0..=1000".into(),
        ),
        (
            vec!["list-tenants", "--after", "nope"],
            "invalid argument: after must be a UUID".into(),
        ),
    ] {
        let out = admin(&c, &args).await;
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(stderr(&out).contains(&says), "{args:?}: {}", stderr(&out));
    }
    // Malformed flags are clap's: exit 2, naming the flag.
    let out = admin(&c, &["list-locations", "--tenant", "not-a-uuid"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--tenant"), "{}", stderr(&out));
    c.stop().await;
}

#[tokio::test]
async fn lists_page_by_id_and_print_json_or_a_table() {
    let c = Cluster::start().await;
    let mut ids = Vec::new();
    for name in ["t1", "t2", "t3"] {
        ids.push(c.bare_tenant(name).await.0);
    }
    ids.sort();
    let first = admin_json(&c, &["list-tenants", "--limit", "2"]).await;
    let page: Vec<&str> = first["tenants"]
        .as_array()
        .expect("tenants")
        .iter()
        .map(|t| t["id"].as_str().expect("id"))
        .collect();
    assert_eq!(page, [ids[0].as_str(), ids[1].as_str()]);
    assert_eq!(first["next_after"], ids[1].as_str());
    let rest = admin_json(&c, &["list-tenants", "--limit", "2", "--after", &ids[1]]).await;
    assert_eq!(rest["tenants"].as_array().map(Vec::len), Some(1));
    assert_eq!(rest["tenants"][0]["id"], ids[2].as_str());
    assert!(rest["next_after"].is_null(), "the last page: {rest}");

    for sub in ["zed", "amy", "kim"] {
        agent(&c, &ids[0], sub, &[]).await;
    }
    let out = admin(
        &c,
        &[
            "list-users",
            "--tenant",
            &ids[0],
            "--output",
            "table",
            "--limit",
            "2",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        ["ID", "NAME", "ROLE", "LOCATION_IDS", "DISABLED"],
        "{table}"
    );
    assert_eq!(
        lines[1],
        ["amy", "Agent", "amy", "agent", "all", "false"],
        "{table}"
    );
    assert_eq!(lines.len(), 3, "{table}");
    assert!(
        stderr(&out).contains("more: --after kim"),
        "{}",
        stderr(&out)
    );

    // The existing commands: list-accounts and reseal print JSON, exit 0.
    let t = c.tenant("alpha").await;
    let accounts = admin_json(&c, &["list-accounts", "--tenant", &t.id]).await;
    assert_eq!(
        accounts[0]["external_account_id"],
        t.phone_number_id.as_str()
    );
    assert!(!accounts.to_string().contains(&t.app_secret));
    let resealed = admin_json(&c, &["reseal"]).await;
    assert_eq!(resealed["tables"]["meta_apps"]["failed"], 0, "{resealed}");
    assert!(resealed["key_id"].is_string(), "{resealed}");
    c.stop().await;
}
