#!/usr/bin/env python3
"""conv_bench's JSON as the markdown table docs/perf.md keeps: one row per problem, one
column per math mode (and layout, when the rows have one), each cell "convjit auto / cuDNN ms (speedup) kernel", then the
geometric means and the rows below a threshold. Reads the rows as conv_bench wrote them
(speedups are cuDNN's median over convjit's, from the same run). Given rows of both
layouts (one file with --layout nchw,nhwc, or one file a layout), it also prints best
against best: each problem's faster convjit layout against cuDNN's faster layout.

    bench/bench_table.py conv_bench.json [more.json ...] [--names workloads/networks.json] [--below 0.85]
"""
import argparse
import json
import math


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bench_json", nargs="+")
    ap.add_argument("--names", help="workload file whose entries' names label the rows")
    ap.add_argument("--below", type=float, default=0.85, help="list the auto rows slower than this speedup")
    args = ap.parse_args()
    rows = [r for f in args.bench_json for r in json.load(open(f))["rows"]]
    names = {}
    if args.names:
        for entry in json.load(open(args.names)).get("problems", []):
            if isinstance(entry, dict) and "id" in entry:
                names[str(entry["id"])] = entry.get("name", "")
    cells, maths, order, problems = {}, [], [], {}
    for r in rows:
        if r["impl"] not in ("auto", "cudnn") or r["id"] != r["group"]:
            continue
        column = r["math"] + (" " + r["layout"] if r.get("layout") else "")
        key = (r["id"], column)
        if column not in maths:
            maths.append(column)
        if r["id"] not in problems:
            order.append(r["id"])
            problems[r["id"]] = r["problem"]
        cells.setdefault(key, {})[r["impl"]] = r
    print("| id | problem | " + " | ".join(maths) + " |")
    print("|---|---|" + "---|" * len(maths))
    slow, logs = [], {m: [] for m in maths}
    for i in order:
        row = []
        for m in maths:
            c = cells.get((i, m), {})
            a, d = c.get("auto"), c.get("cudnn")
            if not a or a["ms"] is None or a["ms"] != a["ms"]:
                row.append("-")
                continue
            kernel = a["note"].replace("-> ", "").replace("= ", "").split(",")[0]
            if d and d["status"] == "ok" and a["status"] == "ok":
                s = d["ms"] / a["ms"]
                logs[m].append(math.log(s))
                if s < args.below:
                    slow.append((m, i, s))
                row.append(f"{a['ms']:.3f} / {d['ms']:.3f} ({s:.2f}x) {kernel}")
            else:
                row.append(f"{a['ms']:.3f} / {d['status'] if d else '-'} {kernel}")
        label = problems[i] + (f" ({names[i]})" if names.get(i) else "")
        print(f"| {i} | {label} | " + " | ".join(row) + " |")
    print()
    print("Geometric mean of the speedups (rows where both passed): " +
          ", ".join(f"{m} {math.exp(sum(v) / len(v)):.2f}x over {len(v)}" for m, v in logs.items() if v))
    print(f"Rows below {args.below}x: {len(slow)} (" +
          ", ".join(f"{m} {len([s for s in slow if s[0] == m])}" for m in maths) + ")")
    best_against_best(cells, order, maths, args.below)


def best_against_best(cells, order, columns, below):
    """Per math mode with rows in two or more layouts: each problem's fastest passing
    convjit time over its layouts against cuDNN's fastest over the same layouts."""
    by_math = {}
    for column in columns:
        math_mode, _, layout = column.partition(" ")
        if layout:
            by_math.setdefault(math_mode, []).append(column)
    for math_mode, cols in by_math.items():
        if len(cols) < 2:
            continue
        logs, slow = [], []
        for i in order:
            ours = [c["auto"]["ms"] for c in (cells.get((i, col), {}) for col in cols)
                    if c.get("auto") and c["auto"]["status"] == "ok"]
            theirs = [c["cudnn"]["ms"] for c in (cells.get((i, col), {}) for col in cols)
                      if c.get("cudnn") and c["cudnn"]["status"] == "ok"]
            if not ours or not theirs:
                continue
            s = min(theirs) / min(ours)
            logs.append(math.log(s))
            if s < below:
                slow.append(f"{i} {s:.2f}x")
        if logs:
            print(f"Best against best, {math_mode} ({', '.join(cols)}): {math.exp(sum(logs) / len(logs)):.2f}x over "
                  f"{len(logs)}, min {math.exp(min(logs)):.2f}x; below {below}x: {', '.join(slow) or 'none'}")


if __name__ == "__main__":
    main()
