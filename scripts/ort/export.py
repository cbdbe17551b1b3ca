#!/usr/bin/env python3
"""Exports a seqrec/RecBole safetensors model (SASRec, GRU4Rec, NextItNet) to an ONNX graph that
returns the top-k items over the whole catalog, built node by node with onnx.helper (no torch).

    python scripts/ort/export.py MODEL.safetensors MODEL.onnx [-k 10]

The graph (opset 17, float32) is what an ONNX Runtime user would deploy for RecBole's
`full_sort_predict` followed by a top-k:
  input   item_seq    int64 [batch, L]  RecBole's window: the last L ids, oldest first,
                                        right-padded with 0 (lengths are counted in the graph)
  output  top_items   int64 [batch, k]  best first; id 0 ([PAD]) is never returned
          top_scores  float [batch, k]  seq_output · item_embedding[id]
The scores are a Gemm against the item table itself (transB=1, the table is stored once and
shared with the input Gather); its bias input is 0 except -inf at id 0, which keeps [PAD] out of
the top-k, as RecBole's evaluation does. TopK breaks ties towards the smaller id, like the engine.
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from common import CONFIG_KEY, InputError, fail, load_model

OPSET = 17


class GraphBuilder:
    """Accumulates nodes and initializers with unique names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._count = 0
        self._consts: dict[str, np.ndarray] = {}

    def const(self, name: str, value) -> str:
        """An initializer; a name given twice must carry the same value (it is stored once)."""
        arr = np.asarray(value)
        if arr.dtype == np.float64:
            arr = arr.astype(np.float32)
        if name in self._consts:
            assert np.array_equal(self._consts[name], arr), f"initializer {name} defined twice"
            return name
        self._consts[name] = arr
        self.inits.append(numpy_helper.from_array(arr, name))
        return name

    def op(self, op_type: str, inputs: list[str], n_out: int = 1, **attrs) -> str | list[str]:
        self._count += 1
        outs = [f"{op_type.lower()}_{self._count}" + (f"_{i}" if n_out > 1 else "") for i in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=f"{op_type}_{self._count}", **attrs))
        return outs[0] if n_out == 1 else outs

    def linear(self, x: str, w: np.ndarray, b: np.ndarray | None, name: str) -> str:
        """x · Wᵀ + b on the last axis, with W stored [out, in] as in PyTorch (the transposed copy
        is an initializer, as torch.onnx.export writes nn.Linear on a 3-D input)."""
        y = self.op("MatMul", [x, self.const(f"{name}.weight_t", np.ascontiguousarray(w.T))])
        return y if b is None else self.op("Add", [y, self.const(f"{name}.bias", b)])

    def layer_norm(self, x: str, g: np.ndarray, b: np.ndarray, eps: float, name: str) -> str:
        return self.op(
            "LayerNormalization",
            [x, self.const(f"{name}.weight", g), self.const(f"{name}.bias", b)],
            axis=-1,
            epsilon=eps,
        )


def activation(g: GraphBuilder, x: str, act: str) -> str:
    if act == "gelu":
        # RecBole's exact form: x * 0.5 * (1 + erf(x / sqrt(2))) (ORT fuses it into one Gelu).
        half = g.op("Mul", [x, g.const("half_f32", np.float32(0.5))])
        e = g.op("Erf", [g.op("Div", [x, g.const("sqrt2_f32", np.float32(math.sqrt(2.0)))])])
        return g.op("Mul", [half, g.op("Add", [e, g.const("one_f32", np.float32(1.0))])])
    if act == "relu":
        return g.op("Relu", [x])
    if act in ("swish", "silu"):
        return g.op("Mul", [x, g.op("Sigmoid", [x])])
    if act == "tanh":
        return g.op("Tanh", [x])
    if act == "sigmoid":
        return g.op("Sigmoid", [x])
    raise InputError(f"hidden_act `{act}` is not supported")


def lengths(g: GraphBuilder, seq: str) -> str:
    """Number of non-padding ids per row ([batch] int64)."""
    nz = g.op("Cast", [g.op("Greater", [seq, g.const("zero_i64", np.int64(0))])], to=TensorProto.INT64)
    return g.op("ReduceSum", [nz, g.const("axes_1", np.array([1], np.int64))], keepdims=0)


