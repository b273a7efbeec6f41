#!/usr/bin/env python3
"""summarize.py OUTDIR: turns run.sh's raw/ and lat/ into summary.json,
summary.md and one latency-CDF PNG per workload and scenario (gnuplot).

Per run (transport x workload x scenario) it reads:
  (<id> is <transport>.<workload>.<scenario>, with .<run> appended by
  run.sh --repeat N; the tables are the first run's, and "p99 over N
  runs" gives every run's p99 and the spread of the tern/TCP ratio)
  raw/<id>.recv     the receiver's JSON line (latencies, lost, its CPU)
  raw/<id>.send     the sender's JSON line (its CPU)
  raw/<id>.relaycpu the relay's CPU seconds (from /proc, whole life)
  raw/<id>.linkem1/2 linkem's counters (first line: taken right after the
                    workload, before the connect probes)
  raw/<id>.connect  connect probes, one JSON line each (chat runs only)
and, if migrate.sh ran (alone or from run.sh), the migration bench:
  raw/migrate.<system>.mover / .fixed  migclient's JSON lines
  raw/migrate.<system>.relay           ternd's log (handshakes, sessions moved)
  raw/migrate.meta                     its parameters
which become the "migration" section of summary.md and one record per
system (workload "migration") in summary.json.
"""
import json
import math
import os
import subprocess
import sys

TP_ORDER = ["tcp", "enet", "tern", "tern-nofsync", "tern-nocopies"]
WL_ORDER = ["chat", "burst", "big"]


def first_json(path, last=False):
    try:
        lines = [l for l in open(path).read().splitlines() if l.startswith("{")]
    except OSError:
        return None
    if not lines:
        return None
    try:
        return json.loads(lines[-1] if last else lines[0])
    except ValueError:
        return None


def scen_key(sc):
    if sc == "lo":
        return (0, 0, -1)
    rtt = int(sc[1:].split("l")[0].split("g")[0])
    loss = 99 if sc.endswith("ge") else float(sc.split("l")[-1])
    return (1, rtt, loss)


def scen_label(sc):
    if sc == "lo":
        return "loopback"
    rtt, loss = scen_key(sc)[1:]
    return f"RTT {rtt} ms, " + ("GE bursty ~4 %" if loss == 99 else f"loss {loss:g} %")


