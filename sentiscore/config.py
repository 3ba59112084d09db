"""Frozen settings objects for segmentation, features, models, training and
scoring. Everything that must match between training and scoring lives in
:class:`SegmenterConfig`, :class:`EmbedderConfig` and :class:`WideConfig` and
is stored in the model's ``meta.json``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .errors import UsageError

DEFAULT_LABELS = (("-1", "负评"), ("0", "中评"), ("1", "正评"))
ARCHITECTURES = ("attention", "wide-deep")


@dataclass(frozen=True)
class SegmenterConfig:
    name: str = "jieba_fast"
    hmm: bool = True
    stopwords: str = "builtin"  # "builtin", "none", or a path (copied into the model)
    user_dict: str | None = None  # path; copied into the model directory
    max_chars: int = 2000  # text is cut here before segmentation: bounds time on huge cells

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class EmbedderConfig:
    type: str = "vocab"
    maxlen: int = 128  # tokens; p95 of our reviews is ~96, p99 ~178
    embed_dim: int = 96
    min_count: int = 2
    max_vocab: int = 60000

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class WideConfig:
    ngram_min: int = 1
    ngram_max: int = 3
    num_buckets: int = 2**18
    max_chars: int = 512

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "wide-deep"
    lstm_units: int = 128
    dropout: float = 0.3
    token_dropout: float = 0.1  # replace this share of tokens by OOV while training
    wide_l2: float = 1e-6  # joint training only
    wide_dropout: float = 0.2  # joint training only
    wide_training: str = "prefit"  # "prefit": logistic regression first, then frozen; "joint": trained with the rest
    wide_c: float = 4.0  # inverse L2 strength of the prefit logistic regression
    wide_folds: int = 3  # folds for the out-of-fold wide logits the deep layers train against

    def __post_init__(self):
        if self.arch not in ARCHITECTURES:
            raise UsageError(f"unknown --arch {self.arch!r}; choose one of {', '.join(ARCHITECTURES)}")
        if self.wide_training not in ("prefit", "joint"):
            raise UsageError("--wide-training must be prefit or joint")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TrainConfig:
    text_column: str = "txt"
    label_column: str = "label"
    labels: tuple[tuple[str, str], ...] = DEFAULT_LABELS
    val_fraction: float = 0.1
    seed: int = 13
    epochs: int = 6
    batch_size: int = 64
    learning_rate: float = 2e-3
    patience: int = 2
    class_weights: bool = True
    calibrate: bool = True  # temperature + class thresholds fitted on the validation split
    workers: int | None = None
    name: str = "custom"
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)
    embedder: EmbedderConfig = field(default_factory=EmbedderConfig)
    wide: WideConfig = field(default_factory=WideConfig)
    model: ModelConfig = field(default_factory=ModelConfig)

    def __post_init__(self):
        if not 0 < self.val_fraction < 0.5:
            raise UsageError("--val-fraction must be between 0 and 0.5")
        if len(self.labels) < 2:
            raise UsageError("--labels needs at least two classes")


@dataclass(frozen=True)
class ScoreConfig:
    text_column: str = "txt"
    chunk_size: int = 10_000
    batch_size: int = 256
    top_k: int = 3
    workers: int | None = None
    input_format: str | None = None
    output_format: str | None = None
    encoding: str = "utf-8"
    keep_columns: tuple[str, ...] | None = None
    overwrite: bool = False
    quiet: bool = False
    resume: bool = False  # OUT is a directory of Parquet parts, one per chunk; reruns skip finished parts
    on_bad_lines: str = "error"  # CSV rows with too many/few fields: "error" or "skip" (listed in OUT.bad-lines.tsv)

    def __post_init__(self):
        if self.chunk_size < 1:
            raise UsageError("--chunk-size must be at least 1")
        if self.batch_size < 1:
            raise UsageError("--batch-size must be at least 1")
        if self.top_k < 0:
            raise UsageError("--top-k must be 0 or more")


def parse_labels(spec: str) -> tuple[tuple[str, str], ...]:
    """Parse ``"-1=负评,0=中评,1=正评"`` into ((value, name), ...)."""
    pairs = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        value, sep, name = part.partition("=")
        if not sep or not value.strip() or not name.strip():
            raise UsageError(f"--labels: cannot read {part!r}; write VALUE=NAME pairs, e.g. \"-1=负评,0=中评,1=正评\"")
        pairs.append((value.strip(), name.strip()))
    values = [v for v, _ in pairs]
    names = [n for _, n in pairs]
    if len(set(values)) != len(values) or len(set(names)) != len(names):
        raise UsageError("--labels: values and names must be unique")
    if len(pairs) < 2:
        raise UsageError("--labels needs at least two classes")
    return tuple(pairs)


def default_workers() -> int:
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)
