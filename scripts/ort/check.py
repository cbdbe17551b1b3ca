#!/usr/bin/env python3
"""Checks that an exported ONNX graph recommends what the engine recommends: runs the graph in
ONNX Runtime and `seqrec score` on the same histories and compares the top-k lists.

    python scripts/ort/check.py MODEL.safetensors MODEL.onnx [--seqrec target/release/seqrec]

Histories: seeded random ones of lengths 1 .. 3L (longer ones exercise RecBole's last-L
truncation, which the caller of the graph does), plus the extreme ids 1 and n_items-1.
Pass criteria, per history and rank r < k:
  - scores: |ort_r - seqrec_r| <= 1e-4 * max(1, |seqrec_r|) (ranks compared, so a swap of two
    near-equal scores does not hide a score error);
  - ids: identical, except that two neighbours may swap when the engine's scores for them differ
    by at most that tolerance (the engine's (k+1)-th item covers the boundary at rank k).
Every accepted swap is reported. Exit status 1 on any failure, with the first differences printed.

With `--fixture DIR` the graph is also compared with a fixture of the spec's numpy reference
(`../shared/spec/recbole_ref.py make MODEL DIR`, whose DIR/model.safetensors is the model to
export): top-10 ids identical and scores within the spec's 2e-5 · max(1, max |score|).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnxruntime as ort

from common import CONFIG_KEY, InputError, fail, hyper_parameters, pad_windows

REL_TOL = 1e-4


def histories_for(n_items: int, max_len: int, count: int, seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    lengths = [1, 2, 3, 5, 8, 13, max_len // 2, max_len - 1, max_len, max_len + 1, 2 * max_len + 3, 3 * max_len]
    lengths = lengths * 2 + [int(n) for n in rng.integers(1, 2 * max_len, size=max(0, count))]
    hs = [[1], [n_items - 1], [1, n_items - 1, 1]]
    hs += [[int(i) for i in rng.integers(1, n_items, size=n)] for n in lengths]
    return hs[:count]


def seqrec_topk(seqrec: str, model: str, histories: list[list[int]], k: int) -> list[dict]:
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("".join(",".join(map(str, h)) + "\n" for h in histories))
        path = f.name
    try:
        cmd = [seqrec, "score", model, "--batch", path, "-k", str(k), "--format", "json"]
        res = subprocess.run(cmd, capture_output=True, text=True)
    finally:
        os.unlink(path)
    if res.returncode != 0:
        fail(f"`{' '.join(cmd)}` failed ({res.returncode}): {res.stderr.strip()}", 1)
    return [json.loads(line) for line in res.stdout.splitlines() if line.strip()]


def compare(ref: dict, ids: np.ndarray, scores: np.ndarray, k: int) -> tuple[list[str], list[str]]:
    """(errors, accepted swaps) for one history."""
    errors, swaps = [], []
    r_ids, r_sc = ref["items"], ref["scores"]
    for r in range(k):
        tol = REL_TOL * max(1.0, abs(r_sc[r]))
        if abs(float(scores[r]) - r_sc[r]) > tol:
            errors.append(f"rank {r + 1}: score {scores[r]:.7g} vs seqrec {r_sc[r]:.7g} (tolerance {tol:.2g})")
        if int(ids[r]) != r_ids[r]:
            ok = any(
                0 <= j < len(r_ids) and r_ids[j] == int(ids[r]) and abs(r_sc[j] - r_sc[r]) <= tol for j in (r - 1, r + 1)
            )
            msg = f"rank {r + 1}: id {int(ids[r])} vs seqrec {r_ids[r]}"
            (swaps if ok else errors).append(msg + (" (near-tie swap)" if ok else ""))
    return errors, swaps


def check_fixture(sess: ort.InferenceSession, hp: dict, k: int, fixture: str) -> int:
    """Compares the graph with the reference's cases.json; returns the number of failing cases."""
    with open(os.path.join(fixture, "cases.json")) as f:
        cases = json.load(f)
    seq = pad_windows([c["history"] for c in cases], hp["max_len"])
    ids, scores = sess.run(["top_items", "top_scores"], {"item_seq": seq})
    bad, worst = 0, 0.0
    for i, c in enumerate(cases):
        ref = np.asarray(c["top10_scores"][:k])
        scale = max(1.0, float(np.max(np.abs(ref))))
        err = float(np.max(np.abs(scores[i][: len(ref)] - ref))) / scale
        worst = max(worst, err)
        if [int(x) for x in ids[i][: len(ref)]] != c["top10"][:k] or err > 2e-5:
            bad += 1
            print(f"  fixture case {c['name']}: ids {ids[i][:len(ref)].tolist()} vs {c['top10'][:k]}, scaled score error {err:.2e}", file=sys.stderr)
    print(f"fixture {fixture}: {len(cases) - bad}/{len(cases)} cases with the reference's top-{min(k, 10)}, max scaled score error {worst:.2e} (tolerance 2e-05)")
    return bad


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="the safetensors model the graph was exported from")
    ap.add_argument("onnx", help="the exported graph")
    ap.add_argument("--seqrec", default="target/release/seqrec", help="the seqrec binary")
    ap.add_argument("--histories", type=int, default=64, help="number of histories (default 64)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--fixture", metavar="DIR", help="also compare with a recbole_ref.py fixture folder")
    args = ap.parse_args()
    sess = ort.InferenceSession(args.onnx, providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map
    if CONFIG_KEY not in meta or "seqrec.k" not in meta:
        fail(f"{args.onnx}: no seqrec metadata (not written by scripts/ort/export.py)")
    try:
        hp = hyper_parameters(json.loads(meta[CONFIG_KEY]))
    except InputError as e:
        fail(f"{args.onnx}: {e}")
    k = int(meta["seqrec.k"])
    hs = histories_for(hp["n_items"], hp["max_len"], args.histories, args.seed)
    refs = seqrec_topk(args.seqrec, args.model, hs, min(k + 1, hp["n_items"] - 1))
    if len(refs) != len(hs):
        fail(f"seqrec score returned {len(refs)} results for {len(hs)} histories", 1)
    ids, scores = sess.run(["top_items", "top_scores"], {"item_seq": pad_windows(hs, hp["max_len"])})
    n_err, n_swaps = 0, 0
    for i, h in enumerate(hs):
        errors, swaps = compare(refs[i], ids[i], scores[i], k)
        n_swaps += len(swaps)
        for s in swaps:
            print(f"  history {i + 1} (length {len(h)}): {s}")
        if errors:
            n_err += 1
            if n_err <= 5:
                print(f"  history {i + 1} (length {len(h)}): " + "; ".join(errors[:4]), file=sys.stderr)
    max_rel = max(
        abs(float(scores[i][r]) - refs[i]["scores"][r]) / max(1.0, abs(refs[i]["scores"][r]))
        for i in range(len(hs))
        for r in range(k)
    )
    verdict = "FAILED" if n_err else "ok"
    print(
        f"check {args.onnx}: {verdict}: {len(hs) - n_err}/{len(hs)} histories with the same top-{k} as seqrec "
        f"({n_swaps} near-tie swaps), max relative score difference {max_rel:.2e} (tolerance {REL_TOL:g})"
    )
    if args.fixture:
        n_err += check_fixture(sess, hp, k, args.fixture)
    sys.exit(1 if n_err else 0)


if __name__ == "__main__":
    main()
