"""Word segmentation with jieba_fast: normalisation, user dictionary,
stopwords, punctuation handling and parallel processes.

Why punctuation and symbols are dropped from the token stream: the attention
path and its ``top_words`` should speak in words; the raw characters (！！！,
emoji, ？) still reach the wide character n-gram path, which sees the text
before segmentation.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import re
import tempfile
import time
import unicodedata
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from .config import SegmenterConfig
from .errors import InputError, WorkerError

WORKER_EXIT_SECONDS = 10.0  # at close, the wait for workers to finish their chunk before they are terminated
_TOKEN_CHAR_CATEGORIES = ("L", "N")  # a token must hold a letter or a digit


def normalize_text(text: str) -> str:
    """NFKC (full-width → half-width, compatibility forms) and lower case, so
    ＧＯＯＤ, good and Good are one token across domains."""
    return unicodedata.normalize("NFKC", text).lower()


# Social-media markup, matched after normalize_text (so lower case, ASCII
# punctuation). Weibo user names are 4-30 letters, digits, '_' or '-'.
_URL = re.compile(r"(?:https?://|www\.)[!-~]+|\bt\.cn/[0-9a-z]+")
_MENTION = re.compile(r"@[\w\-]{1,30}")
_TOPIC = re.compile(r"#([^#\n]{1,40})#")
_EMOTICON = re.compile(r"\[(?!\d+\])\w{1,8}\]")  # [怒] [哈哈] [good]; not [12] (a reference)


def strip_links_and_mentions(text: str) -> str:
    """URLs and @mentions (repost chains ``//@user:`` included) replaced by a
    space: a short link's id or a user name says nothing of sentiment."""
    return _MENTION.sub(" ", _URL.sub(" ", text))


def split_social_markup(text: str) -> list[tuple[str, bool]]:
    """A normalised text as (piece, is_emoticon) pairs: URLs and @mentions
    (repost chains ``//@user:`` included) removed, ``#topic#`` reduced to its
    text, ``[表情]`` codes kept whole as tokens of their own, since [怒] or
    [泪] is strong evidence that segmenting would lose or split."""
    text = _TOPIC.sub(r" \1 ", strip_links_and_mentions(text))
    pieces, start = [], 0
    for match in _EMOTICON.finditer(text):
        if match.start() > start:
            pieces.append((text[start : match.start()], False))
        pieces.append((match.group(0), True))
        start = match.end()
    if start < len(text):
        pieces.append((text[start:], False))
    return pieces


def is_word(token: str) -> bool:
    """True for tokens with at least one letter or digit (not punctuation,
    whitespace, symbols or emoji)."""
    for ch in token:
        if unicodedata.category(ch)[0] in _TOKEN_CHAR_CATEGORIES:
            return True
    return False


def builtin_stopwords_text() -> str:
    return resources.files("sentiscore.resources").joinpath("stopwords.txt").read_text(encoding="utf-8")


def parse_word_list(text: str) -> frozenset[str]:
    words = set()
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            words.add(normalize_text(line))
    return frozenset(words)


def load_stopwords(spec: str) -> frozenset[str]:
    """``builtin``, ``none`` or a path to a one-word-per-line file."""
    if spec == "builtin":
        return parse_word_list(builtin_stopwords_text())
    if spec == "none":
        return frozenset()
    path = Path(spec)
    if not path.is_file():
        raise InputError(f"stopword file {spec} does not exist; pass a one-word-per-line UTF-8 file, 'builtin' or 'none'")
    return parse_word_list(path.read_text(encoding="utf-8"))


def stopwords_digest(spec: str) -> str:
    """A short fingerprint of a stopword set (not of its file's path), for
    cards that must say which words were removed."""
    import hashlib

    return hashlib.sha256("\n".join(sorted(load_stopwords(spec))).encode("utf-8")).hexdigest()[:16]


def cache_dir(kind: str) -> Path:
    """A per-user cache folder (``$SENTISCORE_CACHE_DIR/kind`` or
    ``~/.cache/sentiscore/kind``); never a shared /tmp path that another
    user can own or poison. Falls back to a fresh temp folder."""
    explicit = os.environ.get("SENTISCORE_CACHE_DIR")
    if explicit:
        path = Path(explicit) / kind
    else:
        path = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sentiscore" / kind
    try:
        path.mkdir(parents=True, exist_ok=True)
        if os.access(path, os.W_OK):
            return path
    except OSError:
        pass
    return Path(tempfile.mkdtemp(prefix=f"sentiscore-{kind}-"))


def jieba_cache_dir() -> Path:
    """Where jieba keeps its parsed dictionary."""
    return cache_dir("jieba")


@dataclass
class SegmentedBatch:
    """Tokens of many texts, flattened: ``tokens[offsets[i]:offsets[i+1]]``
    belong to text i. ``truncated[i]`` says text i was cut to fit."""

    tokens: list[str]
    lengths: np.ndarray  # int32, tokens per text
    truncated: np.ndarray  # bool

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.lengths, dtype=np.int64)])

    def positions_of(self, texts: np.ndarray) -> np.ndarray:
        """Flat positions of every token of ``texts`` (indices), text by text."""
        lengths = self.lengths[texts].astype(np.int64)
        starts = np.cumsum(lengths) - lengths
        return np.repeat(self.offsets[texts], lengths) + (np.arange(int(lengths.sum())) - np.repeat(starts, lengths))

    def tokens_of(self, i: int) -> list[str]:
        off = self.offsets
        return self.tokens[off[i] : off[i + 1]]

    def token_lists(self) -> list[list[str]]:
        """Every text's tokens, one list per text (the offsets computed once)."""
        off = self.offsets
        return [self.tokens[off[i] : off[i + 1]] for i in range(self.lengths.size)]

    @staticmethod
    def concat(parts: list["SegmentedBatch"]) -> "SegmentedBatch":
        if not parts:
            return SegmentedBatch([], np.zeros(0, np.int32), np.zeros(0, bool))
        tokens: list[str] = []
        for p in parts:
            tokens.extend(p.tokens)
        return SegmentedBatch(
            tokens,
            np.concatenate([p.lengths for p in parts]).astype(np.int32),
            np.concatenate([p.truncated for p in parts]).astype(bool),
        )


