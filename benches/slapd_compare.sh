#!/usr/bin/env bash
# entradir vs OpenLDAP slapd on the same data and the same load, in one run.
#
# Generates USERS AD-style users (benches/ldap_load.rs: real-world name skew, DDI number blocks, a group of
# everybody), loads them into a back-mdb slapd on loopback with equality and substring indexes on the searched
# attributes (plus a small schema for the AD attributes used), serves the same users from entradir in its own
# process, then runs the identical query mix against both, ROUNDS times, alternating server by server and
# query by query. For each it prints searches/s, p99 and the *server's* CPU time per search (utime+stime of
# the server process from /proc over the run, divided by the searches: the load client shares the two cores
# and saturates first, so searches/s alone understates the difference), and both servers' RSS at the end.
# Numbers are sent as stored (--portable): slapd has no phone normalisation.
#
#   benches/slapd_compare.sh                       # USERS=10000 CONN=64 DURATION=10 ROUNDS=3
#   USERS=100000 CONN=64 DURATION=6 benches/slapd_compare.sh
#
# Needs slapd and ldap-utils (Debian: apt-get install slapd ldap-utils).
set -euo pipefail
cd "$(dirname "$0")/.."
USERS=${USERS:-10000}
CONN=${CONN:-64}
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
PORT=${PORT:-13389}
OURS_PORT=${OURS_PORT:-13390}
KINDS=${KINDS:-"exact suffix yealink contains snom memberof"}
SLAPD=${SLAPD:-/usr/sbin/slapd}
SLAPADD=${SLAPADD:-/usr/sbin/slapadd}
BASE="DC=contoso,DC=example"

