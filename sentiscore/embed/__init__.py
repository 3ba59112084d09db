"""Embedders turn segmented tokens into model inputs. The contract is the
:class:`Embedder` protocol below; the pipeline and training know nothing
else about them, and ``tests/test_embed_contract.py`` holds every embedder
to it. Each embedder lives in its own module; only ``embed.elmo`` (and its
pretraining loop) may import torch (``embed.elmo_vocab`` does through it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..config import ELMO_EMBEDDERS


DEFAULT_SCORE_BATCH = 256  # texts per Keras batch when scoring, unless the embedder asks for fewer (ELMo)


@runtime_checkable
class Embedder(Protocol):
    """What every embedder provides.

    - ``kind``: the name stored in meta.json (``vocab``, ``elmo``, ``elmo+vocab``).
    - ``score_batch_size``: texts per Keras batch when scoring, unless the
      user sets ``--batch-size``; ELMo inputs are large, so it asks for fewer.
    - ``encodes_in_background``: True when ``encode`` does heavy work of its
      own (a biLM) that a thread can overlap with Keras.
    - ``device``: where its own computation runs (``cpu``, ``cuda``), or None.
    - ``torch_version``: for provenance, or None when it does not use torch.
    - ``featurize(batch)``: per-chunk work done once (vocabulary lookup, or
      nothing), returning features for ``encode`` that carry ``lengths``
      (tokens per text; training buckets batches by them).
    - ``encode(features, rows, width)``: model inputs for the texts ``rows``
      padded to ``width`` tokens, a dict that holds ``mask`` (bool, True on
      real tokens, the first min(length, width) positions of a row) besides
      the embedder's own arrays of leading shape (rows, width), zero on padding.
    - ``save(directory)`` / ``load(directory, settings)``: its files inside a
      model directory; ``save`` returns their names.
    """

    kind: str
    score_batch_size: int
    encodes_in_background: bool
    device: str | None
    torch_version: str | None

    def featurize(self, batch) -> Any: ...

    def encode(self, features: Any, rows: np.ndarray, width: int) -> dict[str, np.ndarray]: ...

    def save(self, directory: Path) -> list[str]: ...


def padded_positions(lengths: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row and column of every kept token in a ``(len(lengths), width)`` matrix
    and the index of that token in the flat token list (tokens past ``width``
    are dropped)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    kept = np.minimum(lengths, width)
    rows = np.repeat(np.arange(lengths.size), kept)
    first = np.concatenate([[0], np.cumsum(kept)[:-1]])
    cols = np.arange(rows.size) - first[rows]
    flat_index = offsets[rows] + cols
    return rows, cols, flat_index


def load_embedder(directory, settings: dict, device: str = "auto", log=None):
    kind = settings.get("type")
    if kind == "vocab":
        from .vocab import VocabEmbedder

        return VocabEmbedder.load(directory, settings)
    if kind in ELMO_EMBEDDERS:
        # These modules import torch and elmoformanylangs only when a biLM is built, and say then what is
        # missing (elmo.require_elmoformanylangs).
        from .elmo import ElmoEmbedder
        from .elmo_vocab import ElmoVocabEmbedder

        embedder_class = ElmoEmbedder if kind == "elmo" else ElmoVocabEmbedder
        return embedder_class.load(directory, settings, device=device, log=log)
    from ..errors import ModelError

    raise ModelError(f"this sentiscore does not know the embedder {kind!r} named in meta.json")
