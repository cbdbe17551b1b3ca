"""Writes a RecBole checkpoint (.pth) the way RecBole's Trainer._save_checkpoint does, with
torch.save's file layout, but without PyTorch: a zip of stored records (64-byte aligned like
PyTorch's writer) holding archive/data.pkl (protocol 2 pickle of {"config": recbole Config,
"epoch", "cur_step", "best_valid_score", "state_dict", "other_parameter", "optimizer"}),
archive/data/<key> storages, archive/byteorder and archive/version.

    python3 torch_save.py MODEL.safetensors OUT.pth [--dtype f32|f16|bf16] [--strided]
                          [--protocol 2|4] [--no-align] [--reference OUT.safetensors]

MODEL.safetensors is a seqrec/RecBole model (config in its `seqrec.config` metadata).
--strided stores 2-D weights transposed in their storage (stride (1, rows)) and packs the
1-D tensors into one shared storage at offsets; --reference writes the weights as the .pth
holds them (after f16/bf16 rounding) as an f32 safetensors file to compare with.
"""
import argparse
import collections
import enum
import io
import json
import pickle
import struct
import sys
import types
import zipfile

import numpy as np


def module(name):
    m = types.ModuleType(name)
    sys.modules[name] = m
    return m


# Stand-ins for the names torch.save and RecBole pickle by reference (never imported on load).
torch = module("torch")
torch_utils = module("torch._utils")
for mname in ["recbole", "recbole.config", "recbole.config.configurator", "recbole.utils",
              "recbole.utils.enum_type"]:
    module(mname)


def _rebuild_tensor_v2(*args):
    raise RuntimeError("not for loading")


def _rebuild_parameter(*args):
    raise RuntimeError("not for loading")


for f in (_rebuild_tensor_v2, _rebuild_parameter):
    f.__module__ = "torch._utils"
    setattr(torch_utils, f.__name__, f)


def storage_class(name):
    cls = type(name, (), {"__module__": "torch"})
    setattr(torch, name, cls)
    return cls


STORAGE = {"f32": storage_class("FloatStorage"), "f16": storage_class("HalfStorage"),
           "bf16": storage_class("BFloat16Storage"), "i64": storage_class("LongStorage")}


class device:
    def __init__(self, kind):
        self.kind = kind

    def __reduce__(self):
        return (device, (self.kind,))


device.__module__ = "torch"
torch.device = device


class Config:
    """RecBole's recbole.config.configurator.Config: pickled with its __dict__."""


Config.__module__ = "recbole.config.configurator"
sys.modules["recbole.config.configurator"].Config = Config


class ModelType(enum.Enum):
    GENERAL = 1
    SEQUENTIAL = 2


class InputType(enum.Enum):
    POINTWISE = 1
    PAIRWISE = 2
    LISTWISE = 3


for e in (ModelType, InputType):
    e.__module__ = "recbole.utils.enum_type"
    setattr(sys.modules["recbole.utils.enum_type"], e.__name__, e)


class Storage:
    def __init__(self, key, dtype, data):
        self.key, self.dtype, self.data = key, dtype, data  # data: raw little-endian bytes

    def numel(self):
        return len(self.data) // {"f32": 4, "f16": 2, "bf16": 2, "i64": 8}[self.dtype]


class Tensor:
    def __init__(self, storage, offset, shape, stride, parameter=False):
        self.storage, self.offset, self.shape, self.stride = storage, offset, shape, stride
        self.parameter = parameter

    def __reduce_ex__(self, protocol):
        t = (_rebuild_tensor_v2, (self.storage, self.offset, tuple(self.shape),
                                  tuple(self.stride), False, collections.OrderedDict()))
        if self.parameter:
            return (_rebuild_parameter, (Tensor(self.storage, self.offset, self.shape,
                                                self.stride), True, collections.OrderedDict()))
        return t


class TorchPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", STORAGE[obj.dtype], obj.key, "cpu", obj.numel())
        return None


def encode(values, dtype):
    v = np.asarray(values, dtype=np.float32)
    if dtype == "f32":
        return v.astype("<f4").tobytes(), v
    if dtype == "f16":
        h = v.astype("<f2")
        return h.tobytes(), h.astype(np.float32)
    bits = v.view(np.uint32)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("<u2")  # round to nearest even
    return rounded.tobytes(), (rounded.astype(np.uint32) << 16).view(np.float32)


def read_safetensors(path):
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", {})
    tensors = collections.OrderedDict()
    for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        a, b = info["data_offsets"]
        assert info["dtype"] == "F32", name
        tensors[name] = np.frombuffer(raw[8 + n + a:8 + n + b], "<f4").reshape(info["shape"])
    return tensors, json.loads(meta["seqrec.config"])


RECBOLE_NAMES = {"sasrec": "SASRec", "gru4rec": "GRU4Rec", "nextitnet": "NextItNet",
                 "caser": "Caser"}


