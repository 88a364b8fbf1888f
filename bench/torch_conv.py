#!/usr/bin/env python3
"""PyTorch eager F.conv2d on the KernelBench level-1 2D convolutions, timed the way
conv_bench times convjit and cuDNN (CUDA events around each call, median after warm-up),
so that convjit's numbers can be read against what users run today.

Math modes: strict = float32 with TF32 off for cuDNN convolutions, tf32 = float32 with
TF32 allowed (PyTorch's default for convolutions), fp16 and bf16 = half / bfloat16
tensors. Layouts: nchw = contiguous tensors, nhwc = torch.channels_last input and
weights (so cuDNN runs its NHWC kernels and returns channels-last). Problem 86 (separable)
is one row: depthwise then pointwise, timed together. Writes JSON (--json) and prints a
table. --list and --help need no GPU and no torch.
"""
import argparse
import datetime
import json
import os
import statistics
import sys

MATHS = ("strict", "tf32", "fp16", "bf16")
LAYOUTS = ("nchw", "nhwc")
DEFAULT_IDS = "50,55,56,62,63,80,82,83,84,85,86,87"


def default_workloads():
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.join(here, "..", "workloads", "kernelbench_level1_conv.json")


def conv_part(n, c, h, w, k, r, s, stride, pad, dilation, groups, bias):
    return dict(n=n, c=c, h=h, w=w, k=k, r=r, s=s, stride=tuple(stride), pad=tuple(pad),
                dilation=tuple(dilation), groups=groups, bias=bias)