class Segmenter:
    """Segments texts in this process. Build one per process (it loads the
    dictionary once)."""

    def __init__(self, config: SegmenterConfig, maxlen: int, stopwords: frozenset[str] | None = None):
        import jieba_fast

        jieba_fast.setLogLevel(logging.WARNING)
        self.config = config
        self.maxlen = maxlen
        self.stopwords = load_stopwords(config.stopwords) if stopwords is None else stopwords
        self._tokenizer = jieba_fast.Tokenizer()
        self._tokenizer.tmp_dir = str(jieba_cache_dir())
        self._tokenizer.initialize()
        if config.user_dict:
            if not Path(config.user_dict).is_file():
                raise InputError(f"user dictionary {config.user_dict} does not exist")
            self._tokenizer.load_userdict(config.user_dict)

    def tokenize(self, text: str) -> tuple[list[str], bool]:
        """Tokens of one text (at most ``maxlen``) and whether it was cut."""
        cut = len(text) > self.config.max_chars
        if cut:
            text = text[: self.config.max_chars]
        text = normalize_text(text)
        if self.config.markup == "social":
            words = []
            for piece, emoticon in split_social_markup(text):
                words.extend([piece] if emoticon else self._words(piece))
        else:
            words = self._words(text)
        if len(words) > self.maxlen:
            return words[: self.maxlen], True
        return words, cut

    def _words(self, text: str) -> list[str]:
        stop = self.stopwords
        return [w for w in self._tokenizer.lcut(text, HMM=self.config.hmm) if w not in stop and is_word(w)]

    def segment(self, texts: list[str]) -> SegmentedBatch:
        tokens: list[str] = []
        lengths = np.zeros(len(texts), np.int32)
        truncated = np.zeros(len(texts), bool)
        # One string object per distinct word: a chunk's few hundred thousand
        # tokens are mostly repeats, and pickle then sends (and the parent
        # keeps) each word once instead of a fresh object per occurrence.
        distinct: dict[str, str] = {}
        for i, text in enumerate(texts):
            words, cut = self.tokenize(text)
            tokens.extend([distinct.setdefault(w, w) for w in words])
            lengths[i] = len(words)
            truncated[i] = cut
        return SegmentedBatch(tokens, lengths, truncated)


# --- worker-process side -------------------------------------------------
_WORKER_SEGMENTER: Segmenter | None = None


