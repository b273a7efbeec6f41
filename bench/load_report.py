#!/usr/bin/env python3
"""load_report: turns the runs of bench/load.sh into load.json, load.md and
load.svg in its results directory.

Input: DIR/raw/runs.jsonl (one line per run, as tern-load and mqtt-load print
it, or an error record) and DIR/meta.json. load.json is a list of one record
per system x N x mode with the fields the load issue asks for first, then the
rest of the generator's line. The plot is SVG written here, so that the bench needs
no plotting package.

Usage: python3 bench/load_report.py DIR
"""
import json
import math
import os
import sys

FIELDS = ["system", "pairs", "mode", "offered_per_s", "delivered_per_s", "p50_ms", "p99_ms",
          "lost", "dups", "reconnects", "relay_cpu_us_per_msg"]
SYSTEMS = ["tern", "mosquitto"]
COLOURS = {"tern": "#d62728", "mosquitto": "#1f77b4"}


def load(dirname):
    runs = []
    with open(os.path.join(dirname, "raw", "runs.jsonl")) as f:
        for line in f:
            line = line.strip()
            if line:
                runs.append(json.loads(line))
    with open(os.path.join(dirname, "meta.json")) as f:
        meta = json.load(f)
    return runs, meta


def ordered(r):
    out = {k: r.get(k) for k in FIELDS}
    out.update({k: v for k, v in r.items() if k not in out})
    return out


def fmt(v, digits=0):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def find(runs, system, pairs, mode):
    for r in runs:
        if r["system"] == system and r["pairs"] == pairs and r["mode"] == mode and "error" not in r:
            return r
    return None


def ratio(a, b):
    return f"{a / b:.2f}" if a is not None and b else "-"


def table(runs, meta):
    lines = []
    lines.append("| system | pairs | mode | offered msg/s | delivered msg/s | p50 ms | p99 ms | lost | "
                 "dups | reconnects | relay CPU us/msg | relay CPU % | generator CPU % | limit |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in sorted(runs, key=lambda r: (r["pairs"], r["mode"] != "saturate",
                                         SYSTEMS.index(r["system"]) if r["system"] in SYSTEMS else 9)):
        if "error" in r:
            lines.append(f"| {r['system']} | {r['pairs']} | {r['mode']} | {fmt(r.get('offered_per_s'))} "
                         f"| {r['error']} | | | | | | | | | |")
            continue
        mode = r["mode"] + (f" (window {r['window']})" if r["mode"] == "saturate" else " (half peak)")
        lines.append(
            f"| {r['system']} | {r['pairs']} | {mode} | {fmt(r['offered_per_s'])} | "
            f"{fmt(r['delivered_per_s'])} | {fmt(r['p50_ms'], 2)} | {fmt(r['p99_ms'], 2)} | "
            f"{r['lost']} | {r['dups']} | {r['reconnects']} | {fmt(r['relay_cpu_us_per_msg'], 1)} | "
            f"{fmt(r['relay_cpu_pct'])} | {fmt(r['gen_cpu_pct'])} | {r['limit']} |")
    return lines


def comparison(runs):
    lines = ["| pairs | peak msg/s tern / mosquitto | ratio | relay CPU us/msg at peak, tern / "
             "mosquitto | p99 ms at half peak, tern / mosquitto | ratio |",
             "|---|---|---|---|---|---|"]
    for n in sorted({r["pairs"] for r in runs}):
        ts, ms = find(runs, "tern", n, "saturate"), find(runs, "mosquitto", n, "saturate")
        to, mo = find(runs, "tern", n, "open"), find(runs, "mosquitto", n, "open")
        tp, mp = (ts or {}).get("delivered_per_s"), (ms or {}).get("delivered_per_s")
        tc, mc = (ts or {}).get("relay_cpu_us_per_msg"), (ms or {}).get("relay_cpu_us_per_msg")
        t99, m99 = (to or {}).get("p99_ms"), (mo or {}).get("p99_ms")
        lines.append(f"| {n} | {fmt(tp)} / {fmt(mp)} | {ratio(tp, mp)} | {fmt(tc, 1)} / {fmt(mc, 1)} "
                     f"| {fmt(t99, 2)} / {fmt(m99, 2)} | {ratio(t99, m99)} |")
    return lines


