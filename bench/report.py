#!/usr/bin/env python3
"""bench/report.py — write docs/BENCHMARKS.md from the results folder of bench/run.

  bench/report.py DIR [--doc FILE]

DIR holds synapse.json and other.json (load.py, via compare.sh), floor.json and
send.json (neurite-bench latency), sizes.json and facts.json (bench/run).
Python 3 standard library only.
"""
import argparse
import json
import os
import sys

# ----------------------------------------------------------------------------- numbers


def fmt_num(v, unit=""):
    """A figure with a precision that suits its size (3 significant digits or so)."""
    if v is None:
        return "–"
    a = abs(v)
    if a >= 100:
        s = f"{v:,.0f}"
    elif a >= 10:
        s = f"{v:.1f}"
    elif a >= 1:
        s = f"{v:.2f}"
    else:
        s = f"{v:.3f}"
    return f"{s} {unit}".strip()


def fmt_ratio(r):
    """Neurite/Synapse: a plain ratio, with 1/x beside it when below 1."""
    if r is None:
        return "–"
    if r == 0:
        return "0"
    if r < 1:
        return f"{r:.3g} (1/{1 / r:,.0f})" if 1 / r >= 10 else f"{r:.3g} (1/{1 / r:.1f})"
    return f"{r:,.0f}" if r >= 100 else f"{r:.1f}" if r >= 10 else f"{r:.2f}"


def get(d, *path):
    """d[path[0]][path[1]]... or None when any step is missing or not a dict."""
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def load(path, required=True):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        if required:
            sys.exit(f"report.py: {path} is missing (run bench/run first)")
        return {}


# ----------------------------------------------------------------------------- the table


class Row:
    """One figure of the comparison: both values, the ratio and the target's verdict.
    With `own_limit`, the verdict is Neurite's own value against it (no ratio)."""

    def __init__(self, label, unit, syn, neu, target, better, limit, own_limit=None):
        self.label, self.unit, self.syn, self.neu = label, unit, syn, neu
        self.target, self.better, self.limit, self.own_limit = target, better, limit, own_limit
        both = isinstance(syn, (int, float)) and isinstance(neu, (int, float))
        self.ratio = neu / syn if both and syn and own_limit is None else None

    def met(self):
        if self.own_limit is not None:
            return "n/a" if self.neu is None else ("yes" if self.neu <= self.own_limit else "**no**")
        if self.ratio is None:
            return "n/a"
        if self.limit is None:
            return "–"
        ok = self.ratio <= self.limit if self.better == "low" else self.ratio >= self.limit
        return "yes" if ok else "**no**"

    def cells(self):
        return [self.label, fmt_num(self.syn, self.unit), fmt_num(self.neu, self.unit), fmt_ratio(self.ratio),
                self.target, self.met()]


def largest_rooms(syn, neu):
    """The largest rooms_R run present in both results (else in either): (key, R)."""
    keys = [set(k for k in (get(r, "initial") or {}) if k.startswith("rooms_")) for r in (syn, neu)]
    common = keys[0] & keys[1] or keys[0] | keys[1]
    if not common:
        return None, None
    key = max(common, key=lambda k: int(k.split("_")[1]))
    return key, int(key.split("_")[1])


