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
LR_SCHEDULES = ("constant", "cosine")
MARKUP_MODES = ("social", "keep")
CLASS_WEIGHTINGS = ("none", "sqrt", "balanced")
SOURCE_WEIGHTINGS = ("none", "sqrt", "balanced")  # the same, per source group (--group-column)
BINARY_SOURCE_LOSSES = ("full", "polarity")  # how rows of a source without a middle-class row train the deep path
# How the wide path weighs a text's char n-grams. count: every occurrence
# counts, over the square root of their number (models before 0.2's idf);
# idf: each distinct n-gram once, by its inverse document frequency in the
# training rows, over the L2 norm of those weights (what the TF-IDF peer does).
WIDE_WEIGHTINGS = ("count", "idf")


def _check_markup(markup: str) -> None:
    if markup not in MARKUP_MODES:
        raise UsageError(f"--markup must be one of {', '.join(MARKUP_MODES)}")


@dataclass(frozen=True)
class SegmenterConfig:
    name: str = "jieba_fast"
    hmm: bool = True
    stopwords: str = "builtin"  # "builtin", "none", or a path (copied into the model)
    user_dict: str | None = None  # path; copied into the model directory
    max_chars: int = 2000  # text is cut here before segmentation: bounds time on huge cells
    # "social": URLs, @mentions and repost markers dropped, #topic# tags keep
    # their text, [表情] emoticon codes become tokens of their own; "keep":
    # markup is segmented like any text (models trained before 0.2).
    markup: str = "social"

    def __post_init__(self):
        _check_markup(self.markup)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# vocab: learned word embeddings; elmo: vectors from a biLM; elmo+vocab: both, concatenated per token.
EMBEDDER_TYPES = ("vocab", "elmo", "elmo+vocab")
ELMO_EMBEDDERS = ("elmo", "elmo+vocab")  # the types that run a biLM (torch)
VOCAB_EMBEDDERS = ("vocab", "elmo+vocab")  # the types with a learned word embedding (token ids)


@dataclass(frozen=True)
class EmbedderConfig:
    type: str = "vocab"  # one of EMBEDDER_TYPES
    maxlen: int = 128  # tokens; p95 of our reviews is ~96, p99 ~178
    embed_dim: int = 96  # vocab and elmo+vocab
    layer_mix: str = "average"  # elmo only: average, top or scalar (learned)
    min_count: int = 2
    max_vocab: int = 60000

    def __post_init__(self):
        if self.type not in EMBEDDER_TYPES:
            raise UsageError(f"--embedder must be one of {', '.join(EMBEDDER_TYPES)}")
        if self.layer_mix not in ("average", "top", "scalar"):
            raise UsageError("--layer-mix must be average, top or scalar")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def uses_elmo(self) -> bool:
        return self.type in ELMO_EMBEDDERS

    @property
    def uses_vocab(self) -> bool:
        return self.type in VOCAB_EMBEDDERS


@dataclass(frozen=True)
class WideConfig:
    ngram_min: int = 1
    ngram_max: int = 3
    num_buckets: int = 2**20  # 0.1 and zh-fast before idf: 2**18 (10,000 training rows already hold 450k distinct n-grams)
    max_chars: int = 512
    markup: str = "social"  # "social": URLs and @mentions are not hashed (as SegmenterConfig.markup); "keep"
    weighting: str = "idf"  # one of WIDE_WEIGHTINGS; cards without it are "count" (artifacts.trained_wide_config)

    def __post_init__(self):
        _check_markup(self.markup)
        if self.weighting not in WIDE_WEIGHTINGS:
            raise UsageError(f"--wide-weighting must be one of {', '.join(WIDE_WEIGHTINGS)}")
        if self.num_buckets < 2:
            raise UsageError("--wide-buckets must be at least 2")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


