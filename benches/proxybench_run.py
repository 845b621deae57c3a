#!/usr/bin/env python3
"""Drives the team's shared IMAP load client (proxybench/bench.py) against the
lab that benches/proxy.rs started, by importing it and overriding what it
hardcodes for the peers' lab: PORTS, roots() (which process trees are
accounted), record() (bench.py appends next to itself, a read-only dir here).

Called by benches/proxy.rs; not meant to be run by hand, but it can be:

  proxybench_run.py PHASE --lab lab.json --out results.jsonl [--quick]

PHASE: warm | login | conc | fetch | idle | report.
lab.json (written by proxy.rs): {"ports": {"direct": P, "mailshift": P,
"dproxy": P}, "pids": {"direct": PID, "mailshift": PID, "dproxy": PID,
"ldap": PID}, "run_id": "..."}.

Everything talks to 127.0.0.1 only. bench.py's own measurement code is used
for every figure: one_login / cmd_login (latency), conc_run + cpu_ticks
(logins/s, CPU from /proc over the process tree incl. reaped children),
Blk + ensure_big (FETCH), cmd_idle (memory per IDLE session). Only the
drivers of `conc` and `fetch` are written here, because bench.py's versions
map target names to accounting roots with a fixed table that has no
"mailshift" entry; they follow bench.py's loop exactly (same rotation, same
before/after accounting).
"""
import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import time

BENCH_DIR = os.environ.get("MAILSHIFT_PROXYBENCH_DIR", "/work/shared/peers/proxybench")
sys.path.insert(0, BENCH_DIR)
import bench  # noqa: E402  (the shared load client, unmodified)

TARGETS = ["direct", "mailshift", "dproxy"]
PROXIES = ["mailshift", "dproxy"]


def setup(lab_path, out_path, phase, quick):
    lab = json.load(open(lab_path))
    ports = {k: int(v) for k, v in lab["ports"].items()}
    pids = {k: int(v) for k, v in lab["pids"].items()}
    # bench.py's names: "direct" is the store; its idle test accounts the
    # backend as "clone" (the peers' raised-limits copy): here that is the
    # same store, whose limits proxy.rs raised.
    bench.PORTS.clear()
    bench.PORTS.update(ports)
    bench.PORTS["clone"] = ports["direct"]
    pids["clone"] = pids["direct"]

    def roots(target):
        return [pids[target]]
    bench.roots = roots

    def record(kind, **kw):
        kw.update(kind=kind, ts=time.strftime("%H:%M:%S"), run_id=lab.get("run_id"),
                  phase=phase, quick=quick)
        with open(out_path, "a") as f:
            f.write(json.dumps(kw) + "\n")
        print(json.dumps(kw), flush=True)
    bench.record = record
    return lab


def targets_arg(s):
    return s.split(",")


# ---------------------------------------------------------------- warm-up
async def warm(a):
    """Every user logs in once through every target: mailshift's directory
    cache (and Dovecot's) is warm before anything is measured."""
    bad = 0
    for t in a.targets:
        for u in bench.USERS:
            try:
                await bench.one_login(bench.PORTS[t], u)
            except Exception as e:  # noqa: BLE001
                bad += 1
                print(f"warm-up {t} {u}: {e!r}", flush=True)
    if bad:
        raise SystemExit(f"warm-up: {bad} failed logins")
    print(f"warm-up: {len(bench.USERS)} users logged in once via {','.join(a.targets)}", flush=True)


