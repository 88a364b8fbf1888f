#!/usr/bin/env python3
"""ResNet-50 inference with convjit's convolutions against eager cuDNN, in one run.

torchvision's resnet50 with random weights (nothing downloaded), converted with
convjit.torch.convert on a deep copy. For each configuration (channels-last bf16, and
fp32 with TF32 on, as PyTorch's default for convolutions):
  1. prewarm the converted model's convolutions (compile time, or cache hits),
  2. compare its output with eager's (relative L2 error, against the dtype's bound),
  3. time the forward end to end (CUDA events, median after warm-up; eager and convjit
     alternate in blocks, so both see the same clocks), launched op by op and replayed
     from a CUDA graph,
  4. time each convolution layer (CUDA events around each Conv2d, medians).

    python examples/resnet50_torch.py [--batch 32] [--iters 30] [--configs bf16-cl,fp32-tf32]
                                      [--json out.json] [--markdown out.md]

Exit status 1 when an output is outside its tolerance, 0 otherwise.
"""

import argparse
import copy
import json
import statistics
import sys
import time

import torch
import torchvision

import convjit
import convjit.torch as cj

# End-to-end bound on the relative L2 distance between convjit's and eager's outputs:
# two implementations that each round per layer (bf16: ~2e-3 a conv; TF32: ~3e-4),
# compounded through 53 convolutions and the batch norms between them.
CONFIGS = {
    "bf16-cl": dict(dtype=torch.bfloat16, channels_last=True, tf32=True, tolerance=5e-2),
    "fp32-tf32": dict(dtype=torch.float32, channels_last=False, tf32=True, tolerance=1e-2),
    "fp32-tf32-cl": dict(dtype=torch.float32, channels_last=True, tf32=True, tolerance=1e-2),
    "fp32-strict": dict(dtype=torch.float32, channels_last=False, tf32=False, tolerance=1e-4),
    "fp16-cl": dict(dtype=torch.float16, channels_last=True, tf32=True, tolerance=5e-2),
}


def set_tf32(enabled):
    cudnn = torch.backends.cudnn
    if hasattr(cudnn, "conv") and hasattr(torch.backends, "fp32_precision"):
        cudnn.conv.fp32_precision = "tf32" if enabled else "ieee"
    else:
        cudnn.allow_tf32 = enabled


def rel_l2(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()


def time_forward(fn, iters, warmup):
    """Per-iteration milliseconds of fn() by CUDA events (one pair per iteration)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    for s, e in zip(starts, ends):
        s.record()
        fn()
        e.record()
    torch.cuda.synchronize()
    return [s.elapsed_time(e) for s, e in zip(starts, ends)]


def alternate(fns, iters, warmup, blocks=3):
    """Median ms of each fn, timed in `blocks` alternating blocks of iters // blocks."""
    samples = {name: [] for name in fns}
    per_block = max(1, iters // blocks)
    for _ in range(blocks):
        for name, fn in fns.items():
            samples[name] += time_forward(fn, per_block, warmup)
    return {name: statistics.median(v) for name, v in samples.items()}


def graphed(model, x):
    """model(x) captured in a CUDA graph after a warm-up on a side stream; returns replay."""
    static_x = x.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            model(static_x)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_y = model(static_x)
    return graph.replay, static_y


def per_layer_ms(model, x, iters, warmup):
    """Median ms of each Conv2d's forward, from CUDA events recorded by hooks."""
    events = {}
    handles = []
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Conv2d):
            events[name] = []

            def pre(mod, inp, name=name):
                e = torch.cuda.Event(enable_timing=True)
                e.record()
                events[name].append([e, None])

            def post(mod, inp, out, name=name):
                e = torch.cuda.Event(enable_timing=True)
                e.record()
                events[name][-1][1] = e

            handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    try:
        for _ in range(warmup):
            model(x)
        torch.cuda.synchronize()
        for v in events.values():
            v.clear()
        for _ in range(iters):
            model(x)
        torch.cuda.synchronize()
    finally:
        for h in handles:
            h.remove()
    return {name: statistics.median(s.elapsed_time(e) for s, e in v) for name, v in events.items()}


def run_config(name, cfg, args):
    set_tf32(cfg["tf32"])
    memory_format = torch.channels_last if cfg["channels_last"] else torch.contiguous_format
    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None).to("cuda", cfg["dtype"]).to(memory_format=memory_format).eval()
    converted = cj.convert(copy.deepcopy(model))
    x = torch.randn(args.batch, 3, 224, 224, device="cuda", dtype=cfg["dtype"]).contiguous(memory_format=memory_format)
    out = {"config": name, "batch": args.batch, "dtype": str(cfg["dtype"]), "channels_last": cfg["channels_last"],
           "tf32": cfg["tf32"]}  # fmt: skip

    t0 = time.perf_counter()
    warm = cj.prewarm(converted, (x,))
    out["prewarm"] = dict(seconds=time.perf_counter() - t0, distinct_convs=len(warm.descs), compiled=warm.compiled,
                          already_cached=warm.already_cached, failed=warm.failed, errors=warm.errors[:3])  # fmt: skip
    print(f"[{name}] prewarm: {len(warm.descs)} distinct convolutions, {warm.compiled} compiled, "
          f"{warm.already_cached} cached, {warm.failed} failed, {out['prewarm']['seconds']:.1f} s", flush=True)  # fmt: skip

    with torch.no_grad():
        want = model(x)
        got = converted(x)
        torch.cuda.synchronize()
        err = rel_l2(got, want)
        out["rel_l2_vs_eager"] = err
        out["tolerance"] = cfg["tolerance"]
        out["match"] = err < cfg["tolerance"]
        out["output_channels_last"] = got.is_contiguous(memory_format=torch.channels_last)
        print(f"[{name}] output vs eager: relative L2 {err:.2e} (bound {cfg['tolerance']:.0e}) "
              f"{'PASS' if out['match'] else 'FAIL'}", flush=True)  # fmt: skip

        times = alternate({"eager": lambda: model(x), "convjit": lambda: converted(x)}, args.iters, args.warmup)
        out["end_to_end_ms"] = times
        replay_eager, _ = graphed(model, x)
        replay_cj, y_graph = graphed(converted, x)
        replay_cj()
        torch.cuda.synchronize()
        out["graph_rel_l2_vs_eager"] = rel_l2(y_graph, want)
        graph_times = alternate({"eager": replay_eager, "convjit": replay_cj}, args.iters, args.warmup)
        out["cuda_graph_ms"] = graph_times
        for label, t in (("launched", times), ("CUDA graph", graph_times)):
            print(f"[{name}] end to end ({label}): eager cuDNN {t['eager']:.3f} ms, convjit {t['convjit']:.3f} ms, "
                  f"speedup {t['eager'] / t['convjit']:.2f}x", flush=True)  # fmt: skip

        layers_eager = per_layer_ms(model, x, args.layer_iters, args.warmup)
        layers_cj = per_layer_ms(converted, x, args.layer_iters, args.warmup)
    # Each layer's problem, from its input shape (one pass of a single image).
    shapes = {}
    convs = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}
    def record(mod, inp, n):
        shapes.setdefault(n, tuple(inp[0].shape))  # returns None: a pre-hook's result would replace the input

    hooks = [m.register_forward_pre_hook(lambda mod, inp, n=n: record(mod, inp, n)) for n, m in convs.items()]
    with torch.no_grad():
        model(x[:1])
    for h in hooks:
        h.remove()
    rows = []
    for n, m in convs.items():
        c, h, w = shapes[n][1:]
        problem = (f"c{c}h{h}w{w}k{m.out_channels}r{m.kernel_size[0]}s{m.kernel_size[1]}"
                   f"{' stride=' + str(m.stride[0]) if m.stride[0] != 1 else ''}")  # fmt: skip
        rows.append(dict(layer=n, problem=problem, eager_ms=layers_eager[n], convjit_ms=layers_cj[n]))
    out["layers"] = rows
    out["conv_sum_ms"] = {"eager": sum(r["eager_ms"] for r in rows), "convjit": sum(r["convjit_ms"] for r in rows)}
    print(f"[{name}] per layer (median of {args.layer_iters}, events around each Conv2d):")
    print(f"  {'layer':<28} {'problem (n=' + str(args.batch) + ')':<34} {'eager ms':>9} {'convjit ms':>10} {'speedup':>8}")
    for r in rows:
        print(f"  {r['layer']:<28} {r['problem']:<34} {r['eager_ms']:>9.3f} {r['convjit_ms']:>10.3f} "
              f"{r['eager_ms'] / r['convjit_ms']:>7.2f}x")  # fmt: skip
    s = out["conv_sum_ms"]
    print(f"  {'all convolutions':<63} {s['eager']:>9.3f} {s['convjit']:>10.3f} {s['eager'] / s['convjit']:>7.2f}x",
          flush=True)  # fmt: skip
    return out


