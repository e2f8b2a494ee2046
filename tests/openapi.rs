//! `GET /openapi.json`: an OpenAPI 3 document generated from the code that
//! describes every route `api::routes()` registers, with every method it
//! serves, and the error shape on every 4xx.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use awc::http::Method;
use serde_json::Value;

use common::{Store, TestApp};

/// Every method a route could serve.
const METHODS: [&str; 7] = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"];

/// The routes `api::routes()` registers, read from its source: each
/// `resource("PATH", "METHODS")` call, under `/v1` after `web::scope("/v1")`.
fn registered_routes() -> BTreeMap<String, BTreeSet<String>> {
    let source = include_str!("../src/api/mod.rs");
    let body = &source[source
        .find("pub fn routes(")
        .expect("routes() in src/api/mod.rs")..];
    let body = &body[..body.find("\n}\n").expect("end of routes()")];
    let scope_at = body.find("web::scope(\"/v1\")").expect("the /v1 scope");
    let mut routes = BTreeMap::new();
    let mut rest = body;
    while let Some(at) = rest.find("resource(") {
        let offset = body.len() - rest.len() + at;
        rest = &rest[at + "resource(".len()..];
        let strings: Vec<&str> = rest.split('"').skip(1).step_by(2).take(2).collect();
        let (path, methods) = (strings[0], strings[1]);
        let path = if offset > scope_at {
            format!("/v1{path}")
        } else {
            path.to_owned()
        };
        let methods = methods.split(',').map(|m| m.trim().to_owned()).collect();
        assert!(routes.insert(path, methods).is_none(), "a route twice");
    }
    assert!(routes.len() >= 14, "routes parsed: {routes:?}");
    routes
}

async fn fetch_document(app: &TestApp) -> (Value, String) {
    let mut res = awc::Client::default()
        .get(format!("{}/openapi.json", app.base))
        .send()
        .await
        .expect("the broker answers");
    assert_eq!(res.status(), 200);
    let content_type = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = res.body().limit(4 * 1024 * 1024).await.expect("body");
    (
        serde_json::from_slice(&bytes).expect("the document is JSON"),
        content_type,
    )
}

/// The operations of a path item: method (upper case) -> operation.
fn operations(item: &Value) -> BTreeMap<String, &Value> {
    item.as_object()
        .expect("a path item is an object")
        .iter()
        .filter(|(k, _)| METHODS.contains(&k.to_uppercase().as_str()) || *k == "trace")
        .map(|(k, v)| (k.to_uppercase(), v))
        .collect()
}

/// Every `$ref` in `v`.
fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r),
                    _ => refs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

fn schema<'a>(doc: &'a Value, name: &str) -> &'a Value {
    let s = &doc["components"]["schemas"][name];
    assert!(s.is_object(), "no schema {name}");
    s
}

/// A `$ref`'s target, or the value itself.
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v["$ref"].as_str() {
        Some(r) => {
            let pointer = r.strip_prefix('#').expect("a local $ref");
            doc.pointer(pointer).expect("the $ref resolves")
        }
        None => v,
    }
}

/// Whether a property's schema admits `null`.
fn nullable(doc: &Value, v: &Value) -> bool {
    let v = resolve(doc, v);
    v["nullable"] == true
        || v["type"] == "null"
        || v["type"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t == "null"))
        || v["oneOf"]
            .as_array()
            .or(v["anyOf"].as_array())
            .is_some_and(|alts| alts.iter().any(|a| nullable(doc, a)))
}

