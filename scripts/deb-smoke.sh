#!/usr/bin/env bash
# Smoke test of the Debian package, on this machine (as root, no systemd
# needed):
#
#   scripts/deb-smoke.sh
#
# 1. installs cargo-deb if missing, builds the package with `cargo deb`
#    (release, default features: SQLite only) and checks its contents: the
#    binary, the unit, the conffile /etc/webhook-broker/broker.env (0640) and
#    the maintainer scripts;
# 2. purges any leftover installation, then `dpkg -i`s the package and checks
#    what postinst made: the webhook-broker system user, the state directory,
#    the generated admin token (root only, never printed), the conffile's
#    group, the unit (and `systemd-analyze verify` on it, where installed);
# 3. reinstalls it over itself: the token and a local change to the conffile
#    survive;
# 4. runs /usr/bin/webhook-broker as the service user with the environment the
#    unit gives it (Environment= lines, then admin-token.env, then broker.env,
#    working directory /var/lib/webhook-broker) on a free loopback port, waits
#    for GET /readyz, checks the admin token works, that the SQLite file is in
#    the state directory and owned by the service user, that the token never
#    shows in the output, then stops it with SIGTERM;
# 5. `dpkg --purge`s the package and checks that none of its files, its
#    configuration, state directory, token or unit enablement remain.
#
# Every wait is bounded. Exits non-zero with a message naming the failed
# check. The package is purged at the end, also after a failure, unless
# DEB_SMOKE_KEEP=1. CARGO_DEB_VERSION (default ^3) is what `cargo install`
# installs when cargo-deb is missing. DEB_PROFILE (default release) is the
# cargo profile packaged: CI packages its dev build, which it has already
# compiled, to stay within its time budget; the package's layout, scripts
# and service are the same whatever the profile.
set -euo pipefail
cd "$(dirname "$0")/.."

pkg=webhook-broker
svc_user=webhook-broker
bin=/usr/bin/webhook-broker
conf_dir=/etc/webhook-broker
conffile="$conf_dir/broker.env"
token_file="$conf_dir/admin-token.env"
state_dir=/var/lib/webhook-broker
pidfile="${TMPDIR:-/tmp}/webhook-broker-deb-smoke.pid"

step() { echo "== deb-smoke: $*"; }
fail() {
    echo "deb-smoke: FAIL: $*" >&2
    exit 1
}

[ "$(id -u)" -eq 0 ] || fail "must run as root (dpkg -i, dpkg --purge, setpriv)"
for cmd in cargo dpkg dpkg-deb dpkg-query curl setpriv python3 sha256sum stat getent; do
    command -v "$cmd" >/dev/null 2>&1 || fail "$cmd is not installed"
done

