#!/usr/bin/env python3
"""Summarise a bench/run.sh output directory (runs.tsv, rss.tsv, raw wrk output, strangler
metrics) as markdown.

Adapted from the project's shared harness (shared/bench/report.py). Medians over rounds.
"x nginx" is the median over rounds of (target / nginx proxy_pass in the same round and
scenario), so slow drifts of the noisy machine cancel out; the same for "x mirror" (against
nginx-mirror) and for the p99 ratio. CPU us/req = CPU time of the target's process tree during
the wrk run / requests completed (for "direct" that is the origin nginx; for proxies the proxy
only, not the origins).
"""
import csv
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
REF = "nginx"
MIRROR = "nginx-mirror"
NAN = float("nan")


def to_ms(v):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", v)
    return float(m.group(1)) * UNIT[m.group(2)] if m else NAN


def parse_wrk(text):
    r = {"rps": NAN, "p50": NAN, "p99": NAN, "reqs": 0, "errors": 0, "timeouts": 0}
    if m := re.search(r"Requests/sec:\s+([\d.]+)", text):
        r["rps"] = float(m.group(1))
    if m := re.search(r"^\s*50%\s+(\S+)", text, re.M):
        r["p50"] = to_ms(m.group(1))
    if m := re.search(r"^\s*99%\s+(\S+)", text, re.M):
        r["p99"] = to_ms(m.group(1))
    if m := re.search(r"(\d+) requests in", text):
        r["reqs"] = int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text):
        r["errors"] += sum(int(x) for x in m.groups())
        r["timeouts"] += int(m.group(4))
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", text):
        r["errors"] += int(m.group(1))
    return r


def med(xs):
    xs = [x for x in xs if x == x]  # drop NaN
    return statistics.median(xs) if xs else NAN


def fmt(x, nd=0):
    return "n/a" if x != x else f"{x:,.{nd}f}"


def fmt_reuse(x):
    return "all reused" if x == float("inf") else fmt(x, 0)


def metrics(path):
    """Prometheus text -> {(name, frozenset(labels)): value}."""
    out = {}
    if not path.exists():
        return out
    for line in path.read_text(errors="replace").splitlines():
        m = re.fullmatch(r"([a-z_]+)(?:\{(.*)\})? ([0-9.eE+-]+|NaN|\+Inf)", line.strip())
        if not m:
            continue
        labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def sum_by(ms, name, label):
    acc = defaultdict(float)
    for (n, labels), v in ms.items():
        if n == name:
            acc[dict(labels).get(label, "")] += v
    return dict(acc)


