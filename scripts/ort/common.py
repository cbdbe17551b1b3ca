"""Shared helpers of the ONNX Runtime comparison: reading seqrec/RecBole safetensors files, the
hyper-parameters with RecBole's defaults (the same defaults as engine/src/models/*.rs), the tensor
layout the engine loads, and RecBole's right-padded input window.

The contract is /work/shared/spec/recbole-models.md (reached as ../shared/spec from the repository
root): tensor names and shapes, `seqrec.config` metadata, inference semantics.
"""

from __future__ import annotations

import json
import sys

import numpy as np

CONFIG_KEY = "seqrec.config"
DEFAULT_MAX_LEN = 50
# Architectures this exporter handles (Caser is not part of the comparison).
ARCHITECTURES = ("sasrec", "gru4rec", "nextitnet")


class InputError(Exception):
    """Bad input: a clear message naming the file, key or tensor."""


def fail(message: str, code: int = 2) -> None:
    """Prints `error: message` on stderr and exits (2 = bad input, as the seqrec CLI does)."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def _get(cfg: dict, key: str, default, kind):
    value = cfg.get(key)
    if value is None:
        return default
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or int(value) != value:
            raise InputError(f"`{key}` must be a non-negative integer, found {value!r}")
        return int(value)
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"`{key}` must be a number, found {value!r}")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise InputError(f"`{key}` must be a string, found {value!r}")
        return value
    if kind is list:
        if not isinstance(value, list) or not all(isinstance(v, int) and v >= 0 for v in value):
            raise InputError(f"`{key}` must be a list of non-negative integers, found {value!r}")
        return list(value)
    raise AssertionError(kind)


def hyper_parameters(cfg: dict) -> dict:
    """The architecture's hyper-parameters with RecBole's defaults filled in (as the engine does)."""
    model = cfg.get("model")
    if not isinstance(model, str):
        raise InputError("config: missing or non-string `model` field (the architecture name)")
    arch = model.lower()
    if arch not in ARCHITECTURES:
        raise InputError(f"config: model `{model}` is not one of {', '.join(ARCHITECTURES)}")
    if cfg.get("n_items") is None:
        raise InputError("config: missing required key `n_items`")
    hp = {
        "model": arch,
        "n_items": _get(cfg, "n_items", None, int),
        "max_len": _get(cfg, "MAX_ITEM_LIST_LENGTH", DEFAULT_MAX_LEN, int),
    }
    if hp["n_items"] < 2 or hp["max_len"] < 1:
        raise InputError(f"config: n_items ({hp['n_items']}) must be at least 2 and MAX_ITEM_LIST_LENGTH at least 1")
    if arch == "sasrec":
        hp.update(
            hidden=_get(cfg, "hidden_size", 64, int),
            n_layers=_get(cfg, "n_layers", 2, int),
            n_heads=_get(cfg, "n_heads", 2, int),
            inner=_get(cfg, "inner_size", 256, int),
            eps=_get(cfg, "layer_norm_eps", 1e-12, float),
            act=_get(cfg, "hidden_act", "gelu", str),
        )
        if hp["n_heads"] == 0 or hp["hidden"] % hp["n_heads"] != 0:
            raise InputError(f"config: hidden_size {hp['hidden']} is not divisible by n_heads {hp['n_heads']}")
        if hp["act"] not in ("gelu", "relu", "swish", "silu", "tanh", "sigmoid"):
            raise InputError(f"config: hidden_act `{hp['act']}` is not one of gelu, relu, swish, tanh, sigmoid")
    elif arch == "gru4rec":
        hp.update(
            emb=_get(cfg, "embedding_size", 64, int),
            hidden=_get(cfg, "hidden_size", 128, int),
            n_layers=_get(cfg, "num_layers", 1, int),
        )
        if min(hp["emb"], hp["hidden"], hp["n_layers"]) == 0:
            raise InputError("config: embedding_size, hidden_size and num_layers must be positive")
    else:
        hp.update(
            emb=_get(cfg, "embedding_size", 64, int),
            kernel=_get(cfg, "kernel_size", 3, int),
            block_num=_get(cfg, "block_num", 5, int),
            dilations=_get(cfg, "dilations", [1, 4], list),
        )
        if hp["emb"] == 0 or hp["kernel"] == 0 or 0 in hp["dilations"]:
            raise InputError("config: embedding_size, kernel_size and every dilation must be positive")
        # RecBole list-repeats the dilation pattern block_num times: [1, 4] * 5.
        hp["block_dilations"] = hp["dilations"] * hp["block_num"]
    return hp


def tensor_shapes(hp: dict) -> dict:
    """Tensor name -> shape, exactly the set the engine's loader expects (spec tables §1-§3)."""
    n, L = hp["n_items"], hp["max_len"]
    if hp["model"] == "sasrec":
        h, inner = hp["hidden"], hp["inner"]
        shapes = {
            "item_embedding.weight": (n, h),
            "position_embedding.weight": (L, h),
            "LayerNorm.weight": (h,),
            "LayerNorm.bias": (h,),
        }
        for l in range(hp["n_layers"]):
            p = f"trm_encoder.layer.{l}"
            for m in ("query", "key", "value", "dense"):
                shapes[f"{p}.multi_head_attention.{m}.weight"] = (h, h)
                shapes[f"{p}.multi_head_attention.{m}.bias"] = (h,)
            shapes[f"{p}.multi_head_attention.LayerNorm.weight"] = (h,)
            shapes[f"{p}.multi_head_attention.LayerNorm.bias"] = (h,)
            shapes[f"{p}.feed_forward.dense_1.weight"] = (inner, h)
            shapes[f"{p}.feed_forward.dense_1.bias"] = (inner,)
            shapes[f"{p}.feed_forward.dense_2.weight"] = (h, inner)
            shapes[f"{p}.feed_forward.dense_2.bias"] = (h,)
            shapes[f"{p}.feed_forward.LayerNorm.weight"] = (h,)
            shapes[f"{p}.feed_forward.LayerNorm.bias"] = (h,)
        return shapes
    if hp["model"] == "gru4rec":
        e, hd = hp["emb"], hp["hidden"]
        shapes = {"item_embedding.weight": (n, e)}
        for k in range(hp["n_layers"]):
            shapes[f"gru_layers.weight_ih_l{k}"] = (3 * hd, e if k == 0 else hd)
            shapes[f"gru_layers.weight_hh_l{k}"] = (3 * hd, hd)
        shapes["dense.weight"] = (e, hd)
        shapes["dense.bias"] = (e,)
        return shapes
    e, k = hp["emb"], hp["kernel"]
    shapes = {"item_embedding.weight": (n, e)}
    for b in range(len(hp["block_dilations"])):
        p = f"residual_blocks.{b}"
        for conv, ln in (("conv1", "ln1"), ("conv2", "ln2")):
            shapes[f"{p}.{conv}.weight"] = (e, e, 1, k)
            shapes[f"{p}.{conv}.bias"] = (e,)
            shapes[f"{p}.{ln}.weight"] = (e,)
            shapes[f"{p}.{ln}.bias"] = (e,)
    shapes["final_layer.weight"] = (e, e)
    shapes["final_layer.bias"] = (e,)
    return shapes