# ---------------------------------------------------------------- logins/s + CPU per login
class Watcher:
    """The cockpit watched while mailshift proxies: its overview (what the web
    page asks every 5 s) and /metrics (what Prometheus scrapes) polled every
    second, five watchers' worth. In a process of its own: as a thread of the
    load client it held the interpreter's lock while it polled, slowing the
    event loop that drives the logins, so "watched" measured the client."""

    SCRIPT = r"""
import sys, threading, urllib.request
port, polls, errors = sys.argv[1], 0, 0
done = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
while not done.wait(1.0):
    for path in ("/api/v1/overview", "/metrics"):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                r.read()
            polls += 1
        except Exception:
            errors += 1
print(polls, errors, flush=True)
"""

    def __init__(self, port):
        self.port, self.proc, self.polls, self.errors = port, None, 0, 0

    def __enter__(self):
        import subprocess
        import sys
        self.proc = subprocess.Popen([sys.executable, "-c", self.SCRIPT, str(self.port)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        return self

    def __exit__(self, *exc):
        out, _ = self.proc.communicate(input="", timeout=30)
        try:
            self.polls, self.errors = (int(x) for x in out.split())
        except ValueError:
            self.errors += 1


async def conc(a):
    # What gets accounted for each target: its own tree, the store behind
    # it, and slapd (the directory work of whoever looks users up).
    # "watched" is mailshift again with its cockpit polled (Watcher): the
    # cockpit must add no measurable CPU to the proxy path.
    acct = {"direct": ["direct", "ldap"], "mailshift": ["mailshift", "direct", "ldap"],
            "dproxy": ["dproxy", "direct", "ldap"], "watched": ["mailshift", "direct", "ldap"]}
    targets = list(a.targets)
    if "admin" in bench.PORTS and "mailshift" in targets and "watched" not in targets:
        targets.append("watched")
    bench.PORTS.setdefault("watched", bench.PORTS["mailshift"])
    runs = {t: [] for t in targets}
    for rnd in range(a.rounds):
        order = targets[rnd % len(targets):] + targets[:rnd % len(targets)]
        for t in order:
            before = {x: bench.cpu_ticks(x) for x in acct[t]}
            self0 = resource.getrusage(resource.RUSAGE_SELF)
            if t == "watched":
                with Watcher(bench.PORTS["admin"]) as w:
                    n, e, el = await bench.conc_run(bench.PORTS[t], a.secs, a.c)
                e += w.errors
            else:
                n, e, el = await bench.conc_run(bench.PORTS[t], a.secs, a.c)
            await asyncio.sleep(0.3)  # let processes exit and be reaped
            after = {x: bench.cpu_ticks(x) for x in acct[t]}
            self1 = resource.getrusage(resource.RUSAGE_SELF)
            cpu = {x: (after[x] - before[x]) / bench.TICK for x in acct[t]}
            client_cpu = (self1.ru_utime + self1.ru_stime) - (self0.ru_utime + self0.ru_stime)
            runs[t].append(dict(logins=n, errors=e, secs=el, rate=n / el, cpu=cpu, client_cpu=client_cpu))
            print(t, rnd, round(n / el, 1), "logins/s", e, "errors", {x: round(v, 2) for x, v in cpu.items()},
                  "client", round(client_cpu, 2), flush=True)
    for t in targets:
        R = runs[t]
        med = statistics.median(r["rate"] for r in R)
        tot = sum(r["logins"] for r in R)
        cpu_per_k = {x: round(sum(r["cpu"][x] for r in R) / max(tot, 1) * 1000, 3) for x in R[0]["cpu"]}
        bench.record("login_concurrent", target=t, clients=a.c, secs_per_round=a.secs, rounds=len(R),
                     rates=[round(r["rate"], 1) for r in R], median_logins_per_s=round(med, 1),
                     total_logins=tot, errors=sum(r["errors"] for r in R),
                     cpu_s_per_1000_logins=cpu_per_k,
                     client_cpu_s_per_1000=round(sum(r["client_cpu"] for r in R) / max(tot, 1) * 1000, 3))
    if "watched" in targets:
        # The cockpit's own cost, without logins beside it to blur it: what
        # mailshift spends serving the watchers, per second watched.
        await asyncio.sleep(1.0)
        before = bench.cpu_ticks("mailshift")
        t0 = time.perf_counter()
        with Watcher(bench.PORTS["admin"]) as w:
            await asyncio.sleep(a.secs)
        secs = time.perf_counter() - t0
        cpu = (bench.cpu_ticks("mailshift") - before) / bench.TICK
        bench.record("cockpit_alone", secs=round(secs, 2), polls=w.polls, errors=w.errors,
                     cpu_ms_per_s=round(cpu / secs * 1000, 3))


# ---------------------------------------------------------------- FETCH of the ~10 MB message
def fetch(a):
    targets = a.targets
    uid = bench.ensure_big(a.user, a.size)  # APPENDs once via the store's master user admin/adminpw
    acct = {"direct": ["direct"], "mailshift": ["mailshift", "direct"], "dproxy": ["dproxy", "direct"],
            "mscopy": ["mscopy", "direct"]}
    sizes, rates = {}, {t: [] for t in targets}
    cpu = {t: {x: 0 for x in acct[t]} for t in targets}
    moved = {t: 0 for t in targets}
    conns = {t: bench.Blk(bench.PORTS[t], a.user) for t in targets}
    for t in targets:
        conns[t].cmd("EXAMINE INBOX")
        conns[t].cmd(f"UID FETCH {uid} BODY.PEEK[]")  # warm page cache
    for rnd in range(a.rounds):
        order = targets[rnd % len(targets):] + targets[:rnd % len(targets)]
        for t in order:
            c0 = {x: bench.cpu_ticks(x) for x in acct[t]}
            for _ in range(a.n // a.rounds):
                t0 = time.perf_counter()
                got = conns[t].cmd(f"UID FETCH {uid} BODY.PEEK[]")
                dt = time.perf_counter() - t0
                n = max(len(x) for x in got)
                moved[t] += n
                sizes[t] = n
                rates[t].append(n / dt / 1e6)
            for x in acct[t]:
                cpu[t][x] += bench.cpu_ticks(x) - c0[x]
    for t in targets:
        conns[t].cmd("LOGOUT")
        gb = moved[t] / 1e9
        bench.record("fetch", target=t, uid=uid, bytes=sizes[t], n=len(rates[t]),
                     median_MBps=round(statistics.median(rates[t]), 1), min_MBps=round(min(rates[t]), 1),
                     max_MBps=round(max(rates[t]), 1),
                     cpu_s_per_GB={x: round(v / bench.TICK / gb, 3) for x, v in cpu[t].items()})


# ---------------------------------------------------------------- idle sessions (bench.cmd_idle as is)
async def idle(a):
    await bench.cmd_idle(argparse.Namespace(targets=",".join(a.targets), sessions=a.sessions,
                                            parallel=a.parallel))


# ---------------------------------------------------------------- report
def fmt(x, nd=2):
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def report(a):
    rows = [json.loads(l) for l in open(a.out) if l.strip()]
    rows = [r for r in rows if r.get("run_id") == a.run_id]
    by = {}
    for r in rows:
        by.setdefault((r["kind"], r.get("target")), r)  # first of each in this run
    meta = next((r for r in rows if r["kind"] == "meta"), {})

    def g(kind, t):
        return by.get((kind, t))

    lines = []
    P = lines.append
    P(f"## mailshift IMAP proxy benchmark ({'quick' if meta.get('quick') else 'full'} run {a.run_id})")
    P("")
    for k in ("machine", "mailshift", "store", "dproxy", "client", "idle_setup"):
        if k in meta:
            P(f"- {k}: {meta[k]}")
    P("")
    P("| figure | direct | mailshift | Dovecot proxy | mailshift target |")
    P("|---|---|---|---|---|")
    d = {t: g("login_latency", t) for t in TARGETS}
    if all(d.values()):
        P("| login: LOGIN OK p50 / p99 ms | " + " | ".join(
            f"{d[t]['login_p50_ms']:.2f} / {d[t]['login_p99_ms']:.2f}" for t in TARGETS) + " | |")
        P("| login: full cycle p50 / p99 ms (n per target) | " + " | ".join(
            f"{d[t]['cycle_p50_ms']:.2f} / {d[t]['cycle_p99_ms']:.2f} ({d[t]['n']})" for t in TARGETS) + " | |")
        add = {t: d[t]["cycle_p50_ms"] - d["direct"]["cycle_p50_ms"] for t in PROXIES}
        addl = {t: d[t]["login_p50_ms"] - d["direct"]["login_p50_ms"] for t in PROXIES}
        ok = "met" if add["mailshift"] < 0.5 else "MISSED"
        P(f"| added p50 ms, cycle (LOGIN OK) | — | {add['mailshift']:+.2f} ({addl['mailshift']:+.2f}) | "
          f"{add['dproxy']:+.2f} ({addl['dproxy']:+.2f}) | < 0.5: {ok} |")
    c = {t: g("login_concurrent", t) for t in TARGETS}
    if all(c.values()):
        P("| logins/s, 16 clients (median; rounds) | " + " | ".join(
            f"{c[t]['median_logins_per_s']:.1f} ({' '.join(str(x) for x in c[t]['rates'])})" for t in TARGETS) + " | |")
        ratio = {t: c[t]["median_logins_per_s"] / c["direct"]["median_logins_per_s"] for t in PROXIES}
        ok = "met" if ratio["mailshift"] >= 0.95 else "MISSED"
        P(f"| logins/s vs direct | 1.00 | {ratio['mailshift']:.3f} | {ratio['dproxy']:.3f} | ≥ 0.95: {ok} |")
        cpu = {t: c[t]["cpu_s_per_1000_logins"] for t in TARGETS}
        ok = "met" if cpu["mailshift"]["mailshift"] <= 0.4 else "MISSED"
        P(f"| proxy CPU ms per login | — | {cpu['mailshift']['mailshift']:.3f} | {cpu['dproxy']['dproxy']:.3f} | ≤ 0.4: {ok} |")
        P("| store (Dovecot) CPU ms per login | " + " | ".join(f"{cpu[t]['direct']:.2f}" for t in TARGETS) + " | |")
        P("| slapd CPU ms per login | " + " | ".join(f"{cpu[t]['ldap']:.3f}" for t in TARGETS) + " | |")
        P("| client CPU ms per login | " + " | ".join(f"{c[t]['client_cpu_s_per_1000']:.2f}" for t in TARGETS) + " | |")
        P("| errors | " + " | ".join(str(c[t]["errors"]) for t in TARGETS) + " | |")
        w = g("login_concurrent", "watched")
        if w:
            P(f"| mailshift with its cockpit watched (overview + /metrics polled every second), same run: "
              f"{w['median_logins_per_s']:.1f} logins/s ({' '.join(str(x) for x in w['rates'])}) = "
              f"{w['median_logins_per_s'] / c['mailshift']['median_logins_per_s']:.3f}× unwatched, "
              f"{w['cpu_s_per_1000_logins']['mailshift']:.3f} CPU ms per login "
              f"({w['cpu_s_per_1000_logins']['mailshift'] / cpu['mailshift']['mailshift']:.3f}× unwatched), "
              f"{w['errors']} errors | | | | |")
        alone = g("cockpit_alone", None)
        if alone:
            per_login = alone["cpu_ms_per_s"] / c["mailshift"]["median_logins_per_s"]
            P(f"| the cockpit alone (watched {alone['secs']} s, no logins, {alone['polls']} requests): "
              f"{alone['cpu_ms_per_s']:.2f} CPU ms per second watched = {per_login:.4f} ms per login at "
              f"mailshift's rate ({per_login / cpu['mailshift']['mailshift'] * 100:.2f} % of its CPU per login) | | | | |")
    f = {t: g("fetch", t) for t in TARGETS}
    if all(f.values()):
        P(f"| FETCH {f['direct']['bytes']:,} B, MB/s median (min–max, n) | " + " | ".join(
            f"{f[t]['median_MBps']:.0f} ({f[t]['min_MBps']:.0f}–{f[t]['max_MBps']:.0f}, {f[t]['n']})" for t in TARGETS) + " | |")
        ratio = {t: f[t]["median_MBps"] / f["direct"]["median_MBps"] for t in PROXIES}
        ok = "met" if ratio["mailshift"] >= 0.97 else "MISSED"
        P(f"| FETCH MB/s vs direct | 1.00 | {ratio['mailshift']:.3f} | {ratio['dproxy']:.3f} | ≥ 0.97: {ok} |")
        P(f"| proxy CPU s per GB fetched | — | {f['mailshift']['cpu_s_per_GB']['mailshift']:.2f} | "
          f"{f['dproxy']['cpu_s_per_GB']['dproxy']:.2f} | |")
        P("| store CPU s per GB fetched | " + " | ".join(f"{f[t]['cpu_s_per_GB']['direct']:.2f}" for t in TARGETS) + " | |")
        cp = g("fetch", "mscopy")
        if cp:
            P(f"| mailshift with `splice = true` (splice(2)), same run: {cp['median_MBps']:.0f} MB/s = "
              f"{cp['median_MBps'] / f['direct']['median_MBps']:.3f}× direct, "
              f"{cp['cpu_s_per_GB']['mscopy']:.2f} CPU s/GB | | | | |")
    i = {t: g("idle_memory", t) for t in PROXIES}
    if all(i.values()):
        ps = {t: i[t]["per_session"] for t in PROXIES}
        P("| idle (IDLE) sessions open / errors / secs to open | — | " + " | ".join(
            f"{i[t]['sessions']} / {i[t]['errors']} / {i[t]['open_secs']}" for t in PROXIES) + " | |")
        ok = "met" if ps["mailshift"]["mailshift"]["pss_kib"] <= 12 else "MISSED"
        P("| proxy KiB per idle session, PSS / RSS | — | " + " | ".join(
            f"{ps[t][t]['pss_kib']:.1f} / {ps[t][t]['rss_kib']:.1f}" for t in PROXIES) + f" | ≤ 12: {ok} |")
        P("| proxy processes before → after; RSS total MiB | — | " + " | ".join(
            f"{ps[t][t]['procs_before']} → {ps[t][t]['procs_after']}; {ps[t][t]['rss_total_mib']}" for t in PROXIES) + " | |")
        P("| store KiB per session behind it, PSS / RSS | — | " + " | ".join(
            f"{ps[t]['clone']['pss_kib']:.0f} / {ps[t]['clone']['rss_kib']:.0f}" for t in PROXIES) + " | |")
        P("| TCP socket memory KiB per session | — | " + " | ".join(
            f"{i[t]['tcp_sockmem_kib_per_session']:.2f}" for t in PROXIES) + " | |")
        if any(i[t]["first_error"] for t in PROXIES):
            for t in PROXIES:
                if i[t]["first_error"]:
                    P(f"\n{t} first idle error: {i[t]['first_error']}")
    P("")
    P("Peers on this machine (RESULTS.md): Stalwart proxy +1.1 ms p50, 0.63 CPU-ms/login; "
      "nginx 9 KiB/idle session; Dovecot proxy 0.81× direct FETCH.")
    print("\n".join(lines), flush=True)
    if a.markdown:
        with open(a.markdown, "w") as fh:
            fh.write("\n".join(lines) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("phase", choices=["warm", "login", "conc", "fetch", "idle", "report", "meta"])
    ap.add_argument("--lab")
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--targets", type=targets_arg, default=TARGETS)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--secs", type=float, default=10)
    ap.add_argument("-c", type=int, default=16)
    ap.add_argument("--user", default="user0002")
    ap.add_argument("--size", type=int, default=10_000_000)
    ap.add_argument("--sessions", type=int, default=10000)
    ap.add_argument("--parallel", type=int, default=32)
    ap.add_argument("--run-id")
    ap.add_argument("--markdown")
    ap.add_argument("--meta-json")
    a = ap.parse_args()
    if a.phase == "report":
        return report(a)
    lab = setup(a.lab, a.out, a.phase, a.quick)
    if a.phase == "meta":
        bench.record("meta", **json.loads(a.meta_json))
    elif a.phase == "warm":
        asyncio.run(warm(a))
    elif a.phase == "login":
        asyncio.run(bench.cmd_login(argparse.Namespace(targets=",".join(a.targets), n=a.n, rounds=a.rounds)))
    elif a.phase == "conc":
        asyncio.run(conc(a))
    elif a.phase == "fetch":
        fetch(a)
    elif a.phase == "idle":
        asyncio.run(idle(a))


if __name__ == "__main__":
    main()