work="$(mktemp -d)"
chmod 0700 "$work"
broker_pid=""
token=""
redact() {
    if [ -n "$token" ]; then sed "s/$token/<admin token>/g"; else cat; fi
}
stop_broker() {
    if [ -n "$broker_pid" ] && kill -0 "$broker_pid" 2>/dev/null; then
        kill -TERM "$broker_pid" 2>/dev/null || true
        for _ in $(seq 1 40); do
            kill -0 "$broker_pid" 2>/dev/null || break
            sleep 0.5
        done
        kill -KILL "$broker_pid" 2>/dev/null || true
        wait "$broker_pid" 2>/dev/null || true
    fi
    broker_pid=""
    rm -f "$pidfile"
}
installed() {
    local status
    status="$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)"
    [ -n "$status" ] && [ "$status" != "not-installed" ]
}
cleanup() {
    local rc=$?
    trap - EXIT
    stop_broker
    if [ "$rc" -ne 0 ]; then
        for log in "$work"/*.log; do
            [ -s "$log" ] || continue
            echo "== deb-smoke: $(basename "$log") (last 40 lines)"
            tail -n 40 "$log" | redact
        done
        if [ "${DEB_SMOKE_KEEP:-0}" != 1 ] && installed; then
            echo "== deb-smoke: purging the package after the failure (DEB_SMOKE_KEEP=1 keeps it)"
            dpkg --purge "$pkg" >/dev/null 2>&1 || true
        fi
    fi
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- build
step "cargo-deb"
if ! cargo deb --version >/dev/null 2>&1; then
    cargo install cargo-deb --locked --version "${CARGO_DEB_VERSION:-^3}"
fi
cargo deb --version

step "cargo deb (${DEB_PROFILE:-release} build, default features)"
# cargo-deb prints the paths of the packages it made on stdout: the .deb and
# the -dbgsym .ddeb with the debug info.
cargo deb --locked --profile "${DEB_PROFILE:-release}" >"$work/cargo-deb.out" || fail "cargo deb failed"
cat "$work/cargo-deb.out"
deb="$(grep '\.deb$' "$work/cargo-deb.out" | tail -n 1 || true)"
case "$deb" in *.deb) ;; *) fail "cargo deb printed no .deb path (got: $deb)" ;; esac
[ -f "$deb" ] || fail "cargo deb printed $deb, which does not exist"
echo "package: $deb"

step "package contents"
dpkg-deb -I "$deb" >"$work/info.txt"
dpkg-deb -c "$deb" >"$work/contents.txt"
cat "$work/info.txt"
cat "$work/contents.txt"
# `dpkg-deb -c` prints: mode owner/group size date time ./path; the owner
# as names or as ids (0/0).
entry() { awk -v p="./$1" '$6 == p { sub("^0/0$", "root/root", $2); print $1, $2 }' "$work/contents.txt"; }
[ "$(entry usr/bin/webhook-broker)" = "-rwxr-xr-x root/root" ] \
    || fail "usr/bin/webhook-broker missing or not 0755 root:root in the package"
[ "$(entry etc/webhook-broker/broker.env)" = "-rw-r----- root/root" ] \
    || fail "etc/webhook-broker/broker.env missing or not mode 0640 root:root in the package (got: $(entry etc/webhook-broker/broker.env))"
unit_path=""
for candidate in lib/systemd/system/webhook-broker.service usr/lib/systemd/system/webhook-broker.service; do
    if [ -n "$(entry "$candidate")" ]; then unit_path="/$candidate"; fi
done
[ -n "$unit_path" ] || fail "the systemd unit webhook-broker.service is not in the package"
conffiles="$(dpkg-deb -I "$deb" conffiles 2>/dev/null || true)"
grep -qx "$conffile" <<<"$conffiles" || fail "$conffile is not listed as a conffile (conffiles: $conffiles)"
for script in postinst postrm prerm; do
    dpkg-deb -I "$deb" "$script" >"$work/$script" 2>/dev/null || fail "the package has no $script"
    if grep -q '#DEBHELPER#' "$work/$script"; then fail "#DEBHELPER# was not replaced in $script"; fi
    sh -n "$work/$script" || fail "$script is not a valid shell script"
done
grep -q 'deb-systemd-helper' "$work/postinst" || fail "postinst does not enable the unit (no deb-systemd-helper)"
grep -q '/run/systemd/system' "$work/postinst" || fail "postinst does not guard systemctl calls"
depends="$(dpkg-deb -f "$deb" Depends)"
grep -q 'adduser' <<<"$depends" || fail "Depends lacks adduser: $depends"
# Once MySQL is an optional feature, the default build must not link libmariadb.
if grep -Eq '^[[:space:]]*mysql[[:space:]]*=[[:space:]]*\[' Cargo.toml; then
    if grep -q 'libmariadb' <<<"$depends"; then
        fail "the default build depends on libmariadb ($depends); it must be SQLite only"
    fi
else
    echo "note: Cargo.toml has no mysql feature yet, so the package depends on: $depends"
fi
dpkg-deb --fsys-tarfile "$deb" | tar -xO ./etc/webhook-broker/broker.env >"$work/broker.env.packaged"
cmp -s "$work/broker.env.packaged" contrib/broker.env || fail "the packaged broker.env differs from contrib/broker.env"

# ---------------------------------------------------------------- install
step "leftovers of an earlier run"
if [ -f "$pidfile" ]; then
    old="$(cat "$pidfile")"
    if [ -n "$old" ] && [ "$(readlink "/proc/$old/exe" 2>/dev/null || true)" = "$bin" ]; then
        echo "stopping broker $old left by an earlier run"
        kill -TERM "$old" 2>/dev/null || true
        for _ in $(seq 1 40); do
            kill -0 "$old" 2>/dev/null || break
            sleep 0.5
        done
        kill -KILL "$old" 2>/dev/null || true
    fi
    rm -f "$pidfile"
fi
if installed; then
    echo "purging an earlier installation"
    dpkg --purge "$pkg" || fail "could not purge the earlier installation"
fi

step "dpkg -i"
DEBIAN_FRONTEND=noninteractive dpkg -i "$deb" >"$work/dpkg-install.log" 2>&1 \
    || fail "dpkg -i failed (missing dependencies? try: apt-get install -y $deb)"
cat "$work/dpkg-install.log"
[ "$(dpkg-query -W -f='${db:Status-Status}' "$pkg")" = installed ] || fail "$pkg is not in state installed"

step "what the package installed"
[ -x "$bin" ] || fail "$bin is missing"
"$bin" --version
[ -f "$unit_path" ] || fail "$unit_path is missing"
grep -qx 'ExecStart=/usr/bin/webhook-broker serve' "$unit_path" || fail "the unit does not run /usr/bin/webhook-broker serve"
grep -qx "User=$svc_user" "$unit_path" || fail "the unit does not run as User=$svc_user"
if grep -q '^DynamicUser=' "$unit_path"; then fail "the unit still uses DynamicUser"; fi
grep -qx 'Type=notify' "$unit_path" || fail "the unit is not Type=notify"
grep -q '^WatchdogSec=' "$unit_path" || fail "the unit has no WatchdogSec"
env_files="$(grep '^EnvironmentFile=' "$unit_path" | tr '\n' ' ')"
[ "$env_files" = "EnvironmentFile=-$token_file EnvironmentFile=$conffile " ] \
    || fail "the unit must read $token_file (optional) before $conffile; it reads: $env_files"
# systemd-analyze works without a running systemd; where it is installed,
# the unit must load without a complaint.
if command -v systemd-analyze >/dev/null 2>&1; then
    timeout 60 systemd-analyze verify "$unit_path" >"$work/verify.log" 2>&1 \
        || fail "systemd-analyze verify $unit_path failed: $(cat "$work/verify.log")"
    if [ -s "$work/verify.log" ]; then fail "systemd-analyze verify $unit_path: $(cat "$work/verify.log")"; fi
fi
[ -L /etc/systemd/system/multi-user.target.wants/webhook-broker.service ] \
    || fail "the unit was not enabled (no multi-user.target.wants symlink)"

passwd_entry="$(getent passwd "$svc_user")" || fail "no user $svc_user"
IFS=: read -r _ _ uid gid _ home shell <<<"$passwd_entry"
[ "$uid" -lt 1000 ] || fail "$svc_user is not a system user (uid $uid)"
[ "$(getent group "$gid" | cut -d: -f1)" = "$svc_user" ] || fail "the primary group of $svc_user is not $svc_user"
[ "$home" = "$state_dir" ] || fail "the home of $svc_user is $home, not $state_dir"
case "$shell" in /usr/sbin/nologin | /sbin/nologin | /bin/false | /usr/bin/false) ;;
    *) fail "$svc_user has a login shell: $shell" ;;
esac
[ "$(stat -c '%U:%G %a' "$state_dir")" = "$svc_user:$svc_user 750" ] \
    || fail "$state_dir is $(stat -c '%U:%G %a' "$state_dir"), not $svc_user:$svc_user 750"
[ "$(stat -c '%U:%G %a' "$conffile")" = "root:$svc_user 640" ] \
    || fail "$conffile is $(stat -c '%U:%G %a' "$conffile"), not root:$svc_user 640"
[ -f "$token_file" ] || fail "postinst generated no $token_file"
[ "$(stat -c '%U:%G %a' "$token_file")" = "root:root 600" ] \
    || fail "$token_file is $(stat -c '%U:%G %a' "$token_file"), not root:root 600"
[ "$(grep -c '^BROKER_ADMIN_TOKEN=' "$token_file")" = 1 ] || fail "$token_file must set BROKER_ADMIN_TOKEN once"
token="$(sed -n 's/^BROKER_ADMIN_TOKEN=//p' "$token_file")"
[[ "$token" =~ ^adm_[A-Za-z0-9_-]{32}$ ]] || fail "the generated token is not adm_ + 32 URL-safe characters"
if grep -qF "$token" "$work/dpkg-install.log"; then fail "dpkg -i printed the admin token"; fi
cmp -s "$conffile" contrib/broker.env || fail "postinst changed the content of $conffile"

step "reinstall: the token and a local change to the conffile are kept"
token_sum="$(sha256sum <"$token_file")"
echo "# local change by deb-smoke" >>"$conffile"
DEBIAN_FRONTEND=noninteractive dpkg -i "$deb" >"$work/dpkg-reinstall.log" 2>&1 || fail "reinstalling with dpkg -i failed"
if grep -qF "$token" "$work/dpkg-reinstall.log"; then fail "dpkg -i printed the admin token"; fi
[ "$(sha256sum <"$token_file")" = "$token_sum" ] || fail "reinstalling changed $token_file"
[ "$(tail -n 1 "$conffile")" = "# local change by deb-smoke" ] || fail "reinstalling lost the local change to $conffile"
[ "$(stat -c '%U:%G %a' "$conffile")" = "root:$svc_user 640" ] || fail "reinstalling changed the mode or owner of $conffile"

# ---------------------------------------------------------------- run
step "run $bin as $svc_user, as the unit would"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
# A clean environment (nothing from this shell, e.g. a DATABASE_URL of the CI
# job), the unit's Environment= lines, then its EnvironmentFile= lines in
# order, read as root; then the port override, and the privileges dropped.
# setpriv execs, so $! is the broker itself.
env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$state_dir" USER="$svc_user" LOGNAME="$svc_user" \
    SHELL="$shell" LANG=C.UTF-8 \
    DATABASE_URL="sqlite://$state_dir/webhook-broker.db" RUST_LOG=info \
    TOKEN_FILE="$token_file" CONFFILE="$conffile" STATE_DIR="$state_dir" PORT="$port" SVC_USER="$svc_user" BIN="$bin" \
    bash -c '
        set -e
        set -a
        if [ -r "$TOKEN_FILE" ]; then . "$TOKEN_FILE"; fi
        . "$CONFFILE"
        set +a
        export BROKER_BIND="127.0.0.1:$PORT"
        cd "$STATE_DIR"
        umask 0027
        bin="$BIN" user="$SVC_USER"
        unset TOKEN_FILE CONFFILE STATE_DIR PORT SVC_USER BIN
        exec setpriv --reuid="$user" --regid="$user" --init-groups --no-new-privs -- "$bin" serve
    ' >"$work/broker.log" 2>&1 &
broker_pid=$!
echo "$broker_pid" >"$pidfile"

ready=""
for _ in $(seq 1 40); do
    kill -0 "$broker_pid" 2>/dev/null || fail "the broker exited before it was ready"
    code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$port/readyz" || true)"
    if [ "$code" = 200 ]; then
        ready=1
        break
    fi
    sleep 0.5
done
[ -n "$ready" ] || fail "GET /readyz did not answer 200 within 20 s (last: $code)"
echo "GET /readyz: 200 on 127.0.0.1:$port"

[ "$(stat -c %u "/proc/$broker_pid")" = "$uid" ] || fail "the broker does not run as $svc_user"
db="$state_dir/webhook-broker.db"
[ -f "$db" ] || fail "no SQLite database at $db"
[ "$(stat -c %U "$db")" = "$svc_user" ] || fail "$db is owned by $(stat -c %U "$db"), not $svc_user"

# The generated token is the admin token: POST /v1/apps works with it (and
# writes to the database), and not with another one. The header is read
# from a file so that the token is in no command line.
(umask 077 && printf 'Authorization: Bearer %s\n' "$token" >"$work/auth.header")
code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -H @"$work/auth.header" \
    -H 'Content-Type: application/json' -d '{"name":"deb-smoke"}' "http://127.0.0.1:$port/v1/apps")"
[ "$code" = 201 ] || fail "POST /v1/apps with the generated admin token answered $code, not 201"
code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -H 'Authorization: Bearer adm_not-the-token' \
    -H 'Content-Type: application/json' -d '{"name":"deb-smoke"}' "http://127.0.0.1:$port/v1/apps")"
[ "$code" = 401 ] || fail "POST /v1/apps with a wrong admin token answered $code, not 401"

step "stop with SIGTERM"
kill -TERM "$broker_pid"
stopped=""
for _ in $(seq 1 80); do
    if ! kill -0 "$broker_pid" 2>/dev/null; then
        stopped=1
        break
    fi
    sleep 0.5
done
[ -n "$stopped" ] || fail "the broker did not stop within 40 s of SIGTERM"
rc=0
wait "$broker_pid" || rc=$?
broker_pid=""
rm -f "$pidfile"
[ "$rc" -eq 0 ] || fail "the broker exited with status $rc after SIGTERM"
if grep -qF "$token" "$work/broker.log"; then fail "the admin token appears in the broker's output"; fi
if grep -q 'BROKER_ADMIN_TOKEN is not set\|BROKER_ADMIN_TOKEN=' "$work/broker.log"; then
    fail "the broker generated (and printed) its own admin token instead of reading $token_file"
fi
echo "broker output ($(wc -l <"$work/broker.log") lines, token-free):"
tail -n 5 "$work/broker.log"

# ---------------------------------------------------------------- purge
step "dpkg --purge"
dpkg -L "$pkg" >"$work/files.txt"
dpkg --purge "$pkg" >"$work/dpkg-purge.log" 2>&1 || fail "dpkg --purge failed"
cat "$work/dpkg-purge.log"
if installed; then fail "$pkg is still known to dpkg after purge"; fi
# Every listed path that is the package's own must be gone; shared
# directories (/usr/bin, /etc, /lib/systemd/system, ...) stay.
while IFS= read -r path; do
    case "$path" in
        *webhook-broker*)
            if [ -e "$path" ] || [ -L "$path" ]; then fail "$path remains after purge"; fi
            ;;
    esac
done <"$work/files.txt"
for path in "$bin" "$unit_path" "$conf_dir" "$state_dir" \
    /etc/systemd/system/multi-user.target.wants/webhook-broker.service \
    /var/lib/systemd/deb-systemd-helper-enabled/webhook-broker.service.dsh-also \
    /var/lib/systemd/deb-systemd-helper-enabled/multi-user.target.wants/webhook-broker.service \
    /var/lib/systemd/deb-systemd-helper-masked/webhook-broker.service; do
    if [ -e "$path" ] || [ -L "$path" ]; then fail "$path remains after purge"; fi
done
if getent passwd "$svc_user" >/dev/null; then
    echo "note: the system user $svc_user is kept after purge, as Debian does (deluser --system $svc_user removes it)"
fi

step "OK"
