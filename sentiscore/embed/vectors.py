"""Pretrained word vectors for the vocab embedder: skip-gram vectors
(gensim's Word2Vec) over unlabelled text segmented by our own segmenter, so
the vectors are for the very tokens the classifier sees.

A vectors folder holds

    words.txt                 one word per line, most frequent first
    vectors.npy               float16 (words, dim), row i for line i
    sentiscore_vectors.json   corpus (sha256, tokens), settings, segmenter

``sentiscore train --vectors DIR`` starts the embedding from them, and adds
the most frequent words that the labelled data lacks to the vocabulary, so
that a word never seen with a label still has a meaningful vector at
scoring time. gensim is needed only to train vectors, not to use them.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .. import __version__
from ..config import SegmenterConfig
from ..errors import InputError, ModelError, UsageError
from ..segment import stopwords_digest

WORDS_FILE = "words.txt"
VECTORS_FILE = "vectors.npy"
CARD_FILE = "sentiscore_vectors.json"


@dataclass(frozen=True)
class VectorsConfig:
    dim: int = 96  # the vocab embedder's default embedding size
    window: int = 5
    min_count: int = 3
    max_words: int = 100_000  # most frequent words kept (float16: 100k × 96 × 2 B = 19 MB)
    epochs: int = 3
    negative: int = 5
    sample: float = 1e-4  # down-sampling of frequent words
    seed: int = 1
    workers: int | None = None

    def __post_init__(self):
        if self.dim < 2 or self.window < 1 or self.min_count < 1 or self.max_words < 1 or self.epochs < 1:
            raise UsageError("--dim must be at least 2; --window, --min-count, --max-words and --epochs at least 1")


@dataclass
class WordVectors:
    words: list[str]
    vectors: np.ndarray  # (len(words), dim), float16 on disk
    card: dict

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def save(self, out_dir: Path) -> None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / WORDS_FILE).write_text("\n".join(self.words) + "\n", encoding="utf-8")
        np.save(out_dir / VECTORS_FILE, self.vectors.astype(np.float16), allow_pickle=False)
        (out_dir / CARD_FILE).write_text(json.dumps(self.card, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, directory) -> "WordVectors":
        directory = Path(directory)
        card = read_vectors_card(directory)
        words = (directory / WORDS_FILE).read_text(encoding="utf-8").split("\n")
        if words and words[-1] == "":
            words.pop()
        vectors = np.load(directory / VECTORS_FILE, allow_pickle=False)
        if vectors.ndim != 2 or vectors.shape[0] != len(words):
            raise ModelError(f"{directory}: {VECTORS_FILE} has shape {vectors.shape} but {WORDS_FILE} lists {len(words):,} words")
        return cls(words, vectors, card)

    def segmenter_settings(self) -> dict:
        return self.card.get("segmenter") or {}


def read_vectors_card(directory: Path) -> dict:
    """The card of a vectors folder, once its three files are known to be there."""
    for name in (WORDS_FILE, VECTORS_FILE, CARD_FILE):
        if not (directory / name).is_file():
            raise ModelError(f"{directory} is not a vectors folder: {name} is missing (make one with 'sentiscore vectors train')")
    return json.loads((directory / CARD_FILE).read_text(encoding="utf-8"))


def resolve_vectors_dir(spec: str) -> Path:
    """A vectors folder, or the name of a vectors folder shipped in
    ``sentiscore/models`` (``zh-corpus-vectors``: the unlabelled corpus's
    skip-gram vectors, function words kept, the start for ``--init``)."""
    from importlib import resources

    path = Path(spec)
    if path.is_dir():
        return path
    builtin = Path(str(resources.files("sentiscore.models"))) / spec
    if (builtin / CARD_FILE).is_file():
        return builtin
    raise UsageError(f"--vectors {spec}: no such folder or built-in vectors")


# What `sentiscore train` starts a word embedding from unless told otherwise:
# the shipped corpus vectors, continued on the training file's own texts.
DEFAULT_TRAIN_VECTORS = "zh-corpus-vectors"


def train_vectors_option(spec: str | None, embedder_type: str) -> str | None:
    """``train --vectors``: not given means the shipped corpus vectors for
    an embedder with a word embedding (``vocab``, ``elmo+vocab``) and none
    for ``elmo``; ``none`` means a randomly started embedding."""
    if spec is None:
        return DEFAULT_TRAIN_VECTORS if embedder_type != "elmo" else None
    return None if spec.lower() == "none" else spec


def vectors_stopwords(spec: str) -> str:
    """The ``--stopwords`` the vectors were segmented with, which a
    classifier starting from them must use (``train``'s default there)."""
    card = read_vectors_card(resolve_vectors_dir(spec))
    stopwords = (card.get("segmenter") or {}).get("stopwords", "builtin")
    if stopwords in ("builtin", "none") or Path(stopwords).is_file():
        return stopwords
    raise UsageError(f"--vectors {spec} were segmented with the stopword file {stopwords}, which is not here; pass --stopwords")


def train_vectors(corpus_paths, out_dir, config: VectorsConfig | None = None, *, text_column: str = "txt",
                  segmenter: SegmenterConfig | None = None, init=None, workers: int | None = None,
                  log: Callable[[str], None] = print) -> WordVectors:
    """Segment the corpus files and train skip-gram vectors on them. With
    ``init`` (a vectors folder) training continues from those vectors: their
    words keep their vectors as a start, new words are added, so a team can
    adapt vectors to its own unlabelled text; the words only the old vectors
    know are kept as they were."""
    from ..corpus import read_corpus

    _word2vec()  # before segmenting a corpus for nothing
    segmenter = segmenter or SegmenterConfig()
    start = WordVectors.load(init) if init is not None else None
    sentences, corpus_record = read_corpus(corpus_paths, text_column, segmenter, workers, log)
    result = fit_skipgram(sentences, config, segmenter, start=start, start_name=Path(init).name if init is not None else None,
                          corpus=corpus_record, workers=workers, log=log)
    result.save(Path(out_dir))
    return result


def adapt_vectors(start: WordVectors, start_name: str, sentences: list[list[str]], segmenter: SegmenterConfig,
                  corpus: dict, config: VectorsConfig | None = None, workers: int | None = None,
                  log: Callable[[str], None] = print) -> WordVectors:
    """``start`` continued on token lists already segmented with
    ``segmenter`` (``train --adapt-vectors``: the training file's own texts,
    labels unused), in memory."""
    sentences = [s for s in sentences if s]
    if not sentences:
        raise InputError("adapting the vectors: the training texts hold no tokens")
    return fit_skipgram(sentences, config, segmenter, start=start, start_name=start_name, corpus=[corpus], workers=workers, log=log)


def _word2vec():
    """gensim's Word2Vec, or a UsageError that says how to install it."""
    try:
        from gensim.models import Word2Vec
    except ImportError as exc:
        raise UsageError(f"training word vectors needs gensim ({exc}); install it with: pip install gensim") from exc
    return Word2Vec


def fit_skipgram(sentences: list[list[str]], config: VectorsConfig | None, segmenter: SegmenterConfig, *,
                 start: WordVectors | None = None, start_name: str | None = None, corpus: list[dict] | None = None,
                 workers: int | None = None, log: Callable[[str], None] = print) -> WordVectors:
    """Skip-gram vectors on token lists, from scratch or continued from
    ``start`` (its size wins; every word only it knows is kept unchanged)."""
    from ..config import default_workers

    Word2Vec = _word2vec()

    config = config or VectorsConfig()
    if start is not None and start.dim != config.dim:
        config = VectorsConfig(**{**asdict(config), "dim": start.dim})
        log(f"continuing from {start_name} at its size, {start.dim}-d")
    tokens = sum(map(len, sentences))
    threads = config.workers or workers or default_workers()
    model = Word2Vec(vector_size=config.dim, window=config.window, min_count=config.min_count, sg=1,
                     negative=config.negative, sample=config.sample, seed=config.seed, workers=threads,
                     max_final_vocab=config.max_words)
    model.build_vocab(sentences)
    if start is not None:
        known = {w: i for i, w in enumerate(start.words)}
        hits = [(model.wv.key_to_index[w], known[w]) for w in model.wv.index_to_key if w in known]
        if hits:
            rows, source = map(np.array, zip(*hits))
            model.wv.vectors[rows] = start.vectors[source].astype(np.float32)
        log(f"{len(hits):,} of {len(model.wv.index_to_key):,} words start from {start_name}")
    log(f"training {config.dim}-d skip-gram vectors on {tokens:,} tokens, {len(model.wv.index_to_key):,} words, "
        f"{config.epochs} epochs, {threads} threads")
    model.train(sentences, total_examples=len(sentences), epochs=config.epochs)
    words = list(model.wv.index_to_key[: config.max_words])
    vectors = model.wv.vectors[: len(words)]
    if start is not None:
        # The new text's words first (continued), then every word only the old
        # vectors know, unchanged: adapting must not forget the old vocabulary.
        seen = set(words)
        kept = [i for i, w in enumerate(start.words) if w not in seen][: max(config.max_words, len(start.words)) - len(words)]
        words += [start.words[i] for i in kept]
        vectors = np.concatenate([vectors, start.vectors[kept].astype(np.float32)])
    card = {
        "format": "sentiscore-vectors",
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "sentiscore_version": __version__,
        "method": "gensim Word2Vec skip-gram",
        "settings": {k: v for k, v in asdict(config).items() if k != "workers"},
        "corpus": corpus or [],
        "tokens": tokens,
        "tokens_seen": tokens * config.epochs,
        "words": len(words),
        "init": start_name,
        "segmenter": segmenter.to_dict() | {"stopwords_sha256": stopwords_digest(segmenter.stopwords)},
    }
    return WordVectors(words, vectors.astype(np.float16), card)


def embedding_matrix(words: list[str], vectors: WordVectors, size: int, seed: int) -> tuple[np.ndarray, int]:
    """Initial weights for an Embedding over ``size`` ids (0 padding, 1 OOV,
    then ``words``): pretrained rows where the vectors know the word, small
    random rows elsewhere, scaled alike. Returns (matrix, words found)."""
    rng = np.random.default_rng(seed)
    known = {w: i for i, w in enumerate(vectors.words)}
    pretrained = vectors.vectors.astype(np.float32)
    scale = float(pretrained.std()) or 0.05
    matrix = rng.normal(0.0, scale, (size, vectors.dim)).astype(np.float32)
    matrix[0] = 0.0
    rows = [(i + 2, known[w]) for i, w in enumerate(words) if w in known]
    if rows:
        ids, source = map(np.array, zip(*rows))
        matrix[ids] = pretrained[source]
    return matrix, len(rows)


def check_segmenter(vectors: WordVectors, segmenter: SegmenterConfig, where: str, adapting: bool = False) -> None:
    """Vectors are only as good as their tokens: the classifier must segment
    as the vectors' corpus was segmented (markup, HMM, user dictionary,
    stopwords: vectors of a text without its function words have other
    contexts, and the function words themselves would get no vector).
    Vectors about to be continued on the classifier's own tokens
    (``adapting``) learn the words a user dictionary makes."""
    trained = vectors.segmenter_settings()
    if not trained:
        return  # pre-segmented .txt corpora: the user vouches for the tokens
    problems = [key for key in ("hmm", "markup") if key in trained and trained[key] != getattr(segmenter, key)]
    if not adapting and bool(trained.get("user_dict")) != bool(segmenter.user_dict):
        problems.append("user_dict")
    digest = trained.get("stopwords_sha256")
    if digest is None and trained.get("stopwords") in ("builtin", "none"):  # cards before the digest was recorded
        digest = stopwords_digest(trained["stopwords"])
    if digest and digest != stopwords_digest(segmenter.stopwords):
        problems.append(f"stopwords ({trained.get('stopwords')})")
    if problems:
        raise InputError(f"{where}: the vectors were trained with other segmenter settings ({', '.join(problems)}); "
                         "train with the same settings (--markup, --stopwords, --user-dict), train vectors with yours, "
                         "or train without vectors (--vectors none)")
