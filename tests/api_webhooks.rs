//! Every webhook endpoint: create, read, update, delete, the secret,
//! validation, private targets, pagination, event filters, tenant isolation
//! and persistence across a restart, on SQLite and MariaDB.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};

use common::{assert_error, Reply, Store, TestApp};

const ALL_EVENTS: [&str; 3] = ["channel_live", "channel_stop", "channel_ended"];

/// The ids of a list answer's `data`, in order.
fn ids(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no data array in {page:?}"))
        .iter()
        .map(|w| w["id"].as_str().expect("string id").to_owned())
        .collect()
}

async fn list(app: &TestApp, key: &str, query: &str) -> Reply {
    app.call("GET", &format!("/v1/webhook{query}"), Some(key), None)
        .await
}

async fn get(app: &TestApp, key: &str, id: &str) -> Reply {
    app.call("GET", &format!("/v1/webhook/{id}"), Some(key), None)
        .await
}

async fn put(app: &TestApp, key: &str, id: &str, body: &Value) -> Reply {
    app.call("PUT", &format!("/v1/webhook/{id}"), Some(key), Some(body))
        .await
}

async fn delete(app: &TestApp, key: &str, id_and_query: &str) -> Reply {
    app.call(
        "DELETE",
        &format!("/v1/webhook/{id_and_query}"),
        Some(key),
        None,
    )
    .await
}

async fn secret_of(app: &TestApp, key: &str, id: &str) -> Reply {
    app.call("GET", &format!("/v1/webhook/{id}/secret"), Some(key), None)
        .await
}

/// Creates `n` webhooks with rotating event sets; returns their ids in
/// creation order.
async fn create_many(app: &TestApp, key: &str, n: usize) -> Vec<String> {
    let mut created = Vec::new();
    for i in 0..n {
        let event = match i % 3 {
            0 => json!("channel_live"),
            1 => json!("channel_stop"),
            _ => json!("channel_ended"),
        };
        let w = app
            .create_webhook(key, &format!("https://example.com/hook/{i}"), event)
            .await;
        created.push(w["id"].as_str().unwrap().to_owned());
    }
    created
}

async fn a_webhook_for_all_events_lists_them_in_api_order(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let (_, key) = app.create_app("tv").await;
    let w = app
        .create_webhook(&key, "https://example.com/hook", json!("all"))
        .await;
    assert_eq!(w["event"], json!(ALL_EVENTS));
    assert_eq!(w["uri"], "https://example.com/hook");
    let r = get(&app, &key, w["id"].as_str().unwrap()).await;
    assert_eq!(r.body["event"], json!(ALL_EVENTS));
    let w = app
        .create_webhook(&key, "https://example.com/hook", json!(["all"]))
        .await;
    assert_eq!(w["event"], json!(ALL_EVENTS));
}

async fn a_comma_separated_event_string_is_normalised_to_api_order(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let (_, key) = app.create_app("tv").await;
    let w = app
        .create_webhook(
            &key,
            "https://example.com/hook",
            json!(" channel_ended , channel_live"),
        )
        .await;
    assert_eq!(w["event"], json!(["channel_live", "channel_ended"]));
    let w = app
        .create_webhook(
            &key,
            "https://example.com/hook",
            json!("channel_stop,channel_stop,channel_live"),
        )
        .await;
    assert_eq!(w["event"], json!(["channel_live", "channel_stop"]));
    let r = get(&app, &key, w["id"].as_str().unwrap()).await;
    assert_eq!(r.body["event"], json!(["channel_live", "channel_stop"]));
}

async fn an_event_array_is_accepted(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let (_, key) = app.create_app("tv").await;
    let w = app
        .create_webhook(
            &key,
            "https://example.com/hook",
            json!(["channel_ended", "channel_stop"]),
        )
        .await;
    assert_eq!(w["event"], json!(["channel_stop", "channel_ended"]));
    let w = app
        .create_webhook(&key, "https://example.com/hook", json!(["channel_live"]))
        .await;
    assert_eq!(w["event"], json!(["channel_live"]));
}