#[actix_web::test]
async fn the_document_parses_as_openapi_3() {
    let app = TestApp::spawn(Store::Sqlite).await.expect("sqlite");
    let (doc, content_type) = fetch_document(&app).await;
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let version = doc["openapi"].as_str().expect("an openapi field");
    assert!(version.starts_with("3."), "OpenAPI {version}");
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    // The OpenAPI object model reads it back whole.
    let parsed: utoipa::openapi::OpenApi =
        serde_json::from_value(doc.clone()).expect("the document is an OpenAPI object");
    assert_eq!(
        serde_json::to_value(&parsed).unwrap()["paths"]
            .as_object()
            .unwrap()
            .len(),
        doc["paths"].as_object().unwrap().len()
    );

    // Every reference resolves, operation ids are unique, every path
    // parameter is declared, every security requirement names a scheme.
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("non-local $ref {r}"));
        assert!(doc.pointer(pointer).is_some(), "dangling $ref {r}");
    }
    let schemes = doc["components"]["securitySchemes"]
        .as_object()
        .expect("security schemes");
    let mut ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in operations(item) {
            let id = op["operationId"].as_str().expect("an operationId");
            assert!(ids.insert(id.to_owned()), "operationId {id} twice");
            let declared: BTreeSet<&str> = op["parameters"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .filter(|p| p["in"] == "path")
                        .map(|p| p["name"].as_str().unwrap())
                        .collect()
                })
                .unwrap_or_default();
            let in_path: BTreeSet<&str> = path
                .split('/')
                .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
                .collect();
            assert_eq!(declared, in_path, "{method} {path}: path parameters");
            for requirement in op["security"].as_array().into_iter().flatten() {
                for name in requirement.as_object().unwrap().keys() {
                    assert!(schemes.contains_key(name), "{method} {path}: scheme {name}");
                }
            }
        }
    }
    // Links name operations that exist, in OpenAPI's spelling.
    let mut links = 0;
    for item in doc["paths"].as_object().unwrap().values() {
        for op in operations(item).values() {
            for response in op["responses"].as_object().unwrap().values() {
                for link in response["links"]
                    .as_object()
                    .into_iter()
                    .flat_map(|l| l.values())
                {
                    let target = link["operationId"].as_str().expect("link operationId");
                    assert!(ids.contains(target), "link to unknown operation {target}");
                    assert!(link.get("operation_id").is_none());
                    links += 1;
                }
            }
        }
    }
    assert!(links > 0, "createWebhook links to the webhook's operations");
}

#[actix_web::test]
async fn every_registered_route_is_documented_with_exactly_its_methods() {
    let app = TestApp::spawn(Store::Sqlite).await.expect("sqlite");
    let (doc, _) = fetch_document(&app).await;
    let documented: BTreeMap<String, BTreeSet<String>> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(path, item)| (path.clone(), operations(item).into_keys().collect()))
        .collect();
    let registered = registered_routes();
    assert_eq!(
        documented, registered,
        "documented routes (left) against routes() (right)"
    );
    for path in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/v1/apps",
        "/v1/events",
        "/v1/webhook",
        "/v1/webhook/{webhook_id}",
        "/v1/webhook/{webhook_id}/secret",
        "/v1/webhook/{webhook_id}/secret/rotate",
        "/v1/webhook/{webhook_id}/deliveries",
        "/v1/webhook/{webhook_id}/deliveries/{delivery_id}",
        "/v1/webhook/{webhook_id}/deliveries/{delivery_id}/retry",
        "/v1/webhook/{webhook_id}/recover",
    ] {
        assert!(documented.contains_key(path), "{path} is not documented");
    }

    // And the running broker routes exactly those methods: a documented
    // one reaches its handler (never 404 `no route` nor 405), any other
    // answers 405 with the documented methods in `Allow`.
    let client = awc::Client::default();
    for (path, methods) in &documented {
        let concrete = path
            .replace("{webhook_id}", "wh_none")
            .replace("{delivery_id}", "msg_none");
        for method in METHODS {
            let mut res = client
                .request(
                    Method::from_bytes(method.as_bytes()).unwrap(),
                    format!("{}{concrete}", app.base),
                )
                .send()
                .await
                .expect("the broker answers");
            let status = res.status().as_u16();
            if methods.contains(method) {
                let body = res.body().await.unwrap_or_default();
                let no_route = status == 404 && String::from_utf8_lossy(&body).contains("no route");
                assert!(
                    status != 405 && !no_route,
                    "{method} {path} is documented but answers {status}"
                );
            } else {
                assert_eq!(status, 405, "{method} {path} is not documented");
                let allow: BTreeSet<String> = res
                    .headers()
                    .get("allow")
                    .and_then(|v| v.to_str().ok())
                    .expect("an Allow header")
                    .split(',')
                    .map(|m| m.trim().to_owned())
                    .collect();
                assert_eq!(&allow, methods, "Allow of {path}");
            }
        }
    }
}

