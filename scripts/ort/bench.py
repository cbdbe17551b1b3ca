#!/usr/bin/env python3
"""Times an exported top-k graph in ONNX Runtime the way `seqrec bench` times the engine:
seeded random full-length histories (4 batches, cycled), warm-up iterations (as many as the
timed ones, at most 20), then per-call wall times.

    python scripts/ort/bench.py MODEL.onnx [--batch 1] [--threads 2] [--iters 200] [--seed 1] [--format json]

The JSON object has the shape of `seqrec bench --format json`:
{"batch", "threads", "p50_ms", "p99_ms", "seq_per_s", "model", "n_items", "iters", "k", "runtime"};
seq_per_s is batch / mean call time. ORT runs with intra_op_num_threads = --threads,
inter_op_num_threads = 1, sequential execution and every graph optimisation (ORT_ENABLE_ALL);
the time of a call is `InferenceSession.run` from Python (feeds already built).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import onnxruntime as ort

from common import CONFIG_KEY, InputError, fail, hyper_parameters, random_histories


def percentile(sorted_times: list[float], p: float) -> float:
    """The same nearest-rank rule as `seqrec bench`."""
    idx = int(round((len(sorted_times) - 1) * p))
    return sorted_times[min(idx, len(sorted_times) - 1)]


def session(path: str, threads: int, optimized_out: str | None = None) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if optimized_out:
        so.optimized_model_filepath = optimized_out
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("onnx", help="graph written by scripts/ort/export.py")
    ap.add_argument("--batch", type=int, default=1, help="histories per timed call")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    ap.add_argument("--iters", type=int, default=200, help="timed iterations")
    ap.add_argument("--seed", type=int, default=1, help="seed of the random histories")
    ap.add_argument("--format", choices=["text", "json"], default="text")
    ap.add_argument("--dump-optimized", metavar="PATH", help="also write ORT's optimised graph to PATH")
    args = ap.parse_args()
    if min(args.batch, args.threads, args.iters) < 1:
        fail("--batch, --threads and --iters must be at least 1")
    sess = session(args.onnx, args.threads, args.dump_optimized)
    meta = sess.get_modelmeta().custom_metadata_map
    if CONFIG_KEY not in meta:
        fail(f"{args.onnx}: no `{CONFIG_KEY}` metadata (not written by scripts/ort/export.py)")
    try:
        hp = hyper_parameters(json.loads(meta[CONFIG_KEY]))
    except InputError as e:
        fail(f"{args.onnx}: {e}")
    rng = np.random.default_rng(args.seed)
    batches = [
        {"item_seq": random_histories(rng, args.batch, hp["n_items"], hp["max_len"])} for _ in range(4)
    ]
    outputs = ["top_items", "top_scores"]
    warmup = min(args.iters, 20)
    times = []
    for i in range(warmup + args.iters):
        feeds = batches[i % 4]
        t = time.perf_counter()
        sess.run(outputs, feeds)
        elapsed = time.perf_counter() - t
        if i >= warmup:
            times.append(elapsed)
    mean = sum(times) / len(times)
    times.sort()
    p50, p99 = percentile(times, 0.5) * 1e3, percentile(times, 0.99) * 1e3
    seq_per_s = args.batch / mean
    runtime = f"onnxruntime {ort.__version__}"
    if args.format == "json":
        print(
            json.dumps(
                {
                    "batch": args.batch,
                    "threads": args.threads,
                    "p50_ms": p50,
                    "p99_ms": p99,
                    "seq_per_s": seq_per_s,
                    "model": hp["model"],
                    "n_items": hp["n_items"],
                    "iters": args.iters,
                    "k": int(meta.get("seqrec.k", 0)),
                    "runtime": runtime,
                }
            )
        )
    else:
        print(
            f"{hp['model']} ({hp['n_items']} items) [{runtime}]: batch {args.batch}, {args.threads} threads, "
            f"{args.iters} iters: p50 {p50:.3f} ms, p99 {p99:.3f} ms, {seq_per_s:.0f} seq/s"
        )


if __name__ == "__main__":
    main()