def markdown(results):
    lines = []
    for r in results:
        e, g, s = r["end_to_end_ms"], r["cuda_graph_ms"], r["conv_sum_ms"]
        lines += [
            f"### ResNet-50, batch {r['batch']}, {r['config']}",
            "",
            f"Output vs eager: relative L2 {r['rel_l2_vs_eager']:.2e} (bound {r['tolerance']:.0e}). "
            f"Prewarm: {r['prewarm']['distinct_convs']} distinct convolutions, {r['prewarm']['compiled']} compiled "
            f"in {r['prewarm']['seconds']:.1f} s.",
            "",
            "| | eager cuDNN | convjit | speedup |",
            "|---|---|---|---|",
            f"| end to end, launched | {e['eager']:.3f} ms | {e['convjit']:.3f} ms | {e['eager'] / e['convjit']:.2f}x |",
            f"| end to end, CUDA graph | {g['eager']:.3f} ms | {g['convjit']:.3f} ms | {g['eager'] / g['convjit']:.2f}x |",
            f"| all convolutions (per-layer sum) | {s['eager']:.3f} ms | {s['convjit']:.3f} ms | "
            f"{s['eager'] / s['convjit']:.2f}x |",
            "",
            "| layer | problem | eager ms | convjit ms | speedup |",
            "|---|---|---|---|---|",
        ]
        lines += [f"| {x['layer']} | {x['problem']} | {x['eager_ms']:.3f} | {x['convjit_ms']:.3f} | "
                  f"{x['eager_ms'] / x['convjit_ms']:.2f}x |" for x in r["layers"]]  # fmt: skip
        lines.append("")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--iters", type=int, default=30, help="timed end-to-end iterations per model")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--layer-iters", type=int, default=10, help="timed iterations for the per-layer times")
    parser.add_argument("--configs", default="bf16-cl,fp32-tf32", help=f"comma-separated, of {', '.join(CONFIGS)}")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--markdown", help="write docs/perf.md-ready tables here")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("resnet50_torch: needs a CUDA GPU", file=sys.stderr)
        return 2
    torch.backends.cudnn.benchmark = True  # eager's best cuDNN algorithms, as a tuned deployment would
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, torchvision {torchvision.__version__}, "
          f"convjit {convjit.__version__}, cache {convjit.default_runtime().cache_dir}", flush=True)  # fmt: skip
    results = [run_config(name, CONFIGS[name], args) for name in args.configs.split(",")]
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown(results))
    return 0 if all(r["match"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
