"""Overhead of the Python package over the Rust API, in one process on the same inputs:
batch-256 top-10 throughput and batch-1 latency on a RecBole-default SASRec (23,716 items,
width 64, 2 layers, window 50, seeded random weights), random full-length histories; and the
per-call overhead alone on a tiny SASRec (64 items, width 8, window 4), where the Rust call
takes a few microseconds and the difference is not lost in the noise of a shared machine.

    python python/bench.py [--items 23716] [--rounds 7]

The Rust side is timed by `seqrec._seqrec._time_rust`, a loop over the engine's
`topk_batch_into` / `topk_into` compiled into the same extension; the two sides alternate and
the best round of each is reported (PERFORMANCE.md)."""

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
# The installed package, not its sources beside this script (they lack the native module).
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != HERE]
sys.path.insert(0, os.path.join(HERE, "tests"))
from conftest import random_sasrec  # noqa: E402

import seqrec  # noqa: E402
from seqrec import _seqrec  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=23716)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        model = seqrec.Model.load(random_sasrec(os.path.join(d, "m.safetensors"), args.items))
    rng = np.random.default_rng(1)
    grid = rng.integers(1, model.n_items, size=(256, model.max_len), dtype=np.uint32)
    model.topk_batch(grid, k=10)  # warm-up
    b_py, b_rs, one_py, one_rs = [], [], [], []
    for _ in range(args.rounds):
        t = time.perf_counter()
        for _ in range(4):
            model.topk_batch(grid, k=10)
        b_py.append((time.perf_counter() - t) / 4)
        b_rs.append(_seqrec._time_rust(model, grid, 10, 4))
        t = time.perf_counter()
        for row in grid:
            model.topk(row, 10)
        one_py.append((time.perf_counter() - t) / len(grid))
        one_rs.append(_seqrec._time_rust(model, grid, 10, 1, True))
    # The per-call overhead, on a model whose Rust call is a few microseconds.
    with tempfile.TemporaryDirectory() as d:
        tiny = seqrec.Model.load(random_sasrec(os.path.join(d, "t.safetensors"), 64, hidden=8,
                                               layers=1, inner=16, max_len=4))
    small = rng.integers(1, 64, size=(256, 4), dtype=np.uint32)
    rows = list(small)
    tiny_py, tiny_rs = [], []
    for _ in range(args.rounds):
        t = time.perf_counter()
        for _ in range(20):
            for row in rows:
                tiny.topk(row, 10)
        tiny_py.append((time.perf_counter() - t) / (20 * len(rows)))
        tiny_rs.append(_seqrec._time_rust(tiny, small, 10, 20, True))
    med = min  # best of the rounds: the least disturbed by other work on a shared machine
    out = {
        "items": args.items,
        "batch256_py_seq_per_s": 256 / med(b_py),
        "batch256_rust_seq_per_s": 256 / med(b_rs),
        "batch256_py_over_rust": med(b_rs) / med(b_py),
        "batch1_py_us": med(one_py) * 1e6,
        "batch1_rust_us": med(one_rs) * 1e6,
        "batch1_overhead_us": (med(one_py) - med(one_rs)) * 1e6,
        "tiny_batch1_py_us": min(tiny_py) * 1e6,
        "tiny_batch1_rust_us": min(tiny_rs) * 1e6,
        "overhead_us": (min(tiny_py) - min(tiny_rs)) * 1e6,
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
