#!/usr/bin/env bash
# entradir on a large tenant, the way it runs in production: `entradir run` against `entradir graph-sim` in its
# own process. Measures the first full sync (time until /readyz, peak RSS), RSS while serving, and a restart
# from the state file with Graph gone (time from start until a caller-ID lookup returns the right person, and
# RSS then). The simulator is stopped before the restart, so the restart can only serve from state.
#
#   benches/restart.sh                               # USERS=100000 GROUP_COUNT=10000 DEVICES=20000 RUNS=2
#   USERS=10000 GROUP_COUNT=1000 DEVICES=2000 benches/restart.sh
#   COMPARE=/path/to/older/entradir benches/restart.sh   # restarts alternate between the two builds, same state
#   BIN=/path/to/entradir benches/restart.sh     # that build for everything, first sync included (no cargo build)
#
# Needs ldap-utils (ldapsearch) and curl.
set -euo pipefail
cd "$(dirname "$0")/.."
USERS=${USERS:-100000}
# (not GROUPS: bash keeps the caller's group ids in that variable)
GROUP_COUNT=${GROUP_COUNT:-10000}
DEVICES=${DEVICES:-20000}
PHOTOS=${PHOTOS:-0}
RUNS=${RUNS:-2}
SIM_PORT=${SIM_PORT:-18080}
LDAP_PORT=${LDAP_PORT:-13391}
ADMIN_PORT=${ADMIN_PORT:-19181}
BASE="DC=contoso,DC=example"

if [ -n "${BIN:-}" ]; then
  bin=$BIN
else
  cargo build --release --quiet
  bin=target/release/entradir
fi
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

kib() { awk -v k="$2" '$1 == k":" {print $2}' "/proc/$1/status"; }
mib() { awk -v k="$1" 'BEGIN{printf "%.0f", k / 1024}'; }
now() { date +%s.%N; }

echo demo-secret >"$work/secret"
cat >"$work/entradir.toml" <<CONF
[entra]
tenant_id = "00000000-0000-4000-8000-000000000001"
client_id = "entradir-demo"
client_secret_file = "$work/secret"
authority = "http://127.0.0.1:$SIM_PORT"
graph_url = "http://127.0.0.1:$SIM_PORT"
sync_interval = "1h"
photos = $([ "$PHOTOS" = 0 ] && echo false || echo true)

[directory]
base_dn = "$BASE"
state_dir = "$work/state"
default_country = "DE"

[ldap]
listen = "127.0.0.1:$LDAP_PORT"
allow_anonymous = true

[admin]
listen = "127.0.0.1:$ADMIN_PORT"
CONF

echo "== graph-sim: $USERS users, $GROUP_COUNT groups, $DEVICES devices, photo ratio $PHOTOS"
"$bin" graph-sim --listen "127.0.0.1:$SIM_PORT" --users "$USERS" --groups "$GROUP_COUNT" --devices "$DEVICES" \
  --photo-ratio "$PHOTOS" >"$work/sim.log" 2>&1 &
sim=$!
pids+=("$sim")
until curl -s -o /dev/null "http://127.0.0.1:$SIM_PORT/"; do sleep 0.5; done

ready() { [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$ADMIN_PORT/readyz")" = 200 ]; }

t0=$(now)
ENTRADIR_LOG=warn "$bin" run --config "$work/entradir.toml" >"$work/run.log" 2>&1 &
srv=$!
pids+=("$srv")
until ready; do sleep 0.2; done
t1=$(now)
# Ready means published; the state file is written right after.
until [ -s "$work/state/entradir-state.json" ]; do sleep 0.2; done
echo "first full sync: $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b - a}') s until ready," \
  "peak RSS $(mib "$(kib "$srv" VmHWM)") MiB, RSS serving $(mib "$(kib "$srv" VmRSS)") MiB" \
  "(state file $(du -m "$work/state/entradir-state.json" | cut -f1) MB)"
# The round ends after the state is written (its housekeeping gives freed memory back): measure again later.
sleep 5
echo "           5 s later: RSS $(mib "$(kib "$srv" VmRSS)") MiB"

# A caller-ID lookup whose answer is known: the first user with a business phone, as the server has it now.
probe=$(ldapsearch -x -LLL -H "ldap://127.0.0.1:$LDAP_PORT" -b "$BASE" -z 1 '(&(objectCategory=person)(telephoneNumber=*))' \
  telephoneNumber sAMAccountName 2>/dev/null | awk '/^telephoneNumber:/{n=$2} /^sAMAccountName:/{s=$2} END{print n, s}') || true
read -r number sam <<<"$probe"
echo "probe: telephoneNumber=$number is $sam"
kill "$srv"
wait "$srv" 2>/dev/null || true
kill "$sim"
wait "$sim" 2>/dev/null || true
echo "graph-sim stopped: restarts can only serve from state"

bins=("$bin")
[ -n "${COMPARE:-}" ] && bins+=("$COMPARE")
for run in $(seq "$RUNS"); do
 for b in "${bins[@]}"; do
  t0=$(now)
  ENTRADIR_LOG=warn "$b" run --config "$work/entradir.toml" >>"$work/run.log" 2>&1 &
  srv=$!
  pids+=("$srv")
  until ldapsearch -x -LLL -H "ldap://127.0.0.1:$LDAP_PORT" -b "$BASE" "(telephoneNumber=$number)" sAMAccountName \
    2>/dev/null | grep -q "^sAMAccountName: $sam\$"; do
    kill -0 "$srv" 2>/dev/null || { tail -5 "$work/run.log" >&2; exit 1; }
    sleep 0.05
  done
  t1=$(now)
  echo "restart $run ($b): first correct caller-ID answer after $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b - a}') s," \
    "RSS $(mib "$(kib "$srv" VmRSS)") MiB, peak $(mib "$(kib "$srv" VmHWM)") MiB"
  sleep 5
  echo "           5 s later: RSS $(mib "$(kib "$srv" VmRSS)") MiB"
  kill "$srv"
  wait "$srv" 2>/dev/null || true
 done
done