def main_rows(syn, neu, sizes):
    rows = []
    p = lambda r, *path: get(r, *path)
    for q in ("p50", "p99"):
        rows.append(Row(f"send latency {q} (PUT /send, one client)", "ms", p(syn, "send", "sequential", f"{q}_ms"),
                        p(neu, "send", "sequential", f"{q}_ms"), "≤ 1/5 (and ≤ 3× floor, below)", "low", 0.2))
    for kind, what in (("separate", "32 senders, separate rooms"), ("shared", "32 senders, one shared room")):
        rows.append(Row(f"send throughput, {what}", "ev/s", p(syn, "send", f"{kind}_c32", "events_per_s"),
                        p(neu, "send", f"{kind}_c32", "events_per_s"), "≥ 10×", "high", 10))
    for key, what in (("single", "one long-poll"), ("with_idle", "with 50 other idle long-polls")):
        idle = p(neu, "wake", key, "idle_users") or p(syn, "wake", key, "idle_users")
        if key == "with_idle" and idle:
            what = f"with {idle} other idle long-polls"
        rows.append(Row(f"sync wake-up p99, {what}", "ms", p(syn, "wake", key, "p99_ms"), p(neu, "wake", key, "p99_ms"),
                        "≤ 1/5", "low", 0.2))
    key, n_rooms = largest_rooms(syn, neu)
    if key:
        gap = p(neu, "initial", key, "gap_events") or p(syn, "initial", key, "gap_events")
        msgs = p(neu, "meta", "params", "msgs_per_room") or p(syn, "meta", "params", "msgs_per_room")
        scaled = "" if n_rooms == 500 else " (full run: 500 rooms, 10,000 events)"
        rows.append(Row(f"initial /sync p50, account in {n_rooms} rooms{scaled}", "ms",
                        p(syn, "initial", key, "initial", "p50_ms"), p(neu, "initial", key, "initial", "p50_ms"),
                        "≤ 1/10", "low", 0.1))
        rows.append(Row(f"incremental /sync p50, since {gap:,} events old ({n_rooms} rooms × {msgs})", "ms",
                        p(syn, "initial", key, "gap_incremental", "p50_ms"),
                        p(neu, "initial", key, "gap_incremental", "p50_ms"), "≤ 1/10", "low", 0.1))
        own = []
        for r in (syn, neu):
            g, i = p(r, "initial", key, "gap_incremental", "p50_ms"), p(r, "initial", key, "initial", "p50_ms")
            own.append(g / i if isinstance(g, (int, float)) and isinstance(i, (int, float)) and i else None)
        rows.append(Row("same account: that incremental /sync ÷ its initial /sync", "", own[0], own[1],
                        "Neurite ≤ 1 (no slower)", "low", None, own_limit=1))
    rows.append(Row("resident memory, idle after start", "MiB", p(syn, "memory", "idle_mib"),
                    p(neu, "memory", "idle_mib"), "≤ 1/10", "low", 0.1))
    rows.append(Row("resident memory, peak during the run", "MiB", p(syn, "memory", "peak_mib"),
                    p(neu, "memory", "peak_mib"), "≤ 1/10", "low", 0.1))
    mib = lambda b: b / 2**20 if isinstance(b, (int, float)) and b else None
    if sizes.get("same_synapse_db_bytes") and sizes.get("same_neurite_db_bytes"):
        rooms = "+".join(str(r) for r in (p(neu, "meta", "params", "rooms") or [])) or "the"
        rows.append(Row(f"database size after the same work (the initial-sync fixture alone: {rooms} rooms,"
                        " same events on both)", "MiB", mib(sizes.get("same_synapse_db_bytes")),
                        mib(sizes.get("same_neurite_db_bytes")), "≤ 1/3", "low", 1 / 3))
        whole_target, whole_limit = "not the same data (see notes)", None
    else:
        whole_target, whole_limit = "≤ 1/3", 1 / 3
    rows.append(Row("database size after the whole run", "MiB", mib(sizes.get("synapse_db_bytes")),
                    mib(sizes.get("neurite_db_bytes")), whole_target, "low", whole_limit))
    per_event = []
    for name in ("synapse", "neurite"):
        used, events = sizes.get(f"{name}_used_bytes"), sizes.get(f"{name}_events")
        per_event.append(used / events if used and events else None)
    if any(per_event):
        rows.append(Row("database size per stored event after the whole run (checkpointed copy, free pages left out)",
                        "B", per_event[0], per_event[1], "≤ 1/3", "low", 1 / 3))
    return rows, key, n_rooms


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 3) + ["---", "---"]) + "|"]
    out += ["| " + " | ".join(cells) + " |" for cells in rows]
    return out


# ----------------------------------------------------------------------------- checks