async fn a_new_webhook_has_a_string_id_and_a_whsec_secret_of_at_least_24_bytes(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let (_, key) = app.create_app("tv").await;
    let a = app
        .create_webhook(&key, "https://example.com/a?x=1", json!("all"))
        .await;
    let b = app
        .create_webhook(&key, "https://example.com/a?x=1", json!("all"))
        .await;
    for w in [&a, &b] {
        let id = w["id"].as_str().expect("id is a string");
        assert!(!id.is_empty());
        assert_eq!(w["uri"], "https://example.com/a?x=1");
        let secret = w["secret"].as_str().expect("secret is a string");
        let encoded = secret.strip_prefix("whsec_").expect("whsec_ prefix");
        let bytes = B64.decode(encoded).expect("secret is base64");
        assert!(bytes.len() >= 24, "{} secret bytes", bytes.len());
    }
    assert_ne!(a["id"], b["id"]);
    assert_ne!(a["secret"], b["secret"]);
}

async fn the_secret_appears_only_in_the_create_answer_and_the_secret_endpoint(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let (_, key) = app.create_app("tv").await;
    let w = app
        .create_webhook(&key, "https://example.com/hook", json!("all"))
        .await;
    let id = w["id"].as_str().unwrap();
    let secret = w["secret"].as_str().unwrap();

    let shown_in =
        |r: &Reply| r.body.to_string().contains(secret) || r.body.get("secret").is_some();
    let r = get(&app, &key, id).await;
    assert_eq!(r.status, 200);
    assert!(!shown_in(&r), "GET shows the secret: {:?}", r.body);
    let r = list(&app, &key, "").await;
    assert_eq!(r.body["total"], 1);
    assert!(!shown_in(&r), "the list shows the secret: {:?}", r.body);
    assert!(r.body["data"][0].get("secret").is_none());
    let r = put(
        &app,
        &key,
        id,
        &json!({"uri": "https://example.com/other", "event": "channel_live"}),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(!shown_in(&r), "PUT shows the secret: {:?}", r.body);

    let r = secret_of(&app, &key, id).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body, json!({ "secret": secret }));
}

async fn invalid_webhook_bodies_are_refused_with_400(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let (_, key) = app.create_app("tv").await;
    let long_uri = format!("https://example.com/{}", "a".repeat(2048));
    let ok = "https://example.com/hook";
    let cases = [
        (
            json!({"uri": ok, "event": "channel_paused"}),
            "invalid_event",
        ),
        (
            json!({"uri": ok, "event": "channel_live,channel_paused"}),
            "invalid_event",
        ),
        (
            json!({"uri": ok, "event": ["channel_live", "nope"]}),
            "invalid_event",
        ),
        (json!({"uri": ok, "event": "ALL"}), "invalid_event"),
        (json!({"uri": ok, "event": ""}), "invalid_event"),
        (json!({"uri": ok, "event": " , "}), "invalid_event"),
        (json!({"uri": ok, "event": []}), "invalid_event"),
        (
            json!({"uri": "example.com/hook", "event": "all"}),
            "invalid_uri",
        ),
        (json!({"uri": "/hook", "event": "all"}), "invalid_uri"),
        (json!({"uri": "", "event": "all"}), "invalid_uri"),
        (
            json!({"uri": "ftp://example.com/hook", "event": "all"}),
            "invalid_uri",
        ),
        (
            json!({"uri": "mailto:a@example.com", "event": "all"}),
            "invalid_uri",
        ),
        (
            json!({"uri": "https://example.com/a b", "event": "all"}),
            "invalid_uri",
        ),
        (
            json!({"uri": " https://example.com/", "event": "all"}),
            "invalid_uri",
        ),
        (
            json!({"uri": "https://exa mple.com/", "event": "all"}),
            "invalid_uri",
        ),
        (json!({"uri": "http://", "event": "all"}), "invalid_uri"),
        (json!({ "uri": long_uri, "event": "all" }), "invalid_uri"),
    ];
    for (body, code) in cases {
        let r = app
            .call("POST", "/v1/webhook", Some(&key), Some(&body))
            .await;
        assert_error(&r, 400, &format!("POST {body}"));
        assert_eq!(r.body["error"]["code"], code, "POST {body}");
    }
    for raw in [
        &b"{\"uri\": \"https://example.com/\", \"event\": "[..],
        &b"{uri: 1}"[..],
        &b"[}"[..],
    ] {
        let r = app
            .call_raw("POST", "/v1/webhook", &key, raw.to_vec())
            .await;
        assert_error(&r, 400, &format!("POST {:?}", String::from_utf8_lossy(raw)));
    }
    let r = list(&app, &key, "").await;
    assert_eq!(r.body["total"], 0, "nothing was created: {:?}", r.body);
}

