//! The route table against `docs/openapi.json`, both ways.

use std::collections::BTreeSet;

use serde_json::Value;

use super::*;

const HTTP_METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn doc() -> Value {
    serde_json::from_str(OPENAPI_JSON).expect("docs/openapi.json is JSON")
}

/// `(path, method)` of every operation the description names.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let paths = doc["paths"].as_object().expect("paths");
    paths
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .expect("a path item")
                .keys()
                .filter(|m| HTTP_METHODS.contains(&m.as_str()))
                .map(move |m| (path.clone(), m.to_uppercase()))
        })
        .collect()
}

/// A concrete path for a template: each `{name}` becomes `name-1`.
fn example(template: &str) -> String {
    template
        .split('/')
        .map(
            |s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) => format!("{name}-1"),
                None => s.to_owned(),
            },
        )
        .collect::<Vec<_>>()
        .join("/")
}

#[test]
fn every_route_is_documented_and_every_documented_operation_is_routed() {
    let doc = doc();
    assert_eq!(doc["openapi"], "3.1.0");
    let served: BTreeSet<(String, String)> = ROUTES
        .iter()
        .flat_map(|s| s.methods().map(|m| (s.path.to_owned(), m.to_owned())))
        .collect();
    let documented = documented(&doc);
    let undocumented: Vec<_> = served.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "served, not in docs/openapi.json: {undocumented:?}"
    );
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        unserved.is_empty(),
        "in docs/openapi.json, not served: {unserved:?}"
    );
}

#[test]
fn every_template_routes_to_itself_and_unknown_paths_to_nothing() {
    for spec in ROUTES {
        for path in [example(spec.path), format!("{}/", example(spec.path))] {
            let m = route(&path).unwrap_or_else(|| panic!("{path} is routed"));
            assert_eq!(m.spec.path, spec.path, "{path} reaches its own entry");
            assert_eq!(m.param.is_some(), spec.path.contains('{'));
        }
    }
    let m = route("/api/v1/admin/dead-letters/1-0").expect("routed");
    assert_eq!(m.param.as_deref(), Some("1-0"));
    for unknown in [
        "",
        "/",
        "/api/v1",
        "/api/v1/webhooks/telegram",
        "/api/v1/admin/dead-letters/1-0/x",
        "/api/v1/admin/dead-letters//x",
        "/api/v1/admin/users",
        "/healthz/x",
    ] {
        assert!(route(unknown).is_none(), "{unknown:?} is not a route");
    }
}

/// The admin routes are exactly the paths under `/api/v1/admin/` and the
/// diagnostics, tagged `admin` and secured by the admin token (and only by
/// it) in the description.
#[test]
fn admin_routes_are_tagged_and_need_the_admin_token_in_the_description() {
    let doc = doc();
    for (path, method) in documented(&doc) {
        let op = &doc["paths"][&path][method.to_lowercase()];
        let tagged = op["tags"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t == "admin"));
        let spec = route(&example(&path)).expect("routed");
        let is_admin = spec.spec.admin().is_some();
        let diagnostics = ["health", "stats", "recent"].map(|d| format!("/api/v1/webhooks/{d}"));
        assert_eq!(
            is_admin,
            path.starts_with("/api/v1/admin/") || diagnostics.contains(&path),
            "{path}"
        );
        assert_eq!(
            tagged, is_admin,
            "{method} {path}: tagged admin iff an admin route"
        );
        if is_admin {
            assert_eq!(
                op["security"],
                serde_json::json!([{"adminToken": []}]),
                "{path}"
            );
            assert!(op["responses"]["401"].is_object(), "{path} documents 401");
        }
    }
}

/// Every refusal is documented with the one JSON error body (but the health
/// check's 503, which is its report); 431 can answer anything, and the rate
/// limits' 429 any webhook or live route.
#[test]
fn every_error_status_has_the_json_error_body() {
    let doc = doc();
    let error = serde_json::json!({"$ref": "#/components/schemas/Error"});
    for (name, r) in doc["components"]["responses"]
        .as_object()
        .expect("responses")
    {
        assert_eq!(r["content"]["application/json"]["schema"], error, "{name}");
    }
    for (path, method) in documented(&doc) {
        let op = &doc["paths"][&path][method.to_lowercase()];
        let responses = op["responses"].as_object().expect("responses");
        for (status, r) in responses {
            let code: u16 = status.parse().expect("a numeric status");
            if code >= 400 && !(path == "/api/v1/webhooks/health" && code == 503) {
                let name = r["$ref"].as_str().unwrap_or_default();
                let name = name.strip_prefix("#/components/responses/");
                assert!(
                    name.is_some_and(|n| doc["components"]["responses"][n].is_object()),
                    "{method} {path} {status} is a shared error response"
                );
            }
        }
        assert!(responses.contains_key("431"), "{method} {path}");
        let admin = route(&example(&path))
            .expect("routed")
            .spec
            .admin()
            .is_some();
        let rate_limited = !admin
            && (path.starts_with("/api/v1/webhooks/") || path.starts_with("/api/v1/messages/"));
        if rate_limited {
            assert!(
                responses.contains_key("429"),
                "{method} {path} documents 429"
            );
        }
    }
}

#[test]
fn a_wrong_method_is_405_naming_the_allowed_ones() {
    let spec = route("/api/v1/webhooks/whatsapp").expect("routed").spec;
    let r = method_not_allowed(spec);
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers()[header::ALLOW], "GET, POST");
}

/// One path, several handlers: the method picks, from the table alone.
#[test]
fn each_method_of_a_path_serves_its_own_route() {
    let thread = route("/api/v1/conversations/7/messages").expect("routed");
    assert_eq!(thread.param.as_deref(), Some("7"));
    assert_eq!(
        thread.spec.route_for("GET"),
        Some(Route::Inbox(InboxRoute::Messages))
    );
    assert_eq!(thread.spec.route_for("POST"), Some(Route::Reply));
    assert_eq!(thread.spec.route_for("DELETE"), None);
    let hook = route("/api/v1/webhooks/instagram").expect("routed").spec;
    assert_eq!(
        hook.route_for("GET"),
        Some(Route::Handshake(Platform::Instagram))
    );
    assert_eq!(
        hook.route_for("POST"),
        Some(Route::Webhook(Platform::Instagram))
    );
    for spec in ROUTES {
        let methods: Vec<_> = spec.methods().collect();
        let distinct: BTreeSet<_> = methods.iter().collect();
        assert_eq!(
            distinct.len(),
            methods.len(),
            "{}: a method twice",
            spec.path
        );
    }
}