def checks(name, res, key, n_rooms):
    """Bullet lines that say whether a server's figures can be trusted."""
    lines = []
    for scenario in ("send", "wake", "initial"):
        err = get(res, scenario, "error")
        if err:
            lines.append(f"{name}: the `{scenario}` scenario failed: `{err[:200]}`")
    for kind in ("separate_c32", "shared_c32"):
        errors = get(res, "send", kind, "errors")
        if errors:
            lines.append(f"{name}: {errors} non-200 answers during `{kind}`.")
    for k in ("single", "with_idle"):
        w = get(res, "wake", k) or {}
        if w.get("missed"):
            lines.append(f"{name}: wake `{k}` missed the message in {w['missed']} of {w['missed'] + w.get('count', 0)} rounds.")
        if w.get("other_wakeups"):
            lines.append(f"{name}: wake `{k}` long-poll returned early without the message: {w['other_wakeups']}.")
        if w.get("idle_early_returns"):
            lines.append(f"{name}: {w['idle_early_returns']} idle long-polls returned early during wake `{k}` "
                         f"({w.get('idle_returns_with_updates', 0)} with data).")
    if key and get(res, "initial", key):
        r = res["initial"][key]
        if r.get("full_rooms") != n_rooms or r.get("gap_rooms") != n_rooms:
            lines.append(f"{name}: `{key}` returned {r.get('full_rooms')} rooms in the initial sync and "
                         f"{r.get('gap_rooms')} in the incremental one (expected {n_rooms}).")
    retries = get(res, "meta", "http_429_retries")
    if retries:
        lines.append(f"{name}: {retries} requests were rate-limited (429) and retried.")
    send_s, harness_s = get(res, "meta", "scenario_seconds", "send"), get(res, "meta", "harness_cpu_s", "send")
    server_s = get(res, "meta", "server_cpu_s", "send")
    if all(isinstance(x, (int, float)) for x in (send_s, harness_s, server_s)) and send_s:
        line = (f"{name}: during the `send` scenario ({send_s} s) the server used {server_s} s of CPU and load.py"
                f" {harness_s} s")
        if harness_s / send_s > 0.7:
            line += ": the throughput figures are partly the Python client's limit, not the server's"
        lines.append(line + ".")
    return lines


def size_notes(sizes):
    """What the database files hold beyond their data: an unmerged WAL, free pages."""
    mib = lambda b: f"{b / 2**20:.1f} MiB"
    lines = []
    for name, label in (("synapse", "Synapse"), ("neurite", "Neurite")):
        files, used = sizes.get(f"{name}_db_files") or {}, sizes.get(f"{name}_used_bytes")
        wal = sum(v for k, v in files.items() if k.endswith("-wal"))
        if wal:
            lines.append(f"{label} left a {mib(wal)} write-ahead log beside its database when it stopped"
                         " (not checkpointed at shutdown); it is counted in the table.")
        if used is not None:
            lines.append(f"{label}'s database with the log folded in and free pages left out (a checkpointed copy):"
                         f" {mib(used)}.")
    syn_used, neu_used = sizes.get("synapse_used_bytes"), sizes.get("neurite_used_bytes")
    if syn_used and neu_used:
        lines.append(f"Counted that way, Neurite/Synapse = {fmt_ratio(neu_used / syn_used)}.")
    syn_ev, neu_ev = sizes.get("synapse_events"), sizes.get("neurite_events")
    if syn_ev and neu_ev:
        lines.append(f"After the whole run the databases do not hold the same data: the throughput runs last a fixed"
                     f" time, so Synapse stores {syn_ev:,} events and Neurite {neu_ev:,} ({neu_ev / syn_ev:.1f}×)."
                     " The same-work row (a second, fresh pair of servers given only the initial-sync fixture) and"
                     " the per-event row compare like with like.")
    same = [sizes.get(f"same_{n}_events") for n in ("synapse", "neurite")]
    if all(same):
        lines.append(f"Same work: Synapse's events table holds {same[0]:,} rows and Neurite's {same[1]:,}.")
    return lines


