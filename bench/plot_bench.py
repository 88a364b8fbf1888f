#!/usr/bin/env python3
"""Draws conv_bench's JSON as grouped bar charts, one panel per math mode, one group of
bars per problem, one bar per implementation: the median time (log scale) or the speedup
over cuDNN (cuDNN = 1). With --torch, PyTorch eager's times from torch_conv.py are added
as one more bar. Runs headless (matplotlib's Agg backend).
"""
import argparse
import json
import math
import sys

IMPL_ORDER = ["direct", "implicit_gemm", "im2col_gemm", "auto", "cudnn", "torch_eager"]
COLORS = {"direct": "#9ecae1", "implicit_gemm": "#4292c6", "im2col_gemm": "#08519c", "auto": "#e6550d",
          "cudnn": "#636363", "torch_eager": "#31a354"}
LABELS = {"direct": "convjit direct", "implicit_gemm": "convjit implicit GEMM", "im2col_gemm": "convjit im2col+GEMM",
          "auto": "convjit auto", "cudnn": "cuDNN (cudnnFind best)", "torch_eager": "PyTorch eager"}


def id_key(text):
    """Numeric ids in numeric order, then the rest (s1, s2 ...)."""
    head = text.split(".")[0]
    return (0, float(head), text) if head.replace(".", "", 1).isdigit() else (1, 0.0, text)


def load(path):
    with open(path) as f:
        return json.load(f)


def timed(row):
    return row.get("ms") is not None and not (isinstance(row["ms"], float) and math.isnan(row["ms"]))


def collect(bench, torch_doc, halves):
    """{panel: {id: {impl: row}}} over timed rows; per-problem rows only unless halves. A panel
    is a math mode, and its layout when that is not NCHW ("tf32 nhwc"): conv_bench and
    torch_conv.py rows carry their layout (files without one are NCHW)."""
    table = {}
    rows = list(bench["rows"]) + (list(torch_doc["rows"]) if torch_doc else [])
    for row in rows:
        if not timed(row) or row.get("impl") not in IMPL_ORDER:
            continue
        if not halves and row.get("id") != row.get("group", row.get("id")):
            continue
        layout = row.get("layout", "nchw")
        panel = row["math"] if layout == "nchw" else "{} {}".format(row["math"], layout)
        table.setdefault(panel, {}).setdefault(row["id"], {})[row["impl"]] = row
    return table


def draw(table, metric, title, out_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    maths = [m for m in ("strict", "tf32", "fp16", "bf16") if m in table] + \
            [m for m in table if m not in ("strict", "tf32", "fp16", "bf16")]
    if not maths:
        sys.exit("plot_bench.py: no timed rows to draw")
    impls = [i for i in IMPL_ORDER if any(i in by_impl for t in table.values() for by_impl in t.values())]
    if metric == "speedup":
        impls = [i for i in impls if i != "cudnn"]  # cuDNN is the line at 1
        # A panel needs cuDNN's time to divide by.
        maths = [m for m in maths if any("cudnn" in by_impl for by_impl in table[m].values())]
        if not maths:
            sys.exit("plot_bench.py: no cuDNN rows to compute speedups from; try --metric time")
    width_per_problem = max(1.2, 0.22 * len(impls) + 0.3)
    most = max(len(table[m]) for m in maths)
    header_in = 1.1  # title and legend above the panels
    height = 3.4 * len(maths) + header_in
    fig, axes = plt.subplots(len(maths), 1, figsize=(max(8.0, 1.0 + width_per_problem * most), height),
                             squeeze=False)
    bar = 0.8 / max(1, len(impls))
    failed_any = False
    for ax, m in zip(axes[:, 0], maths):
        ids = sorted(table[m], key=id_key)
        for j, impl in enumerate(impls):
            xs, ys, hatches = [], [], []
            for i, pid in enumerate(ids):
                row = table[m][pid].get(impl)
                if row is None:
                    continue
                if metric == "time":
                    y = row["ms"]
                else:
                    base = table[m][pid].get("cudnn")
                    if base is None:
                        continue
                    y = base["ms"] / row["ms"]
                xs.append(i - 0.4 + bar * (j + 0.5))
                ys.append(y)
                ok = row.get("status", "ok") == "ok"
                failed_any = failed_any or not ok
                hatches.append("" if ok else "xx")
            bars = ax.bar(xs, ys, bar, color=COLORS.get(impl), edgecolor="black", linewidth=0.3)
            for b, h in zip(bars, hatches):
                b.set_hatch(h)
        ax.set_xticks(range(len(ids)))
        ax.set_xticklabels(ids)
        ax.set_xlim(-0.6, len(ids) - 0.4)
        if metric == "time":
            ax.set_yscale("log")
            ax.set_ylabel("median ms (log)")
        else:
            ax.axhline(1.0, color=COLORS["cudnn"], linewidth=1.2, linestyle="--")
            ax.set_ylabel("speedup vs cuDNN")
        ax.set_title("math: {}".format(m), loc="left", fontsize=10)
        ax.grid(axis="y", alpha=0.3, which="both")
        ax.set_xlabel("KernelBench level-1 problem")
    handles = [Patch(facecolor=COLORS[i], edgecolor="black", label=LABELS[i]) for i in impls]
    if metric == "speedup":
        handles.append(plt.Line2D([0], [0], color=COLORS["cudnn"], linestyle="--", label="cuDNN = 1"))
    if failed_any:
        handles.append(Patch(facecolor="white", edgecolor="black", hatch="xx", label="failed the float64 check"))
    fig.suptitle(title, y=1 - 0.1 / height, fontsize=10, va="top")
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 1 - 0.5 / height),
               ncol=min(4, len(handles)), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - header_in / height))
    fig.savefig(out_path, dpi=120)
    print("wrote {}".format(out_path))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bench_json", help="conv_bench --json output")
    ap.add_argument("--torch", help="torch_conv.py --json output, drawn as one more bar")
    ap.add_argument("--metric", choices=("time", "speedup"), default="speedup")
    ap.add_argument("--halves", action="store_true", help="also draw the parts of split problems (86.dw, 86.pw)")
    ap.add_argument("-o", "--output", default="conv_bench.png")
    args = ap.parse_args()

    bench = load(args.bench_json)
    torch_doc = load(args.torch) if args.torch else None
    meta = bench.get("meta", {})
    title = "convjit vs cuDNN{} on {}\nmedian of {} runs; {}".format(
        " and PyTorch eager" if torch_doc else "", meta.get("gpu", "?"), meta.get("iters", "?"),
        "time, lower is better" if args.metric == "time" else "speedup over cuDNN, higher is better")
    draw(collect(bench, torch_doc, args.halves), args.metric, title, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
