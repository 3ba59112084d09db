"""Learned-embedding front end: tokens → integer ids over the training
vocabulary (0 = padding, 1 = out of vocabulary). The Keras Embedding layer
that turns ids into vectors lives in the model."""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import ModelError
from ..segment import SegmentedBatch
from . import DEFAULT_SCORE_BATCH, padded_positions

PAD_ID = 0
OOV_ID = 1
VOCAB_FILE = "vocab.txt"


@dataclass
class TokenIds:
    ids: np.ndarray  # int32, flat over all tokens
    offsets: np.ndarray  # int64, text i owns ids[offsets[i]:offsets[i+1]]
    lengths: np.ndarray


class VocabEmbedder:
    """Learned embeddings: ids over the training vocabulary (an
    :class:`~sentiscore.embed.Embedder`)."""

    kind = "vocab"
    score_batch_size = DEFAULT_SCORE_BATCH
    encodes_in_background = False  # a lookup: nothing to overlap
    device = None  # the embedding runs inside the Keras model
    torch_version = None

    def __init__(self, words: list[str]):
        self.words = list(words)
        self._value_set = pa.array(self.words, type=pa.string())
        # Models with the same word list give a chunk the same ids: an
        # ensemble's members look them up once (Prepared.shared).
        self.share_key = ("token_ids", hashlib.sha256("\n".join(self.words).encode("utf-8")).hexdigest())

    @property
    def size(self) -> int:
        """Number of ids, padding and OOV included."""
        return len(self.words) + 2

    @classmethod
    def build(cls, batch: SegmentedBatch, min_count: int, max_size: int) -> "VocabEmbedder":
        counts = Counter(batch.tokens)
        # Most frequent first, ties alphabetical: the same data gives the same ids.
        ranked = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        return cls(ranked[:max_size])

    def token_ids(self, tokens: list[str]) -> np.ndarray:
        if not tokens:
            return np.zeros(0, np.int32)
        index = pc.index_in(pa.array(tokens, type=pa.string()), value_set=self._value_set)
        return (pc.fill_null(index, OOV_ID - 2).to_numpy(zero_copy_only=False) + 2).astype(np.int32)

    def featurize(self, batch: SegmentedBatch) -> "TokenIds":
        """Ids of all tokens of a chunk, looked up once (one Arrow hash join)."""
        return TokenIds(self.token_ids(batch.tokens), batch.offsets, batch.lengths)

    def encode(self, features: "TokenIds", rows: np.ndarray, width: int) -> dict[str, np.ndarray]:
        """The given texts as a padded ``(len(rows), width)`` id matrix + mask."""
        lengths = features.lengths[rows]
        r, c, _ = padded_positions(lengths, width)
        matrix = np.zeros((rows.size, width), np.int32)
        matrix[r, c] = features.ids[features.offsets[rows][r] + c]
        return {"token_ids": matrix, "mask": matrix != PAD_ID}

    def save(self, directory: Path) -> list[str]:
        (Path(directory) / VOCAB_FILE).write_text("\n".join(self.words) + "\n", encoding="utf-8")
        return [VOCAB_FILE]

    @classmethod
    def load(cls, directory: Path, settings: dict) -> "VocabEmbedder":
        path = Path(directory) / VOCAB_FILE
        if not path.is_file():
            raise ModelError(f"{path} is missing: the vocab embedder needs it")
        words = path.read_text(encoding="utf-8").split("\n")
        if words and words[-1] == "":
            words.pop()
        return cls(words)
