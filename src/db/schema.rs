//! The tables of both backends' migrations, written by hand because one
//! schema serves SQLite and MySQL alike.

diesel::table! {
    apps (id) {
        id -> Text,
        name -> Text,
        api_key_hash -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    webhooks (id) {
        id -> Text,
        app_id -> Text,
        uri -> Text,
        events -> Text,
        secret -> Text,
        status -> Text,
        disabled_reason -> Nullable<Text>,
        disabled_at -> Nullable<BigInt>,
        created_at -> BigInt,
        updated_at -> BigInt,
        previous_secret -> Nullable<Text>,
        previous_secret_expires_at -> Nullable<BigInt>,
        last_success_at -> Nullable<BigInt>,
        headers -> Text,
        rate_limit -> Nullable<Integer>,
        max_concurrency -> Integer,
    }
}

diesel::table! {
    events (id) {
        id -> Text,
        app_id -> Text,
        event -> Text,
        channel_id -> Nullable<Text>,
        event_time -> BigInt,
        payload -> Text,
        created_at -> BigInt,
        seq -> BigInt,
    }
}

diesel::table! {
    deliveries (id) {
        id -> Text,
        event_id -> Text,
        webhook_id -> Text,
        channel_id -> Nullable<Text>,
        status -> Text,
        attempts -> Integer,
        next_attempt_at -> BigInt,
        last_status_code -> Nullable<Integer>,
        last_error -> Nullable<Text>,
        created_at -> BigInt,
        delivered_at -> Nullable<BigInt>,
        seq -> BigInt,
    }
}

diesel::table! {
    delivery_attempts (delivery_id, attempt) {
        delivery_id -> Text,
        attempt -> Integer,
        at -> BigInt,
        duration_ms -> BigInt,
        status_code -> Nullable<Integer>,
        error -> Nullable<Text>,
        response_body -> Nullable<Text>,
    }
}

diesel::table! {
    registry_version (id) {
        id -> Integer,
        version -> BigInt,
    }
}

diesel::table! {
    registry_changes (version) {
        version -> BigInt,
        kind -> Text,
        entity_id -> Text,
        at -> BigInt,
    }
}

diesel::table! {
    idempotency_keys (scope, idem_key) {
        scope -> Text,
        idem_key -> Text,
        request_hash -> Text,
        state -> Text,
        status -> Nullable<Integer>,
        response_body -> Nullable<Text>,
        created_at -> BigInt,
        expires_at -> BigInt,
    }
}

diesel::table! {
    webhook_leases (webhook_id) {
        webhook_id -> Text,
        owner -> Nullable<Text>,
        epoch -> BigInt,
        lease_until -> Nullable<BigInt>,
    }
}

diesel::table! {
    broker_instances (id) {
        id -> Text,
        alive_until -> BigInt,
    }
}

diesel::table! {
    event_sequence (id) {
        id -> Integer,
        seq -> BigInt,
    }
}

diesel::table! {
    api_keys (id) {
        id -> Text,
        kind -> Text,
        app_id -> Nullable<Text>,
        apps -> Nullable<Text>,
        name -> Nullable<Text>,
        key_hash -> Text,
        prefix -> Text,
        created_at -> BigInt,
        last_used_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    resent_deliveries (delivery_id) {
        delivery_id -> Text,
        event_id -> Text,
    }
}

diesel::joinable!(webhooks -> apps (app_id));
diesel::joinable!(deliveries -> events (event_id));

diesel::allow_tables_to_appear_in_same_query!(
    apps,
    webhooks,
    events,
    deliveries,
    delivery_attempts,
    registry_version,
    registry_changes,
    idempotency_keys,
    webhook_leases,
    broker_instances,
    event_sequence,
    api_keys,
    resent_deliveries
);