def median(v):
    v = sorted(v)
    if not v:
        return None
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def main():
    out = sys.argv[1]
    raw = os.path.join(out, "raw")
    ids = sorted({f.rsplit(".", 1)[0] for f in os.listdir(raw) if f.endswith(".recv")})
    recs = []
    for rid in ids:
        # <transport>.<workload>.<scenario>[.<run>] (run.sh --repeat N)
        parts = rid.split(".")
        tp, wl, sc = parts[:3]
        run = int(parts[3]) if len(parts) > 3 else 1
        recv = first_json(os.path.join(raw, rid + ".recv"), last=True)
        send = first_json(os.path.join(raw, rid + ".send"), last=True)
        rtt = scen_key(sc)[1]
        loss = "ge" if sc.endswith("ge") else scen_key(sc)[2] if sc != "lo" else 0
        r = {"transport": tp, "workload": wl, "scenario": sc, "rtt_ms": rtt,
             "loss_pct": loss if loss != "ge" else "ge", "run": run, "id": rid}
        if recv is None:
            r["failed"] = True
            recs.append(r)
            continue
        got = recv["received"] or 0
        try:
            relay_cpu = float(open(os.path.join(raw, rid + ".relaycpu")).read().strip() or 0)
        except (OSError, ValueError):
            relay_cpu = 0.0
        client_cpu = recv["cpu_s"] + (send["cpu_s"] if send else 0)
        wire = None
        lks = [first_json(os.path.join(raw, rid + f".linkem{i}")) for i in (1, 2)]
        if all(lks):
            wire = sum(l[d]["rx_bytes"] for l in lks for d in ("a_to_b", "b_to_a"))
        probes, acks, conns = [], [], []
        try:
            for line in open(os.path.join(raw, rid + ".connect")):
                if line.startswith("{"):
                    j = json.loads(line)
                    if j.get("first_accept_ms") is not None:
                        probes.append(j["first_accept_ms"])
                    acks.append(j.get("ack_ms", j.get("first_accept_ms")))
                    conns.append(j.get("connect_ms"))
        except (OSError, ValueError):
            pass
        r.update({
            "p50_ms": recv["p50_ms"], "p90_ms": recv["p90_ms"], "p99_ms": recv["p99_ms"],
            "p999_ms": recv["p999_ms"], "max_ms": recv["max_ms"], "mean_ms": recv["mean_ms"],
            "sent": recv["sent"], "received": got, "lost": recv["lost"],
            "duplicates": recv["duplicates"], "incomplete_pairs": recv["incomplete_pairs"],
            "wire_bytes_per_msg": round(wire / got, 1) if wire is not None and got else None,
            "cpu_us_per_msg": round((client_cpu + relay_cpu) * 1e6 / got, 1) if got else None,
            "client_cpu_us_per_msg": round(client_cpu * 1e6 / got, 1) if got else None,
            "relay_cpu_us_per_msg": round(relay_cpu * 1e6 / got, 1) if got else None,
            "connect_first_accept_ms": round(median(probes), 2) if probes else None,
            "connect_first_accept_rtts": round(median(probes) / rtt, 2) if probes and rtt else None,
            "connect_probes_ms": probes,
            "connect_ack_ms": round(median(acks), 2) if acks else None,
            "connect_ack_rtts": round(median(acks) / rtt, 2) if acks and rtt else None,
            "connect_ack_probes_ms": acks,
            "connect_ms_probes": conns,
        })
        recs.append(r)
    recs.sort(key=lambda r: (r["run"], WL_ORDER.index(r["workload"]), scen_key(r["scenario"]),
                             TP_ORDER.index(r["transport"]) if r["transport"] in TP_ORDER else 9))
    runs = sorted({r["run"] for r in recs})
    # The path's own round trip, per scenario: linkem adds a fraction of a
    # millisecond to its nominal delay each way. TCP's connect probe takes
    # exactly two round trips to "connected" (SYN/SYN-ACK, then the key
    # exchange; the kernel answers, no polling slack), so the fastest probe
    # over 2 is the path's RTT.
    path_rtt = {}
    for r in recs:
        if r["transport"] == "tcp" and r.get("connect_ms_probes"):
            v = [c for c in r["connect_ms_probes"] if c]
            if v and r["rtt_ms"]:
                path_rtt[(r["run"], r["scenario"])] = min(v) / 2
    for r in recs:
        pr = path_rtt.get((r["run"], r["scenario"]))
        if pr and r.get("connect_first_accept_ms") is not None:
            r["path_rtt_ms"] = round(pr, 2)
            r["connect_first_accept_path_rtts"] = round(r["connect_first_accept_ms"] / pr, 3)
    mig_recs, mig_md = migration(raw)
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(recs + mig_recs, f, indent=1)
    meta = {}
    try:
        meta = json.load(open(os.path.join(out, "meta.json")))
    except (OSError, ValueError):
        pass
    # The tables below are the first run's; with --repeat, "p99 over N runs"
    # gives every run's p99 and the spread of the ratios.
    by = {(r["transport"], r["workload"], r["scenario"]): r for r in recs if r["run"] == runs[0]}
    tps = [t for t in TP_ORDER if any(r["transport"] == t for r in recs)]
    md = [f"# tern bench: {meta.get('mode', '?')} run {meta.get('stamp', '')}", "",
          f"Host {meta.get('host', '?')}, {meta.get('cpus', '?')} CPUs, commit {meta.get('git', '?')}. "
          "Latency is one-way A -> relay -> B (ms); RTT is client <-> relay, so the propagation "
          "floor one way is the RTT. Loss applies to each direction of both links. "
          "tern = ternd defaults (SQLite store, fsync per group commit, data dir on ext4); "
          "tern-nofsync = ternd --no-fsync; tern-nocopies = no redundant copies on either side "
          "(ternd --no-copies, tern_client_config.no_copies); TCP and ENet relays store nothing. "
          "CPU = sender + receiver + relay per delivered message; wire = IP bytes offered to "
          "both links in both directions (acks, pings, losses included) per delivered message. "
          "Ratios < 1 mean tern is better.", ""]
    fmt = lambda v, d=1: "-" if v is None else (f"{v:.{d}f}" if isinstance(v, (int, float)) else str(v))

    def ratio(a, b, key):
        if not a or not b or a.get(key) is None or b.get(key) in (None, 0):
            return "-"
        return f"{a[key] / b[key]:.2f}"

    for wl in WL_ORDER:
        scs = sorted({r["scenario"] for r in recs if r["workload"] == wl}, key=scen_key)
        if not scs:
            continue
        args = meta.get(f"{wl}_args", "")
        md += [f"## {wl} ({args})" + (f", run 1 of {len(runs)}" if len(runs) > 1 else ""), ""]
        head = "| scenario | " + " | ".join(f"{t} p50 / p99 / max" for t in tps)
        head += " | tern/TCP p50 | tern/TCP p99 | tern/ENet p50 | tern/ENet p99 | tern mean / floor | lost " + \
                "/".join(tps) + " | wire B/msg " + "/".join(tps) + " | CPU µs/msg " + "/".join(tps) + " |"
        md += [head, "|" + "---|" * (head.count("|") - 1)]
        for sc in scs:
            cells = [scen_label(sc)]
            for t in tps:
                r = by.get((t, wl, sc))
                cells.append("FAILED" if not r or r.get("failed") else
                             f"{fmt(r['p50_ms'])} / {fmt(r['p99_ms'])} / {fmt(r['max_ms'])}")
            te, tc, en = by.get(("tern", wl, sc)), by.get(("tcp", wl, sc)), by.get(("enet", wl, sc))
            cells += [ratio(te, tc, "p50_ms"), ratio(te, tc, "p99_ms"), ratio(te, en, "p50_ms"),
                      ratio(te, en, "p99_ms")]
            rtt = scen_key(sc)[1]
            cells.append(f"{te['mean_ms'] / rtt:.2f}" if te and not te.get("failed") and rtt else "-")
            for key, d in (("lost", 0), ("wire_bytes_per_msg", 0), ("cpu_us_per_msg", 0)):
                cells.append("/".join(fmt(by.get((t, wl, sc), {}).get(key), d) for t in tps))
            md.append("| " + " | ".join(cells) + " |")
        md.append("")
        md += [f"CDF plots: " + ", ".join(f"[{sc}](cdf_{wl}_{sc}.png)" for sc in scs), ""]
    # Item 9 of the load issue: bytes and CPU per message against TCP's,
    # with copies on (tern) and off (tern-nocopies), chat only.
    cp = sorted({r["scenario"] for r in recs if r["workload"] == "chat" and r["transport"] == "tern-nocopies"
                 and r["run"] == runs[0]}, key=scen_key)
    if cp:
        md += ["## cost per message with copies on and off (chat)", "",
               "Wire bytes and CPU (sender + receiver + relay) per delivered message, and their "
               "ratio to TCP's in the same scenario. Copies on: tern's default (small messages and "
               "DELIVERs are sent again on the COPY channel, spec/messages.md §8); off: "
               "tern-nocopies.", "",
               "| scenario | wire B/msg TCP / tern / tern-nocopies | ratio to TCP, on / off | "
               "CPU µs/msg TCP / tern / tern-nocopies | ratio to TCP, on / off | p99 ms tern / tern-nocopies |",
               "|---|---|---|---|---|---|"]
        for sc in cp:
            tc, on, off = (by.get((t, "chat", sc)) or {} for t in ("tcp", "tern", "tern-nocopies"))
            md.append("| " + " | ".join([
                scen_label(sc),
                " / ".join(fmt(x.get("wire_bytes_per_msg"), 0) for x in (tc, on, off)),
                f"{ratio(on, tc, 'wire_bytes_per_msg')} / {ratio(off, tc, 'wire_bytes_per_msg')}",
                " / ".join(fmt(x.get("cpu_us_per_msg"), 0) for x in (tc, on, off)),
                f"{ratio(on, tc, 'cpu_us_per_msg')} / {ratio(off, tc, 'cpu_us_per_msg')}",
                " / ".join(fmt(x.get("p99_ms")) for x in (on, off))]) + " |")
        md.append("")
    # connect metric
    cs = sorted({r["scenario"] for r in recs if r.get("connect_first_accept_ms") is not None}, key=scen_key)
    if cs:
        md += ["## connect to first message accepted by the relay", "",
               "Median of the probes, ms (in RTTs). Each probe connects one client that sends one "
               "message as early as its transport allows; **accepted** is the relay's own stamp "
               "of taking that message (CLOCK_REALTIME, shared by all namespaces) minus the "
               "client's start of connecting. tern: tern_client_connect(), the message queued at "
               "once rides in Noise message 1 (early data) after ENet's connect; the stamp is the "
               "SERVER_ACK's ts (whole Unix ms; the middle of that millisecond is used), taken when the relay's core takes "
               "the message, before its group commit. TCP: connect() + crypto_kx exchange, then "
               "the first sealed frame (the shape of TLS 1.3 without 0-RTT: 2.5 RTT); ENet: "
               "ENet connect, then the first frame (1.5 RTT); their relays write the stamp to "
               "--accept-log. **acked** is the round trip back to the client: TERN_EV_SENT "
               "(after the group commit) for tern, the frame echoed back by the relay for TCP and "
               "ENet. RTTs are nominal (the scenario's RTT); **path RTT** is the path's own, "
               "measured as the fastest TCP probe's connect time (SYN/SYN-ACK + key exchange = "
               "2 RTT) over 2, and **tern accepted / path RTT** divides by it: linkem adds a "
               "fraction of a millisecond each way to its nominal delay.", "",
               "| scenario | " + " | ".join(f"{t} accepted" for t in tps) + " | " +
               " | ".join(f"{t} acked" for t in tps) + " | path RTT | tern accepted / path RTT |",
               "|---|" + "---|" * (2 * len(tps) + 2)]
        for sc in cs:
            cells = [scen_label(sc)]
            for key in ("connect_first_accept", "connect_ack"):
                for t in tps:
                    r = by.get((t, "chat", sc)) or {}
                    v, n = r.get(key + "_ms"), r.get(key + "_rtts")
                    cells.append("-" if v is None else f"{v:.1f}" + (f" ({n:.2f})" if n else ""))
            te = by.get(("tern", "chat", sc)) or {}
            cells.append(fmt(te.get("path_rtt_ms"), 2))
            cells.append(fmt(te.get("connect_first_accept_path_rtts"), 3))
            md.append("| " + " | ".join(cells) + " |")
        md.append("")
    if not recs:  # a migration run alone (migrate.sh without run.sh)
        md = [f"# tern bench: {meta.get('mode', '?')} run {meta.get('stamp', '')}", "",
              f"Host {meta.get('host', '?')}, {meta.get('cpus', '?')} CPUs, commit {meta.get('git', '?')}.", ""]
    md += mig_md
    if not recs:
        with open(os.path.join(out, "summary.md"), "w") as f:
            f.write("\n".join(md))
        return
    spread_md, p99_median = spread(recs, runs, meta)
    md += spread_md
    # targets
    md += ["## targets (issue: Bench suite, item 7)", ""]
    for sc in sorted({r["scenario"] for r in recs if r["workload"] == "chat"}, key=scen_key):
        te, tc = by.get(("tern", "chat", sc)), by.get(("tcp", "chat", sc))
        if not te or not tc or te.get("failed") or tc.get("failed"):
            continue
        rtt, loss = scen_key(sc)[1], scen_key(sc)[2]
        checks = []
        if rtt == 100 and loss >= 2:
            v = p99_median.get(sc, te["p99_ms"] / tc["p99_ms"])
            over = f", median of {len(runs)} runs" if len(runs) > 1 else ""
            checks.append(f"p99 tern/TCP {v:.2f}{over} (target <= 0.33: {'MET' if v <= 1 / 3 else 'MISSED'})")
        if rtt and (loss <= 5 or loss == 99):  # GE: about 4 % on average
            v = te["mean_ms"] / rtt
            checks.append(f"mean/floor {v:.2f} (target <= 1.10: {'MET' if v <= 1.1 else 'MISSED'})")
        if loss in (0, -1):
            v = te["p50_ms"] / tc["p50_ms"]
            checks.append(f"p50 tern/TCP {v:.2f} (target <= 1.10: {'MET' if v <= 1.1 else 'MISSED'})")
        n, pn = te.get("connect_first_accept_rtts"), te.get("connect_first_accept_path_rtts")
        if pn is not None:
            checks.append(f"connect->accepted {pn:.3f} path RTT, {n:.2f} nominal "
                          f"(target <= 1.5 RTT: {'MET' if pn <= 1.5 else 'MISSED'})")
        elif n is not None:
            checks.append(f"connect->accepted {n:.2f} RTT (target <= 1.5: {'MET' if n <= 1.5 else 'MISSED'})")
        if checks:
            md.append(f"- chat, {scen_label(sc)}: " + "; ".join(checks))
    md.append("")
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write("\n".join(md))
    plots(out, recs, tps)


