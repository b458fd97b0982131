#!/usr/bin/env python3
"""Caller-ID over HTTP on the demo tenant: `/lookup/number` latency as a CTI client sees it.

Run `cargo run --release -- demo` in one terminal, then `python3 benches/lookup_http.py` in another. The demo's
numbers come from its LDAP side (ldapsearch), each asked in the spellings trunks deliver (E.164, national,
00-prefixed, with punctuation) plus strangers' numbers (404s), over `--connections` keep-alive connections,
`--requests` each. Prints the client-side p50/p99/max per run and the server's own p99 from
`entradir_http_request_duration_seconds{area="lookup"}` (the bucket bound it falls in), and the server's CPU time
per lookup from /proc.
"""
import argparse, base64, http.client, random, re, subprocess, threading, time, urllib.parse

ap = argparse.ArgumentParser()
ap.add_argument("--host", default="127.0.0.1")
ap.add_argument("--port", type=int, default=10080)
ap.add_argument("--admin", type=int, default=19180)
ap.add_argument("--ldap", type=int, default=10389)
ap.add_argument("--connections", type=int, default=4)
ap.add_argument("--requests", type=int, default=5000)
ap.add_argument("--runs", type=int, default=3)
args = ap.parse_args()

ldif = subprocess.run(["ldapsearch", "-x", "-LLL", "-o", "ldif-wrap=no", "-H", f"ldap://{args.host}:{args.ldap}",
                       "-b", "DC=contoso,DC=example", "(telephoneNumber=*)", "telephoneNumber", "mobile"],
                      capture_output=True, text=True, check=True).stdout
numbers = [l.split(": ", 1)[1] for l in ldif.splitlines() if re.match(r"^(telephoneNumber|mobile): \+49", l)]
def spellings(e164):
    national = "0" + e164[3:]
    return [e164, national, "00" + e164[1:], f"{national[:3]} {national[3:6]}-{national[6:]}"]
queries = [s for n in numbers for s in spellings(n)] + [f"+49 30 9{i:06d}" for i in range(len(numbers))]
auth = "Basic " + base64.b64encode(b"pbx:demo-password").decode()

def server_pid():
    out = subprocess.run(["pgrep", "-f", "entradir demo"], capture_output=True, text=True).stdout.split()
    return int(out[0])

def cpu_seconds(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / 100.0

def buckets():
    text = urllib.request.urlopen(f"http://{args.host}:{args.admin}/metrics").read().decode()
    out = {}
    for m in re.finditer(r'entradir_http_request_duration_seconds_bucket\{area="lookup",le="([^"]+)"\} (\d+)', text):
        out[m.group(1)] = int(m.group(2))
    return out

import urllib.request
def worker(lat, n, seed):
    rnd = random.Random(seed)
    c = http.client.HTTPConnection(args.host, args.port)
    for _ in range(n):
        q = urllib.parse.quote(rnd.choice(queries))
        t = time.perf_counter()
        c.request("GET", f"/lookup/number?n={q}", headers={"Authorization": auth})
        r = c.getresponse(); r.read()
        lat.append(time.perf_counter() - t)
        assert r.status in (200, 404), r.status

pid = server_pid()
for run in range(args.runs):
    before, cpu0 = buckets(), cpu_seconds(pid)
    lat, threads = [], []
    t0 = time.perf_counter()
    for i in range(args.connections):
        th = threading.Thread(target=worker, args=(lat, args.requests, run * 100 + i)); th.start(); threads.append(th)
    for th in threads: th.join()
    wall = time.perf_counter() - t0
    after, cpu1 = buckets(), cpu_seconds(pid)
    total = len(lat)
    delta = sorted(((float(k) if k != "+Inf" else float("inf")), after[k] - before.get(k, 0)) for k in after)
    server_p99 = next(le for le, n in delta if n >= 0.99 * total)
    lat.sort()
    print(f"run {run + 1}: {total} lookups in {wall:.1f}s ({total / wall:.0f}/s); client p50 {lat[total // 2] * 1e3:.2f} ms, "
          f"p99 {lat[int(total * 0.99)] * 1e3:.2f} ms, max {lat[-1] * 1e3:.1f} ms; server p99 <= {server_p99 * 1e3:g} ms; "
          f"server CPU {(cpu1 - cpu0) / total * 1e6:.0f} us/lookup")