WIDE_TRAININGS = ("prefit", "independent", "joint")
PREFIT_WIDE_TRAININGS = ("prefit", "independent")  # the n-gram path is a logistic regression fitted first


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "wide-deep"
    lstm_units: int = 128
    dropout: float = 0.3
    token_dropout: float = 0.1  # replace this share of tokens by OOV while training
    wide_l2: float = 1e-6  # joint training only
    wide_dropout: float = 0.2  # joint training only
    # "prefit": logistic regression first, then frozen, and the deep path learns to correct its out-of-fold
    # logits; "independent": the same n-gram path, but the deep path learns the labels on its own (their
    # logits still add up: a product of two experts); "joint": trained with the rest
    wide_training: str = "prefit"
    wide_c: float = 8.0  # inverse L2 strength of the prefit logistic regression (0.1's count weighting: 4.0)
    wide_folds: int = 3  # folds for the out-of-fold wide logits the deep layers train against
    # Training only: the prefit logistic regression also gets one intercept per source group, so each
    # source's own label mix (car_forum 73% neutral, the binary review sources none) is explained by its
    # intercept, not by the words typical of that source; at scoring the intercept is the one that gives
    # the training rows' label mix on validation.
    wide_source_intercepts: bool = False

    def __post_init__(self):
        if self.arch not in ARCHITECTURES:
            raise UsageError(f"unknown --arch {self.arch!r}; choose one of {', '.join(ARCHITECTURES)}")
        if self.wide_training not in WIDE_TRAININGS:
            raise UsageError(f"--wide-training must be one of {', '.join(WIDE_TRAININGS)}")
        if self.wide_source_intercepts and (self.arch != "wide-deep" or self.wide_training not in PREFIT_WIDE_TRAININGS):
            raise UsageError("--wide-source-intercepts needs --arch wide-deep with a prefit n-gram path (--wide-training prefit or independent)")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


ELMO_SIZES = ("tiny", "small", "base", "large")


