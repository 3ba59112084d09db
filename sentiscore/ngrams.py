"""Hashed character n-grams of raw text, computed for a whole batch at once
with NumPy (no per-row Python loop): the wide path's features.

Texts are NFKC-normalised and lower-cased as one joined string, turned into a
code-point array, and every n-gram that does not cross a text boundary is
hashed with a fixed 64-bit mixer, so ids are the same on every machine and in
every process (unlike Python's salted ``hash``).
"""

from __future__ import annotations

import unicodedata

import numpy as np

from .config import WideConfig
from .segment import strip_links_and_mentions

_SEPARATOR = 0  # code point used between texts; NUL inside texts becomes a space
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_PRIME = np.uint64(0x100000001B3)


def _splitmix(x: np.ndarray) -> np.ndarray:
    x = x ^ (x >> np.uint64(30))
    x = x * _MIX1
    x = x ^ (x >> np.uint64(27))
    x = x * _MIX2
    return x ^ (x >> np.uint64(31))


def _codepoints(texts: list[str], strip_links: bool) -> np.ndarray:
    joined = "\x00".join(t.replace("\x00", " ") for t in texts)
    normalized = unicodedata.normalize("NFKC", joined).lower()
    if strip_links:  # one pass over the whole batch; the patterns never match the separator
        normalized = strip_links_and_mentions(normalized)
    return np.frombuffer(normalized.encode("utf-32-le"), dtype=np.uint32)


class CharNgramHasher:
    """Maps texts to padded matrices of hashed n-gram ids in ``[1, num_buckets)``;
    0 is padding. With ``count`` weighting repeated n-grams repeat their id,
    so a sum over the row is a count-weighted bag; with ``idf`` each distinct
    id appears once (in ascending order)."""

    def __init__(self, config: WideConfig):
        self.config = config

    def transform(self, texts: list[str]) -> np.ndarray:
        """The ids as a matrix, one row per text, padded with 0."""
        flat, counts = self.transform_flat(texts)
        if not len(texts):
            return np.zeros((0, 1), np.int32)
        row = np.repeat(np.arange(len(texts)), counts)
        col = np.arange(flat.size) - np.repeat(np.cumsum(counts) - counts, counts)
        out = np.zeros((len(texts), max(1, int(counts.max()))), np.int32)
        out[row, col] = flat
        return out

    def transform_flat(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """The ids laid end to end, text after text (int32), and how many
        each text has (int64): text i's are the next ``counts[i]``."""
        cfg = self.config
        n_texts = len(texts)
        if n_texts == 0:
            return np.zeros(0, np.int32), np.zeros(0, np.int64)
        # Cut first: a 5 MB cell must not cost 5 MB of n-gram arrays (NFKC may
        # still lengthen a text a little; ``usable`` below applies the exact cap).
        codes = _codepoints([t[: cfg.max_chars] for t in texts], cfg.markup == "social")
        is_sep = codes == _SEPARATOR
        text_of = np.cumsum(is_sep)  # text index of every position (separator counts to the next)
        starts = np.concatenate([[0], np.flatnonzero(is_sep) + 1])
        pos_in_text = np.arange(codes.size) - starts[text_of]
        usable = ~is_sep & (pos_in_text < cfg.max_chars)

        values = codes.astype(np.uint64)
        rows, ids = [], []
        for n in range(cfg.ngram_min, cfg.ngram_max + 1):
            m = codes.size - n + 1
            if m <= 0:
                continue
            ok = usable[:m].copy()
            h = np.full(m, np.uint64(n), dtype=np.uint64)  # n seeds the hash: 'a' ≠ 'a' as part of 'ab'
            for k in range(n):
                ok &= usable[k : k + m]
                h = _splitmix(h * _PRIME + values[k : k + m])
            idx = np.flatnonzero(ok)
            rows.append(text_of[idx])
            ids.append((h[idx] % np.uint64(cfg.num_buckets - 1)).astype(np.int64) + 1)
        if not rows:
            return np.zeros(0, np.int32), np.zeros(n_texts, np.int64)
        row = np.concatenate(rows)
        col_ids = np.concatenate(ids)
        if cfg.weighting == "idf":  # a set of n-grams per text: each distinct id once, sorted by text then id
            # (ids < 2^31, so one int64 key holds both; a sort and a mask are ~4x faster than np.unique here)
            key = (row.astype(np.int64) << 32) | col_ids.astype(np.int64)
            key.sort()
            is_new = np.empty(key.size, bool)
            is_new[:1] = True
            np.not_equal(key[1:], key[:-1], out=is_new[1:])
            key = key[is_new]
            row, col_ids = key >> 32, key & 0xFFFFFFFF
        else:
            order = np.argsort(row, kind="stable")
            row, col_ids = row[order], col_ids[order]
        return col_ids.astype(np.int32), np.bincount(row, minlength=n_texts).astype(np.int64)