def load_model(path: str) -> tuple[dict, dict, dict]:
    """Reads a seqrec/RecBole safetensors file: (raw config, hyper-parameters, float32 tensors).
    Missing, unexpected or mis-shaped tensors are errors naming the tensor, as in the engine."""
    from safetensors import safe_open

    try:
        with safe_open(path, framework="numpy") as f:
            meta = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except Exception as e:  # OSError, or safetensors' own error types for a corrupt file
        raise InputError(f"{path}: not a readable safetensors file ({e})") from e
    if CONFIG_KEY not in meta:
        raise InputError(f"{path}: no `{CONFIG_KEY}` entry in the safetensors metadata")
    try:
        cfg = json.loads(meta[CONFIG_KEY])
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: `{CONFIG_KEY}` is not valid JSON ({e})") from e
    if not isinstance(cfg, dict):
        raise InputError(f"{path}: `{CONFIG_KEY}` is not a JSON object")
    try:
        hp = hyper_parameters(cfg)
    except InputError as e:
        raise InputError(f"{path}: {e}") from e
    expected = tensor_shapes(hp)
    for name, shape in expected.items():
        if name not in tensors:
            raise InputError(f"{path}: missing tensor `{name}` (expected shape {list(shape)})")
        t = tensors[name]
        if tuple(t.shape) != shape:
            raise InputError(f"{path}: tensor `{name}` has shape {list(t.shape)}, expected {list(shape)}")
        if t.dtype != np.float32:
            raise InputError(f"{path}: tensor `{name}` is {t.dtype}, expected float32")
    extra = sorted(set(tensors) - set(expected))
    if extra:
        raise InputError(f"{path}: unexpected tensor `{extra[0]}` for {hp['model']}")
    return cfg, hp, tensors


def pad_windows(histories: list[list[int]], max_len: int) -> np.ndarray:
    """RecBole's input: the most recent `max_len` items of each history, oldest first,
    right-padded with 0 to exactly `max_len` ([batch, max_len] int64)."""
    out = np.zeros((len(histories), max_len), dtype=np.int64)
    for i, h in enumerate(histories):
        if not h:
            raise InputError(f"history {i + 1} is empty")
        w = h[-max_len:]
        out[i, : len(w)] = w
    return out


def random_histories(rng: np.random.Generator, count: int, n_items: int, length: int) -> np.ndarray:
    """`count` histories of `length` uniform ids in 1..n_items-1 ([count, length] int64)."""
    return rng.integers(1, n_items, size=(count, length), dtype=np.int64)