async fn a_uri_of_exactly_2048_characters_is_accepted_as_written(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let (_, key) = app.create_app("tv").await;
    let prefix = "https://example.com/";
    let uri = format!("{prefix}{}", "a".repeat(2048 - prefix.len()));
    assert_eq!(uri.len(), 2048);
    let w = app.create_webhook(&key, &uri, json!("all")).await;
    assert_eq!(w["uri"], uri.as_str());
    let r = get(&app, &key, w["id"].as_str().unwrap()).await;
    assert_eq!(r.body["uri"], uri.as_str());
}

async fn webhook_bodies_of_the_wrong_shape_are_refused_with_422(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let (_, key) = app.create_app("tv").await;
    for body in [
        json!({"event": "all"}),
        json!({"uri": "https://example.com/hook"}),
        json!({}),
        json!({"uri": "https://example.com/hook", "event": 3}),
        json!({"uri": "https://example.com/hook", "event": null}),
        json!({"uri": "https://example.com/hook", "event": {"a": 1}}),
        json!({"uri": "https://example.com/hook", "event": [1, 2]}),
        json!({"uri": 7, "event": "all"}),
        json!("https://example.com/hook"),
    ] {
        let r = app
            .call("POST", "/v1/webhook", Some(&key), Some(&body))
            .await;
        assert_error(&r, 422, &format!("POST {body}"));
    }
    let r = list(&app, &key, "").await;
    assert_eq!(r.body["total"], 0, "nothing was created: {:?}", r.body);
}

async fn private_targets_are_refused_when_not_allowed(store: Store) {
    let Some(db) = common::TestDb::new(store) else {
        return;
    };
    let app = TestApp::spawn_with(Arc::new(db), |c| c.allow_private_targets = false).await;
    let (_, key) = app.create_app("tv").await;
    let private = [
        "http://localhost/",
        "http://LOCALHOST:8080/hook",
        "http://127.0.0.1/",
        "http://2130706433/",
        "http://0x7f000001/",
        "http://[::1]/",
        "http://169.254.169.254/",
        "http://10.0.0.1/",
        "http://192.168.1.1/",
        "http://172.16.0.1/",
        "http://100.64.0.1/",
        "http://0.0.0.0/",
        "http://[fd00::1]/",
        "http://[::ffff:127.0.0.1]/",
    ];
    for uri in private {
        let r = app
            .call(
                "POST",
                "/v1/webhook",
                Some(&key),
                Some(&json!({"uri": uri, "event": "all"})),
            )
            .await;
        assert_error(&r, 400, &format!("POST {uri}"));
        assert_eq!(r.body["error"]["code"], "private_target", "POST {uri}");
    }
    assert_eq!(list(&app, &key, "").await.body["total"], 0);

    let w = app
        .create_webhook(&key, "https://example.com/hook", json!("all"))
        .await;
    let id = w["id"].as_str().unwrap();
    for uri in private {
        let r = put(
            &app,
            &key,
            id,
            &json!({"uri": uri, "event": "channel_live"}),
        )
        .await;
        assert_error(&r, 400, &format!("PUT {uri}"));
        assert_eq!(r.body["error"]["code"], "private_target", "PUT {uri}");
    }
    let r = get(&app, &key, id).await;
    assert_eq!(r.body["uri"], "https://example.com/hook");
    assert_eq!(r.body["event"], json!(ALL_EVENTS));
}

async fn private_targets_are_accepted_when_allowed(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    // The test configuration allows private targets.
    let (_, key) = app.create_app("tv").await;
    for uri in [
        "http://127.0.0.1:9/hook",
        "http://localhost/",
        "http://[::1]/",
    ] {
        let w = app.create_webhook(&key, uri, json!("all")).await;
        assert_eq!(w["uri"], uri);
    }
}

