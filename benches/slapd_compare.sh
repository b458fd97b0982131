#!/usr/bin/env bash
# entradir vs OpenLDAP slapd on the same data and the same load, in one run.
#
# Generates USERS AD-style users (benches/ldap_load.rs), loads them into a back-mdb slapd on loopback with
# equality and substring indexes on the searched attributes (plus a small schema for the AD attributes used),
# then runs the identical query mix against both servers and prints searches/s, p50/p99 and the ratio.
# Numbers are sent as stored (--portable): slapd has no phone normalisation.
#
#   benches/slapd_compare.sh                       # USERS=10000 CONN=64 DURATION=10
#   USERS=100000 CONN=64 DURATION=10 benches/slapd_compare.sh
#
# Needs slapd and ldap-utils (Debian: apt-get install slapd ldap-utils).
set -euo pipefail
cd "$(dirname "$0")/.."
USERS=${USERS:-10000}
CONN=${CONN:-64}
DURATION=${DURATION:-10}
PORT=${PORT:-13389}
KINDS=${KINDS:-"exact suffix prefix substring memberof"}
SLAPD=${SLAPD:-/usr/sbin/slapd}
SLAPADD=${SLAPADD:-/usr/sbin/slapadd}
BASE="DC=contoso,DC=example"

work=$(mktemp -d)
cleanup() {
  if [ -f "$work/slapd.pid" ]; then kill "$(cat "$work/slapd.pid")" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

load() { cargo bench --quiet --bench ldap_load -- "$@"; }

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
index telephoneNumber,mobile eq,sub
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

printf '\n%-10s %14s %10s %14s %10s %8s\n' query "entradir/s" "p99 ms" "slapd/s" "p99 ms" ratio
for kind in $KINDS; do
  ours=$(load --users "$USERS" --connections "$CONN" --duration "$DURATION" --only "$kind" --portable | awk '$1=="all"{print $3, $5}')
  theirs=$(load --users "$USERS" --connections "$CONN" --duration "$DURATION" --only "$kind" --portable \
    --addr "127.0.0.1:$PORT" --base "$BASE" --bind "CN=admin,$BASE" --password secret | awk '$1=="all"{print $3, $5}')
  read -r ours_rate ours_p99 <<<"$ours"
  read -r theirs_rate theirs_p99 <<<"$theirs"
  ratio=$(awk -v a="$ours_rate" -v b="$theirs_rate" 'BEGIN{ if (b > 0) printf "%.2f", a / b; else print "n/a" }')
  printf '%-10s %14s %10s %14s %10s %8s\n' "$kind" "$ours_rate" "$ours_p99" "$theirs_rate" "$theirs_p99" "$ratio"
done