def spread(recs, runs, meta):
    """summary.md lines giving every run's p99 (tern and TCP) per workload and
    scenario and the min / median / max of the tern/TCP p99 ratio over the
    runs, and {scenario: median chat ratio}. Nothing with a single run."""
    if len(runs) < 2:
        return [], {}
    by = {(r["transport"], r["workload"], r["scenario"], r["run"]): r for r in recs}
    ok = lambda r: r and not r.get("failed") and r.get("p99_ms")
    md = [f"## p99 over {len(runs)} runs", "",
          "Each run has fresh linkems (other loss seeds), relays and clients. Per run: tern p99 / "
          "TCP p99 in ms (messages delivered to tern, to TCP); then the tern/TCP p99 ratio's "
          "minimum, median and maximum over the runs.", "",
          "| workload | scenario | " + " | ".join(f"run {k}" for k in runs) +
          " | ratio min / median / max |", "|---|---|" + "---|" * (len(runs) + 1)]
    med = {}
    for wl in WL_ORDER:
        for sc in sorted({r["scenario"] for r in recs if r["workload"] == wl}, key=scen_key):
            cells, ratios = [wl, scen_label(sc)], []
            for k in runs:
                te, tc = by.get(("tern", wl, sc, k)), by.get(("tcp", wl, sc, k))
                if not ok(te) or not ok(tc):
                    cells.append("-")
                    continue
                ratios.append(te["p99_ms"] / tc["p99_ms"])
                cells.append(f"{te['p99_ms']:.1f} / {tc['p99_ms']:.1f} ({te['received']}, {tc['received']})")
            if ratios:
                m = median(ratios)
                cells.append(f"{min(ratios):.2f} / {m:.2f} / {max(ratios):.2f}")
                if wl == "chat":
                    med[sc] = m
            else:
                cells.append("-")
            md.append("| " + " | ".join(cells) + " |")
    md.append("")
    return md, med