def recbole_config(cfg):
    final = {k: v for k, v in cfg.items() if k not in ("model", "n_items", "n_users")}
    final.update({
        "model": RECBOLE_NAMES[cfg["model"]], "dataset": "ml-100k", "device": device("cpu"),
        "MODEL_TYPE": ModelType.SEQUENTIAL, "MODEL_INPUT_TYPE": InputType.POINTWISE,
        "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "topk": [10],
        "metrics": ["Recall", "MRR", "NDCG", "Hit", "Precision"], "valid_metric": "MRR@10",
        "eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "TO", "mode": "full"},
        "learning_rate": 0.001, "train_neg_sample_args": None, "seed": 2020,
        "checkpoint_dir": "saved", "pickle_protocol": 4,
    })
    c = Config()
    c.final_config_dict = final
    c.model = final["model"]
    c.dataset = "ml-100k"
    c.internal_config_dict = {"model": final["model"]}
    c.variable_config_dict = {}
    return c


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("out")
    ap.add_argument("--dtype", default="f32", choices=["f32", "f16", "bf16"])
    ap.add_argument("--strided", action="store_true")
    ap.add_argument("--protocol", type=int, default=2)
    ap.add_argument("--no-align", action="store_true")
    ap.add_argument("--reference")
    args = ap.parse_args()

    weights, cfg = read_safetensors(args.model)
    storages, state_dict, stored = [], collections.OrderedDict(), collections.OrderedDict()
    shared = []  # 1-D tensors packed into one storage when --strided

    def new_storage(dtype, data):
        s = Storage(str(len(storages)), dtype, data)
        storages.append(s)
        return s

    for i, (name, w) in enumerate(weights.items()):
        if args.strided and w.ndim == 2:
            data, seen = encode(w.T.copy(), args.dtype)  # column-major: stride (1, rows)
            t = Tensor(new_storage(args.dtype, data), 0, list(w.shape), [1, w.shape[0]])
            stored[name] = seen.T
        elif args.strided and w.ndim == 1:
            shared.append(name)
            continue
        else:
            data, seen = encode(w.reshape(-1), args.dtype)
            strides = [int(np.prod(w.shape[k + 1:])) for k in range(w.ndim)]
            t = Tensor(new_storage(args.dtype, data), 0, list(w.shape), strides,
                       parameter=(i % 3 == 1))
            stored[name] = seen.reshape(w.shape)
        state_dict[name] = t
    if shared:
        flat = np.concatenate([np.zeros(3, np.float32)] + [weights[n].reshape(-1) for n in shared])
        data, seen = encode(flat, args.dtype)
        s = new_storage(args.dtype, data)
        off = 3
        for name in shared:
            n = weights[name].size
            state_dict[name] = Tensor(s, off, [n], [1])
            stored[name] = seen[off:off + n]
            off += n
        # Keep the file's tensor order: RecBole's state_dict order does not matter to seqrec.
    # The optimizer's moments: as large as the weights, never read by the converter.
    opt_state = {}
    for k, name in enumerate(list(weights)[:3]):
        step = Tensor(new_storage("i64", struct.pack("<q", 7)), 0, [], [])
        moment, _ = encode(np.zeros(weights[name].size), "f32")
        opt_state[k] = {"step": step, "exp_avg": Tensor(new_storage("f32", moment), 0,
                                                         [weights[name].size], [1])}
    checkpoint = {
        "config": recbole_config(cfg), "epoch": 12, "cur_step": 0, "best_valid_score": 0.1325,
        "state_dict": state_dict, "other_parameter": None,
        "optimizer": {"state": opt_state,
                      "param_groups": [{"lr": 0.001, "betas": (0.9, 0.999), "eps": 1e-08,
                                        "weight_decay": 0.0, "params": list(range(len(weights)))}]},
    }
    buf = io.BytesIO()
    TorchPickler(buf, protocol=args.protocol).dump(checkpoint)

    records = [("archive/data.pkl", buf.getvalue()), ("archive/byteorder", b"little")]
    records += [(f"archive/data/{s.key}", s.data) for s in storages]
    records += [("archive/version", b"3\n"), ("archive/.data/serialization_id", b"0" * 40)]
    with open(args.out, "wb") as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED) as z:
        for name, data in records:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            if not args.no_align:  # PyTorch pads the local header so data starts 64-aligned
                start = fh.tell() + 30 + len(name) + 4
                pad = (-start) % 64
                info.extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad
            z.writestr(info, data)
    if args.reference:
        header, body, off = {}, b"", 0
        for name, v in stored.items():
            b = np.ascontiguousarray(v, dtype="<f4").tobytes()
            header[name] = {"dtype": "F32", "shape": list(v.shape), "data_offsets": [off, off + len(b)]}
            body += b
            off += len(b)
        header["__metadata__"] = {"seqrec.config": json.dumps(cfg)}
        h = json.dumps(header).encode()
        h += b" " * ((-len(h)) % 8)
        with open(args.reference, "wb") as fh:
            fh.write(struct.pack("<Q", len(h)) + h + body)


if __name__ == "__main__":
    main()