def sasrec(g: GraphBuilder, hp: dict, t: dict, seq: str) -> str:
    """RecBole SASRec (spec §1): post-LN transformer over the padded window, read at n-1."""
    h, heads, eps, L = hp["hidden"], hp["n_heads"], hp["eps"], hp["max_len"]
    dh = h // heads
    x = g.op("Gather", ["item_embedding.weight", seq], axis=0)
    x = g.op("Add", [x, g.const("position_embedding.weight", t["position_embedding.weight"])])
    x = g.layer_norm(x, t["LayerNorm.weight"], t["LayerNorm.bias"], eps, "LayerNorm")
    # Additive mask [batch, 1, L, L]: 0 where j <= i and P_j != 0, else -10000 (RecBole's value).
    nonpad = g.op("Greater", [seq, g.const("zero_i64", np.int64(0))])
    keys = g.op("Unsqueeze", [nonpad, g.const("axes_1_2", np.array([1, 2], np.int64))])
    causal = g.const("causal", np.tril(np.ones((L, L), dtype=bool))[None, None])
    mask = g.op(
        "Where",
        [g.op("And", [keys, causal]), g.const("mask_keep", np.float32(0.0)), g.const("mask_drop", np.float32(-10000.0))],
    )
    split_heads = g.const("split_heads", np.array([0, 0, heads, dh], np.int64))
    merge_heads = g.const("merge_heads", np.array([0, 0, h], np.int64))
    scale = g.const("sqrt_dh", np.float32(math.sqrt(dh)))
    for l in range(hp["n_layers"]):
        p = f"trm_encoder.layer.{l}"
        a = f"{p}.multi_head_attention"

        def proj(m: str, perm: list[int]) -> str:
            y = g.linear(x, t[f"{a}.{m}.weight"], t[f"{a}.{m}.bias"], f"{a}.{m}")
            return g.op("Transpose", [g.op("Reshape", [y, split_heads])], perm=perm)

        q = proj("query", [0, 2, 1, 3])  # [B, heads, L, dh]
        k = proj("key", [0, 2, 3, 1])  # [B, heads, dh, L]
        v = proj("value", [0, 2, 1, 3])
        s = g.op("Add", [g.op("Div", [g.op("MatMul", [q, k]), scale]), mask])
        ctx = g.op("MatMul", [g.op("Softmax", [s], axis=-1), v])
        ctx = g.op("Reshape", [g.op("Transpose", [ctx], perm=[0, 2, 1, 3]), merge_heads])
        y = g.op("Add", [g.linear(ctx, t[f"{a}.dense.weight"], t[f"{a}.dense.bias"], f"{a}.dense"), x])
        x1 = g.layer_norm(y, t[f"{a}.LayerNorm.weight"], t[f"{a}.LayerNorm.bias"], eps, f"{a}.LayerNorm")
        f = f"{p}.feed_forward"
        y = g.linear(x1, t[f"{f}.dense_1.weight"], t[f"{f}.dense_1.bias"], f"{f}.dense_1")
        y = g.linear(activation(g, y, hp["act"]), t[f"{f}.dense_2.weight"], t[f"{f}.dense_2.bias"], f"{f}.dense_2")
        x = g.layer_norm(g.op("Add", [y, x1]), t[f"{f}.LayerNorm.weight"], t[f"{f}.LayerNorm.bias"], eps, f"{f}.LayerNorm")
    # seq_output = X[b, n_b - 1]
    last = g.op("Sub", [lengths(g, seq), g.const("one_i64", np.int64(1))])
    last = g.op("Unsqueeze", [last, g.const("axes_1", np.array([1], np.int64))])
    return g.op("GatherND", [x, last], batch_dims=1)


def gru4rec(g: GraphBuilder, hp: dict, t: dict, seq: str) -> str:
    """RecBole GRU4Rec (spec §2): bias-free GRU layers (ONNX GRU, linear_before_reset=1 is
    PyTorch's cell), final hidden state at each row's length, dense projection."""
    hd = hp["hidden"]
    x = g.op("Transpose", [g.op("Gather", ["item_embedding.weight", seq], axis=0)], perm=[1, 0, 2])  # [L, B, E]
    seq_lens = g.op("Cast", [lengths(g, seq)], to=TensorProto.INT32)
    h_last = None
    for k in range(hp["n_layers"]):
        # PyTorch stacks the gate rows [r; z; n], ONNX wants [z; r; h].
        reorder = lambda w: np.concatenate([w[hd : 2 * hd], w[:hd], w[2 * hd :]])[None]  # noqa: E731
        w = g.const(f"gru.W_{k}", reorder(t[f"gru_layers.weight_ih_l{k}"]))
        r = g.const(f"gru.R_{k}", reorder(t[f"gru_layers.weight_hh_l{k}"]))
        y, h_last = g.op("GRU", [x, w, r, "", seq_lens], n_out=2, hidden_size=hd, linear_before_reset=1)
        x = g.op("Squeeze", [y, g.const("axes_1", np.array([1], np.int64))])  # [L, 1, B, Hd] -> [L, B, Hd]: the next layer's input
    h_last = g.op("Squeeze", [h_last, g.const("axes_0", np.array([0], np.int64))])  # [B, Hd]
    return g.op("Gemm", [h_last, g.const("dense.weight", t["dense.weight"]), g.const("dense.bias", t["dense.bias"])], transB=1)


