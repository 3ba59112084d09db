"""Unlabelled text for pretraining (word vectors, biLMs): read and segment
corpus files into token lists with the classifier's own segmenter, so
pretraining sees the tokens the classifier will see."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from .config import SegmenterConfig, default_workers
from .errors import InputError
from .io import detect_format, read_table, sha256_of


def read_corpus(paths, text_column: str, segmenter: SegmenterConfig, workers: int | None,
                log: Callable[[str], None]) -> tuple[list[list[str]], list[dict]]:
    """Token lists from every corpus file: ``.txt`` files hold one
    pre-segmented sentence per line (tokens split by whitespace); anything
    ``score`` reads is segmented here with our segmenter."""
    from .segment import ParallelSegmenter

    sentences: list[list[str]] = []
    record = []
    for path in map(Path, paths):
        if not path.is_file():
            raise InputError(f"corpus {path} does not exist")
        if path.suffix.lower() == ".txt":
            with open(path, encoding="utf-8") as handle:
                part = [line.split() for line in handle]
            part = [s for s in part if s]
        else:
            fmt = detect_format(path, None, ("csv", "tsv", "parquet", "jsonl"), "--input-format")
            table = read_table(path, fmt, columns=[text_column])
            texts = [t for t in table.column(text_column).to_pylist() if isinstance(t, str) and t.strip()]
            with ParallelSegmenter(segmenter, 100_000, workers or default_workers()) as seg:
                batch = seg.segment(texts)
            part = [s for s in batch.token_lists() if s]
        tokens = sum(len(s) for s in part)
        log(f"corpus {path.name}: {len(part):,} sentences, {tokens:,} tokens")
        record.append({"path": path.name, "sha256": sha256_of(path), "sentences": len(part), "tokens": tokens})
        sentences.extend(part)
    if not sentences:
        raise InputError("the corpus holds no tokens")
    return sentences, record