#[actix_web::test]
async fn every_4xx_answer_is_described_by_the_error_schema() {
    let app = TestApp::spawn(Store::Sqlite).await.expect("sqlite");
    let (doc, _) = fetch_document(&app).await;
    let error_ref = "#/components/schemas/ErrorBody";
    let error = schema(&doc, "ErrorBody");
    assert_eq!(error["required"], serde_json::json!(["error"]));
    let detail = resolve(&doc, &error["properties"]["error"]);
    assert_eq!(detail["required"], serde_json::json!(["code", "message"]));

    let mut seen = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in operations(item) {
            let responses = op["responses"].as_object().unwrap();
            for (status, response) in responses {
                if status.starts_with('4') || (status.starts_with('5') && path.starts_with("/v1")) {
                    assert_eq!(
                        response["content"]["application/json"]["schema"]["$ref"], error_ref,
                        "{method} {path} {status}"
                    );
                    seen += 1;
                }
            }
            if path.starts_with("/v1") {
                // Authentication is checked on every /v1 operation.
                for status in ["401", "403", "503"] {
                    assert!(
                        responses.contains_key(status),
                        "{method} {path}: no {status}"
                    );
                }
                assert!(
                    op["security"].as_array().is_some_and(|s| !s.is_empty()),
                    "{method} {path}: no security requirement"
                );
            }
            if op.get("requestBody").is_some() {
                for status in ["400", "413", "422"] {
                    assert!(
                        responses.contains_key(status),
                        "{method} {path}: no {status}"
                    );
                }
            }
            if path.contains("{webhook_id}") {
                assert!(responses.contains_key("404"), "{method} {path}: no 404");
            }
        }
    }
    assert!(seen > 50, "{seen} error responses");

    // The admin endpoints take the admin token, the others an app's key.
    for (path, scheme) in [
        ("/v1/apps", "admin_token"),
        ("/v1/events", "admin_token"),
        ("/v1/webhook", "app_key"),
        ("/v1/webhook/{webhook_id}/recover", "app_key"),
    ] {
        for op in operations(&doc["paths"][path]).values() {
            assert!(op["security"][0].get(scheme).is_some(), "{path}: {scheme}");
        }
    }
    for scheme in ["admin_token", "app_key"] {
        let s = &doc["components"]["securitySchemes"][scheme];
        assert_eq!(
            (&s["type"], &s["scheme"]),
            (&"http".into(), &"bearer".into())
        );
    }
}