def main(out):
    out = Path(out)
    rows = list(csv.DictReader(open(out / "runs.tsv"), delimiter="\t"))
    data = defaultdict(dict)  # (path, conns, target) -> rep -> result
    order, scen = [], []
    for row in rows:
        r = parse_wrk(Path(row["raw"]).read_text(errors="replace"))
        ticks, tck = int(row["cpu_ticks"]), int(row["clk_tck"])
        r["cpu_us"] = ticks / tck / r["reqs"] * 1e6 if r["reqs"] else NAN
        oc, orq = int(row.get("origin_conns") or 0), int(row.get("origin_reqs") or 0)
        # origin requests per new origin connection during the run: high = upstream keep-alive works
        r["reuse"] = orq / oc if oc > 0 else (float("inf") if orq > 0 else NAN)
        r["rss_mib"] = int(row.get("rss_kib") or 0) / 1024 or NAN
        key = (row["path"], int(row["conns"]))
        data[key + (row["target"],)][int(row["rep"])] = r
        if row["target"] not in order:
            order.append(row["target"])
        if key not in scen:
            scen.append(key)
    order = sorted(order, key=lambda t: (t != "direct", not t.startswith("nginx"),
                                         not t.startswith("haproxy"), order.index(t)))

    def per_round(key, t, field="rps", ref=REF):
        base = data.get(key + (ref,), {})
        return [res[field] / base[rep][field] for rep, res in sorted(data.get(key + (t,), {}).items())
                if rep in base and base[rep][field] > 0]

    def ratio(key, t, field="rps", ref=REF):
        return med(per_round(key, t, field, ref))

    def stat(key, t, field):
        return med([r[field] for r in data.get(key + (t,), {}).values()])

    rss = {}
    if (out / "rss.tsv").exists():
        for row in csv.DictReader(open(out / "rss.tsv"), delimiter="\t"):
            rss[row["target"]] = int(row["peak_rss_kib"] or 0) / 1024

    meta = (out / "meta.txt").read_text() if (out / "meta.txt").exists() else ""
    paced = "paced:" in meta
    print("## strangler data-path benchmark\n")
    print("```\n" + meta.strip() + "\n```\n")
    print("### Throughput relative to nginx proxy_pass (same round), median of rounds\n")
    print("| target | " + " | ".join(f"`{p}` c{c}" for p, c in scen) + " | peak RSS MiB |")
    print("|---|" + "---:|" * (len(scen) + 1))
    for t in order:
        print(f"| {t} | " + " | ".join(fmt(ratio(k, t), 2) for k in scen)
              + f" | {fmt(rss.get(t, NAN), 1)} |")

    capacity = {}  # (path, conns) -> rep -> nginx closed-loop req/s (PACE_LOAD runs)
    pause = defaultdict(list)
    if (out / "capacity.tsv").exists():
        for row in csv.DictReader(open(out / "capacity.tsv"), delimiter="\t"):
            key = (row["path"], int(row["conns"]))
            capacity.setdefault(key, {})[int(row["rep"])] = float(row["nginx_rps"] or 0)
            pause[key].append(float(row["pace_ms"]))
    if capacity:
        print("\n### Offered load (PACE_LOAD): capacity measured before each round\n")
        print("Capacity is nginx's closed-loop req/s just before the round; each target's load is "
              "its req/s in that round over that capacity (median of rounds).\n")
        print("| | " + " | ".join(f"`{p}` c{c}" for p, c in scen) + " |")
        print("|---|" + "---:|" * len(scen))
        print("| capacity req/s | " + " | ".join(fmt(med(list(capacity.get(k, {}).values())))
                                               for k in scen) + " |")
        print("| pause ms | " + " | ".join(fmt(med(pause.get(k, [])), 2) for k in scen) + " |")
        for t in order:
            cells = []
            for k in scen:
                cap = capacity.get(k, {})
                cells.append(fmt(med([r["rps"] / cap[rep] for rep, r in data.get(k + (t,), {}).items()
                                      if cap.get(rep, 0) > 0]), 2))
            print(f"| load of {t} | " + " | ".join(cells) + " |")

    # resident memory after each run, in run order: flat = bounded
    print("\n### Resident memory (MiB) right after each run, in run order, and the peak\n")
    print("| target | RSS after each run | peak (VmHWM) |")
    print("|---|---|---:|")
    for t in order:
        runs = [(int(row["rep"]), scen.index((row["path"], int(row["conns"]))))
                for row in rows if row["target"] == t]
        seq = [data[scen[s] + (t,)][rep]["rss_mib"] for rep, s in sorted(runs)]
        if any(x == x for x in seq):
            print(f"| {t} | {' / '.join(fmt(x, 0) for x in seq)} | {fmt(rss.get(t, NAN), 1)} |")
    for key in scen:
        p, c = key
        print(f"\n### GET `{p}`, wrk -c{c}\n")
        print("| target | req/s | x nginx | x mirror | p50 ms | p99 ms | p99 x nginx "
              "| CPU us/req | origin req/conn | errors | rounds |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for t in order:
            res = list(data.get(key + (t,), {}).values())
            if not res:
                continue
            print(f"| {t} | {fmt(stat(key, t, 'rps'))} | {fmt(ratio(key, t), 2)} "
                  f"| {fmt(ratio(key, t, ref=MIRROR), 2)} "
                  f"| {fmt(stat(key, t, 'p50'), 3)} | {fmt(stat(key, t, 'p99'), 3)} "
                  f"| {fmt(ratio(key, t, 'p99'), 2)} "
                  f"| {fmt(stat(key, t, 'cpu_us'), 1)} | {fmt_reuse(stat(key, t, 'reuse'))} "
                  f"| {sum(r['errors'] for r in res)} | {len(res)} |")

    # strangler's own view: which side served, what the shadow did
    shown = False
    for t in order:
        ms = metrics(out / f"metrics-{t}.txt")
        if not ms:
            continue
        if not shown:
            print("\n### strangler counters at the end of the run (all rounds, warm-up included)\n")
            print("| target | requests by upstream | shadow comparisons | shadow dropped |")
            print("|---|---|---|---|")
            shown = True
        sides = sum_by(ms, "strangler_requests_total", "upstream")
        comps = sum_by(ms, "strangler_shadow_comparisons_total", "result")
        drops = sum_by(ms, "strangler_shadow_dropped_total", "reason")
        cell = lambda d: ", ".join(f"{k} {v:,.0f}" for k, v in sorted(d.items()) if v) or "–"
        print(f"| {t} | {cell(sides)} | {cell(comps)} | {cell(drops)} |")

    # the targets, computed from this run
    print("\n### Targets of the issue (this run)\n")
    print("| target | scenario | measured | goal | met |")
    print("|---|---|---|---|---|")

    def check(name, key, measured, goal, ok):
        if measured != measured:
            return
        print(f"| {name} | `{key[0]}` c{key[1]} | {measured} | {goal} | {'yes' if ok else 'no'} |")

    for key in scen:
        r = ratio(key, "strangler")
        if not paced:  # paced, every target serves the offered load: req/s says nothing
            check("pass-through req/s", key, f"{fmt(r, 2)}x nginx" if r == r else r, ">= 1.0x",
                  r >= 1.0)
        r = ratio(key, "strangler", "p99")
        check("pass-through p99", key, f"{fmt(r, 2)}x nginx" if r == r else r, "<= 1.0x", r <= 1.0)
        r = ratio(key, "strangler-shadow", ref=MIRROR)
        check("shadow 100% req/s", key, f"{fmt(r, 2)}x nginx-mirror" if r == r else r, ">= 1.0x",
              r >= 1.0)
        a, b = stat(key, "strangler-shadow-slow", "p99"), stat(key, "strangler", "p99")
        r = ratio(key, "strangler-shadow-slow", "p99", ref="strangler")
        if r == r:
            rounds = per_round(key, "strangler-shadow-slow", "p99", ref="strangler")
            check("p99 with a 1 s candidate" + (" (paced)" if paced else ""), key,
                  f"{r:.2f}x without shadow, per round {' / '.join(f'{x:.2f}' for x in rounds)}"
                  f" ({fmt(a, 2)} ms vs {fmt(b, 2)} ms)", "<= 1.10x", r <= 1.1)
        r = ratio(key, "strangler-shadow-slow", "p99", ref="strangler-side-slow")
        if r == r:
            rounds = per_round(key, "strangler-shadow-slow", "p99", ref="strangler-side-slow")
            check("p99 with a 1 s candidate, against the control (the candidate's traffic sent "
                  "by a second wrk, no shadow)" + (" (paced)" if paced else ""), key,
                  f"{r:.2f}x, per round {' / '.join(f'{x:.2f}' for x in rounds)}"
                  f" ({fmt(stat(key, 'strangler-shadow-slow', 'p99'), 2)} ms vs "
                  f"{fmt(stat(key, 'strangler-side-slow', 'p99'), 2)} ms)", "(strangler's own share)",
                  r <= 1.1)
        a = stat(key, "strangler-shadow", "p99")
        b = stat(key, "strangler-shadow-slow", "p99")
        if a == a and b == b and a > 0:
            check("p99 1 s candidate vs fast candidate", key,
                  f"{fmt(b, 2)} ms vs {fmt(a, 2)} ms ({b / a:.2f}x)", "(for reading)", b <= 1.1 * a)
    for t, goal, limit in (("strangler", "< 64 MiB", 64), ("strangler-shadow-hang", "bounded", None)):
        if t in rss:
            ok = rss[t] < limit if limit else True
            print(f"| peak RSS {t} | all rounds, c{','.join(str(c) for _, c in scen)} "
                  f"| {fmt(rss[t], 1)} MiB | {goal} | {'yes' if ok else 'no'}"
                  f"{'' if limit else ' (see shadow dropped: overload/timeout)'} |")

    skipped = out / "skipped"
    if skipped.exists():
        print("\nNot measured (failed to start or failed the 200/size check): "
              + ", ".join(skipped.read_text().split()))
    print("\nx nginx / x mirror: req/s over nginx proxy_pass / nginx-mirror in the same round "
          "(median of rounds); p99 x nginx likewise for p99 latency. CPU us/req: CPU time of "
          "the target's processes / requests (direct: the origin; proxies: the proxy alone). "
          "origin req/conn: requests the origin (:18080) served per connection it accepted "
          "during the run (\"all reused\": no new connection at all). errors: wrk socket "
          "errors + non-2xx, summed over rounds. peak RSS: VmHWM summed over the target's "
          "processes (nginx: master + worker) at the end of all rounds.")


if __name__ == "__main__":
    main(sys.argv[1])
