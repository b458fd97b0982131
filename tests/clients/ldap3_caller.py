"""A long-lived caller-ID client, as a PBX runs one: one LDAP connection kept open, a lookup after another, and on
a dropped connection one reconnect and a retry of the lookup. Stops when the stop file appears and prints JSON:
lookups done, reconnects, failures (still failing after the reconnect) and wrong answers (anything but exactly
the expected DN, an empty answer included)."""

import json
import os
import sys
import time

from ldap3 import Connection, Server
from ldap3.core.exceptions import LDAPException

host, port, base, number, want_dn, stop_file = sys.argv[1:7]


def connect():
    server = Server(host, port=int(port), connect_timeout=5)
    return Connection(server, auto_bind=True, receive_timeout=10, raise_exceptions=True)


def lookup(conn):
    conn.search(base, f"(telephoneNumber={number})", attributes=["1.1"])
    return [r["dn"] for r in conn.response if r.get("type") == "searchResEntry"]


stats = {"done": 0, "reconnects": 0, "failed": 0, "wrong": []}
conn = connect()
started = time.monotonic()
while not os.path.exists(stop_file):
    try:
        found = lookup(conn)
    except (LDAPException, OSError):
        stats["reconnects"] += 1
        try:
            conn.unbind()
        except (LDAPException, OSError):
            pass
        try:
            conn = connect()
            found = lookup(conn)
        except (LDAPException, OSError) as e:
            stats["failed"] += 1
            stats["wrong"].append([round(time.monotonic() - started, 2), f"failed: {e}"])
            try:
                conn = connect()
            except (LDAPException, OSError):
                time.sleep(0.2)
            continue
    stats["done"] += 1
    if found != [want_dn]:
        stats["wrong"].append([round(time.monotonic() - started, 2), found])
    time.sleep(0.01)
print(json.dumps(stats))