#[actix_web::test]
async fn the_bodies_are_described_as_the_api_takes_and_gives_them() {
    let app = TestApp::spawn(Store::Sqlite).await.expect("sqlite");
    let (doc, _) = fetch_document(&app).await;

    // `event` of a webhook body: a string or an array of strings.
    let body = schema(&doc, "WebhookBody");
    let event = resolve(&doc, &body["properties"]["event"]);
    let kinds: BTreeSet<String> = event["oneOf"]
        .as_array()
        .expect("event is oneOf")
        .iter()
        .map(|alt| {
            let alt = resolve(&doc, alt);
            match alt["type"].as_str().unwrap() {
                "array" => {
                    assert_eq!(resolve(&doc, &alt["items"])["type"], "string");
                    "array".to_owned()
                }
                other => other.to_owned(),
            }
        })
        .collect();
    assert_eq!(kinds, BTreeSet::from(["string".into(), "array".into()]));
    assert_eq!(body["required"], serde_json::json!(["uri", "event"]));

    // Custom headers: an optional object of strings, at most 20, named by
    // HTTP tokens; always present in a webhook answer.
    let headers = body["properties"]["headers"]["oneOf"]
        .as_array()
        .expect("optional headers are oneOf null or the map")
        .iter()
        .map(|alt| resolve(&doc, alt))
        .find(|alt| alt["type"] == "object")
        .expect("an object alternative");
    assert_eq!(headers["maxProperties"], 20);
    assert_eq!(headers["additionalProperties"]["type"], "string");
    assert_eq!(headers["additionalProperties"]["maxLength"], 1024);
    assert!(headers["propertyNames"]["pattern"].is_string());
    let view = schema(&doc, "WebhookView");
    assert_eq!(
        resolve(&doc, &view["properties"]["headers"])["type"],
        "object"
    );
    assert!(view["required"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("headers")));

    // A test event answers the delivery id as `id`, and the event's id.
    let test = &doc["paths"]["/v1/webhook/{webhook_id}/test"]["post"];
    assert_ne!(
        test["requestBody"]["required"], true,
        "the body is optional"
    );
    let accepted = resolve(
        &doc,
        &test["responses"]["202"]["content"]["application/json"]["schema"],
    );
    assert_eq!(accepted["required"], serde_json::json!(["id", "eventId"]));

    // An ingested event: free-form channel, int64 epoch-ms eventTime.
    let ingest = schema(&doc, "IngestBody");
    let channel = &ingest["properties"]["channel"];
    assert_eq!(channel["type"], "object");
    assert!(channel.get("properties").is_none());
    let time = &ingest["properties"]["eventTime"];
    assert_eq!(time["format"], "int64");
    assert!(nullable(&doc, time));
    let names: Vec<&str> = schema(&doc, "EventName")["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(names, ["channel_live", "channel_stop", "channel_ended"]);

    // Ids are strings; the status enums are what the API writes.
    for (name, field) in [
        ("CreatedApp", "id"),
        ("AcceptedEvent", "id"),
        ("WebhookView", "id"),
        ("Delivery", "id"),
        ("Delivery", "eventId"),
    ] {
        assert_eq!(
            schema(&doc, name)["properties"][field]["type"],
            "string",
            "{name}.{field}"
        );
    }
    let status = resolve(&doc, &schema(&doc, "WebhookView")["properties"]["status"]);
    assert_eq!(status["enum"], serde_json::json!(["enabled", "disabled"]));
    let status = resolve(&doc, &schema(&doc, "Delivery")["properties"]["status"]);
    assert_eq!(
        status["enum"],
        serde_json::json!(["pending", "succeeded", "failed"])
    );

    // Fields that can be null say so; those always present are required.
    let webhook = schema(&doc, "WebhookView");
    for field in ["disabledReason", "disabledAt"] {
        assert!(nullable(&doc, &webhook["properties"][field]), "{field}");
    }
    let delivery = schema(&doc, "Delivery");
    for field in [
        "channelId",
        "lastStatusCode",
        "lastError",
        "nextAttemptAt",
        "deliveredAt",
    ] {
        assert!(nullable(&doc, &delivery["properties"][field]), "{field}");
        assert!(
            delivery["required"]
                .as_array()
                .unwrap()
                .contains(&field.into()),
            "{field} is always present"
        );
    }
    let attempt = schema(&doc, "Attempt");
    for field in ["statusCode", "error", "responseBody"] {
        assert!(nullable(&doc, &attempt["properties"][field]), "{field}");
    }
    for field in ["id", "uri", "event", "status", "createdAt", "updatedAt"] {
        assert!(!nullable(&doc, &webhook["properties"][field]), "{field}");
    }
}