MIG_ORDER = [("migrate", "tern-migrate", "tern, migration (tern_client_network_changed)"),
             ("reconnect", "tern-reconnect", "tern, reconnect with a full handshake"),
             ("tcp", "tcp", "TCP, new connection + key exchange")]


def relay_counts(path):
    """Handshakes and sessions moved, from ternd's closing log lines."""
    hs = moved = None
    try:
        for line in open(path):
            if "stopped:" in line and "handshakes ok" in line:
                hs = int(line.split("stopped:")[1].split()[0])
            elif "paths:" in line and "sessions moved" in line:
                moved = int(line.split("paths:")[1].split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return hs, moved


def migration(raw):
    """Records and summary.md lines of the migration bench (migrate.sh)."""
    try:
        meta = json.load(open(os.path.join(raw, "migrate.meta")))
    except (OSError, ValueError):
        return [], []
    rtt = meta.get("rtt_ms", 100)
    recs = []
    for sysname, tp, _ in MIG_ORDER:
        mover = first_json(os.path.join(raw, f"migrate.{sysname}.mover"), last=True)
        fixed = first_json(os.path.join(raw, f"migrate.{sysname}.fixed"), last=True)
        if mover is None and fixed is None:
            continue
        r = {"transport": tp, "workload": "migration", "scenario": f"r{rtt}l0", "rtt_ms": rtt,
             "loss_pct": 0, "changes_planned": meta.get("changes"), "interval_s": meta.get("interval_s"),
             "rate_per_s": meta.get("rate"), "size_bytes": meta.get("size", 100)}
        if mover is None or fixed is None or mover.get("failed") or fixed.get("failed"):
            r["failed"] = True
        up = [v for v in (fixed or {}).get("up_ms", []) if v is not None]
        down = [v for v in (mover or {}).get("down_ms", []) if v is not None]
        hs, moved = relay_counts(os.path.join(raw, f"migrate.{sysname}.relay"))
        r.update({
            "changes": (mover or {}).get("changes"),
            "up_ms": (fixed or {}).get("up_ms"), "down_ms": (mover or {}).get("down_ms"),
            "up_p50_ms": round(median(up), 2) if up else None,
            "up_max_ms": round(max(up), 2) if up else None,
            "up_p50_rtts": round(median(up) / rtt, 2) if up and rtt else None,
            "down_p50_ms": round(median(down), 2) if down else None,
            "down_max_ms": round(max(down), 2) if down else None,
            "down_p50_rtts": round(median(down) / rtt, 2) if down and rtt else None,
            "connects": (mover or {}).get("connects"),
            "migrations": (mover or {}).get("migrations"),
            "relay_handshakes": hs, "relay_sessions_moved": moved,
            "sent_up": (mover or {}).get("sent"), "lost_up": (fixed or {}).get("lost"),
            "dups_up": (fixed or {}).get("duplicates"), "reordered_up": (fixed or {}).get("reordered"),
            "sent_down": (fixed or {}).get("sent"), "lost_down": (mover or {}).get("lost"),
            "dups_down": (mover or {}).get("duplicates"), "reordered_down": (mover or {}).get("reordered"),
            "switch_ms_p50": round(median([v for v in (mover or {}).get("switch_ms", []) if v is not None]), 2)
            if (mover or {}).get("switch_ms") else None,
        })
        recs.append(r)
    if not recs:
        return [], []
    fmt = lambda v, d=1: "-" if v is None else f"{v:.{d}f}"
    md = [f"## migration: address change to next delivered message (RTT {rtt} ms, "
          f"{meta.get('changes')} changes every {meta.get('interval_s')} s, "
          f"{meta.get('rate')} msg/s of {meta.get('size', 100)} B each way)", "",
          "The client's namespace has two links to the relay (linkem, RTT/2 each way); a change "
          "moves the route to the other link, gives the client its address there and deletes the "
          "old one, so the relay sees a new source address and the old path is dead. t0 is the "
          "moment the change is done (`ip -batch` returned), when the client tells its transport: "
          "**tern migration** calls tern_client_network_changed() (the session moves, no new "
          "handshake); **tern reconnect** is tern as it was before migration: "
          "tern_client_set_network() with a new name drops the link and reconnects at once with "
          "a full handshake (ENet connect + Noise IK, no backoff), the code path "
          "tern_client_network_changed() had before; **TCP** closes its connection and opens a "
          "new one (connect, key exchange, BP_HELLO). The next message is handed over at t0. "
          "**up**: t0 to that message's delivery at the peer (in the relay's namespace); "
          "**down**: t0 to the delivery at the moving client of the first message its peer sent "
          "at or after t0. Handshakes: sessions the moving client established (tern: "
          "tern_client_stats.connects, the first included), and the relay's count for both "
          "clients. TCP's relay stores nothing: what its peer sends to the moving client while "
          "it reconnects is lost.", "",
          "| system | up p50 / max ms (RTTs) | down p50 / max ms (RTTs) | changes measured | "
          "client sessions (handshakes) | migrations | relay handshakes / sessions moved | "
          "lost up / down | duplicates up / down |",
          "|---|---|---|---|---|---|---|---|---|"]
    labels = {tp: lab for _, tp, lab in MIG_ORDER}
    for r in recs:
        nup = len([v for v in (r.get("up_ms") or []) if v is not None])
        ndown = len([v for v in (r.get("down_ms") or []) if v is not None])
        cells = [labels[r["transport"]] + (" (FAILED)" if r.get("failed") else ""),
                 f"{fmt(r['up_p50_ms'])} / {fmt(r['up_max_ms'])} ({fmt(r['up_p50_rtts'], 2)})",
                 f"{fmt(r['down_p50_ms'])} / {fmt(r['down_max_ms'])} ({fmt(r['down_p50_rtts'], 2)})",
                 f"{nup} up, {ndown} down of {r.get('changes')}",
                 "-" if r.get("connects") is None else str(r["connects"]),
                 "-" if r.get("migrations") is None else str(r["migrations"]),
                 "-" if r.get("relay_handshakes") is None else
                 f"{r['relay_handshakes']} / {r['relay_sessions_moved']}",
                 f"{r.get('lost_up')} / {r.get('lost_down')}",
                 f"{r.get('dups_up')} / {r.get('dups_down')}"]
        md.append("| " + " | ".join(cells) + " |")
    by = {r["transport"]: r for r in recs}
    mi, rc, tc = by.get("tern-migrate"), by.get("tern-reconnect"), by.get("tcp")
    ratios = []
    for other, name in ((rc, "tern reconnect"), (tc, "TCP")):
        if mi and other and mi.get("up_p50_ms") and other.get("up_p50_ms") and other.get("down_p50_ms"):
            ratios.append(f"migration / {name}: up p50 {mi['up_p50_ms'] / other['up_p50_ms']:.2f}, "
                          f"down p50 {mi['down_p50_ms'] / other['down_p50_ms']:.2f}")
    if ratios:
        md += ["", "Ratios (below 1: migration faster): " + "; ".join(ratios) + "."]
    md.append("")
    return recs, md


def plots(out, recs, tps):
    lat = os.path.join(out, "lat")
    first = min(r["run"] for r in recs)
    combos = sorted({(r["workload"], r["scenario"]) for r in recs})
    ids = {(r["transport"], r["workload"], r["scenario"]): r["id"] for r in recs if r["run"] == first}
    for wl, sc in combos:
        series = []
        for t in tps:
            path = os.path.join(lat, ids.get((t, wl, sc), f"{t}.{wl}.{sc}") + ".txt")
            try:
                v = sorted(float(x) for x in open(path) if x.strip())
            except (OSError, ValueError):
                continue
            if not v:
                continue
            dat = os.path.join(lat, f"cdf.{t}.{wl}.{sc}.dat")
            with open(dat, "w") as f:
                n = len(v)
                step = max(1, n // 2000)
                for i in range(0, n, step):
                    f.write(f"{v[i]:.3f} {(i + 1) / n:.5f}\n")
                f.write(f"{v[-1]:.3f} 1.0\n")
            series.append((t, dat))
        if not series:
            continue
        png = os.path.join(out, f"cdf_{wl}_{sc}.png")
        rtt = scen_key(sc)[1]
        gp = [
            "set terminal pngcairo size 900,560 font 'sans,11'" if has_cairo() else
            "set terminal png size 900,560",
            f"set output '{png}'",
            f"set title 'one-way latency CDF: {wl}, {scen_label(sc)}'",
            "set xlabel 'one-way latency A -> relay -> B (ms, log scale)'",
            "set ylabel 'fraction of messages'",
            "set logscale x", "set grid", "set key right bottom", "set yrange [0:1.02]",
        ]
        if rtt:
            gp.append(f"set xrange [{rtt * 0.9:g}:*]")
            gp.append(f"set arrow from {rtt},0 to {rtt},1.02 nohead dt 2 lc rgb 'gray'")
            gp.append(f"set label 'floor {rtt} ms' at {rtt},0.05 offset 0.5,0 tc rgb 'gray'")
        colors = {"tcp": "#d62728", "enet": "#1f77b4", "tern": "#2ca02c", "tern-nofsync": "#9467bd",
                  "tern-nocopies": "#ff7f0e"}
        gp.append("plot " + ", ".join(
            f"'{d}' using 1:2 with steps lw 2 lc rgb '{colors.get(t, 'black')}' title '{t}'"
            for t, d in series))
        subprocess.run(["gnuplot"], input="\n".join(gp), text=True, check=False)


_cairo = None


def has_cairo():
    global _cairo
    if _cairo is None:
        r = subprocess.run(["gnuplot", "-e", "set terminal"], capture_output=True, text=True)
        _cairo = "pngcairo" in (r.stdout + r.stderr)
    return _cairo


if __name__ == "__main__":
    main()
