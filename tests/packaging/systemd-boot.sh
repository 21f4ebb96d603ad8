#!/usr/bin/env bash
# The packages under a real systemd: boots a minimal Debian bookworm in systemd-nspawn (systemd as PID 1, journald,
# no network but loopback) and meets the service as an operator does. Installs the previous release (0.1.0, built
# by tests/packaging/previous-deb.sh), configures it against a simulator running as a transient unit, enables and
# starts it, makes a token and queues a command; upgrades to NEW_DEB while it runs (restarted on the new binary, the
# schema migrated, token, devices, command and events kept); then on the new version: STATUS=, the structured
# journal fields, the MCP socket's owner and mode with no chown warning, group members (status, mcp) and others
# (exit 77), /readyz, reload (same PID), restart (new PID), a restart with Xyte unreachable (the cache reported,
# not "nothing cached yet"), the watchdog (a stopped daemon is killed and restarted), a backup taken by root while
# it runs and restored with it stopped (restore refused while it runs; every file still the service account's), a
# stop within 1 s,
# `systemd-analyze security` on the live unit, and purge (nothing left but the service account, as documented).
# The root is made once by debootstrap under $CARGO_TARGET_DIR/systemd-root/ (rebuilt when its package list
# changes); every run boots a throwaway overlay (or copy) of it, torn down at exit, also on failure.
# Usage (as root): tests/packaging/systemd-boot.sh path/to/xyte-edge_NEW_amd64.deb
set -euo pipefail

[ $# -eq 1 ] || { echo "usage: $0 path/to/xyte-edge_VERSION_amd64.deb" >&2; exit 64; }
NEW_DEB=$(realpath "$1")
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
began=$SECONDS

fail() { echo "systemd-boot: FAIL: $*" >&2; exit 1; }
wait_for() { # seconds description command...   (WAIT_SEEN=command: what to show as seen when it times out)
  local limit=$1 until=$((SECONDS + $1)) what=$2
  shift 2
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $until ] ||
      fail "timed out after ${limit}s waiting for $what${WAIT_SEEN:+; seen: $($WAIT_SEEN 2>&1 | tail -5)}"
    sleep 0.2
  done
}
step() { printf '== %s (%ss)\n' "$*" "$((SECONDS - began))"; }

[ "$(id -u)" = 0 ] || fail "needs root (debootstrap, systemd-nspawn, nsenter, mount)"
[ -f "$NEW_DEB" ] || fail "expected a .deb at $1, found nothing"

step "host tools: debootstrap, systemd-nspawn, nsenter, python3"
missing=()
for tool in debootstrap:debootstrap systemd-nspawn:systemd-container nsenter:util-linux python3:python3; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

step "the previous release's package (tests/packaging/previous-deb.sh)"
OLD_DEB=$(tests/packaging/previous-deb.sh)
OLD_VERSION=$(dpkg-deb -f "$OLD_DEB" Version)
NEW_VERSION=$(dpkg-deb -f "$NEW_DEB" Version)
echo "upgrade: $OLD_VERSION ($(basename "$OLD_DEB")) -> $NEW_VERSION ($(basename "$NEW_DEB"))"
dpkg --compare-versions "$NEW_VERSION" gt "$OLD_VERSION" ||
  fail "expected $(basename "$NEW_DEB") to be newer than $OLD_VERSION, it is $NEW_VERSION"

