"""seqrec: sequential recommenders (SASRec, GRU4Rec, NextItNet, Caser, their RL heads, the
multi-objective and hierarchical Decision Transformers) served and trained without PyTorch.

    import seqrec
    model = seqrec.Model.load("model.safetensors")          # or a RecBole .pth
    items, scores = model.topk([12, 7, 99], k=10, exclude_history=True)
    session = model.session(); session.push(12); session.topk(10)
    state = session.to_bytes()                               # move it to another server
"""

from ._seqrec import (
    InvalidInputError,
    Model,
    ModelFileError,
    SeqrecError,
    Session,
    SessionStateError,
    TextEncoder,
    __version__,
    convert_recbole,
    evaluate,
    train,
)

__all__ = [
    "InvalidInputError",
    "Model",
    "ModelFileError",
    "SeqrecError",
    "Session",
    "SessionStateError",
    "TextEncoder",
    "__version__",
    "convert_recbole",
    "evaluate",
    "train",
]