@dataclass(frozen=True)
class ElmoPretrainConfig:
    """A biLM in elmoformanylangs' format: char-CNN token embedder, then
    ``n_layers`` of LSTM(``lstm_dim``) projected to ``projection_dim`` each
    way, so each layer gives 2 × projection_dim numbers per token."""

    size: str = "small"
    char_dim: int = 50
    filters: tuple[tuple[int, int], ...] = ((1, 32), (2, 32), (3, 64), (4, 128))
    n_highway: int = 1
    lstm_dim: int = 512
    projection_dim: int = 128
    n_layers: int = 2
    cell_clip: float = 3.0
    proj_clip: float = 3.0
    dropout: float = 0.1
    max_chars_per_token: int = 10  # the CNN window (2 + 8 chars): longer tokens are cut; Chinese words rarely are
    max_sent_len: int = 40  # training windows (tokens); texts longer are split
    min_count: int = 3  # words rarer than this are <oov> as softmax targets
    max_vocab: int = 100_000
    softmax_cutoffs: tuple[int, ...] = (2000, 10000)  # adaptive softmax: head, then tails by word frequency
    softmax_div: float = 2.0  # each tail's vectors are this many times smaller than the one before
    epochs: int = 2
    # The last this-many epochs lower the learning rate linearly to 0: a constant
    # rate then a decay (warmup-stable-decay), so a run continued with --resume
    # can still end annealed.
    anneal_epochs: int = 0
    batch_size: int = 32
    learning_rate: float = 1e-3
    clip_grad: float = 5.0
    valid_fraction: float = 0.01
    seed: int = 1
    device: str = "auto"
    threads: int | None = None

    def __post_init__(self):
        if self.size not in ELMO_SIZES + ("custom",):
            raise UsageError(f"--size must be one of {', '.join(ELMO_SIZES)}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise UsageError("--device must be auto, cpu or cuda")
        if self.batch_size < 1 or self.epochs < 1 or self.max_sent_len < 2:
            raise UsageError("--batch-size and --epochs must be at least 1, --max-sent-len at least 2")
        if not 0 <= self.anneal_epochs <= self.epochs:
            raise UsageError(f"--anneal-epochs must be between 0 and --epochs ({self.epochs})")

    @classmethod
    def sized(cls, size: str, **overrides) -> "ElmoPretrainConfig":
        """``tiny`` (128-d layers, about twice small's speed on CPU),
        ``small`` (256-d layers, CPU-friendly), ``base`` (512-d) and
        ``large`` (HIT-SCIR's shape, 1024-d; wants a GPU)."""
        presets = {
            "tiny": {"lstm_dim": 256, "projection_dim": 64},
            "small": {},
            "base": {"filters": ((1, 32), (2, 64), (3, 128), (4, 256), (5, 512)), "n_highway": 2,
                     "lstm_dim": 2048, "projection_dim": 256, "char_dim": 50},
            "large": {"filters": ((1, 32), (2, 32), (3, 64), (4, 128), (5, 256), (6, 512), (7, 1024)), "n_highway": 2,
                      "lstm_dim": 4096, "projection_dim": 512, "char_dim": 50},
        }
        if size not in presets:
            raise UsageError(f"--size must be one of {', '.join(ELMO_SIZES)}")
        return cls(size=size, **{**presets[size], **overrides})

    @classmethod
    def from_network(cls, network: dict, **overrides) -> "ElmoPretrainConfig":
        """The settings of an existing biLM (its network JSON), to continue
        training it (``elmo pretrain --init``); ``size`` names the matching
        preset, or ``custom``."""
        encoder, embedder = network["encoder"], network["token_embedder"]
        if embedder.get("word_dim", 0) or embedder.get("char_dim", 0) <= 0:
            raise UsageError("--init: only char-CNN biLMs without word embeddings (as 'elmo pretrain' writes) can be continued")
        shape = {"filters": tuple(tuple(int(v) for v in f) for f in embedder["filters"]), "n_highway": int(embedder["n_highway"]),
                 "char_dim": int(embedder["char_dim"]), "max_chars_per_token": int(embedder["max_characters_per_token"]),
                 "lstm_dim": int(encoder["dim"]), "projection_dim": int(encoder["projection_dim"]),
                 "n_layers": int(encoder["n_layers"]), "cell_clip": float(encoder["cell_clip"]),
                 "proj_clip": float(encoder["proj_clip"]), "dropout": float(network.get("dropout", cls.dropout))}
        size = "custom"
        for name in ELMO_SIZES:
            preset = cls.sized(name)
            if all(getattr(preset, key) == value for key, value in shape.items() if key != "dropout"):
                size = name
                break
        return cls(size=size, **{**shape, **overrides})

    def network_config(self) -> dict:
        """The JSON elmoformanylangs builds its classes from."""
        return {
            "encoder": {"name": "elmo", "projection_dim": self.projection_dim, "cell_clip": self.cell_clip,
                        "proj_clip": self.proj_clip, "dim": self.lstm_dim, "n_layers": self.n_layers},
            "token_embedder": {"name": "cnn", "activation": "relu", "filters": [list(f) for f in self.filters],
                               "n_highway": self.n_highway, "word_dim": 0, "char_dim": self.char_dim,
                               "max_characters_per_token": self.max_chars_per_token},
            # elmoformanylangs' Embedder ignores the classifier: it is only the LM's training head.
            "classifier": {"name": "adaptive_softmax", "cutoffs": list(self.softmax_cutoffs), "div_value": self.softmax_div},
            "dropout": self.dropout,
        }


@dataclass(frozen=True)
class TrainConfig:
    text_column: str = "txt"
    label_column: str = "label"
    labels: tuple[tuple[str, str], ...] = DEFAULT_LABELS
    val_fraction: float = 0.1
    val_source: str | None = None  # hold out this source group (not a random split) for early stopping and calibration
    seed: int = 13
    epochs: int = 6
    batch_size: int = 64
    learning_rate: float = 2e-3
    lr_schedule: str = "constant"  # "constant", or "cosine": decays to 5% over the epoch budget
    patience: int = 2
    # Loss weight per class: "none" (the default since 2026-12-03: sqrt called 中评 on 48% of a held-out Weibo
    # source's rows where 20% are), "sqrt" (square root of balanced) or "balanced" (n / (classes × count)).
    class_weights: str = "none"
    # Loss weight per source group, the same three ways: "balanced" gives every group of the training rows
    # the same total weight, so the largest sources do not decide what transfers to new ones.
    source_weights: str = "none"
    label_smoothing: float = 0.0  # share of each target spread over all classes (a confidence penalty)
    binary_source_loss: str = "full"  # "polarity": rows of a source group without a middle-class row compare negative vs positive only
    ema_momentum: float = 0.0  # >0: validate, stop on and keep an exponential moving average of the weights
    calibrate: bool = True  # temperature (and, with class_bias, class thresholds) fitted on the validation split
    class_bias: bool = False  # per-class logit biases for validation macro-F1: they fit the training sources' class mix
    workers: int | None = None
    elmo_model: str | None = None  # biLM folder, for embedder type elmo (copied into the model)
    vectors: str | None = None  # word-vectors folder or built-in name: the word embedding (vocab, elmo+vocab) starts from them
    vectors_trainable: bool = True  # fine-tune the pretrained vectors (False: keep them frozen)
    adapt_vectors: bool = False  # continue the vectors on the training file's texts (labels unused) before training on them
    vectors_extra_words: int = 40_000  # most frequent vector words added to the vocabulary beyond the labelled data's
    device: str = "auto"  # where ELMo runs: auto, cpu or cuda
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
        if self.lr_schedule not in LR_SCHEDULES:
            raise UsageError(f"--lr-schedule must be one of {', '.join(LR_SCHEDULES)}")
        if self.class_weights not in CLASS_WEIGHTINGS:
            raise UsageError(f"--class-weights must be one of {', '.join(CLASS_WEIGHTINGS)}")
        if self.source_weights not in SOURCE_WEIGHTINGS:
            raise UsageError(f"--source-weights must be one of {', '.join(SOURCE_WEIGHTINGS)}")
        if not 0 <= self.label_smoothing < 1:
            raise UsageError("--label-smoothing must be at least 0 and below 1")
        if self.binary_source_loss not in BINARY_SOURCE_LOSSES:
            raise UsageError(f"--binary-source-loss must be one of {', '.join(BINARY_SOURCE_LOSSES)}")
        if self.binary_source_loss == "polarity" and len(self.labels) != 3:
            raise UsageError("--binary-source-loss polarity needs three labels (negative, the middle class, positive)")
        if self.binary_source_loss == "polarity" and (self.label_smoothing or self.class_bias):
            raise UsageError("--binary-source-loss polarity cannot be combined with --label-smoothing or --class-bias "
                             "(it sets the class biases itself)")
        if not 0 <= self.ema_momentum < 1:
            raise UsageError("--ema-momentum must be at least 0 (off) and below 1")
        if self.wide.weighting == "idf" and self.model.wide_training not in PREFIT_WIDE_TRAININGS:
            raise UsageError("--wide-weighting idf needs --wide-training prefit or independent (the idf comes with the fitted n-gram path); "
                             "train a joint n-gram path with --wide-weighting count")


RUNTIMES = ("auto", "onnx", "onnx-int8", "tensorflow")
# What an ELMo model's biLM computes its LSTMs in when scoring: bfloat16 halves
# their memory traffic and uses CPUs' bf16 units; vectors move by about 0.3%.
ELMO_PRECISIONS = ("float32", "bfloat16")
# How --adapt-priors estimates a file's label shares: black-box shift estimation from the predicted labels
# and the validation confusion (Lipton et al. 2018), or EM over the probabilities (Saerens et al. 2002).
# bbse first: the two tie where only the label mix moves; on sources left out of training EM lost 5-6
# macro-F1 points more (BENCHMARKS.md, "Out of domain, 2026-12-04 (evening)").
PRIOR_ESTIMATORS = ("bbse", "em")
# How --priors applies the shares given: reweight every posterior by share / the model's reference prior
# (one pass), or match: offsets fitted on a sample of the file so its labels come out in those shares (a
# first pass). On sources left out of training, with their true shares, match gained 0.6-1.6 macro-F1
# points over reweight on the mean, and reweight called 31-41% 中评 on Weibo where 20% are (BENCHMARKS.md,
# "Out of domain, 2026-12-05 (later)").
PRIORS_MODES = ("reweight", "match")
# Segmentation workers run this much nicer than the process that scores their
# tokens: that process is the pipeline's critical path, and at equal priority
# it got 2/3 of a core beside two workers on 2 cores (BENCHMARKS.md, "Speed, 2026-12-03").
DEFAULT_WORKER_NICE = 10
# Rows read, scored and written at a time. While one chunk is scored the next
# is segmented, so two chunks' worth of tokens, n-grams and explanations are
# alive at once. ELMo models take half: with the biLM's batches in flight on
# top, zh-elmo's peak RSS on a 1M-row file was 880-891 MiB at 5,000 rows
# against 918-933 at 10,000, for 5-9% of its speed there; for zh-fast the
# halving cost 8% of throughput at 100k rows (BENCHMARKS.md, "Memory, 2026-12-04 (night)").
DEFAULT_CHUNK_ROWS = 10_000
ELMO_CHUNK_ROWS = 5_000


@dataclass(frozen=True)
class ScoreConfig:
    text_column: str = "txt"
    chunk_size: int | None = None  # None: the model's own (default_chunk_rows)
    batch_size: int | None = None  # None: the embedder's own (Scorer)
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
    device: str = "auto"  # where an ELMo embedder runs: auto, cpu or cuda
    adapt_priors: bool = False  # estimate the file's class priors in a first pass, then score under them
    prior_estimator: str = "bbse"  # how --adapt-priors estimates them (PRIOR_ESTIMATORS)
    priors: tuple[tuple[str, float], ...] | None = None  # (label value, prior) pairs: score under these priors
    priors_mode: str = "reweight"  # how the given priors apply (PRIORS_MODES)
    adapt_domain: bool = False  # fit a char n-gram model on the file's confident rows in a first pass, average it in (adapt.py)
    cascade: bool = True  # rows the n-gram path decides skip the deep path (models whose card has a cascade)
    runtime: str = "auto"  # what runs the classifier: onnx (ONNX Runtime), onnx-int8 (its BiLSTM in int8), tensorflow, or auto (onnx where it can)
    worker_nice: int | None = None  # niceness added to the segmentation workers; None: DEFAULT_WORKER_NICE
    elmo_precision: str = "float32"  # what an ELMo model's biLM LSTMs compute in (ELMO_PRECISIONS)

    def __post_init__(self):
        if self.adapt_priors and self.priors is not None:
            raise UsageError("--adapt-priors estimates the priors; --priors gives them: use one")
        if self.priors is not None and (any(p < 0 for _, p in self.priors) or sum(p for _, p in self.priors) <= 0):
            raise UsageError("--priors must be non-negative numbers with a positive sum")
        if self.priors_mode not in PRIORS_MODES:
            raise UsageError(f"--priors-mode must be one of {', '.join(PRIORS_MODES)}")
        if self.priors_mode == "match" and self.priors is None:
            raise UsageError("--priors-mode match matches the label shares given by --priors: give them")
        if self.priors_mode == "match" and self.adapt_domain:
            raise UsageError("--priors-mode match fits the shares on the model's own probabilities, which --adapt-domain "
                             "then averages with another model's: use one")
        if self.chunk_size is not None and self.chunk_size < 1:
            raise UsageError("--chunk-size must be at least 1")
        if self.batch_size is not None and self.batch_size < 1:
            raise UsageError("--batch-size must be at least 1")
        if self.top_k < 0:
            raise UsageError("--top-k must be 0 or more")
        if self.runtime not in RUNTIMES:
            raise UsageError(f"--runtime must be one of {', '.join(RUNTIMES)}")
        if self.prior_estimator not in PRIOR_ESTIMATORS:
            raise UsageError(f"--prior-estimator must be one of {', '.join(PRIOR_ESTIMATORS)}")
        if self.worker_nice is not None and not 0 <= self.worker_nice <= 19:
            raise UsageError("--worker-nice must be between 0 and 19")
        if self.elmo_precision not in ELMO_PRECISIONS:
            raise UsageError(f"--elmo-precision must be one of {', '.join(ELMO_PRECISIONS)}")

    @property
    def segmentation_nice(self) -> int:
        return DEFAULT_WORKER_NICE if self.worker_nice is None else self.worker_nice


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


def parse_priors(spec: str) -> tuple[tuple[str, float], ...]:
    """Parse ``"-1=0.3,0=0.1,1=0.6"`` into ((value, prior), ...)."""
    pairs = []
    for part in spec.split(","):
        value, sep, number = part.strip().partition("=")
        try:
            pairs.append((value.strip(), float(number)))
        except ValueError:
            sep = ""
        if not sep or not value.strip():
            raise UsageError(f"--priors: cannot read {part.strip()!r}; write LABEL=SHARE pairs, e.g. \"-1=0.3,0=0.1,1=0.6\"")
    return tuple(pairs)


def default_workers() -> int:
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)