async fn a_webhook_can_be_read_back(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let (_, key) = app.create_app("tv").await;
    let w = app
        .create_webhook(
            &key,
            "https://example.com/hook?a=1",
            json!("channel_live,channel_ended"),
        )
        .await;
    let id = w["id"].as_str().unwrap();
    let r = get(&app, &key, id).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["id"], id);
    assert_eq!(r.body["uri"], "https://example.com/hook?a=1");
    assert_eq!(r.body["event"], json!(["channel_live", "channel_ended"]));
}

async fn a_missing_webhook_answers_404(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let (_, key) = app.create_app("tv").await;
    let body = json!({"uri": "https://example.com/hook", "event": "all"});
    for id in ["wh_doesnotexist", "0", "x%20y"] {
        assert_error(&get(&app, &key, id).await, 404, &format!("GET {id}"));
        assert_error(&put(&app, &key, id, &body).await, 404, &format!("PUT {id}"));
        assert_error(&delete(&app, &key, id).await, 404, &format!("DELETE {id}"));
        assert_error(
            &secret_of(&app, &key, id).await,
            404,
            &format!("GET {id}/secret"),
        );
    }
    assert_eq!(list(&app, &key, "").await.body["total"], 0);
}

async fn put_replaces_the_uri_and_the_events(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let (_, key) = app.create_app("tv").await;
    let w = app
        .create_webhook(&key, "https://example.com/old", json!("all"))
        .await;
    let id = w["id"].as_str().unwrap();
    let secret = w["secret"].as_str().unwrap();
    let r = put(
        &app,
        &key,
        id,
        &json!({"uri": "https://example.org/new", "event": ["channel_ended", "channel_stop"]}),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["id"], id);
    assert_eq!(r.body["uri"], "https://example.org/new");
    assert_eq!(r.body["event"], json!(["channel_stop", "channel_ended"]));

    let r = get(&app, &key, id).await;
    assert_eq!(r.body["uri"], "https://example.org/new");
    assert_eq!(r.body["event"], json!(["channel_stop", "channel_ended"]));
    let r = list(&app, &key, "").await;
    assert_eq!(r.body["total"], 1);
    assert_eq!(r.body["data"][0]["uri"], "https://example.org/new");
    // The secret is the webhook's, not the body's: it survives an update.
    assert_eq!(secret_of(&app, &key, id).await.body["secret"], secret);

    let r = put(
        &app,
        &key,
        id,
        &json!({"uri": "https://example.org/new", "event": "all"}),
    )
    .await;
    assert_eq!(r.body["event"], json!(ALL_EVENTS));
}

async fn an_invalid_put_leaves_the_webhook_unchanged(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let (_, key) = app.create_app("tv").await;
    let w = app
        .create_webhook(&key, "https://example.com/hook", json!("channel_live"))
        .await;
    let id = w["id"].as_str().unwrap();
    for (body, status) in [
        (
            json!({"uri": "https://example.com/x", "event": "bogus"}),
            400,
        ),
        (json!({"uri": "https://example.com/x", "event": ""}), 400),
        (json!({"uri": "https://example.com/x", "event": []}), 400),
        (json!({"uri": "ftp://example.com/x", "event": "all"}), 400),
        (json!({"uri": "not a uri", "event": "all"}), 400),
        (json!({"uri": "https://example.com/x"}), 422),
        (json!({"event": "all"}), 422),
        (json!({"uri": "https://example.com/x", "event": 1}), 422),
    ] {
        let r = put(&app, &key, id, &body).await;
        assert_error(&r, status, &format!("PUT {body}"));
    }
    let r = app
        .call_raw(
            "PUT",
            &format!("/v1/webhook/{id}"),
            &key,
            b"{\"uri\":".to_vec(),
        )
        .await;
    assert_error(&r, 400, "PUT with malformed JSON");

    let r = get(&app, &key, id).await;
    assert_eq!(r.body["uri"], "https://example.com/hook");
    assert_eq!(r.body["event"], json!(["channel_live"]));
}

async fn delete_removes_the_webhook_and_a_second_delete_answers_404(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let (_, key) = app.create_app("tv").await;
    let keep = app
        .create_webhook(&key, "https://example.com/keep", json!("all"))
        .await;
    let w = app
        .create_webhook(&key, "https://example.com/gone", json!("all"))
        .await;
    let id = w["id"].as_str().unwrap();
    let r = delete(&app, &key, id).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body, json!({}));
    assert_error(&get(&app, &key, id).await, 404, "GET after DELETE");
    assert_error(&secret_of(&app, &key, id).await, 404, "secret after DELETE");
    assert_error(&delete(&app, &key, id).await, 404, "second DELETE");
    let r = list(&app, &key, "").await;
    assert_eq!(r.body["total"], 1);
    assert_eq!(ids(&r.body), vec![keep["id"].as_str().unwrap().to_owned()]);
}