# The root: debootstrap once, keyed by everything that shapes it, so a changed package list rebuilds it. The
# packages are what the container needs without a network: systemd and dbus to boot, the packages' dependencies
# (adduser, tzdata, libc6/libgcc-s1 are in minbase), curl for the HTTP checks, procps (pgrep), sqlite3 (the schema
# version of the 0.1.0 database, which has no `diagnose`).
SUITE=bookworm
MIRROR=${XYTE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
PACKAGES=systemd,systemd-sysv,dbus,curl,ca-certificates,adduser,tzdata,procps,util-linux,passwd,sqlite3
CACHE=$CARGO_TARGET_DIR/systemd-root
ROOTFS=$CACHE/$SUITE
# Bump the leading "setup" number when the steps after debootstrap below change.
KEY="setup 1; $SUITE; minbase; $MIRROR; $PACKAGES"
step "the $SUITE root ($ROOTFS)"
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9 # one run builds the root; another waits for it instead of building beside it
if [ "$(cat "$ROOTFS.key" 2>/dev/null)" != "$KEY" ] || [ ! -x "$ROOTFS/lib/systemd/systemd" ]; then
  echo "building it with debootstrap (once; the key changed or there is none)"
  rm -rf "$ROOTFS" "$ROOTFS.tmp" "$ROOTFS.key"
  debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOTFS.tmp" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 ||
    { tail -20 "$CACHE/debootstrap.log"; fail "debootstrap $SUITE exited non-zero (log: $CACHE/debootstrap.log)"; }
  echo gateway >"$ROOTFS.tmp/etc/hostname"
  # An empty machine-id: each boot gets a fresh one, as a first boot of an image does.
  : >"$ROOTFS.tmp/etc/machine-id"
  rm -f "$ROOTFS.tmp/var/lib/dbus/machine-id"
  chroot "$ROOTFS.tmp" apt-get clean
  mv "$ROOTFS.tmp" "$ROOTFS"
  echo "$KEY" >"$ROOTFS.key"
else
  echo "cached"
fi
exec 9>&- # unlocks; the container and its tools do not inherit it

# A throwaway root for this run: an overlay over the cached one (a copy where overlayfs is not available), so runs
# never change the cache or each other.
RUN=$(mktemp -d "$CACHE/run.XXXXXX")
MACHINE=xyte-sd-$$
NSPAWN_PID="" PID1="" OVERLAY=""
ct() { # runs a command inside the container, in all its namespaces, with a clean environment
  nsenter -t "$PID1" -a -r -w -- env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LANG=C.UTF-8 TERM=dumb SYSTEMD_COLORS=0 SYSTEMD_PAGER= DEBIAN_FRONTEND=noninteractive "$@"
}
cleanup() {
  local rc=$?
  set +e
  if [ $rc -ne 0 ]; then
    if [ -n "$PID1" ] && kill -0 "$PID1" 2>/dev/null; then
      echo "--- the container's journal (last 80 lines)" >&2
      ct journalctl --no-pager -n 80 >&2
      echo "--- systemctl status xyte-edge" >&2
      ct systemctl status --no-pager -l xyte-edge >&2
    fi
    if [ -f "$RUN/console.log" ]; then
      echo "--- the container's console (last 20 lines)" >&2
      tail -20 "$RUN/console.log" >&2
    fi
  fi
  if [ -n "$NSPAWN_PID" ] && kill -0 "$NSPAWN_PID" 2>/dev/null; then
    # SIGTERM makes nspawn ask the container's systemd for an orderly poweroff; SIGKILL to PID 1 ends the whole
    # container if that takes too long.
    kill -TERM "$NSPAWN_PID"
    local until=$((SECONDS + 20))
    while kill -0 "$NSPAWN_PID" 2>/dev/null && [ $SECONDS -lt $until ]; do sleep 0.2; done
    if kill -0 "$NSPAWN_PID" 2>/dev/null; then
      echo "systemd-boot: the container did not power off within 20 s; killing it" >&2
      [ -n "$PID1" ] && kill -KILL "$PID1" 2>/dev/null
      kill -KILL "$NSPAWN_PID" 2>/dev/null
    fi
    wait "$NSPAWN_PID" 2>/dev/null
  fi
  if [ -n "$OVERLAY" ] && mountpoint -q "$RUN/root"; then
    umount "$RUN/root" || umount -l "$RUN/root"
  fi
  if mountpoint -q "$RUN/root" 2>/dev/null; then
    echo "systemd-boot: $RUN/root is still mounted; left in place" >&2
  else
    rm -rf "$RUN"
  fi
  rmdir "/run/systemd/nspawn/propagate/$MACHINE" 2>/dev/null
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$RUN/root" "$RUN/upper" "$RUN/work"
if mount -t overlay overlay -o "lowerdir=$ROOTFS,upperdir=$RUN/upper,workdir=$RUN/work" "$RUN/root" 2>"$RUN/mount.err"; then
  OVERLAY=1
else
  echo "overlayfs is not available here ($(cat "$RUN/mount.err")); copying the root instead"
  rmdir "$RUN/root"
  cp -a --reflink=auto "$ROOTFS" "$RUN/root"
fi
cp "$OLD_DEB" "$NEW_DEB" "$RUN/root/root/"
OLD=/root/$(basename "$OLD_DEB")
NEW=/root/$(basename "$NEW_DEB")

step "boot: systemd-nspawn -b (console: $RUN/console.log)"
# On a cgroup v1 (hybrid) host such as this one nspawn gives the container a hybrid hierarchy of its own and the
# container's systemd 252 runs in it; nothing else is needed. --keep-unit and --register=no: no machined or host
# systemd is asked for anything, so it also works where PID 1 is not systemd.
systemd-nspawn -b --register=no --keep-unit --private-network --machine="$MACHINE" -D "$RUN/root" \
  </dev/null >"$RUN/console.log" 2>&1 &
NSPAWN_PID=$!
find_init() { # the container's PID 1: the child of nspawn that is PID 1 in its own PID namespace
  kill -0 "$NSPAWN_PID" 2>/dev/null || fail "systemd-nspawn exited before the container booted"
  local child
  for child in $(ps --ppid "$NSPAWN_PID" -o pid=); do
    if [ "$(awk '/^NSpid:/ { print $NF }' "/proc/$child/status" 2>/dev/null)" = 1 ]; then
      PID1=$child
      return 0
    fi
  done
  return 1
}
wait_for 30 "the container's PID 1 (a child of systemd-nspawn $NSPAWN_PID)" find_init
booted() {
  kill -0 "$NSPAWN_PID" 2>/dev/null || fail "systemd-nspawn exited while the container was booting"
  local state
  state=$(ct systemctl is-system-running 2>/dev/null) || true
  [ "$state" = running ] || [ "$state" = degraded ]
}
wait_for 120 "systemctl is-system-running to say running or degraded" booted
state=$(ct systemctl is-system-running) || true
echo "booted: $state (PID 1 is $PID1 on the host)"
[ "$state" = running ] || ct systemctl --failed --no-pager

# Helpers over the container.
SIM_PORT=18787
LOCAL=http://127.0.0.1:8080
main_pid() { ct systemctl show -p MainPID --value xyte-edge; }
is_active() { [ "$(ct systemctl is-active xyte-edge)" = active ]; }
cursor() { ct journalctl -q -n 0 --show-cursor | sed -n 's/^-- cursor: //p'; }
journal_since() { ct journalctl --no-pager -q -u xyte-edge --after-cursor="$1" "${@:2}"; } # cursor [options]
api() { # method path [json body]: prints the body, fails unless 2xx
  local out code body=()
  [ $# -lt 3 ] || body=(-H 'Content-Type: application/json' -d "$3")
  out=$(ct curl -sS -X "$1" -H "Authorization: Bearer $TOKEN" "${body[@]}" -w '\n%{http_code}' "$LOCAL$2") ||
    fail "curl $1 $2 failed: $out"
  code=${out##*$'\n'}
  [ "${code:0:1}" = 2 ] || fail "$1 $2: expected a 2xx answer, got $code: ${out%$'\n'*}"
  printf '%s\n' "${out%$'\n'*}"
}
py() { # python expression over the JSON on stdin, bound to d
  python3 -c 'import json, sys; d = json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"
}

step "install $OLD_VERSION (apt-get install ./$(basename "$OLD_DEB"))"
ct apt-get install -y --no-install-recommends "$OLD" >"$RUN/install-old.log" 2>&1 ||
  { cat "$RUN/install-old.log"; fail "installing $OLD_VERSION: apt-get exited non-zero"; }
got=$(ct dpkg-query -W -f='${Status} ${Version}' xyte-edge)
[ "$got" = "install ok installed $OLD_VERSION" ] || fail "expected xyte-edge $OLD_VERSION installed, dpkg says: $got"
[ "$(ct systemctl is-enabled xyte-edge 2>&1)" = disabled ] ||
  fail "expected the unit to be installed disabled, it is $(ct systemctl is-enabled xyte-edge 2>&1)"

step "the simulator as a transient unit (systemd-run --unit=xyte-sim), the configuration, enable --now"
start_sim() { # a transient unit: gone once stopped, so every start is a new systemd-run
  ct systemd-run --unit=xyte-sim --quiet /usr/bin/xyte-edge sim --listen 127.0.0.1:$SIM_PORT --devices 12
  wait_for 15 "the simulator on 127.0.0.1:$SIM_PORT" ct curl -sf "http://127.0.0.1:$SIM_PORT/_sim/stats"
}
start_sim
ct tee -a /etc/xyte-edge/xyte-edge.conf >/dev/null <<EOF

# Added by tests/packaging/systemd-boot.sh: the simulator as Xyte, the LAN HTTPS listener on loopback.
XYTE_API_KEY=demo-key
XYTE_BASE_URL=http://127.0.0.1:$SIM_PORT/core/v1/organization
XYTE_HTTP_LISTEN=127.0.0.1:8443
EOF
ct runuser -u xyte-edge -- xyte-edge check-config >"$RUN/check.log" 2>&1 ||
  { cat "$RUN/check.log"; fail "check-config as xyte-edge: expected exit 0"; }
ct systemctl enable --now xyte-edge >"$RUN/enable.log" 2>&1 ||
  { cat "$RUN/enable.log"; fail "systemctl enable --now xyte-edge exited non-zero"; }
is_active || fail "expected xyte-edge active after enable --now, it is $(ct systemctl is-active xyte-edge)"
OLD_PID=$(main_pid)
wait_for 30 "/readyz on $OLD_VERSION" ct curl -sf "$LOCAL/readyz"

step "a token made with $OLD_VERSION, a REST read, a queued command"
TOKEN=$(ct xyte-edge token create --name upgrade-check --role operator 2>"$RUN/token.err") ||
  fail "token create: expected exit 0: $(cat "$RUN/token.err")"
[ -n "$TOKEN" ] || fail "token create printed no token"
devices_before=$(api GET "/v1/devices?limit=500" | py 'len(d["devices"])')
[ "$devices_before" = 12 ] || fail "expected 12 devices from the simulator on $OLD_VERSION, REST says $devices_before"
DEVICE=$(api GET "/v1/devices?limit=500" | py 'd["devices"][0]["id"]')
TASK=$(api POST /v1/tools/send_command_async "{\"device_id\": \"$DEVICE\", \"command\": \"reboot\"}" | py 'd["task_id"]')
task_state() { api GET "/v1/tasks/$TASK" | py 'd["state"]'; }
task_done() { task_state | grep -qxE 'done|failed|aborted|rejected|expired|cancelled'; }
WAIT_SEEN=task_state wait_for 60 "command $TASK to reach a final state (done, failed, ...) on $OLD_VERSION" task_done
TASK_STATE=$(api GET "/v1/tasks/$TASK" | py 'd["state"]')
api GET "/v1/events?after_id=0&limit=500" >"$RUN/events-before.json"
EVENTS_BEFORE=$(py 'sorted(e["id"] for e in d["events"])' <"$RUN/events-before.json")
[ "$EVENTS_BEFORE" != "[]" ] || fail "expected events in the event log on $OLD_VERSION, it is empty"
n=$(py 'len(d["events"])' <"$RUN/events-before.json")
[ "$n" -lt 500 ] || fail "expected fewer than 500 events before the upgrade (one page, compared after it), got $n"
SCHEMA_BEFORE=$(ct sqlite3 -readonly /var/lib/xyte-edge/xyte-edge.db 'PRAGMA user_version')
chown_warnings_old=$(ct journalctl --no-pager -q -u xyte-edge | grep -ci 'could not give' || true)
echo "$OLD_VERSION: MainPID $OLD_PID, $devices_before devices, command $TASK $TASK_STATE," \
  "$(py 'len(d["events"])' <"$RUN/events-before.json") events, schema version $SCHEMA_BEFORE," \
  "$chown_warnings_old socket-group warnings in its journal"

step "upgrade to $NEW_VERSION with the service running (dpkg -i --force-confold)"
# The configuration is a conffile the operator edited, and the packaged one changes between releases (new settings
# are listed), so dpkg asks which to keep; --force-confold gives its default answer (keep the operator's file, the
# packaged one lands beside it as .dpkg-dist) without a terminal, as an unattended upgrade must.
conf_before=$(ct sha256sum /etc/xyte-edge/xyte-edge.conf)
UPGRADE=$(cursor)
ct dpkg -i --force-confold "$NEW" </dev/null >"$RUN/upgrade.log" 2>&1 ||
  { cat "$RUN/upgrade.log"; fail "dpkg -i --force-confold $NEW exited non-zero"; }
[ "$(ct sha256sum /etc/xyte-edge/xyte-edge.conf)" = "$conf_before" ] ||
  fail "expected the upgrade to keep the edited /etc/xyte-edge/xyte-edge.conf, it changed"
if ct test -e /etc/xyte-edge/xyte-edge.conf.dpkg-dist; then
  echo "dpkg kept the edited configuration; the packaged one is /etc/xyte-edge/xyte-edge.conf.dpkg-dist"
fi
got=$(ct dpkg-query -W -f='${Status} ${Version}' xyte-edge)
[ "$got" = "install ok installed $NEW_VERSION" ] || fail "expected xyte-edge $NEW_VERSION installed, dpkg says: $got"
restarted() { is_active && [ "$(main_pid)" != "$OLD_PID" ]; }
wait_for 30 "xyte-edge active again with a new MainPID (was $OLD_PID)" restarted
PID=$(main_pid)
enabled=$(ct systemctl is-enabled xyte-edge) || true
[ "$enabled" = enabled ] || fail "expected the upgrade to keep the unit enabled, it is $enabled"
exe=$(ct readlink "/proc/$PID/exe")
[ "$exe" = /usr/bin/xyte-edge ] || fail "expected MainPID $PID to run /usr/bin/xyte-edge, it runs '$exe'"
UPSTREAM=${NEW_VERSION%-*}
ct xyte-edge --version | grep -qF "$UPSTREAM" || fail "expected xyte-edge --version to say $UPSTREAM: $(ct xyte-edge --version)"
wait_for 30 "/readyz on $NEW_VERSION" ct curl -sf "$LOCAL/readyz"
ready_version=$(journal_since "$UPGRADE" -o json | python3 -c '
import json, sys
for line in sys.stdin:
    e = json.loads(line)
    if e.get("_PID") == sys.argv[1] and e.get("MESSAGE", "").startswith("ready:"):
        print(e.get("F_VERSION"))' "$PID" | tail -1)
[ "$ready_version" = "$UPSTREAM" ] ||
  fail "expected the running daemon (PID $PID) to log ready with version $UPSTREAM, its journal says '$ready_version'"
diagnose=$(ct xyte-edge diagnose --to - 2>/dev/null) || fail "xyte-edge diagnose --to - exited non-zero"
SCHEMA_AFTER=$(sed -n 's/.*schema version \([0-9]*\).*/\1/p' <<<"$diagnose" | head -1)
[ -n "$SCHEMA_AFTER" ] && [ "$SCHEMA_AFTER" -gt "$SCHEMA_BEFORE" ] ||
  fail "expected diagnose to show a schema version above $SCHEMA_BEFORE after the upgrade, it shows '$SCHEMA_AFTER'"
sqlite_after=$(ct sqlite3 -readonly /var/lib/xyte-edge/xyte-edge.db 'PRAGMA user_version')
[ "$sqlite_after" = "$SCHEMA_AFTER" ] ||
  fail "expected PRAGMA user_version $SCHEMA_AFTER (as diagnose says), sqlite3 says $sqlite_after"
devices_after=$(api GET "/v1/devices?limit=500" | py 'len(d["devices"])')
[ "$devices_after" = "$devices_before" ] ||
  fail "expected the $OLD_VERSION token to read $devices_before devices after the upgrade, REST says $devices_after"
task_after=$(api GET "/v1/tasks/$TASK" | py 'd["task_id"] + " " + d["state"]')
[ "$task_after" = "$TASK $TASK_STATE" ] ||
  fail "expected command $TASK still $TASK_STATE after the upgrade, REST says '$task_after'"
kept=$(api GET "/v1/events?after_id=0&limit=500" | python3 -c '
import json, sys
before = set(json.loads(sys.argv[1]))
print(len(before - {e["id"] for e in json.load(sys.stdin)["events"]}))' "$EVENTS_BEFORE")
[ "$kept" = 0 ] || fail "expected every event from before the upgrade to be kept, $kept are missing"
echo "$NEW_VERSION: MainPID $PID ($exe), schema version $SCHEMA_BEFORE -> $SCHEMA_AFTER, $devices_after devices," \
  "command $task_after, the events kept"

step "STATUS=, the journal's structured fields, the socket"
status_text() { ct systemctl show -p StatusText --value xyte-edge; }
synced() { status_text | grep -q '^Xyte reachable, 12 devices'; }
WAIT_SEEN=status_text wait_for 30 "STATUS= to say 'Xyte reachable, 12 devices'" synced
ct systemctl status --no-pager xyte-edge >"$RUN/status.txt" || true
grep -q 'Status: "Xyte reachable, 12 devices' "$RUN/status.txt" ||
  { cat "$RUN/status.txt"; fail "expected systemctl status to show Status: \"Xyte reachable, 12 devices ...\""; }
grep 'Status:' "$RUN/status.txt"
journal_since "$UPGRADE" -o json >"$RUN/journal.json"
python3 - "$RUN/journal.json" "$UPSTREAM" "$PID" <<'EOF' || fail "the journal's structured fields are not as expected (above)"
import json, sys
entries = [e for e in map(json.loads, open(sys.argv[1])) if e.get("_PID") == sys.argv[3]]
def one(message):
    found = [e for e in entries if e.get("MESSAGE", "").startswith(message)]
    if not found:
        sys.exit(f"expected a journal entry '{message}...' from the daemon, found none in {len(entries)}")
    return found[-1]
ready, socket = one("ready:"), one("MCP socket ready")
# tracing-journald's levels: ERROR 3, WARN 4, INFO 5 (notice), DEBUG 6, TRACE 7.
expected = [
    (ready, "PRIORITY", "5"), (ready, "SYSLOG_IDENTIFIER", "xyte-edge"), (ready, "F_VERSION", sys.argv[2]),
    (ready, "F_STATE_DIR", "/var/lib/xyte-edge"), (ready, "_SYSTEMD_UNIT", "xyte-edge.service"),
    (ready, "TARGET", "xyte_edge::app"),
    (socket, "F_SOCKET", "/run/xyte-edge/mcp.sock"), (socket, "PRIORITY", "5"),
]
bad = [f"{f}: expected {want!r}, got {e.get(f)!r}" for e, f, want in expected if e.get(f) != want]
if bad:
    sys.exit("; ".join(bad))
code = [f for f in ready if "CODE_FILE" in f or "TARGET" in f]
print(f"journal: {len(entries)} entries from PID {ready['_PID']}; 'ready:' has PRIORITY={ready['PRIORITY']}",
      f"SYSLOG_IDENTIFIER={ready['SYSLOG_IDENTIFIER']} F_VERSION={ready['F_VERSION']}",
      f"F_STATE_DIR={ready['F_STATE_DIR']} {' '.join(f'{f}={ready[f]}' for f in sorted(code))}")
EOF
# README: the socket is mode 0660 and group xyte-edge; the daemon (User=xyte-edge) owns it, in /run/xyte-edge
# (RuntimeDirectory=, RuntimeDirectoryMode=0750).
got=$(ct stat -c '%U:%G %a %F' /run/xyte-edge)
[ "$got" = "xyte-edge:xyte-edge 750 directory" ] || fail "/run/xyte-edge is '$got', expected xyte-edge:xyte-edge 750"
got=$(ct stat -c '%U:%G %a %F' /run/xyte-edge/mcp.sock)
[ "$got" = "xyte-edge:xyte-edge 660 socket" ] ||
  fail "/run/xyte-edge/mcp.sock is '$got', expected xyte-edge:xyte-edge 660 socket (README: mode 0660, group xyte-edge)"
warnings=$(journal_since "$UPGRADE" | grep -iE 'could not give|chown|socket.*group' || true)
[ -z "$warnings" ] || fail "expected no chown / socket group warning from $NEW_VERSION, the journal has: $warnings"
echo "socket: $got; no chown warning since the upgrade ($chown_warnings_old from $OLD_VERSION)"
# Any other warning is shown (not judged): an operator would see it in `journalctl -p warning`.
others=$(journal_since "$UPGRADE" -p warning | grep -v 'systemd\[1\]' || true)
[ -z "$others" ] || printf 'note: warnings from %s since the upgrade:\n%s\n' "$NEW_VERSION" "$others"

step "group members may use the socket (status, mcp); others get 77"
ct useradd -m -G xyte-edge alice
ct useradd -m bob
ct runuser -u alice -- xyte-edge status >"$RUN/alice-status.txt" 2>&1 ||
  { cat "$RUN/alice-status.txt"; fail "xyte-edge status as alice (group xyte-edge): expected exit 0"; }
grep -q "xyte-edge $UPSTREAM" "$RUN/alice-status.txt" ||
  { cat "$RUN/alice-status.txt"; fail "expected xyte-edge status to name version $UPSTREAM"; }
grep -q 'cache: *12 devices' "$RUN/alice-status.txt" ||
  { cat "$RUN/alice-status.txt"; fail "expected xyte-edge status to show 12 cached devices"; }
printf '%s\n' \
  '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"systemd-boot","version":"1"}}}' \
  '{"jsonrpc":"2.0","method":"notifications/initialized"}' \
  '{"jsonrpc":"2.0","id":2,"method":"tools/list"}' |
  ct timeout 20 runuser -u alice -- xyte-edge mcp >"$RUN/mcp.out" 2>"$RUN/mcp.err" ||
  { cat "$RUN/mcp.out" "$RUN/mcp.err"; fail "xyte-edge mcp as alice: expected exit 0"; }
python3 - "$RUN/mcp.out" <<'EOF' || { cat "$RUN/mcp.out" "$RUN/mcp.err"; fail "xyte-edge mcp as alice: the answers are not as expected"; }
import json, sys
answers = {m.get("id"): m for m in map(json.loads, filter(str.strip, open(sys.argv[1])))}
init, tools = answers.get(1, {}).get("result"), answers.get(2, {}).get("result")
if not init or "serverInfo" not in init:
    sys.exit(f"expected an initialize result with serverInfo, got {answers.get(1)}")
if not tools or not tools.get("tools"):
    sys.exit(f"expected a tools/list result with tools, got {answers.get(2)}")
print(f"mcp as alice: {init['serverInfo']['name']} {init['serverInfo'].get('version')}, protocol",
      f"{init.get('protocolVersion')}, {len(tools['tools'])} tools")
EOF
rc=0
ct runuser -u bob -- xyte-edge status >"$RUN/bob-status.txt" 2>&1 || rc=$?
[ $rc = 77 ] || { cat "$RUN/bob-status.txt"; fail "xyte-edge status as bob (not in group xyte-edge): expected exit 77, got $rc"; }
echo "bob: exit 77 ($(head -1 "$RUN/bob-status.txt"))"
code=$(ct curl -s -o /dev/null -w '%{http_code}' "$LOCAL/readyz")
[ "$code" = 200 ] || fail "expected /readyz 200, got $code"
code=$(ct curl -s -o /dev/null -w '%{http_code}' --cacert /var/lib/xyte-edge/tls/cert.pem \
  -H "Authorization: Bearer $TOKEN" "https://localhost:8443/v1/devices")
[ "$code" = 200 ] || fail "expected GET /v1/devices over the LAN HTTPS listener (127.0.0.1:8443) 200, got $code"
echo "/readyz 200; REST over HTTPS 200"

step "reload keeps the MainPID and is logged; restart gives a new one"
mark=$(cursor)
ct systemctl reload xyte-edge
[ "$(main_pid)" = "$PID" ] && is_active || fail "expected reload to keep MainPID $PID active, it is $(main_pid) $(ct systemctl is-active xyte-edge)"
reload_logged() { journal_since "$mark" | grep -q 'SIGHUP received'; }
wait_for 10 "the daemon to log the reload (SIGHUP received)" reload_logged
ct systemctl restart xyte-edge
NEXT=$(main_pid)
{ [ "$NEXT" != "$PID" ] && [ "$NEXT" != 0 ] && is_active; } ||
  fail "expected restart to give a new MainPID (was $PID) and active, got $NEXT $(ct systemctl is-active xyte-edge)"
echo "reload: MainPID $PID kept, logged; restart: MainPID $PID -> $NEXT"
PID=$NEXT

step "a restart while Xyte is unreachable reports the cache"
ct systemctl stop xyte-sim
ct systemctl restart xyte-edge
PID=$(main_pid)
unreachable() { status_text | grep -q '^Xyte UNREACHABLE'; }
WAIT_SEEN=status_text wait_for 60 "STATUS= to say Xyte UNREACHABLE" unreachable
text=$(status_text)
grep -Eq '^Xyte UNREACHABLE, serving the cache from 20[0-9T:.-]+Z \(12 devices\)' <<<"$text" ||
  fail "expected STATUS= to say 'Xyte UNREACHABLE, serving the cache from <time> (12 devices)', it says: $text"
ct xyte-edge status >"$RUN/status-offline.txt" 2>&1 || { cat "$RUN/status-offline.txt"; fail "xyte-edge status: expected exit 0"; }
cache_line=$(grep 'cache:' "$RUN/status-offline.txt" || true)
grep -Eq 'cache: *12 devices, last sync [0-9]+s ago' <<<"$cache_line" ||
  { cat "$RUN/status-offline.txt"; fail "expected 'cache: 12 devices, last sync Ns ago' with Xyte unreachable, got '$cache_line'"; }
echo "STATUS=$text"
echo "status:$cache_line"
start_sim

step "the watchdog: a stopped daemon (SIGSTOP) is killed and restarted (WatchdogSec=30s)"
mark=$(cursor)
ct kill -STOP "$PID"
watchdog_restarted() { local p; p=$(main_pid); [ "$p" != "$PID" ] && [ "$p" != 0 ] && is_active; }
t0=$SECONDS
WAIT_SEEN=main_pid wait_for 75 "a new MainPID after the watchdog (stopped: $PID)" watchdog_restarted
NEXT=$(main_pid)
ct journalctl --no-pager -q -u xyte-edge --after-cursor="$mark" >"$RUN/watchdog.log"
grep -q "Failed with result 'watchdog'" "$RUN/watchdog.log" ||
  { cat "$RUN/watchdog.log"; fail "expected the journal to say xyte-edge.service: Failed with result 'watchdog'"; }
echo "watchdog: MainPID $PID -> $NEXT after $((SECONDS - t0))s; journal:"
grep -E "Killing process $PID|Failed with result 'watchdog'|Scheduled restart" "$RUN/watchdog.log"
PID=$NEXT
wait_for 30 "/readyz after the watchdog restart" ct curl -sf "$LOCAL/readyz"

step "systemd-analyze security on the live unit"
ct systemd-analyze security --no-pager xyte-edge >"$RUN/security.txt" 2>&1 || true
exposure=$(sed -n 's/.*Overall exposure level for xyte-edge.service: \([0-9.]*\).*/\1/p' "$RUN/security.txt")
[ -n "$exposure" ] || { cat "$RUN/security.txt"; fail "expected systemd-analyze security to print an overall exposure"; }
awk -v e="$exposure" 'BEGIN { exit !(e <= 2.0) }' || { cat "$RUN/security.txt"; fail "expected exposure at most 2.0, got $exposure"; }
echo "exposure: $(grep 'Overall exposure' "$RUN/security.txt" | sed 's/^→ //')"

step "backup as root while the service runs; restore refused while it runs; stop, restore, start"
rc=0
ct xyte-edge backup --to /root/gw.backup >"$RUN/backup.log" 2>&1 || rc=$?
[ $rc = 0 ] || { cat "$RUN/backup.log"; fail "xyte-edge backup as root with the service running: expected exit 0, got $rc"; }
[ "$(ct stat -c '%U %a' /root/gw.backup)" = "root 600" ] ||
  fail "expected the backup root-owned 0600, it is $(ct stat -c '%U %a' /root/gw.backup)"
is_active || fail "expected the service active after a backup, it is $(ct systemctl is-active xyte-edge)"
ct xyte-edge token create --name after-backup --role viewer >/dev/null 2>&1 || fail "token create after the backup failed"
rc=0
ct xyte-edge restore /root/gw.backup >"$RUN/restore-busy.log" 2>&1 || rc=$?
[ $rc = 75 ] || { cat "$RUN/restore-busy.log"; fail "restore with the service running: expected exit 75, got $rc"; }
ct systemctl stop xyte-edge
ct xyte-edge restore /root/gw.backup >"$RUN/restore.log" 2>&1 ||
  { cat "$RUN/restore.log"; fail "restore with the service stopped: expected exit 0"; }
# Run as root, backup and restore must leave every file of the state directory to the service account.
foreign=$(ct find /var/lib/xyte-edge ! -user xyte-edge)
[ -z "$foreign" ] || fail "expected every file under /var/lib/xyte-edge owned by xyte-edge after restore, not: $foreign"
ct systemctl start xyte-edge
is_active || fail "expected xyte-edge active after the restore, it is $(ct systemctl is-active xyte-edge)"
PID=$(main_pid)
wait_for 30 "/readyz after the restore" ct curl -sf "$LOCAL/readyz"
[ "$(api GET "/v1/tasks/$TASK" | py 'd["state"]')" = "$TASK_STATE" ] || fail "expected command $TASK in the restored database"
ct xyte-edge token list >"$RUN/tokens.txt" 2>&1
grep -q upgrade-check "$RUN/tokens.txt" && ! grep -q after-backup "$RUN/tokens.txt" ||
  { cat "$RUN/tokens.txt"; fail "expected the restored tokens: upgrade-check, and not after-backup (made after the backup)"; }
echo "backup: $(head -1 "$RUN/backup.log"); restore refused while running (75), restored with it stopped:"
sed 's/^/  /' "$RUN/restore.log"

step "stop within 1 s"
mark=$(cursor)
t0=$(date +%s%N)
ct systemctl stop xyte-edge
ms=$((($(date +%s%N) - t0) / 1000000))
state=$(ct systemctl is-active xyte-edge) || true
[ "$state" = inactive ] || fail "expected xyte-edge inactive after stop, it is $state"
[ $ms -lt 1000 ] || fail "expected systemctl stop to complete within 1000 ms, it took $ms ms"
result=$(ct systemctl show -p Result --value xyte-edge)
[ "$result" = success ] || fail "expected the stop to be clean (Result=success), got Result=$result"
stopped_logged() { journal_since "$mark" | grep -q 'xyte-edge\[[0-9]*\]: stopped$'; }
wait_for 5 "the daemon to log 'stopped'" stopped_logged
echo "stop: $ms ms, Result=$result, the daemon logged 'stopped'"

step "purge leaves nothing but the service account (debian/postrm keeps it)"
ct systemctl stop xyte-sim
ct apt-get purge -y xyte-edge >"$RUN/purge.log" 2>&1 || { cat "$RUN/purge.log"; fail "apt-get purge xyte-edge exited non-zero"; }
left=()
for path in /etc/xyte-edge /var/lib/xyte-edge /run/xyte-edge /usr/bin/xyte-edge /lib/systemd/system/xyte-edge.service \
  /etc/systemd/system/multi-user.target.wants/xyte-edge.service /usr/lib/sysusers.d/xyte-edge.conf; do
  if ct test -e "$path" -o -L "$path"; then left+=("$path"); fi
done
[ ${#left[@]} = 0 ] || fail "expected purge to remove everything, left: ${left[*]}"
# Anything else by that name on the root file system (the runtime directory is on /run, checked above).
named=$(ct find / -xdev -name '*xyte-edge*' -not -path '/root/xyte-edge_*.deb' | sort)
[ -z "$named" ] || fail "expected no file named *xyte-edge* after purge, found: $(tr "\n" " " <<<"$named")"
got=$(ct dpkg-query -W -f='${Status}' xyte-edge 2>&1) || true
case $got in *"not-installed"* | *"no packages found"*) ;; *) fail "expected dpkg to know xyte-edge as not installed, it says: $got" ;; esac
load=$(ct systemctl show -p LoadState --value xyte-edge)
[ "$load" = not-found ] || fail "expected systemd to no longer know xyte-edge.service, LoadState=$load"
procs=$(ct pgrep -a xyte-edge || true)
[ -z "$procs" ] || fail "expected no xyte-edge process after purge, found: $procs"
ct getent passwd xyte-edge >/dev/null && ct getent group xyte-edge >/dev/null ||
  fail "expected the service account and group to stay after purge (debian/postrm), one is gone"
echo "purge: no files, unit, enablement link or process left; the xyte-edge account stays (as debian/postrm says)"

echo "systemd-boot: ok ($OLD_VERSION -> $NEW_VERSION under systemd $(ct dpkg-query -W -f='${Version}' systemd), $((SECONDS - began))s)"