def nextitnet(g: GraphBuilder, hp: dict, t: dict, seq: str) -> str:
    """RecBole NextItNet (spec §3): residual blocks of dilated causal Conv2d over the whole
    padded window, written as RecBole's forward exports (permute, left zero-pad, conv, permute,
    LayerNorm, ReLU), read at the window's last position."""
    k = hp["kernel"]
    x = g.op("Gather", ["item_embedding.weight", seq], axis=0)  # [B, L, E]
    axes2 = g.const("axes_2", np.array([2], np.int64))

    def causal_conv(inp: str, name: str, d: int) -> str:
        img = g.op("Unsqueeze", [g.op("Transpose", [inp], perm=[0, 2, 1]), axes2])  # [B, E, 1, L]
        pads = g.const(f"{name}.pads", np.array([0, 0, 0, (k - 1) * d, 0, 0, 0, 0], np.int64))
        img = g.op("Pad", [img, pads], mode="constant")
        y = g.op(
            "Conv",
            [img, g.const(f"{name}.weight", t[f"{name}.weight"]), g.const(f"{name}.bias", t[f"{name}.bias"])],
            dilations=[1, d],
            kernel_shape=[1, k],
        )
        return g.op("Transpose", [g.op("Squeeze", [y, axes2])], perm=[0, 2, 1])  # [B, L, E]

    for b, d in enumerate(hp["block_dilations"]):
        p = f"residual_blocks.{b}"
        o = causal_conv(x, f"{p}.conv1", d)
        o = g.op("Relu", [g.layer_norm(o, t[f"{p}.ln1.weight"], t[f"{p}.ln1.bias"], 1e-8, f"{p}.ln1")])
        o = causal_conv(o, f"{p}.conv2", 2 * d)
        o = g.op("Relu", [g.layer_norm(o, t[f"{p}.ln2.weight"], t[f"{p}.ln2.bias"], 1e-8, f"{p}.ln2")])
        x = g.op("Add", [o, x])
    last = g.op("Gather", [x, g.const("last_pos", np.int64(hp["max_len"] - 1))], axis=1)  # [B, E]
    return g.op(
        "Gemm",
        [last, g.const("final_layer.weight", t["final_layer.weight"]), g.const("final_layer.bias", t["final_layer.bias"])],
        transB=1,
    )


def build(cfg: dict, hp: dict, tensors: dict, k: int) -> onnx.ModelProto:
    """The top-k graph of a loaded model."""
    n = hp["n_items"]
    if not 1 <= k <= n - 1:
        raise InputError(f"-k {k} must be between 1 and n_items - 1 = {n - 1}")
    g = GraphBuilder()
    seq = "item_seq"
    g.const("item_embedding.weight", tensors["item_embedding.weight"])
    encoder = {"sasrec": sasrec, "gru4rec": gru4rec, "nextitnet": nextitnet}[hp["model"]]
    user = encoder(g, hp, tensors, seq)
    pad_bias = np.zeros(n, np.float32)
    pad_bias[0] = -np.inf
    scores = g.op("Gemm", [user, "item_embedding.weight", g.const("pad_bias", pad_bias)], transB=1)
    values, indices = g.op("TopK", [scores, g.const("k", np.array([k], np.int64))], n_out=2, axis=-1, largest=1, sorted=1)
    g.nodes.append(helper.make_node("Identity", [indices], ["top_items"], name="top_items"))
    g.nodes.append(helper.make_node("Identity", [values], ["top_scores"], name="top_scores"))
    graph = helper.make_graph(
        g.nodes,
        f"seqrec_{hp['model']}_top{k}",
        [helper.make_tensor_value_info(seq, TensorProto.INT64, ["batch", hp["max_len"]])],
        [
            helper.make_tensor_value_info("top_items", TensorProto.INT64, ["batch", k]),
            helper.make_tensor_value_info("top_scores", TensorProto.FLOAT, ["batch", k]),
        ],
        initializer=g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="seqrec-export")
    onnx.helper.set_model_props(model, {CONFIG_KEY: json.dumps(cfg, sort_keys=True), "seqrec.k": str(k)})
    onnx.checker.check_model(model)
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="seqrec/RecBole safetensors file")
    ap.add_argument("out", help="ONNX file to write")
    ap.add_argument("-k", type=int, default=10, help="recommendations per history (default 10)")
    args = ap.parse_args()
    try:
        cfg, hp, tensors = load_model(args.model)
        model = build(cfg, hp, tensors, args.k)
    except InputError as e:
        fail(str(e))
    onnx.save(model, args.out)
    print(f"{args.out}: {hp['model']}, {hp['n_items']} items, L={hp['max_len']}, top-{args.k}, {len(model.graph.node)} nodes")


if __name__ == "__main__":
    main()