async fn deleting_one_event_keeps_the_others(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let (_, key) = app.create_app("tv").await;
    let w = app
        .create_webhook(&key, "https://example.com/hook", json!("all"))
        .await;
    let id = w["id"].as_str().unwrap();
    let r = delete(&app, &key, &format!("{id}?event=channel_live")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body, json!({}));
    let r = get(&app, &key, id).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["event"], json!(["channel_stop", "channel_ended"]));
    assert_eq!(r.body["uri"], "https://example.com/hook");

    // Removing an event it does not have changes nothing.
    let r = delete(&app, &key, &format!("{id}?event=channel_live")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        get(&app, &key, id).await.body["event"],
        json!(["channel_stop", "channel_ended"])
    );
    // The filter sees the change.
    assert_eq!(
        list(&app, &key, "?event=channel_live").await.body["total"],
        0
    );
    assert_eq!(
        list(&app, &key, "?event=channel_stop").await.body["total"],
        1
    );
}

async fn removing_the_last_remaining_event_deletes_the_webhook(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let (_, key) = app.create_app("tv").await;
    let w = app
        .create_webhook(&key, "https://example.com/hook", json!("all"))
        .await;
    let id = w["id"].as_str().unwrap();
    let r = delete(&app, &key, &format!("{id}?event=channel_live,channel_stop")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        get(&app, &key, id).await.body["event"],
        json!(["channel_ended"])
    );
    let r = delete(&app, &key, &format!("{id}?event=channel_ended")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_error(
        &get(&app, &key, id).await,
        404,
        "GET after the last event went",
    );
    assert_eq!(list(&app, &key, "").await.body["total"], 0);

    let w = app
        .create_webhook(&key, "https://example.com/hook", json!("channel_stop"))
        .await;
    let id = w["id"].as_str().unwrap();
    let r = delete(&app, &key, &format!("{id}?event=all")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_error(&get(&app, &key, id).await, 404, "GET after ?event=all");
}

async fn deleting_an_unknown_event_is_refused_with_400(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let (_, key) = app.create_app("tv").await;
    let w = app
        .create_webhook(&key, "https://example.com/hook", json!("all"))
        .await;
    let id = w["id"].as_str().unwrap();
    for query in ["event=bogus", "event=channel_live,bogus", "event="] {
        let r = delete(&app, &key, &format!("{id}?{query}")).await;
        assert_error(&r, 400, &format!("DELETE ?{query}"));
    }
    assert_eq!(get(&app, &key, id).await.body["event"], json!(ALL_EVENTS));
}

async fn the_list_is_paginated_with_totals(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let (_, key) = app.create_app("tv").await;
    let created = create_many(&app, &key, 25).await;

    let r = list(&app, &key, "").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["data"].as_array().unwrap().len(), 10);
    assert_eq!(r.body["total"], 25);
    assert_eq!(r.body["length"], 10);
    assert_eq!(r.body["page"], 0);

    let r = list(&app, &key, "?page=2&length=10").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["data"].as_array().unwrap().len(), 5);
    assert_eq!(r.body["length"], 5);
    assert_eq!(r.body["page"], 2);
    assert_eq!(r.body["total"], 25);
    assert_eq!(ids(&r.body), created[20..].to_vec());

    for query in [
        "?page=3&length=10",
        "?page=1000",
        "?page=18446744073709551615",
    ] {
        let r = list(&app, &key, query).await;
        assert_eq!(r.status, 200, "{query}: {:?}", r.body);
        assert_eq!(r.body["data"], json!([]), "{query}");
        assert_eq!(r.body["length"], 0, "{query}");
        assert_eq!(r.body["total"], 25, "{query}");
    }

    let r = list(&app, &key, "?length=100").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["length"], 25);
    assert_eq!(ids(&r.body), created);
    let r = list(&app, &key, "?length=1&page=24").await;
    assert_eq!(ids(&r.body), vec![created[24].clone()]);
    // Every item is the public form of a webhook.
    let first = &list(&app, &key, "?length=1").await.body["data"][0];
    assert_eq!(first["uri"], "https://example.com/hook/0");
    assert_eq!(first["event"], json!(["channel_live"]));
    assert!(first.get("secret").is_none());
}