# ----------------------------------------------------------------------------- document


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", help="bench/run's results folder")
    ap.add_argument("--doc", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs",
                                                  "BENCHMARKS.md"), help="the Markdown file to write")
    args = ap.parse_args()
    d = args.dir
    syn, neu = load(os.path.join(d, "synapse.json")), load(os.path.join(d, "other.json"))
    floor, send = load(os.path.join(d, "floor.json"), False), load(os.path.join(d, "send.json"), False)
    sizes, facts = load(os.path.join(d, "sizes.json"), False), load(os.path.join(d, "facts.json"), False)
    quick = bool(get(syn, "meta", "quick") or get(neu, "meta", "quick"))
    P = get(neu, "meta", "params") or get(syn, "meta", "params") or {}
    rows, key, n_rooms = main_rows(syn, neu, sizes)

    L = ["# Benchmarks", ""]
    L += ["Neurite beside Synapse (the reference homeserver, on SQLite), both run on the same machine in the same run,"
          " against the targets of issue 6. Generated by `bench/run`; do not edit by hand.", ""]
    if quick:
        L += [f"> **Quick run** (`bench/run --quick`): the harness's small sizes ({P.get('seq_n')} sequential sends,"
              f" {P.get('tput_secs')} s per throughput run, {P.get('wake_n')} wake-ups, accounts in"
              f" {', '.join(map(str, P.get('rooms', [])))} rooms with {P.get('msgs_per_room')} messages each). The"
              " figures show the shape, not the issue's full-size workload; `bench/run` without `--quick` measures"
              " that." + (f" With {P.get('wake_n')} wake-ups the wake-up p99 is the slowest one."
                          if (P.get('wake_n') or 100) < 100 else ""), ""]
    L += ["## Reproduce", "", "```sh", "bench/run            # full sizes; bench/run --quick for a few-minute run",
          "```", "",
          "It builds `neurite` and `neurite-bench` in release mode, starts a fresh Neurite (open registration, rate"
          " limits off), runs the shared harness's `compare.sh` (a fresh Synapse, then Neurite), times the floor and"
          " Neurite's send with the Rust client and stops Neurite; then gives a second fresh Synapse and Neurite"
          " the same work (the initial-sync fixture alone, `compare.sh --scenario initial`) for the database sizes,"
          " measures all four databases and writes this file."
          " The harness folder is `NEURITE_BENCH_HARNESS` (default `../shared/bench` beside the repository).", ""]
    if facts.get("command"):
        L += [f"This run: `{facts['command']}`, {facts.get('run_seconds', '?')} s, results in `{facts.get('out_dir')}`"
              " (`compare.txt` has every figure of both servers side by side).", ""]

    L += ["## Machine and versions", ""]
    mem = facts.get("mem_total", "")
    try:
        mem = f"{int(mem.split()[0]) / 2**20:.1f} GiB"
    except (ValueError, IndexError):
        pass
    syn_version = facts.get("synapse_version") or get(syn, "meta", "server_header") or "unknown"
    L += [f"- **Date (UTC):** {facts.get('date_utc', get(neu, 'meta', 'started') or 'unknown')}",
          f"- **CPU:** {facts.get('cpu_model', 'unknown')}, {facts.get('nproc', get(neu, 'meta', 'cpus'))} cores"
          f" (shared by the server and the load client); **memory:** {mem}",
          f"- **OS:** {facts.get('kernel', 'unknown')}; **disk:** {facts.get('filesystem', 'unknown')}, one 4 KiB"
          f" `dd oflag=dsync` write: {facts.get('fsync_4k_ms_before', '?')} ms before the run,"
          f" {facts.get('fsync_4k_ms_after', '?')} ms after",
          f"- **Load average** (1, 5, 15 min): {facts.get('loadavg_before', '?')} before the run,"
          f" {facts.get('loadavg_after', '?')} after (anything else running on the machine skews the figures)",
          f"- **Neurite:** `{facts.get('neurite_describe', 'unknown')}` ({facts.get('neurite_rev', 'unknown')}),"
          f" release build, {facts.get('rustc', 'rustc unknown')}; SQLite (bundled), WAL, `synchronous=FULL`",
          f"- **Synapse:** {syn_version} on SQLite {facts.get('sqlite_synapse', '?')}, {facts.get('python', 'Python ?')},"
          " configured by the harness's `synapse.sh` (rate limits off, presence on, log level WARNING)", ""]

    L += ["## Results", "",
          "Neurite/Synapse below 1 means Neurite is smaller (better, except for throughput). Latencies are"
          " client-side wall time, nearest-rank percentiles.", ""]
    L += table(["figure", "Synapse", "Neurite", "Neurite/Synapse", "target", "met?"], [r.cells() for r in rows])
    L += [""]

    L += ["### The floor", "",
          "The floor is the cheapest a durable send can be here: one loopback HTTP round trip to an axum handler"
          " that does one SQLite write transaction (one row: the transaction ID and the JSON body) through"
          " `neurite_storage::sqlite::SqlitePool`, the pool Neurite writes through (WAL, `synchronous=FULL`, one"
          " writer connection, transactions off the async threads), so a change there moves both figures"
          " (`neurite-bench floor-server`). The same Rust client (`neurite-bench latency`: one keep-alive connection,"
          f" {floor.get('count', '?')} sequential `PUT`s after 5 warm-ups) times the floor and then Neurite's"
          " `PUT /send` (a fresh user in a fresh room, on the server the table above measured, before it stops).", ""]
    frows = []
    for q in ("p50", "p99", "mean"):
        f, n = floor.get(f"{q}_ms"), send.get(f"{q}_ms")
        mult = n / f if isinstance(f, (int, float)) and isinstance(n, (int, float)) and f else None
        target, met = ("≤ 3×", "n/a" if mult is None else ("yes" if mult <= 3 else "**no**")) if q != "mean" else ("", "")
        frows.append([f"send latency {q}", fmt_num(f, "ms"), fmt_num(n, "ms"),
                      "–" if mult is None else f"{mult:.2f}×", target, met])
    L += table(["figure", "floor", "Neurite (same client)", "multiple of the floor", "target", "met?"], frows)
    L += [""]

    notes = checks("Synapse", syn, key, n_rooms) + checks("Neurite", neu, key, n_rooms)
    if len([n for n in notes if "during the `send` scenario" not in n]) == 0:
        notes.insert(0, "No errors, no missed wake-ups, no early idle returns, every room in every sync and no 429s,"
                        " for either server.")
    warnings = facts.get("neurite_log_warnings")
    if warnings not in (None, "", "0"):
        notes.append(f"Neurite logged {warnings} warnings or errors during the run (`neurite.log` in the results).")
    notes += size_notes(sizes)
    L += ["### Checks", ""]
    L += [f"- {n}" for n in notes]
    L += [""]

    L += ["## Method", "",
          "The table's figures come from the shared harness (`load.py`, a Python asyncio/aiohttp client run by"
          " `compare.sh`). It starts a fresh Synapse, measures it, stops it, then measures Neurite, which was started"
          " fresh before the run and idled meanwhile; each scenario registers its own users and rooms.", "",
          f"- **Send latency:** one user, one room, {P.get('seq_n')} sequential"
          " `PUT /rooms/{room}/send/m.room.message/{txn}` after 5 warm-ups.",
          "- **Send throughput:** 32 users, each sending as fast as it gets answers, for"
          f" {P.get('tput_secs')} s: each into its own room (`separate_c32`), then all into one room with 32"
          " members (`shared_c32`). Events per second = accepted events / elapsed time.",
          "- **Sync wake-up:** B long-polls `/sync` (timeout 30 s) in a room shared with A; once B's request has"
          f" parked ({P.get('wake_settle_s')} s, not timed), A sends; the figure is the time from the start of A's"
          f" send to B's response carrying the message, {P.get('wake_n')} times. Then the same with"
          f" {P.get('idle_users')} other users long-polling their own rooms.",
          f"- **Initial and incremental sync:** an account creates R rooms (name, topic and one custom state event"
          f" each); a sync token is taken; {P.get('msgs_per_room')} messages go into every room, so the token is"
          f" R × {P.get('msgs_per_room')} events old. `initial` is `/sync` without `since`; `incremental` is"
          " `/sync?since=<that token>`. Every sync uses the filter `{\"room\":{\"timeline\":{\"limit\":10}}}`, runs"
          f" {P.get('sync_repeats')} times each on a fresh device (new `/login`, so no per-device cache answers), and"
          f" the table gives the median for the largest R run ({n_rooms}).",
          "- **Memory:** VmRSS of the server process and its children, sampled every 200 ms while `load.py` runs"
          " against it; idle is the first sample (before any request of the run), peak the highest.",
          "- **Database size:** bytes of the SQLite files after each server stopped: Synapse's `homeserver.db*`,"
          " Neurite's `*.db*` in its data folder (WAL and shared-memory files included when present). Neurite's"
          f" also holds the Rust client's {send.get('count', 0) + 5} sends (one user, one room) made after `load.py`.",
          "- **Floor:** see above; it uses the Rust client, not `load.py`.", "",
          "Caveats: the client shares the machine's cores with the server and the two servers are measured one after"
          " the other, so absolute figures move from run to run; compare the ratios of one run. A Python client tops"
          " out at a few thousand requests per second, so a throughput ratio can be the client's limit (see Checks).", ""]

    os.makedirs(os.path.dirname(os.path.abspath(args.doc)), exist_ok=True)
    with open(args.doc, "w") as f:
        f.write("\n".join(L))
    print(f"report.py: wrote {args.doc}", file=sys.stderr)


if __name__ == "__main__":
    main()
