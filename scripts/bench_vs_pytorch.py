#!/usr/bin/env python3
"""Times PyTorch and conv2d-bench on the same suite in one run and prints the ratios.

    python scripts/bench_vs_pytorch.py [--threads N] [--suite FILE] [--dtype f32|f64|f16|bf16]
                                       [--rounds R]

Needs torch (pip install torch==2.15.0). Both sides: NCHW of the same element type (float32
unless --dtype says otherwise), two warm-up calls, then
calls until at least 20 calls and 0.5 s, median reported. The two sides take turns case by
case for R rounds (default 3: each case on PyTorch, then on conv2d-bench with a one-case
suite, then the next case), and each case keeps each side's fastest round, so that a slow
phase of a shared machine does not fall on one side only (the speed of the machine this
was written on drifted 10-20% from one minute to the next, and whole-suite turns of half a
minute let that drift fall on one side). Ratio = PyTorch time / our time (above 1: we are
faster).
"""
import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def median_seconds(fn):
    for _ in range(2):
        fn()
    samples = []
    start = time.perf_counter()
    while len(samples) < 20 or time.perf_counter() - start < 0.5:
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    samples.sort()
    return samples[len(samples) // 2]


DTYPES = {"f32": torch.float32, "f64": torch.float64, "f16": torch.float16,
          "bf16": torch.bfloat16}


def torch_call(case, dtype):
    n, cin, h, w, cout, g = (case[k] for k in ("n", "cin", "h", "w", "cout", "groups"))
    k, s, p, d = case["k"], case["stride"], case["padding"], case["dilation"]
    x = torch.randn(n, cin, h, w, dtype=dtype)
    if case["op"] == "conv_transpose2d":
        wt = torch.randn(cin, cout // g, *k, dtype=dtype)
        op = case.get("output_padding", [0, 0])
        return lambda: torch.nn.functional.conv_transpose2d(x, wt, None, s, p, op, g, d)
    wt = torch.randn(cout, cin // g, *k, dtype=dtype)
    y = torch.nn.functional.conv2d(x, wt, None, s, p, d, g)
    gy = torch.randn_like(y)
    if case["op"] == "conv2d":
        return lambda: torch.nn.functional.conv2d(x, wt, None, s, p, d, g)
    mask = [True, False, False] if case["op"] == "conv2d_bwd_input" else [False, True, False]
    return lambda: torch.ops.aten.convolution_backward(
        gy, x, wt, None, s, p, d, False, [0, 0], g, mask)


def machine():
    """The CPU (vendor, family, model and name from /proc/cpuinfo where there is one) and
    the commit measured, for the header: figures are only comparable on one machine."""
    fields = {}
    try:
        for line in open("/proc/cpuinfo"):
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    cpu = (f"{fields.get('vendor_id', '?')} family {fields.get('cpu family', '?')} model "
           f"{fields.get('model', '?')} ({fields.get('model name', platform.processor())})")
    git = lambda *a: subprocess.run(["git", *a], cwd=ROOT, capture_output=True,
                                    text=True).stdout.strip()
    dirty = "+changes" if git("status", "--porcelain", "--untracked-files=no") else ""
    return f"{cpu}, {os.cpu_count()} CPUs, commit {git('rev-parse', '--short', 'HEAD')}{dirty}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--suite", default=os.path.join(ROOT, "conv2d-bench", "suite.json"))
    ap.add_argument("--dtype", default="f32", choices=sorted(DTYPES))
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    suite = json.load(open(args.suite))
    cases = suite["cases"]
    subprocess.run(["cargo", "build", "-q", "--release", "-p", "conv2d-bench"], cwd=ROOT,
                   check=True)
    bench = os.path.join(ROOT, "target", "release", "conv2d-bench")
    torch_ms, ours = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        one, out = os.path.join(tmp, "case.json"), os.path.join(tmp, "rust.json")
        for turn in range(1, args.rounds + 1):
            for c in cases:
                with torch.no_grad():
                    ms = median_seconds(torch_call(c, DTYPES[args.dtype])) * 1e3
                torch_ms[c["name"]] = min(ms, torch_ms.get(c["name"], math.inf))
                print(f"round {turn}/{args.rounds} torch {c['name']}: {ms:.3f} ms",
                      file=sys.stderr)
                json.dump({**suite, "cases": [c]}, open(one, "w"))
                subprocess.run([bench, "--suite", one, "--threads", str(args.threads),
                                "--json", out, "--dtype", args.dtype],
                               cwd=ROOT, check=True, stdout=sys.stderr)
                for r in json.load(open(out))["results"]:
                    best = ours.get(r["case"])
                    if best is None or r["median_ms"] < best["median_ms"]:
                        ours[r["case"]] = r
    print(f"torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()}), "
          f"{args.threads} threads, {args.dtype}, {time.strftime('%Y-%m-%d')}, fastest of "
          f"{args.rounds} rounds per side\n{machine()}")
    print(f"| case | op | PyTorch ms | conv2d ms | ratio | algorithm |")
    print(f"|---|---|---:|---:|---:|---|")
    logs = []
    for c in cases:
        r = ours[c["name"]]
        ratio = torch_ms[c["name"]] / r["median_ms"]
        logs.append(math.log(ratio))
        print(f"| {c['name']} | {c['op']} | {torch_ms[c['name']]:.3f} | {r['median_ms']:.3f} "
              f"| {ratio:.2f}x | {r['algorithm']} |")
    print(f"\ngeomean ratio: {math.exp(sum(logs) / len(logs)):.3f}x "
          f"(min {math.exp(min(logs)):.2f}x, max {math.exp(max(logs)):.2f}x)")


if __name__ == "__main__":
    main()