async fn invalid_pagination_parameters_are_refused_with_400(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let (_, key) = app.create_app("tv").await;
    create_many(&app, &key, 2).await;
    for query in [
        "?length=0",
        "?length=101",
        "?length=abc",
        "?length=-1",
        "?length=1.5",
        "?page=-1",
        "?page=abc",
        "?page=1.5",
        "?page=99999999999999999999999",
    ] {
        let r = list(&app, &key, query).await;
        assert_error(&r, 400, &format!("GET /v1/webhook{query}"));
    }
    let r = list(&app, &key, "?length=1").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["length"], 1);
}

async fn the_list_order_is_stable_and_pages_cover_every_webhook_once(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let (_, key) = app.create_app("tv").await;
    let created = create_many(&app, &key, 23).await;

    let mut first_pass = Vec::new();
    for page in 0..5 {
        let r = list(&app, &key, &format!("?page={page}&length=5")).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        first_pass.extend(ids(&r.body));
    }
    let mut second_pass = Vec::new();
    for page in 0..5 {
        second_pass.extend(ids(&list(&app, &key, &format!("?page={page}&length=5"))
            .await
            .body));
    }
    assert_eq!(
        first_pass, second_pass,
        "the order changed between two calls"
    );
    let unique: HashSet<&String> = first_pass.iter().collect();
    assert_eq!(
        unique.len(),
        first_pass.len(),
        "pages overlap: {first_pass:?}"
    );
    assert_eq!(
        unique,
        created.iter().collect::<HashSet<_>>(),
        "pages do not cover every webhook"
    );
    assert_eq!(first_pass, created, "the list is not in creation order");
}

async fn the_list_can_be_filtered_by_event(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let (_, key) = app.create_app("tv").await;
    let live = app
        .create_webhook(&key, "https://example.com/live", json!("channel_live"))
        .await;
    let stop = app
        .create_webhook(&key, "https://example.com/stop", json!("channel_stop"))
        .await;
    let ended = app
        .create_webhook(&key, "https://example.com/ended", json!("channel_ended"))
        .await;
    let all = app
        .create_webhook(&key, "https://example.com/all", json!("all"))
        .await;
    let id = |w: &Value| w["id"].as_str().unwrap().to_owned();

    let r = list(&app, &key, "?event=channel_stop").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(ids(&r.body), vec![id(&stop), id(&all)]);
    assert_eq!(r.body["total"], 2);
    assert_eq!(r.body["length"], 2);

    let r = list(&app, &key, "?event=channel_live,channel_stop").await;
    assert_eq!(ids(&r.body), vec![id(&live), id(&stop), id(&all)]);
    assert_eq!(r.body["total"], 3);

    let r = list(&app, &key, "?event=channel_ended&length=1&page=1").await;
    assert_eq!(ids(&r.body), vec![id(&all)]);
    assert_eq!(r.body["total"], 2);
    assert_eq!(r.body["length"], 1);

    let r = list(&app, &key, "?event=all").await;
    assert_eq!(r.body["total"], 4);
    let r = list(&app, &key, "?event=channel_ended").await;
    assert_eq!(ids(&r.body), vec![id(&ended), id(&all)]);

    for query in ["?event=bogus", "?event=channel_live,bogus", "?event="] {
        let r = list(&app, &key, query).await;
        assert_error(&r, 400, &format!("GET /v1/webhook{query}"));
    }
}