def _init_worker(config: SegmenterConfig, maxlen: int, stopwords: frozenset[str], nice: int = 0) -> None:
    # Runs in every worker (spawn-safe): each loads the dictionary and the
    # user dictionary itself.
    global _WORKER_SEGMENTER
    import signal

    # Ctrl-C goes to the whole process group: the parent handles it and
    # terminates the pool; workers printing tracebacks would only add noise.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if nice > 0 and hasattr(os, "nice"):
        try:
            os.nice(nice)
        except OSError:  # a sandbox that forbids it: run at the parent's priority
            pass
    _WORKER_SEGMENTER = Segmenter(config, maxlen, stopwords)


def _worker_ready() -> int:
    return os.getpid()


def _segment_in_worker(texts: list[str]) -> SegmentedBatch:
    assert _WORKER_SEGMENTER is not None, "worker was not initialised"
    return _WORKER_SEGMENTER.segment(texts)


class ParallelSegmenter:
    """Segments across ``workers`` processes (spawn start method), keeping
    order. Small inputs are segmented in-process: starting processes costs
    more than it saves there. Results are identical either way. A worker that
    dies raises :class:`WorkerError` instead of hanging the run."""

    min_parallel_texts = 2000
    worker_function = staticmethod(_segment_in_worker)

    def __init__(self, config: SegmenterConfig, maxlen: int, workers: int = 1, nice: int = 0):
        """``nice``: added to the workers' niceness (Unix), so that the
        process that waits for their tokens gets a core first."""
        self.config = config
        self.maxlen = maxlen
        self.workers = max(1, int(workers))
        self.nice = max(0, int(nice))
        self.stopwords = load_stopwords(config.stopwords)
        self._local: Segmenter | None = None
        self._pool: ProcessPoolExecutor | None = None

    def _local_segmenter(self) -> Segmenter:
        if self._local is None:
            self._local = Segmenter(self.config, self.maxlen, self.stopwords)
        return self._local

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(self.config, self.maxlen, self.stopwords, self.nice),
            )
        return self._pool

    def start(self) -> None:
        """Start the worker processes now rather than at the first large
        chunk, so that their dictionary loading overlaps the caller's own
        start-up (loading a model)."""
        if self.workers == 1:
            return
        pool = self._get_pool()
        try:
            for _ in range(self.workers):  # each task finding no idle worker spawns one
                pool.submit(_worker_ready)
        except BrokenProcessPool as exc:
            raise self._worker_died() from exc

    def _slices(self, texts: list[str]) -> list[list[str]]:
        per = -(-len(texts) // (self.workers * 2))
        return [texts[i : i + per] for i in range(0, len(texts), per)]

    def submit(self, texts: list[str]):
        """Start segmenting; returns a callable that waits for the result.
        Lets the caller run the model on the previous chunk meanwhile."""
        if self.workers == 1 or len(texts) < self.min_parallel_texts:
            result = self._local_segmenter().segment(texts)
            return lambda: result
        pool = self._get_pool()
        try:
            futures = [pool.submit(self.worker_function, part) for part in self._slices(texts)]
        except BrokenProcessPool as exc:
            raise self._worker_died() from exc

        def wait() -> SegmentedBatch:
            try:
                return SegmentedBatch.concat([f.result() for f in futures])
            except BrokenProcessPool as exc:
                raise self._worker_died() from exc

        return wait

    def _worker_died(self) -> WorkerError:
        self.close()
        return WorkerError("a segmentation worker process died (out of memory or killed?); no output was written")

    def segment(self, texts: list[str]) -> SegmentedBatch:
        return self.submit(texts)()

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        processes = list((pool._processes or {}).values())  # no public terminate() before Python 3.14
        pool.shutdown(wait=False, cancel_futures=True)
        # Let the workers finish the chunk in hand and exit on the pool's own
        # sentinel first: a worker killed while it writes its result leaves half a
        # message in the result pipe, and the pool's manager thread, which the
        # interpreter joins at exit, then waits for the rest forever.
        deadline = time.monotonic() + WORKER_EXIT_SECONDS
        for process in processes:
            process.join(timeout=max(0.0, deadline - time.monotonic()))
        for process in processes:
            if process.is_alive():
                process.terminate()
                process.join(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def segmenter_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("jieba_fast")
    except PackageNotFoundError:
        return "unknown"