work=$(mktemp -d)
ours_pid=
cleanup() {
  if [ -f "$work/slapd.pid" ]; then kill "$(cat "$work/slapd.pid")" 2>/dev/null || true; fi
  if [ -n "$ours_pid" ]; then kill "$ours_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# LDAP_LOAD names another build of the load tool (e.g. of an older commit, to compare before and after).
if [ -z "${LDAP_LOAD:-}" ]; then
  cargo bench --quiet --bench ldap_load --no-run 2>/dev/null
fi
tool=${LDAP_LOAD:-$(ls -t target/release/deps/ldap_load-* | grep -v '\.d$' | head -1)}
load() { "$tool" "$@"; }
# utime+stime of a process in clock ticks, and its resident memory in MiB.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_mib() { awk '/^VmRSS:/{printf "%.0f", $2 / 1024}' "/proc/$1/status"; }
TICK=$(getconf CLK_TCK)

echo "== generating $USERS users"
load --users "$USERS" --base "$BASE" --write-ldif "$work/data.ldif"

mkdir -p "$work/db"
# AD attribute types with the matching rules AD gives them (Debian's msuser.schema declares none, so slapd
# could not evaluate equality filters on them).
cat > "$work/ad.schema" <<'SCHEMA'
attributetype ( 1.2.840.113556.1.4.221 NAME 'sAMAccountName' EQUALITY caseIgnoreMatch
  SUBSTR caseIgnoreSubstringsMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.8 NAME 'userAccountControl' EQUALITY integerMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.2.102 NAME 'memberOf' EQUALITY distinguishedNameMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.12 )
attributetype ( 1.2.840.113556.1.4.782 NAME 'objectCategory' EQUALITY distinguishedNameMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.12 SINGLE-VALUE )
objectclass ( 1.2.840.113556.1.5.9 NAME 'user' SUP inetOrgPerson STRUCTURAL
  MAY ( sAMAccountName $ userAccountControl $ memberOf $ objectCategory ) )
objectclass ( 1.2.840.113556.1.3.23 NAME 'container' SUP top STRUCTURAL MUST cn )
SCHEMA
cat > "$work/slapd.conf" <<CONF
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include $work/ad.schema
pidfile $work/slapd.pid
modulepath /usr/lib/ldap
moduleload back_mdb
sizelimit unlimited
loglevel 0
threads 4
database mdb
suffix "$BASE"
rootdn "CN=admin,$BASE"
rootpw secret
directory $work/db
maxsize 4294967296
index objectClass eq
index cn,sn,givenName,displayName,mail eq,sub
index telephoneNumber,mobile eq,sub,pres
index memberOf,sAMAccountName eq
CONF

echo "== loading slapd"
# slapadd does not understand the RFC 2849 "version: 1" line, so drop the export's header block.
sed '1,/^$/d' "$work/data.ldif" > "$work/records.ldif"
"$SLAPADD" -q -s -f "$work/slapd.conf" -l "$work/records.ldif"
"$SLAPD" -f "$work/slapd.conf" -h "ldap://127.0.0.1:$PORT/"
for _ in $(seq 50); do
  ldapsearch -x -H "ldap://127.0.0.1:$PORT" -b "$BASE" -s base "(objectClass=*)" 1.1 >/dev/null 2>&1 && break
  sleep 0.2
done

echo "== starting entradir (its own process) on port $OURS_PORT"
"$tool" --users "$USERS" --base "$BASE" --serve "127.0.0.1:$OURS_PORT" 2>"$work/ours.log" &
ours_pid=$!
for _ in $(seq 600); do
  grep -q '^serving' "$work/ours.log" && break
  kill -0 "$ours_pid" 2>/dev/null || { cat "$work/ours.log" >&2; exit 1; }
  sleep 0.5
done
slapd_pid=$(cat "$work/slapd.pid")

# One measurement: prints "searches/s p99 cpu_us_per_search".
measure() {
  local pid=$1; shift
  local before after out
  before=$(cpu_ticks "$pid")
  out=$(load --users "$USERS" --connections "$CONN" --duration "$DURATION" --portable "$@" | awk '$1=="all"{print $2, $3, $5}')
  after=$(cpu_ticks "$pid")
  read -r n rate p99 <<<"$out"
  awk -v n="$n" -v r="$rate" -v p="$p99" -v t=$((after - before)) -v hz="$TICK" \
    'BEGIN{ printf "%s %s %.1f\n", r, p, (n > 0 ? t / hz * 1e6 / n : 0) }'
}

: >"$work/results"
for round in $(seq "$ROUNDS"); do
  for kind in $KINDS; do
    echo "== round $round: $kind" >&2
    echo "$kind ours $(measure "$ours_pid" --only "$kind" --addr "127.0.0.1:$OURS_PORT" --base "$BASE")" >>"$work/results"
    echo "$kind slapd $(measure "$slapd_pid" --only "$kind" --addr "127.0.0.1:$PORT" --base "$BASE" \
      --bind "CN=admin,$BASE" --password secret)" >>"$work/results"
  done
done

echo
echo "$USERS users, $CONN connections, ${DURATION}s per run, $ROUNDS rounds (ranges over rounds)"
printf '%-9s | %-15s %-13s %-15s | %-15s %-13s %-15s | %s\n' query "entradir/s" "p99 ms" "CPU µs/search" \
  "slapd/s" "p99 ms" "CPU µs/search" "CPU ratio"
for kind in $KINDS; do
  awk -v k="$kind" '
    function rng(a, b) { return (a == b) ? sprintf("%g", a) : sprintf("%g–%g", a, b) }
    $1 == k { s = $2; r = $3; p = $4; c = $5
      if (!(s in n)) { rmin[s] = rmax[s] = r; pmin[s] = pmax[s] = p; cmin[s] = cmax[s] = c }
      n[s]++; csum[s] += c
      if (r < rmin[s]) rmin[s] = r; if (r > rmax[s]) rmax[s] = r
      if (p < pmin[s]) pmin[s] = p; if (p > pmax[s]) pmax[s] = p
      if (c < cmin[s]) cmin[s] = c; if (c > cmax[s]) cmax[s] = c }
    END { ratio = (csum["ours"] > 0) ? sprintf("%.1f× less", csum["slapd"] / csum["ours"]) : "n/a"
      printf "%-9s | %-15s %-13s %-15s | %-15s %-13s %-15s | %s\n", k,
        rng(rmin["ours"], rmax["ours"]), rng(pmin["ours"], pmax["ours"]), rng(cmin["ours"], cmax["ours"]),
        rng(rmin["slapd"], rmax["slapd"]), rng(pmin["slapd"], pmax["slapd"]), rng(cmin["slapd"], cmax["slapd"]), ratio }
  ' "$work/results"
done
echo "RSS after the runs: entradir $(rss_mib "$ours_pid") MiB, slapd $(rss_mib "$slapd_pid") MiB"