async fn a_webhook_of_another_app_answers_404(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let (_, key_a) = app.create_app("a").await;
    let (_, key_b) = app.create_app("b").await;
    let w = app
        .create_webhook(&key_a, "https://example.com/a", json!("channel_live"))
        .await;
    let id = w["id"].as_str().unwrap();
    let secret = w["secret"].as_str().unwrap();
    let own = app
        .create_webhook(&key_b, "https://example.com/b", json!("all"))
        .await;

    assert_error(&get(&app, &key_b, id).await, 404, "B reads A's webhook");
    assert_error(
        &put(
            &app,
            &key_b,
            id,
            &json!({"uri": "https://evil.example.com/", "event": "all"}),
        )
        .await,
        404,
        "B updates A's webhook",
    );
    assert_error(
        &delete(&app, &key_b, id).await,
        404,
        "B deletes A's webhook",
    );
    assert_error(
        &delete(&app, &key_b, &format!("{id}?event=channel_live")).await,
        404,
        "B removes an event of A's webhook",
    );
    let r = secret_of(&app, &key_b, id).await;
    assert_error(&r, 404, "B reads A's secret");
    assert!(!r.body.to_string().contains(secret));

    let r = list(&app, &key_b, "").await;
    assert_eq!(r.body["total"], 1);
    assert_eq!(ids(&r.body), vec![own["id"].as_str().unwrap().to_owned()]);
    let r = list(&app, &key_b, "?event=channel_live").await;
    assert_eq!(ids(&r.body), vec![own["id"].as_str().unwrap().to_owned()]);

    // A's webhook is intact.
    let r = get(&app, &key_a, id).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["uri"], "https://example.com/a");
    assert_eq!(r.body["event"], json!(["channel_live"]));
    assert_eq!(secret_of(&app, &key_a, id).await.body["secret"], secret);
    assert_eq!(ids(&list(&app, &key_a, "").await.body), vec![id.to_owned()]);
}

async fn webhooks_survive_a_restart(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let (_, key) = app.create_app("tv").await;
    let created = create_many(&app, &key, 12).await;
    let updated = put(
        &app,
        &key,
        &created[1],
        &json!({"uri": "https://example.org/updated", "event": "channel_live,channel_ended"}),
    )
    .await;
    assert_eq!(updated.status, 200, "{:?}", updated.body);
    let r = delete(&app, &key, &format!("{}?event=channel_live", created[1])).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(delete(&app, &key, &created[2]).await.status, 200);
    let before = list(&app, &key, "?length=100").await;
    assert_eq!(before.body["total"], 11);
    let secret = secret_of(&app, &key, &created[0]).await.body["secret"].clone();

    let second = TestApp::spawn_with(app.db.clone(), |_| {}).await;
    let after = list(&second, &key, "?length=100").await;
    assert_eq!(
        after.status, 200,
        "the app key works after a restart: {:?}",
        after.body
    );
    assert_eq!(after.body, before.body);
    let r = get(&second, &key, &created[1]).await;
    assert_eq!(r.body["uri"], "https://example.org/updated");
    assert_eq!(r.body["event"], json!(["channel_ended"]));
    assert_error(
        &get(&second, &key, &created[2]).await,
        404,
        "a deleted webhook",
    );
    assert_eq!(
        secret_of(&second, &key, &created[0]).await.body["secret"],
        secret
    );
}

on_both_stores!(
    a_webhook_for_all_events_lists_them_in_api_order,
    a_comma_separated_event_string_is_normalised_to_api_order,
    an_event_array_is_accepted,
    a_new_webhook_has_a_string_id_and_a_whsec_secret_of_at_least_24_bytes,
    the_secret_appears_only_in_the_create_answer_and_the_secret_endpoint,
    invalid_webhook_bodies_are_refused_with_400,
    a_uri_of_exactly_2048_characters_is_accepted_as_written,
    webhook_bodies_of_the_wrong_shape_are_refused_with_422,
    private_targets_are_refused_when_not_allowed,
    private_targets_are_accepted_when_allowed,
    a_webhook_can_be_read_back,
    a_missing_webhook_answers_404,
    put_replaces_the_uri_and_the_events,
    an_invalid_put_leaves_the_webhook_unchanged,
    delete_removes_the_webhook_and_a_second_delete_answers_404,
    deleting_one_event_keeps_the_others,
    removing_the_last_remaining_event_deletes_the_webhook,
    deleting_an_unknown_event_is_refused_with_400,
    the_list_is_paginated_with_totals,
    invalid_pagination_parameters_are_refused_with_400,
    the_list_order_is_stable_and_pages_cover_every_webhook_once,
    the_list_can_be_filtered_by_event,
    a_webhook_of_another_app_answers_404,
    webhooks_survive_a_restart,
);
