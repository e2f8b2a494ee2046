#!/usr/bin/env bash
# Property-based API testing of the broker against its own OpenAPI document.
#
#   scripts/schemathesis.sh PATH/TO/webhook-broker
#
# Builds nothing: starts the given binary on a fresh SQLite database and a
# free loopback port, creates an app, seeds one webhook with a few failed
# deliveries (to a `.invalid` host, so nothing leaves the machine), then runs
# schemathesis (4.x) on GET /openapi.json with a bounded number of examples
# per operation. Admin operations authenticate with the admin token and app
# operations with the app's key, each through its own security scheme of
# the document (the delivery-log operations with the key of the app that
# owns the seeded log). Fails on any 5xx, any status, content type, header
# or body the document does not describe, a wrong answer to an undeclared
# method, a run over the time limit, or a broker that died; always stops
# the broker.
#
# SCHEMATHESIS_MAX_EXAMPLES (default 25) and SCHEMATHESIS_TIMEOUT (seconds
# for the schemathesis run, default 150) tune the bounds.
# SCHEMATHESIS_DATABASE_URL runs the broker on another, empty, database (e.g.
# a MariaDB one) instead of a temporary SQLite file. Words in
# SCHEMATHESIS_ARGS are passed on to schemathesis (e.g. `--report har
# --report-dir /ABS/DIR`; it runs in a temporary directory, so give
# absolute paths).
set -euo pipefail

bin="${1:?usage: scripts/schemathesis.sh PATH/TO/webhook-broker}"
[ -x "$bin" ] || { echo "not an executable: $bin" >&2; exit 2; }
max_examples="${SCHEMATHESIS_MAX_EXAMPLES:-25}"
time_limit="${SCHEMATHESIS_TIMEOUT:-150}"

# The flags below are schemathesis 4's (3.x spelled several differently).
if ! command -v schemathesis >/dev/null 2>&1; then
    python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore 'schemathesis>=4,<5'
fi
st_version="$(schemathesis --version | awk '{print $NF}')"
case "$st_version" in
    4.*) ;;
    *) echo "schemathesis $st_version found; this script needs 4.x" >&2; exit 2 ;;
esac

work="$(mktemp -d)"
broker_pid=""
cleanup() {
    local rc=$?
    if [ -n "$broker_pid" ]; then
        kill "$broker_pid" 2>/dev/null || true
        wait "$broker_pid" 2>/dev/null || true
    fi
    if [ "$rc" -ne 0 ] && [ -s "$work/broker.log" ]; then
        echo "== broker log (last 40 lines)"
        tail -n 40 "$work/broker.log"
    fi
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port"
export ST_BASE="$base"
ST_ADMIN_TOKEN="adm_$(python3 -c 'import secrets; print(secrets.token_hex(24))')"
export ST_ADMIN_TOKEN

DATABASE_URL="${SCHEMATHESIS_DATABASE_URL:-sqlite://$work/broker.db}" \
BROKER_BIND="127.0.0.1:$port" \
BROKER_ADMIN_TOKEN="$ST_ADMIN_TOKEN" \
BROKER_ALLOW_PRIVATE_TARGETS=false \
BROKER_RETRY_SCHEDULE=1s \
BROKER_DELIVERY_TIMEOUT=2s \
    "$bin" serve >"$work/broker.log" 2>&1 &
broker_pid=$!

# Wait for the broker, create the app, seed the delivery log and write the
# schemathesis configuration (tokens stay in the environment).
keys="$(python3 - "$work/schemathesis.toml" <<'PY'
import json, os, sys, time, urllib.error, urllib.request

base, admin = os.environ["ST_BASE"], os.environ["ST_ADMIN_TOKEN"]

def call(method, path, token=None, body=None):
    req = urllib.request.Request(base + path, method=method,
                                 data=None if body is None else json.dumps(body).encode())
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=10) as res:
            return res.status, json.load(res)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)

