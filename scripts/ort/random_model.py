#!/usr/bin/env python3
"""Writes a RecBole-shaped seqrec model with seeded random weights (float32 safetensors, the
configuration in the `seqrec.config` metadata), in the exact tensor layout the engine loads.

    python scripts/ort/random_model.py sasrec 23716 OUT.safetensors [--seed 1] [--set key=json ...]

Hyper-parameters are RecBole's defaults (window 50) unless `--set` overrides one, e.g.
`--set hidden_size=64 --set n_layers=2`. Weights are N(0, std²) (std per architecture as in the
spec's fixtures: sasrec 0.15, gru4rec 0.2, nextitnet 0.1), LayerNorm scales 1 + N(0, 0.05²),
padding row 0 included (RecBole's padding row is not zero).
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from common import ARCHITECTURES, CONFIG_KEY, DEFAULT_MAX_LEN, InputError, fail, hyper_parameters, tensor_shapes

STD = {"sasrec": 0.15, "gru4rec": 0.2, "nextitnet": 0.1}


def random_tensors(hp: dict, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in tensor_shapes(hp).items():
        is_ln_scale = name.endswith(".weight") and ("LayerNorm" in name or ".ln1" in name or ".ln2" in name)
        if is_ln_scale:
            t = 1.0 + 0.05 * rng.standard_normal(shape, dtype=np.float32)
        else:
            t = STD[hp["model"]] * rng.standard_normal(shape, dtype=np.float32)
        out[name] = np.ascontiguousarray(t, dtype=np.float32)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("arch", choices=ARCHITECTURES)
    ap.add_argument("n_items", type=int, help="catalog size including the padding id 0")
    ap.add_argument("out", help="safetensors file to write")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=JSON", help="override a hyper-parameter")
    args = ap.parse_args()
    cfg = {"model": args.arch, "n_items": args.n_items, "MAX_ITEM_LIST_LENGTH": DEFAULT_MAX_LEN}
    for kv in args.set:
        key, sep, value = kv.partition("=")
        if not sep:
            fail(f"--set {kv}: expected KEY=JSON")
        try:
            cfg[key] = json.loads(value)
        except json.JSONDecodeError as e:
            fail(f"--set {kv}: the value is not JSON ({e})")
    try:
        hp = hyper_parameters(cfg)
    except InputError as e:
        fail(str(e))
    from safetensors.numpy import save_file

    save_file(random_tensors(hp, args.seed), args.out, metadata={CONFIG_KEY: json.dumps(cfg)})
    print(f"{args.out}: {args.arch}, {args.n_items} items, seed {args.seed}")


if __name__ == "__main__":
    main()
