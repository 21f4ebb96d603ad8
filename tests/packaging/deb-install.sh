#!/usr/bin/env bash
# Installs the amd64 .deb on this machine (as root) and checks it as an operator would meet it: the service
# account, files with their owners and modes, check-config as the service user, the daemon started as that user
# with the unit's own ExecStart against a simulator, the socket's mode and group, /readyz; then upgrade over itself
# (an edited conffile and the database survive), remove (config kept) and purge (config and state gone).
# Usage: tests/packaging/deb-install.sh path/to/xyte-edge_VERSION_amd64.deb
set -euo pipefail

DEB=$(realpath "$1")
fail() { echo "deb-install: FAIL: $*" >&2; exit 1; }
check_mode() { # path owner:group mode
  local got
  got=$(stat -c '%U:%G %a' "$1")
  [ "$got" = "$2 $3" ] || fail "$1 is $got, expected $2 $3"
}
wait_for() { # seconds description command...
  local until=$((SECONDS + $1)) what=$2
  shift 2
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $until ] || fail "timed out waiting for $what"
    sleep 0.2
  done
}

[ "$(id -u)" = 0 ] || fail "needs root (dpkg -i)"
WORK=$(mktemp -d)
SIM_PID="" DAEMON_PID=""
cleanup() {
  [ -n "$DAEMON_PID" ] && kill "$DAEMON_PID" 2>/dev/null || true
  [ -n "$SIM_PID" ] && kill "$SIM_PID" 2>/dev/null || true
  dpkg -P xyte-edge >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

dpkg -P xyte-edge >/dev/null 2>&1 || true
echo "== install"
dpkg -i "$DEB" >/dev/null
getent passwd xyte-edge >/dev/null || fail "no xyte-edge user"
getent group xyte-edge >/dev/null || fail "no xyte-edge group"
[ "$(getent passwd xyte-edge | cut -d: -f7)" = /usr/sbin/nologin ] || fail "the service user can log in"
check_mode /usr/bin/xyte-edge root:root 755
check_mode /etc/xyte-edge root:xyte-edge 750
check_mode /etc/xyte-edge/xyte-edge.conf root:xyte-edge 640
check_mode /var/lib/xyte-edge xyte-edge:xyte-edge 700
UNIT=$(dpkg -L xyte-edge | grep '/systemd/system/xyte-edge.service$') || fail "no unit installed"
check_mode "$UNIT" root:root 644
check_mode /usr/lib/sysusers.d/xyte-edge.conf root:root 644
dpkg -L xyte-edge | grep -q '/usr/share/man/man1/xyte-edge.1' || fail "no man page"
dpkg-query -W -f='${Conffiles}\n' xyte-edge | grep -q /etc/xyte-edge/xyte-edge.conf || fail "the config is not a conffile"

echo "== systemd: verify and security exposure"
systemd-analyze verify "$UNIT"
exposure=$(systemd-analyze security --offline=true "$UNIT" 2>/dev/null | sed -n 's/.*Overall exposure level for .*: \([0-9.]*\).*/\1/p')
echo "exposure: $exposure"
awk -v e="$exposure" 'BEGIN { exit !(e != "" && e <= 2.0) }' || fail "exposure $exposure is above 2.0"

echo "== configure against a simulator and start the daemon as the service user, with the unit's ExecStart"
SIM_PORT=18787
xyte-edge sim --listen 127.0.0.1:$SIM_PORT --devices 12 >"$WORK/sim.log" 2>&1 &
SIM_PID=$!
wait_for 10 "the simulator" curl -sf "http://127.0.0.1:$SIM_PORT/_sim/stats"
cat >>/etc/xyte-edge/xyte-edge.conf <<EOF

# Added by the package test.
XYTE_API_KEY=demo-key
XYTE_BASE_URL=http://127.0.0.1:$SIM_PORT/core/v1/organization
XYTE_HTTP_LISTEN=127.0.0.1:18443
XYTE_HTTP_LOCAL_LISTEN=127.0.0.1:18080
EOF
runuser -u xyte-edge -- xyte-edge check-config >"$WORK/check.log" || { cat "$WORK/check.log"; fail "check-config as xyte-edge"; }
grep -q 'XYTE_API_KEY *= \*\*\*' "$WORK/check.log" || fail "check-config did not mask the key"
# systemd would make the runtime directory (RuntimeDirectory=xyte-edge, RuntimeDirectoryMode=0750) and apply UMask=.
install -d -o xyte-edge -g xyte-edge -m 0750 /run/xyte-edge
EXEC=$(sed -n 's/^ExecStart=//p' "$UNIT")
# setpriv execs the daemon itself (runuser would stay as its parent and turn SIGTERM into a kill).
(umask 0007 && exec setpriv --reuid=xyte-edge --regid=xyte-edge --init-groups -- $EXEC) >"$WORK/daemon.log" 2>&1 &
DAEMON_PID=$!
wait_for 30 "/readyz" curl -sf http://127.0.0.1:18080/readyz || { cat "$WORK/daemon.log"; exit 1; }
[ "$(stat -c %U "/proc/$DAEMON_PID")" = xyte-edge ] || fail "the daemon does not run as xyte-edge"
check_mode /run/xyte-edge/mcp.sock xyte-edge:xyte-edge 660
[ -S /run/xyte-edge/mcp.sock ] || fail "no socket"
curl -sf http://127.0.0.1:18080/readyz | grep -q '"ready":true' || fail "/readyz is not ready"
check_mode /var/lib/xyte-edge/xyte-edge.db xyte-edge:xyte-edge 600
# A token made by the admin is in the database, to show the upgrade keeps it.
runuser -u xyte-edge -- xyte-edge token create --name kept --role viewer >/dev/null 2>&1
kill -TERM "$DAEMON_PID"
wait "$DAEMON_PID" || fail "the daemon did not stop cleanly: $(tail -5 "$WORK/daemon.log")"
DAEMON_PID=""

echo "== upgrade over itself keeps the edited conffile and the database"
sum_before=$(sha256sum /etc/xyte-edge/xyte-edge.conf)
dpkg -i "$DEB" >/dev/null
[ "$(sha256sum /etc/xyte-edge/xyte-edge.conf)" = "$sum_before" ] || fail "the upgrade replaced the edited config"
runuser -u xyte-edge -- xyte-edge token list 2>/dev/null | grep -q '^kept ' || fail "the upgrade lost the database"
check_mode /etc/xyte-edge/xyte-edge.conf root:xyte-edge 640

echo "== remove keeps config and state; purge removes both"
dpkg -r xyte-edge >/dev/null
[ -f /etc/xyte-edge/xyte-edge.conf ] || fail "remove deleted the config"
[ -f /var/lib/xyte-edge/xyte-edge.db ] || fail "remove deleted the database"
[ ! -e /usr/bin/xyte-edge ] || fail "remove left the binary"
dpkg -P xyte-edge >/dev/null
[ ! -e /etc/xyte-edge ] || fail "purge left /etc/xyte-edge"
[ ! -e /var/lib/xyte-edge ] || fail "purge left /var/lib/xyte-edge"
echo "deb-install: ok ($(basename "$DEB"), $(stat -c %s "$DEB") bytes, exposure $exposure)"