deadline = time.monotonic() + 30
while True:
    try:
        if call("GET", "/healthz")[0] == 200:
            break
    except OSError:
        pass
    if time.monotonic() > deadline:
        sys.exit("the broker did not start")
    time.sleep(0.2)

def create_app(name):
    status, app = call("POST", "/v1/apps", admin, {"name": name})
    assert status == 201, (status, app)
    return app

# The app schemathesis works as, and a second one that owns the seeded
# delivery log: schemathesis can neither list, change nor delete the seeded
# webhook through the first app's key, so no generated URI ever receives
# its deliveries.
app, log_app = create_app("schemathesis"), create_app("schemathesis-log")
log_key = log_app["apiKey"]
status, hook = call("POST", "/v1/webhook", log_key,
                    {"uri": "https://schemathesis.invalid/hook", "event": "all"})
assert status == 201, (status, hook)
for event in ("channel_live", "channel_stop", "channel_ended"):
    status, body = call("POST", "/v1/events", admin,
                        {"event": event, "appId": log_app["id"], "channel": {"id": "ch-1"}})
    assert status == 202 and body["deliveries"] == 1, (status, body)
deadline = time.monotonic() + 30
while True:
    status, page = call("GET", f"/v1/webhook/{hook['id']}/deliveries", log_key)
    assert status == 200, (status, page)
    if page["data"] and all(d["attempts"] >= 1 for d in page["data"]):
        break
    if time.monotonic() > deadline:
        sys.exit(f"the seeded deliveries were never attempted: {page}")
    time.sleep(0.2)
deliveries = [d["id"] for d in page["data"]]
# POST /v1/events also takes an ingest key, through its own scheme.
status, ingest = call("POST", "/v1/ingest-keys", admin, {"name": "schemathesis"})
assert status == 201, (status, ingest)

with open(sys.argv[1], "w") as f:
    f.write(f"""
# No state kept between runs (a crash cache would replay old failures).
[cache]
enabled = false

[auth.openapi.admin_token]
bearer = "${{ST_ADMIN_TOKEN}}"

[auth.openapi.app_key]
bearer = "${{ST_APP_KEY}}"

[auth.openapi.ingest_key]
bearer = "${{ST_INGEST_KEY}}"

# The delivery-log operations run as the second app, on its seeded webhook
# and deliveries most of the time.
[dictionaries.seeded-webhook]
values = {json.dumps([hook["id"]])}

[dictionaries.seeded-deliveries]
values = {json.dumps(deliveries)}

[[operations]]
include-operation-id = ["listDeliveries", "getDelivery", "retryDelivery", "recoverWebhook"]
headers = {{ Authorization = "Bearer ${{ST_LOG_KEY}}" }}
parameters = {{ "path.webhook_id" = {{ dictionary = "seeded-webhook", probability = 0.8 }}, "path.delivery_id" = {{ dictionary = "seeded-deliveries", probability = 0.8 }} }}
""")
print(app["apiKey"], log_key, ingest["apiKey"])
PY
)"
read -r ST_APP_KEY ST_LOG_KEY ST_INGEST_KEY <<<"$keys"
export ST_APP_KEY ST_LOG_KEY ST_INGEST_KEY

echo "== schemathesis $st_version on $base/openapi.json" \
    "(at most $max_examples examples per operation, ${time_limit}s)"
rc=0
# From the temporary directory, so that hypothesis leaves no cache behind.
(cd "$work" && timeout --signal=INT --kill-after=10 "$time_limit" \
    schemathesis --config-file "$work/schemathesis.toml" run "$base/openapi.json" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,unsupported_method,allow_header_conformance \
    --max-examples "$max_examples" \
    --request-timeout 10 \
    --generation-database none \
    --no-color \
    ${SCHEMATHESIS_ARGS:-}) \
    || rc=$?
if [ "$rc" -eq 124 ]; then
    echo "schemathesis did not finish within ${time_limit}s" >&2
fi
if ! kill -0 "$broker_pid" 2>/dev/null; then
    echo "the broker died during the run" >&2
    rc=1
fi
exit "$rc"
