"""Embedders turn segmented tokens into model inputs.

Interface (every embedder module implements it; the pipeline knows nothing
else about them):

- ``kind``: the name stored in meta.json (``vocab``, ``elmo``)
- ``featurize(batch: SegmentedBatch) -> features``: per-chunk work done
  once (vocabulary lookup, or nothing);
- ``encode(features, rows, width) -> dict[str, np.ndarray]``: model inputs
  for the texts ``rows``, padded to ``width`` tokens; every dict holds
  ``mask`` (bool, True on real tokens) besides the embedder's own arrays.
- ``save(directory)`` / ``load(directory, settings)``: the embedder's files
  inside a model directory.

Each embedder lives in its own module; only ``embed.elmo`` may import torch.
"""

from __future__ import annotations

import numpy as np


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
    if kind == "elmo":
        try:
            from .elmo import ElmoEmbedder
        except ImportError as exc:  # torch / elmoformanylangs not installed
            from ..errors import ModelError

            raise ModelError(f"{directory} embeds with ELMo, which needs torch and elmoformanylangs ({exc}); "
                             "install them with: pip install 'sentiscore[elmo]'") from exc
        return ElmoEmbedder.load(directory, settings, device=device, log=log)
    from ..errors import ModelError

    raise ModelError(f"this sentiscore does not know the embedder {kind!r} named in meta.json")
