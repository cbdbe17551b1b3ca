"""Shared fixtures of the Python package's tests: the repository, the shared folder, the `seqrec`
command line built by cargo (results are compared with it), and small random models."""

import json
import os
import pathlib
import shutil
import struct
import subprocess

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def shared_dir():
    d = pathlib.Path(os.environ.get("SEQREC_SHARED", ROOT.parent / "shared"))
    return d if (d / "fixtures").is_dir() else None


def cli_path():
    candidates = [os.environ.get("SEQREC_BIN")]
    target = os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target"))
    candidates += [os.path.join(target, p, "seqrec") for p in ("debug", "release")]
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    return None


@pytest.fixture(scope="session")
def shared():
    d = shared_dir()
    if d is None:
        pytest.skip("skipped: shared folder with fixtures not found (set SEQREC_SHARED)")
    return d


@pytest.fixture(scope="session")
def cli():
    path = cli_path()
    if path is None:
        pytest.skip("skipped: the seqrec binary was not found (build it with cargo or set SEQREC_BIN)")

    def run(*args):
        out = subprocess.run([path, *map(str, args)], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        return out.stdout

    return run


@pytest.fixture(scope="session")
def minilm():
    d = pathlib.Path(os.environ.get("SEQREC_MINILM_DIR", ROOT / ".minilm"))
    if not all((d / f).is_file() for f in ("config.json", "model.safetensors", "tokenizer.json")):
        pytest.skip("skipped: all-MiniLM-L6-v2 not found (run scripts/fetch-minilm.sh)")
    return d


def write_safetensors(path, tensors, config):
    header, body, off = {}, [], 0
    for name, v in tensors.items():
        b = np.ascontiguousarray(v, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(v.shape), "data_offsets": [off, off + len(b)]}
        body.append(b)
        off += len(b)
    header["__metadata__"] = {"seqrec.config": json.dumps(config)}
    h = json.dumps(header).encode()
    h += b" " * ((-len(h)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(body))


def random_sasrec(path, n_items, hidden=64, layers=2, inner=256, max_len=50, seed=1):
    """A RecBole-shaped SASRec with random weights (RecBole's defaults unless told)."""
    rng = np.random.default_rng(seed)
    w = {"item_embedding.weight": rng.normal(0, 0.1, (n_items, hidden)),
         "position_embedding.weight": rng.normal(0, 0.1, (max_len, hidden)),
         "LayerNorm.weight": np.ones(hidden), "LayerNorm.bias": np.zeros(hidden)}
    for l in range(layers):
        p = f"trm_encoder.layer.{l}"
        for m in ("query", "key", "value", "dense"):
            w[f"{p}.multi_head_attention.{m}.weight"] = rng.normal(0, 0.1, (hidden, hidden))
            w[f"{p}.multi_head_attention.{m}.bias"] = rng.normal(0, 0.01, hidden)
        for ln in ("multi_head_attention.LayerNorm", "feed_forward.LayerNorm"):
            w[f"{p}.{ln}.weight"] = np.ones(hidden)
            w[f"{p}.{ln}.bias"] = np.zeros(hidden)
        w[f"{p}.feed_forward.dense_1.weight"] = rng.normal(0, 0.1, (inner, hidden))
        w[f"{p}.feed_forward.dense_1.bias"] = np.zeros(inner)
        w[f"{p}.feed_forward.dense_2.weight"] = rng.normal(0, 0.1, (hidden, inner))
        w[f"{p}.feed_forward.dense_2.bias"] = np.zeros(hidden)
    cfg = {"model": "sasrec", "n_items": n_items, "MAX_ITEM_LIST_LENGTH": max_len,
           "hidden_size": hidden, "n_layers": layers, "n_heads": 2, "inner_size": inner}
    write_safetensors(path, w, cfg)
    return path


@pytest.fixture
def small_sasrec(tmp_path):
    return random_sasrec(tmp_path / "sasrec.safetensors", 60, hidden=16, inner=32, max_len=8)


def pth_writer():
    script = ROOT / "tests" / "pth" / "torch_save.py"
    return script if script.is_file() and shutil.which("python3") else None