def cluster(runs):
    """The cluster store beside the single relay on SQLite: delivered msg/s
    saturated, p99 at half peak, and the CPU of every process that serves
    (relays and NATS servers) per delivered message, for 1, 2 and 3 relays."""
    systems = ["tern"] + sorted({r["system"] for r in runs if r["system"].startswith("tern-cluster-")})
    lines = ["| pairs | store | relays | peak msg/s | x single | p99 ms at half peak | CPU us/msg "
             "(relays + NATS) | x single | lost | dups | reordered |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for n in sorted({r["pairs"] for r in runs}):
        base = find(runs, "tern", n, "saturate") or {}
        for s in systems:
            sat, half = find(runs, s, n, "saturate"), find(runs, s, n, "open")
            if not sat:
                continue
            store = "SQLite" if s == "tern" else "JetStream R3"
            relays = 1 if s == "tern" else sat.get("relays")
            p, c = sat.get("delivered_per_s"), sat.get("cpu_us_per_msg_all")
            lost = sat.get("lost", 0) + (half or {}).get("lost", 0)
            dups = sat.get("dups", 0) + (half or {}).get("dups", 0)
            reo = sat.get("reordered", 0) + (half or {}).get("reordered", 0)
            lines.append(f"| {n} | {store} | {relays} | {fmt(p)} | {ratio(p, base.get('delivered_per_s'))} "
                         f"| {fmt((half or {}).get('p99_ms'), 2)} | {fmt(c, 1)} | "
                         f"{ratio(c, base.get('cpu_us_per_msg_all'))} | {lost} | {dups} | {reo} |")
    return lines


def svg(runs, path):
    """Three panels against pairs (log 2): peak msg/s, relay CPU per message
    at peak, p99 at half peak (log 10)."""
    panels = [("delivered msg/s, saturated", "saturate", "delivered_per_s", False),
              ("relay CPU us/msg, saturated", "saturate", "relay_cpu_us_per_msg", False),
              ("p99 ms at half of own peak", "open", "p99_ms", True)]
    pw, ph, ml, mt, mb = 300, 220, 60, 30, 40
    width, height = len(panels) * (pw + ml) + 20, ph + mt + mb + 30
    ns = sorted({r["pairs"] for r in runs})
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="white"/>']
    for pi, (title, mode, key, logy) in enumerate(panels):
        x0, y0 = pi * (pw + ml) + ml, mt
        pts = {s: [(r["pairs"], r[key]) for r in sorted(runs, key=lambda r: r["pairs"])
                   if r["system"] == s and r["mode"] == mode and "error" not in r
                   and r.get(key) is not None and r[key] > 0] for s in SYSTEMS}
        vals = [v for s in SYSTEMS for _, v in pts[s]]
        if not vals or not ns:
            continue
        if logy:
            lo, hi = math.floor(math.log10(min(vals))), math.ceil(math.log10(max(vals)))
            hi = hi if hi > lo else lo + 1
            fy = lambda v: y0 + ph - (math.log10(v) - lo) / (hi - lo) * ph
            ticks = [10 ** e for e in range(lo, hi + 1)]
        else:
            top = max(vals) * 1.1
            fy = lambda v: y0 + ph - v / top * ph
            step = 10 ** math.floor(math.log10(top / 4))
            step *= 5 if top / step > 20 else 2 if top / step > 8 else 1
            ticks = [k * step for k in range(int(top / step) + 1)]
        nlo, nhi = math.log2(ns[0]), math.log2(ns[-1])
        fx = (lambda n: x0 + (math.log2(n) - nlo) / (nhi - nlo) * pw) if nhi > nlo else \
            (lambda n: x0 + pw / 2)
        out.append(f'<text x="{x0 + pw / 2}" y="{y0 - 10}" text-anchor="middle" '
                   f'font-weight="bold">{title}</text>')
        out.append(f'<rect x="{x0}" y="{y0}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>')
        for t in ticks:
            y = fy(t)
            out.append(f'<line x1="{x0}" x2="{x0 + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
            label = f"{t:g}" if t < 1e4 else f"{t / 1000:g}k"
            out.append(f'<text x="{x0 - 4}" y="{y + 4:.1f}" text-anchor="end">{label}</text>')
        for n in ns:
            out.append(f'<text x="{fx(n):.1f}" y="{y0 + ph + 14}" text-anchor="middle">{n}</text>')
        out.append(f'<text x="{x0 + pw / 2}" y="{y0 + ph + 30}" text-anchor="middle">pairs</text>')
        for s in SYSTEMS:
            if not pts[s]:
                continue
            d = " ".join(f"{fx(n):.1f},{fy(v):.1f}" for n, v in pts[s])
            out.append(f'<polyline points="{d}" fill="none" stroke="{COLOURS[s]}" stroke-width="2"/>')
            for n, v in pts[s]:
                out.append(f'<circle cx="{fx(n):.1f}" cy="{fy(v):.1f}" r="3" fill="{COLOURS[s]}"/>')
    for i, s in enumerate(SYSTEMS):
        x = ml + i * 150
        out.append(f'<rect x="{x}" y="{height - 16}" width="12" height="4" fill="{COLOURS[s]}"/>')
        out.append(f'<text x="{x + 16}" y="{height - 11}">{s}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    d = sys.argv[1]
    runs, meta = load(d)
    with open(os.path.join(d, "load.json"), "w") as f:
        json.dump([ordered(r) for r in runs], f, indent=1)
        f.write("\n")
    svg(runs, os.path.join(d, "load.svg"))
    bad = [r for r in runs if "error" in r or r.get("lost") or r.get("dups") or r.get("failed")]
    gen = [r for r in runs if r.get("limit") == "generator"]
    md = [f"# Load: ternd and mosquitto side by side ({meta['mode']})", "",
          f"`{meta['command']}`, {meta['stamp']}, commit {meta['git']}, {meta['host']}, "
          f"{meta['cpus']} CPUs, mosquitto {meta['mosquitto']}; {meta['duration_s']} s a run "
          f"(drain up to {meta['drain_s']} s), window {meta['window']} per sender when "
          f"saturated, 100-byte messages, loopback; {meta['seconds']} s in all.", "",
          "## Side by side", ""] + comparison(runs) + (
          ["", "## The cluster store beside the single relay", "",
           f"A 3-node NATS JetStream cluster (nats-server {meta.get('nats_server', '?')}, R3) and "
           "1, 2 or 3 relays on it, all on this machine with the generator; pair i's sender on "
           "relay i mod K, its receiver on relay i+1 mod K. CPU: relays and NATS servers (for "
           "SQLite: ternd), utime + stime over the whole run (connect, send, drain), per message "
           "delivered.", ""] + cluster(runs)
          if meta.get("cluster") else []) + ["", "## Every run", ""] + table(runs, meta) + [
          "", "![load](load.svg)", "",
          "## Reading it", "",
          "- Saturated: each sender keeps at most `window` messages unacknowledged by the relay "
          "(tern: TERN_EV_SENT; MQTT: PUBACK); latency from the send call. Open loop (half peak): "
          "sends on a fixed schedule at half the peak that system measured at that N, latency "
          "from the scheduled time, so a stall is not hidden (coordinated omission).",
          "- Lost: sent but not delivered by the end of the drain; dups: delivered twice.",
          "- Relay CPU: utime + stime of ternd / mosquitto over the send phase, per message "
          "delivered in it. The generator runs in one thread on the same 2-core machine: when "
          "its CPU is near 100 % (limit `generator`) the row measures the generator, not the "
          "relay.",
          "- Durability differs: ternd stores each message in SQLite and fsyncs the group "
          "commit before the sender's SENT; mosquitto (persistence true) keeps QoS 1 messages "
          "in memory and writes its whole state every autosave_interval (1800 s) and at "
          "shutdown, with no fsync per message: a crash loses what came since the last save.",
          ""]
    st = meta.get("store") or {}
    if st.get("tern_delivered"):
        md.append(f"- ternd's store after every run: {st['store_dedup_rows']} dedup rows and "
                  f"{st['store_inbox_rows']} undelivered messages for {st['tern_delivered']} "
                  f"messages delivered ({st['dedup_rows_per_delivered']} dedup rows and "
                  f"{st['store_bytes_per_delivered']} file bytes per delivered message; the file "
                  f"keeps the pages it grew to). Dedup rows go once the sender settles its "
                  f"cmids (spec/messages.md §2).")
    if gen:
        md.append(f"- {len(gen)} run(s) were limited by the generator: " +
                  ", ".join(f"{r['system']} {r['pairs']} {r['mode']}" for r in gen) + ".")
    if bad:
        md.append(f"- **{len(bad)} run(s) lost, duplicated or refused messages, or failed**: " +
                  ", ".join(f"{r['system']} {r['pairs']} {r['mode']}" for r in bad) +
                  " (see raw/).")
    with open(os.path.join(d, "load.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(comparison(runs)))
    if meta.get("cluster"):
        print("\n".join(cluster(runs)))


if __name__ == "__main__":
    main()
