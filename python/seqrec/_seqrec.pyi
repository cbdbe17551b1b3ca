"""Type stubs of the native module `seqrec._seqrec`."""

from os import PathLike
from typing import Any, Optional, Sequence, Union

import numpy as np
import numpy.typing as npt

_Ids = Union[Sequence[int], npt.NDArray[np.integer]]
_Path = Union[str, PathLike[str]]

__version__: str

class SeqrecError(Exception):
    """An error of the seqrec engine; the message names the problem."""

class InvalidInputError(SeqrecError):
    """An item or user id out of range, an empty history, an unknown objective knob, ..."""

class ModelFileError(SeqrecError):
    """A model file (safetensors or RecBole .pth) or text-encoder folder that cannot be used."""

class SessionStateError(SeqrecError):
    """Saved session bytes that are corrupt, truncated or of another format version."""

class Model:
    """A loaded recommender: immutable, shareable between threads (scoring releases the GIL)."""

    @staticmethod
    def load(path: _Path, device: str = "cpu", item_dtype: str = "f32") -> Model:
        """Loads a safetensors model or a RecBole .pth; `device` is "cpu" in this build;
        `item_dtype` is "f32", "f16", "bf16" or "i8" (storage of the scoring item table)."""
    @staticmethod
    def from_bytes(data: bytes, item_dtype: str = "f32") -> Model: ...
    @property
    def arch(self) -> str: ...
    @property
    def n_items(self) -> int:
        """Catalog size, padding id 0 included (item ids are 1 .. n_items - 1)."""
    @property
    def n_users(self) -> Optional[int]: ...
    @property
    def max_len(self) -> int: ...
    @property
    def dim(self) -> int: ...
    @property
    def item_dtype(self) -> str: ...
    @property
    def fingerprint(self) -> int: ...
    @property
    def objectives(self) -> dict[str, tuple[float, float, float, str]]:
        """The objective knobs: name -> (default, min, max, doc)."""
    def topk(
        self,
        history: _Ids,
        k: int = 10,
        exclude_history: bool = False,
        user: Optional[int] = None,
        exclude: Optional[_Ids] = None,
        objectives: Optional[dict[str, float]] = None,
    ) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.float32]]:
        """The k best items for `history` (oldest first), best first, and their scores."""
    def topk_batch(
        self,
        histories: Union[npt.NDArray[np.uint32], Sequence[_Ids]],
        k: int = 10,
        exclude_history: bool = False,
        users: Optional[Sequence[int]] = None,
        lengths: Optional[Sequence[int]] = None,
    ) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.float32]]:
        """Top-k of many histories in parallel: a 2-D uint32 array [B, L] (read in place; rows
        right-padded with 0 or cut at `lengths`) or a list of sequences -> ([B, k], [B, k]);
        rows with fewer than k items left end with id 0 and -inf."""
    def score(
        self,
        history: _Ids,
        user: Optional[int] = None,
        objectives: Optional[dict[str, float]] = None,
    ) -> npt.NDArray[np.float32]:
        """Scores of every item, index 0 the padding id."""
    def score_candidates(
        self,
        history: _Ids,
        candidates: _Ids,
        user: Optional[int] = None,
        objectives: Optional[dict[str, float]] = None,
    ) -> npt.NDArray[np.float32]:
        """Scores of the candidates only (re-ranking)."""
    def session(self, user: Optional[int] = None) -> Session: ...

class Session:
    """A user's incremental session; use it from one thread at a time."""

    def push(self, item: int) -> None: ...
    def extend(self, items: _Ids) -> None: ...
    def feedback(self, item: int, reward: float) -> None: ...
    def topk(
        self, k: int = 10, exclude_history: bool = False
    ) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.float32]]: ...
    def scores(self) -> npt.NDArray[np.float32]: ...
    def set_objective(self, name: str, value: float) -> None: ...
    def end(self) -> None:
        """A session boundary (hierarchical models carry the finished session over)."""
    @property
    def history(self) -> npt.NDArray[np.uint32]: ...
    def __len__(self) -> int: ...
    def to_bytes(self) -> bytes:
        """The whole state, versioned and bound to the model's fingerprint."""
    @staticmethod
    def from_bytes(model: Model, data: bytes) -> Session:
        """Rebuilds a session saved by `to_bytes` from the same model (any process)."""

class TextEncoder:
    """A BERT-family sentence encoder (all-MiniLM-L6-v2) for item texts."""

    @staticmethod
    def load(dir: _Path, weight_dtype: str = "i16") -> TextEncoder: ...
    @property
    def dim(self) -> int: ...
    def encode(self, texts: Union[str, Sequence[str]]) -> npt.NDArray[np.float32]:
        """Embeddings, float32 [len(texts), dim]."""

def train(**options: Any) -> list[str]:
    """`seqrec train` with its options as keyword arguments (model=, data=, out=, ...)."""

def evaluate(model: str, **options: Any) -> Any:
    """`seqrec eval MODEL --format json`: the metrics as a dict."""

def convert_recbole(checkpoint: str, out: str) -> dict[str, Any]:
    """`seqrec convert recbole CHECKPOINT --out OUT`: a RecBole .pth to safetensors."""