def out_extent(size, pad, dilation, kernel, stride):
    return (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1


def output_hw(p):
    return (out_extent(p["h"], p["pad"][0], p["dilation"][0], p["r"], p["stride"][0]),
            out_extent(p["w"], p["pad"][1], p["dilation"][1], p["s"], p["stride"][1]))


def flops(p):
    oh, ow = output_hw(p)
    return 2.0 * p["n"] * p["k"] * oh * ow * (p["c"] // p["groups"]) * p["r"] * p["s"]


def short_text(p):
    """The descriptor's short one-line form, as conv_bench prints it (defaults left out)."""
    out = "n{n}c{c}h{h}w{w}k{k}r{r}s{s}".format(**p)
    for name, pair, default in (("stride", p["stride"], 1), ("pad", p["pad"], 0), ("dilation", p["dilation"], 1)):
        if pair != (default, default):
            out += " {}={}".format(name, pair[0] if pair[0] == pair[1] else "{},{}".format(*pair))
    if p["groups"] != 1:
        out += " groups={}".format(p["groups"])
    if p["bias"]:
        out += " bias=1"
    return out


def load_problems(path, ids, scale, bias):
    """KernelBench 2D convolutions as lists of parts; other problems come back as skipped."""
    with open(path) as f:
        doc = json.load(f)
    wanted = set(ids) if ids else None
    problems, skipped = [], []
    for entry in doc["problems"]:
        pid = str(entry["id"])
        if wanted is not None and pid not in wanted:
            continue
        op, spatial = entry.get("op"), entry.get("spatial", [])
        if op not in ("conv", "separable") or len(spatial) != 2:
            skipped.append((pid, "op {} with {} spatial dims is not a 2D forward convolution".format(op, len(spatial))))
            continue
        n = max(1, round(entry["N"] * scale))
        has_bias = bool(entry.get("bias")) and bias
        args = dict(stride=entry["stride"], pad=entry["padding"], dilation=entry["dilation"])
        c, k = entry["C"], entry["K"]
        h, w = spatial
        r, s = entry["kernel"]
        if op == "separable":
            dw = conv_part(n, c, h, w, c, r, s, groups=c, bias=has_bias, **args)
            oh, ow = output_hw(dw)
            pw = conv_part(n, c, oh, ow, k, 1, 1, (1, 1), (0, 0), (1, 1), 1, has_bias)
            parts = [dw, pw]
        else:
            parts = [conv_part(n, c, h, w, k, r, s, groups=entry.get("groups", 1), bias=has_bias, **args)]
        problems.append(dict(id=pid, name=entry.get("name", ""), parts=parts))
    if wanted is not None:
        missing = wanted - {p["id"] for p in problems} - {pid for pid, _ in skipped}
        if missing:
            sys.exit("torch_conv.py: --ids: no problem {} in {}".format(",".join(sorted(missing)), path))
    return problems, skipped


def set_conv_tf32(torch, allowed):
    """TF32 for cuDNN convolutions on or off; returns the API that was used.

    PyTorch 2.9 added torch.backends.cudnn.conv.fp32_precision and warns that the older
    allow_tf32 flag goes away, so the newer setting is used when it exists."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        conv.fp32_precision = "tf32" if allowed else "ieee"
        return "torch.backends.cudnn.conv.fp32_precision={}".format(conv.fp32_precision)
    torch.backends.cudnn.allow_tf32 = allowed
    return "torch.backends.cudnn.allow_tf32={}".format(torch.backends.cudnn.allow_tf32)


def time_calls(torch, fn, warmup, iters, slow_ms, slow_iters):
    """Median of CUDA-event times around each call, no host sync between calls."""
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    stop.record()
    stop.synchronize()
    reduced = slow_ms > 0 and start.elapsed_time(stop) > slow_ms
    if reduced:
        warmup, iters = 0, min(iters, slow_iters)
    for _ in range(warmup):
        fn()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    stops = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    for a, b in zip(starts, stops):
        a.record()
        fn()
        b.record()
    torch.cuda.synchronize()
    return [a.elapsed_time(b) for a, b in zip(starts, stops)], reduced


def quantile(sorted_ms, q):
    return sorted_ms[int(q * (len(sorted_ms) - 1) + 0.5)]


def run_problem(torch, problem, math, layout, args, gen):
    import torch.nn.functional as F

    dtype = {"strict": torch.float32, "tf32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[math]
    memory_format = torch.channels_last if layout == "nhwc" else torch.contiguous_format
    lo = 0.0 if args.positive else -1.0

    def uniform(*shape):
        t = torch.rand(*shape, device="cuda", generator=gen)
        return (t * (1.0 - lo) + lo).to(dtype)

    tensors = []
    for p in problem["parts"]:
        x = uniform(p["n"], p["c"], p["h"], p["w"]).to(memory_format=memory_format) if not tensors else None
        wt = uniform(p["k"], p["c"] // p["groups"], p["r"], p["s"]).to(memory_format=memory_format)
        b = uniform(p["k"]) if p["bias"] else None
        tensors.append((x, wt, b))
    x0 = tensors[0][0]
    parts = problem["parts"]

    def call():
        y = x0
        for p, (_, wt, b) in zip(parts, tensors):
            y = F.conv2d(y, wt, b, stride=p["stride"], padding=p["pad"], dilation=p["dilation"], groups=p["groups"])
        return y

    with torch.no_grad():
        ms, reduced = time_calls(torch, call, args.warmup, args.iters, args.skip_slow_ms, args.slow_iters)
    ms.sort()
    return ms, reduced


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", default=default_workloads(), help="KernelBench-format workload file")
    ap.add_argument("--ids", default=DEFAULT_IDS, help="problem ids (default %(default)s); 'all' for every 2D one")
    ap.add_argument("--math", default=",".join(MATHS), help="strict, tf32, fp16, bf16 (default all)")
    ap.add_argument("--layout", default="nchw",
                    help="nchw, nhwc (torch.channels_last input and weights); a list runs each (default nchw)")
    ap.add_argument("--iters", type=int, default=50, help="timed calls per row; the median is reported")
    ap.add_argument("--warmup", type=int, default=10, help="untimed calls first")
    ap.add_argument("--skip-slow-ms", type=float, default=0, help="time a row with --slow-iters calls when one call takes longer")
    ap.add_argument("--slow-iters", type=int, default=5)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every batch size by this (0 < F <= 1)")
    ap.add_argument("--positive", action="store_true", help="inputs uniform in [0, 1) like torch.rand (default [-1, 1))")
    ap.add_argument("--no-bias", action="store_true", help="drop the bias from every problem")
    ap.add_argument("--cudnn-benchmark", action="store_true",
                    help="torch.backends.cudnn.benchmark = True (default False: PyTorch's default heuristics)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--json", help="write the rows and metadata here")
    ap.add_argument("--list", action="store_true", help="print the selected problems and exit (no GPU needed)")
    args = ap.parse_args()

    maths = [m for m in args.math.split(",") if m]
    for m in maths:
        if m not in MATHS:
            ap.error("--math: expected strict, tf32, fp16 or bf16, got '{}'".format(m))
    layouts = []
    for layout in (l for l in args.layout.split(",") if l):
        if layout not in LAYOUTS:
            ap.error("--layout: expected nchw or nhwc, got '{}'".format(layout))
        if layout not in layouts:
            layouts.append(layout)
    if not layouts:
        ap.error("--layout: expected nchw, nhwc or both")
    if args.iters < 1 or args.warmup < 0 or args.slow_iters < 1:
        ap.error("--iters and --slow-iters must be >= 1, --warmup >= 0")
    if not 0 < args.scale <= 1:
        ap.error("--scale: expected 0 < F <= 1")
    ids = None if args.ids == "all" else [i for i in args.ids.split(",") if i]
    problems, skipped = load_problems(args.workloads, ids, args.scale, not args.no_bias)

    if args.list:
        for p in problems:
            print("{:<4} {:>9.1f} GFLOP  {}".format(p["id"], sum(flops(q) for q in p["parts"]) / 1e9,
                                                    " then ".join(short_text(q) for q in p["parts"])))
        for pid, why in skipped:
            print("skipped {}: {}".format(pid, why))
        return 0

    try:
        import torch
    except ImportError as e:
        print("torch_conv.py: PyTorch is not installed here ({})".format(e), file=sys.stderr)
        return 3
    if not torch.cuda.is_available():
        print("torch_conv.py: no CUDA device visible to PyTorch", file=sys.stderr)
        return 3
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    gen = torch.Generator(device="cuda")
    gen.manual_seed(args.seed)
    gpu = torch.cuda.get_device_name()
    print("gpu       {}; torch {}, CUDA {}, cuDNN {}".format(gpu, torch.__version__, torch.version.cuda,
                                                          torch.backends.cudnn.version()))
    print("timing    median of {} calls after {} warm-up, CUDA events per call; cudnn.benchmark={}".format(
        args.iters, args.warmup, args.cudnn_benchmark))
    for pid, why in skipped:
        print("skipped   {}: {}".format(pid, why))
    print("{:<4} {:<48} {:<6} {:<6} {:>9} {:>8}  {}".format("id", "problem", "math", "layout", "ms", "TFLOP/s",
                                                            "status"))

    rows, tf32_api = [], {}
    for problem in problems:
        text = " + ".join(short_text(q) for q in problem["parts"])
        total_flops = sum(flops(q) for q in problem["parts"])
        for layout, math in ((l, m) for l in layouts for m in maths):
            tf32_api[math] = set_conv_tf32(torch, math != "strict")
            row = dict(id=problem["id"], group=problem["id"], name=problem["name"], problem=text, math=math,
                       layout=layout, impl="torch_eager", flops=total_flops, ms=None, p10_ms=None, p90_ms=None,
                       iters=0, tflops=None, status="ok", note="")
            try:
                ms, reduced = run_problem(torch, problem, math, layout, args, gen)
                row.update(ms=statistics.median(ms), p10_ms=quantile(ms, 0.1), p90_ms=quantile(ms, 0.9),
                           iters=len(ms))
                row["tflops"] = total_flops / (row["ms"] * 1e-3) / 1e12
                if reduced:
                    row["note"] = "{} iters (slow)".format(len(ms))
            except (RuntimeError, torch.cuda.OutOfMemoryError) as e:
                row["status"] = "error: " + str(e).splitlines()[0][:200]
            finally:
                torch.cuda.empty_cache()
            rows.append(row)
            print("{:<4} {:<48} {:<6} {:<6} {:>9} {:>8}  {}{}".format(
                row["id"], text[:48], math, layout, "-" if row["ms"] is None else "{:.3f}".format(row["ms"]),
                "-" if row["tflops"] is None else "{:.1f}".format(row["tflops"]), row["status"],
                "  [" + row["note"] + "]" if row["note"] else ""), flush=True)

    if args.json:
        meta = dict(program="torch_conv.py", date=datetime.datetime.now(datetime.timezone.utc).isoformat(),
                    command=" ".join(sys.argv), gpu=gpu, torch=torch.__version__, cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version(), iters=args.iters, warmup=args.warmup,
                    cudnn_benchmark=args.cudnn_benchmark, tf32_setting=tf32_api, layouts=layouts,
                    data="uniform [0,1)" if args.positive else "uniform [-1,1)", bias=not args.no_bias,
                    timing="CUDA events around each call, no sync between calls, median; L2 not flushed",
                    skipped=[dict(id=pid, reason=why) for pid, why in skipped])
        tmp = args.json + ".tmp.{}".format(os.getpid())
        with open(tmp, "w") as f:
            json.dump(dict(meta=meta, rows=rows), f, indent=1)
        os.replace(tmp, args.json)
        print("wrote     {}".format(args.json))
    return 1 if any(r["status"] != "ok" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
