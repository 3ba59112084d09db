"""ELMo front end: tokens → contextual vectors from an elmoformanylangs biLM
(ours from ``sentiscore elmo pretrain``, or HIT-SCIR's released models).

With :mod:`.elmo_pretrain` the only code that imports torch. Differences
from ``elmoformanylangs.Embedder.sents2elmo``, each on purpose:

- runs under ``torch.inference_mode`` (the plain call builds autograd
  graphs: ~20× slower on CPU);
- resets the biLM's recurrent state before every batch: ``ElmobiLm`` is
  stateful, so a sentence's vectors otherwise depend on the batches before it;
- builds the id tensors with NumPy (the package fills them element by element);
- batches texts of similar length; padding never enters the LSTMs (they
  are packed by the mask) and its vectors are never returned;
- at inference the projected-LSTM cells run :func:`projected_lstm_inference`
  (same outputs, no per-step clones);
- loads weights with ``torch.load(weights_only=True)``, from the model
  directory only (no fallback to config paths elsewhere on disk).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..config import ELMO_PRECISIONS
from ..errors import ModelError, UsageError
from ..segment import SegmentedBatch
from . import padded_positions

ELMO_SUBDIR = "elmo"  # inside a sentiscore model directory
LAYER_MIXES = ("average", "top", "scalar")
ELMO_FILES = ("config.json", "char.dic", "word.dic", "token_embedder.pkl", "encoder.pkl")
PRETRAIN_CARD = "sentiscore_elmo.json"  # written by 'elmo pretrain': corpus, tokens seen, perplexity
# elmoformanylangs starts every token's characters with the id of '<eow>' and
# ends them with '<bow>' (both its trainer and its Embedder swap the two).
# Weights trained either way expect it, so we do the same.
_TOKEN_START, _TOKEN_END = "<eow>", "<bow>"
# Unseen tokens go through the char-CNN in slices of at most _TOKEN_SLICE,
# each padded to a power of two ≥ _TOKEN_SLICE_MIN: five input shapes in all.
_TOKEN_SLICE, _TOKEN_SLICE_MIN = 1024, 64
# Rows of each of the token cache's two generations (512 bytes a row in the
# small biLM): the most the cache holds is twice this (BENCHMARKS.md,
# "Memory, 2026-12-05 (later)", for the choice).
TOKEN_CACHE_GENERATION_ROWS = 24_576


# Texts per biLM batch, and per classifier batch when scoring, by device. On the CPU 64: the scalar mix
# feeds Keras 3 layers × 256 floats per token, and 64 cut zh-elmo's peak RSS from 1.93 to 1.46 GB on
# 10k rows against 256, no slower. A GPU needs more: at 64 texts the biLM's per-step kernels are too
# small to fill it. On an H200 the biLM alone ran 3.0-3.4× the tokens/s at 256 texts as at 64 (5-6× at
# 1,024, for 2.9× 256's memory) and zh-elmo 1.27× end to end; 256 keeps several batches per chunk's
# deep rows, so the biLM still overlaps the classifier (BENCHMARKS.md, "GPU, 2026-12-04").
BILM_BATCH_TEXTS = {"cpu": 64, "cuda": 256}


def resolve_device(requested: str, log: Callable[[str], None] | None = None) -> str:
    """``auto``/``cuda`` → ``cuda`` when torch sees a GPU, else ``cpu``
    (saying so when ``cuda`` was asked for)."""
    import torch

    if requested not in ("auto", "cpu", "cuda"):
        raise UsageError("--device must be auto, cpu or cuda")
    if requested == "cpu":
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    if requested == "cuda" and log is not None:
        log("sentiscore: --device cuda: torch sees no CUDA device (CPU build of torch, or no GPU); running ELMo on the CPU")
    return "cpu"


def torch_threads() -> int:
    """torch's CPU threads: ``SENTISCORE_TORCH_THREADS``, else half the cores.
    Segmentation workers and TensorFlow share the machine, and torch's
    threads spin while waiting: on 2 busy cores, 2 threads ran the biLM 10×
    slower than 1 (7 vs 83 texts/s, measured here)."""
    from ..config import default_workers

    explicit = os.environ.get("SENTISCORE_TORCH_THREADS")
    if explicit:
        return max(1, int(explicit))
    return max(1, default_workers() // 2)


def read_lexicon(path: Path) -> dict[str, int]:
    """``token<TAB>id`` lines, read as elmoformanylangs reads them (a line
    whose token was stripped away is the ideographic space)."""
    lexicon: dict[str, int] = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            parts = line.strip().split("\t")
            if len(parts) == 1:
                parts.insert(0, "\u3000")
            token, index = parts
            lexicon[token] = int(index)
    return lexicon


def write_lexicon(path: Path, lexicon: dict[str, int]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for token, index in lexicon.items():
            handle.write(f"{token}\t{index}\n")


def network_config_path(directory: Path) -> Path:
    """The biLM's network JSON that ``config.json`` names: looked up in the
    folder, then (like ``Embedder``, for HIT-SCIR's released models) among
    the configs elmoformanylangs ships."""
    directory = Path(directory)
    top = directory / "config.json"
    if not top.is_file():
        raise ModelError(f"{directory} is not an ELMo directory: config.json is missing")
    try:
        name = Path(str(json.loads(top.read_text(encoding="utf-8"))["config_path"]).replace("\\", "/")).name
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"{top}: cannot read config_path ({exc})") from exc
    if (directory / name).is_file():
        return directory / name
    try:
        from importlib import resources

        bundled = Path(str(resources.files("elmoformanylangs"))) / "configs" / name
    except ModuleNotFoundError:
        bundled = None
    if bundled is not None and bundled.is_file():
        return bundled
    raise ModelError(f"{top} names {name}, which is neither in {directory} nor among elmoformanylangs' configs")


def resolve_elmo_dir(spec: str, option: str = "--elmo-model") -> Path:
    """A biLM folder, or a sentiscore model (a folder or a built-in name,
    e.g. zh-elmo) whose biLM to reuse."""
    from importlib import resources

    path = Path(spec)
    builtin = Path(str(resources.files("sentiscore.models"))) / spec
    if not path.is_dir() and builtin.is_dir():
        path = builtin
    if (path / ELMO_SUBDIR / "config.json").is_file():
        return path / ELMO_SUBDIR
    if (path / "config.json").is_file():
        return path
    raise UsageError(f"{option} {spec}: not a biLM folder (no config.json) nor a model with an ELMo embedder")


def read_network_config(directory: Path) -> dict:
    return json.loads(network_config_path(directory).read_text(encoding="utf-8"))


class BatchTensors:
    """Builds elmoformanylangs' batch inputs (word ids, char ids, masks) for
    lists of tokens with NumPy; ``create_one_batch(sort=False)`` gives the same
    tensors (a test holds them equal)."""

    def __init__(self, network: dict, word_lexicon: dict[str, int] | None, char_lexicon: dict[str, int] | None):
        self.word_lexicon = word_lexicon
        self.char_lexicon = char_lexicon
        embedder = network["token_embedder"]
        self.cnn = embedder["name"].lower() == "cnn"
        self.max_chars = int(embedder.get("max_characters_per_token") or 0) if self.cnn else None
        self._char_rows: dict[str, np.ndarray] = {}
        self._word_ids: dict[str, int] = {}

    def _truncate(self, token: str) -> str:
        if self.cnn and len(token) + 2 > self.max_chars:
            return token[: self.max_chars - 2]
        return token

    def _char_row(self, token: str, width: int, remember: bool = True) -> np.ndarray:
        row = self._char_rows.get(token)
        if row is None or row.size != width:
            chars = self.char_lexicon
            row = np.full(width, chars["<pad>"], np.int64)
            row[0] = chars[_TOKEN_START]
            if token in ("<bos>", "<eos>"):
                inner = [chars[token]]
            else:
                oov = chars["<oov>"]
                inner = [chars.get(ch, oov) for ch in token]
            row[1 : 1 + len(inner)] = inner
            row[1 + len(inner)] = chars[_TOKEN_END]
            if remember and len(self._char_rows) < 500_000:
                self._char_rows[token] = row
        return row

    def layout(self, sentences: list[list[str]]):
        """Every token of the batch with ``<bos>``/``<eos>`` added (flat),
        the lengths, the padded width, and each token's row and column."""
        lengths = np.array([len(s) + 2 for s in sentences], np.int64)
        width = int(lengths.max())
        flat = []
        for s in sentences:
            flat.append("<bos>")
            flat.extend(self._truncate(t) for t in s)
            flat.append("<eos>")
        rows, cols, _ = padded_positions(lengths, width)
        return flat, lengths, width, rows, cols

    def token_inputs(self, tokens: list[str]):
        """Word ids (M, 1) or None and char ids (M, 1, C) for single tokens
        (already truncated), for the context-free token embedder."""
        words = chars = None
        if self.word_lexicon is not None:
            lex = self.word_lexicon
            words = np.fromiter((lex.get(t, lex["<oov>"]) for t in tokens), np.int64, len(tokens))[:, None]
        if self.char_lexicon is not None:
            # Not remembered: the caller keeps the token's output, not its characters.
            chars = np.stack([self._char_row(t, self.max_chars, remember=False) for t in tokens])[:, None, :]
        return words, chars

    def build(self, sentences: list[list[str]]):
        """NumPy arrays for a batch: word ids (B, L) or None, char ids
        (B, L, C) or None, mask (B, L), and the flat positions with a next
        and with a previous token. ``<bos>``/``<eos>`` are added here."""
        flat, lengths, width, rows, cols = self.layout(sentences)
        words = None
        if self.word_lexicon is not None:
            lex = self.word_lexicon
            oov, pad = lex["<oov>"], lex["<pad>"]
            words = np.full((len(sentences), width), pad, np.int64)
            words[rows, cols] = np.fromiter((lex.get(t, oov) for t in flat), np.int64, len(flat))
        chars = None
        if self.char_lexicon is not None:
            char_width = self.max_chars if self.cnn else max(len(t) for t in flat) + 2
            chars = np.full((len(sentences), width, char_width), self.char_lexicon["<pad>"], np.int64)
            chars[rows, cols] = np.stack([self._char_row(t, char_width) for t in flat])
        mask = np.zeros((len(sentences), width), np.int64)
        mask[rows, cols] = 1
        position = rows * width + cols
        has_next = position[cols < lengths[rows] - 1]
        has_previous = position[cols > 0]
        return words, chars, mask, has_next, has_previous


_INPUT_GATE_STEPS = 16  # time steps whose input-to-gates products run as one matrix product (see below)


def projected_lstm_inference(cell, inputs, batch_lengths, initial_state=None):
    """Inference-only forward of elmoformanylangs' ``LstmCellWithProjection``:
    same arguments, same outputs (clipping of the cell and of the projected
    state included), with less work per time step:

    - the input-to-gates products run ``_INPUT_GATE_STEPS`` time steps at a
      time as one matrix product, instead of one small product per step,
      into one buffer per call whose size depends on the batch only (all
      steps at once took a (batch, steps, 4 × cell) tensor of up to 17 MiB,
      a different size every batch, which fragmented the C heap: BENCHMARKS.md,
      "Memory, 2026-12-05 (allocator)");
    - state and cell update in place (the reference clones the whole batch's
      state twice per step so that autograd can follow);
    - gate non-linearities run in place on one gates buffer.

    On one CPU thread the matrix products dominate and the gain is small
    (1-7% measured); the per-step overhead it removes weighs more where the
    products are cheap (a GPU; not measured here).

    Rows are sorted by length, longest first (``sort_and_run_forward`` does
    it), so the rows still running at a step are a prefix of the batch. The
    recurrent dropout of the reference is a training-time feature and absent."""
    import torch

    with torch.no_grad():
        return _projected_lstm_steps(cell, inputs, batch_lengths, initial_state)


def _projected_lstm_steps(cell, inputs, batch_lengths, initial_state):
    import torch

    batch, steps, input_size = inputs.shape
    cell_size, hidden_size = cell.cell_size, cell.hidden_size
    input_weight = cell.input_linearity.weight.t()  # the input linearity has no bias
    block = max(1, min(_INPUT_GATE_STEPS, steps))
    gate_buffer = inputs.new_empty(batch * block * 4 * cell_size)
    state_weight = cell.state_linearity.weight.t()
    state_bias = cell.state_linearity.bias
    projection_weight = cell.state_projection.weight.t()
    if initial_state is None:
        state = inputs.new_zeros(batch, hidden_size)
        memory = inputs.new_zeros(batch, cell_size)
    else:
        state = initial_state[0].squeeze(0).clone()
        memory = initial_state[1].squeeze(0).clone()
    output = inputs.new_zeros(batch, steps, hidden_size)
    lengths = torch.as_tensor(batch_lengths, device="cpu")
    running = [max(int((lengths > index).sum()), 1) for index in range(steps)]
    memory_clip, state_clip = cell.memory_cell_clip_value, cell.state_projection_clip_value
    for step in range(steps):
        index = step if cell.go_forward else steps - 1 - step
        if step % block == 0:  # the next block's steps: [low, high) in time, the most rows running at ``low``
            low = index if cell.go_forward else max(0, index - block + 1)
            high = min(steps, low + block)
            block_inputs = inputs[: running[low], low:high].reshape(-1, input_size)
            block_gates = torch.mm(block_inputs, input_weight, out=gate_buffer[: block_inputs.shape[0] * 4 * cell_size]
                                   .view(block_inputs.shape[0], 4 * cell_size)).view(running[low], high - low, 4 * cell_size)
        n = running[index]
        gates = torch.addmm(state_bias, state[:n], state_weight).add_(block_gates[:n, index - low])
        input_gate, forget_gate, candidate, output_gate = gates.split(cell_size, dim=1)
        input_gate.sigmoid_()
        forget_gate.sigmoid_()
        candidate.tanh_()
        output_gate.sigmoid_()
        cell_now = memory[:n]
        cell_now.mul_(forget_gate).add_(input_gate * candidate)
        if memory_clip:
            cell_now.clamp_(-memory_clip, memory_clip)
        hidden = torch.mm(output_gate.mul_(torch.tanh(cell_now)), projection_weight)
        if state_clip:
            hidden.clamp_(-state_clip, state_clip)
        state[:n] = hidden
        output[:n, index] = hidden
    return output, (state.unsqueeze(0), memory.unsqueeze(0))


def use_projected_lstm_inference(encoder) -> int:
    """Route every projected-LSTM cell of an inference biLM through
    :func:`projected_lstm_inference`; returns how many cells it replaced.
    Training keeps the reference forward (it needs autograd and dropout)."""
    from elmoformanylangs.modules.lstm_cell_with_projection import LstmCellWithProjection

    replaced = 0
    for module in encoder.modules():
        if isinstance(module, LstmCellWithProjection):
            module.forward = functools.partial(projected_lstm_inference, module)
            replaced += 1
    return replaced


def _cpu_has_bf16() -> bool:
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch without oneDNN's check
        return False


def require_elmoformanylangs() -> None:
    """Import elmoformanylangs (and with it torch), or raise a
    :class:`ModelError` that says why it cannot be. The entry points that
    run a biLM (:class:`ElmoEmbedder`, ``elmo_pretrain.pretrain``) call it
    before anything of torch's. It needs overrides<4, whose decorator reads
    its caller's bytecode and fails with an IndexError on Python 3.12 (seen
    on a GPU machine's Python 3.12.3)."""
    from importlib import import_module

    try:
        import_module("elmoformanylangs")
    except ImportError as exc:
        raise ModelError(f"ELMo needs torch and elmoformanylangs ({exc}); install them with: pip install 'sentiscore[cpu]' "
                         "(or '[gpu]' on a GPU machine)") from exc
    except IndexError as exc:
        if sys.version_info < (3, 12):
            raise
        raise ModelError(f"ELMo needs Python 3.11: elmoformanylangs needs overrides<4, which fails on Python "
                         f"{sys.version_info[0]}.{sys.version_info[1]} ({exc!r}). Models without ELMo (zh-fast) are not "
                         "affected") from exc


def load_bilm(directory: Path, device: str, training: bool = False):
    """elmoformanylangs' inference ``Model`` with the directory's weights, plus
    its lexicons and network config."""
    import torch
    from elmoformanylangs.frontend import Model
    from elmoformanylangs.modules.embedding_layer import EmbeddingLayer

    directory = Path(directory)
    network = read_network_config(directory)
    embedder = network["token_embedder"]
    char_lexicon = word_lexicon = None
    char_layer = word_layer = None
    if embedder["char_dim"] > 0:
        char_lexicon = read_lexicon(directory / "char.dic")
        char_layer = EmbeddingLayer(embedder["char_dim"], char_lexicon, fix_emb=False, embs=None)
    if embedder["word_dim"] > 0:
        word_lexicon = read_lexicon(directory / "word.dic")
        word_layer = EmbeddingLayer(embedder["word_dim"], word_lexicon, fix_emb=False, embs=None)
    model = Model(network, word_layer, char_layer, use_cuda=device == "cuda")
    for part, name in ((model.token_embedder, "token_embedder.pkl"), (model.encoder, "encoder.pkl")):
        path = directory / name
        if not path.is_file():
            raise ModelError(f"{path} is missing")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            part.load_state_dict(state)
        except Exception as exc:  # unpickling refused, or shapes differ from the config
            raise ModelError(f"{path}: cannot load ELMo weights ({exc.__class__.__name__}: {exc})") from exc
    model.to(device)
    model.train(training)
    if not training:
        use_projected_lstm_inference(model.encoder)
    return model, network, word_lexicon, char_lexicon


@dataclass
class ElmoFeatures:
    """Either precomputed vectors (training: the cache) or the tokens, whose
    vectors ``encode`` computes one model batch at a time (scoring: a whole
    chunk's vectors would take ~250 MB per 10,000 texts)."""

    vectors: np.ndarray | None  # (tokens, dim) for average/top, (tokens, layers, dim) for scalar; flat over texts
    offsets: np.ndarray
    lengths: np.ndarray
    tokens: list[str] | None = None


class TokenVectorCache:
    """Token-embedder outputs of recently seen tokens, so the char-CNN runs
    once per token rather than once per occurrence (it took 40% of the biLM's
    time per token). Two generations of at most ``generation_rows`` rows: a
    batch's tokens are looked up in the current one, then in the previous one
    (whose row is copied forward), and computed only when in neither; when the
    current generation cannot take a batch's new tokens it becomes the previous
    one and the older is dropped. Tokens in use stay cached, and memory is
    bounded by two generations whatever the file's vocabulary (with a single
    table of up to 200,000 rows, emptied when full, zh-elmo's peak RSS grew
    18% from 10k to 1M rows of a file with a wide vocabulary, 6.5% with two
    generations: BENCHMARKS.md, "Memory, 2026-12-05 (later)").

    The two tables are allocated once and swap roles, so their memory is
    reused rather than returned and asked for again."""

    def __init__(self, width: int, device: str, compute: Callable[[list[str]], object], generation_rows: int | None = None):
        self.width = width
        self.device = device
        self.generation_rows = generation_rows or TOKEN_CACHE_GENERATION_ROWS
        self._compute = compute  # tokens -> (len(tokens), width) tensor, at most _TOKEN_SLICE at a time
        self._tables: list = [None, None]  # [current, previous]
        self._index: list[dict[str, int]] = [{}, {}]  # token -> its row in the table of the same position
        self.computed = self.copied = 0  # tokens run through the char-CNN / copied from the previous generation

    def __len__(self) -> int:
        """Tokens held, in both generations."""
        return len(self._index[0]) + len(self._index[1])

    def clear(self) -> None:
        self._index = [{}, {}]

    def rows(self, flat: list[str]) -> tuple[object, np.ndarray]:
        """The current table and the row of every token of ``flat`` in it,
        computing or copying forward the rows of tokens it does not hold."""
        current, previous = self._index
        distinct = dict.fromkeys(flat)
        needed = [t for t in distinct if t not in current]
        if len(current) + len(needed) > self.generation_rows:
            self._tables.reverse()
            self._index = [{}, current]
            current, previous = self._index
            needed = list(distinct)
        if needed:
            import torch

            start = len(current)
            table = self._table(start + len(needed))
            kept = [t for t in needed if t in previous]
            new = [t for t in needed if t not in previous]
            if kept:
                source = torch.as_tensor([previous[t] for t in kept], dtype=torch.int64, device=self.device)
                table[start : start + len(kept)] = self._tables[1][source]
            at = start + len(kept)
            for first in range(0, len(new), _TOKEN_SLICE):
                part = new[first : first + _TOKEN_SLICE]
                table[at + first : at + first + len(part)] = self._compute(part)
            current.update((token, start + offset) for offset, token in enumerate(kept + new))
            self.computed += len(new)
            self.copied += len(kept)
        return self._tables[0], np.fromiter((current[t] for t in flat), np.int64, len(flat))

    def _table(self, rows: int):
        """The current table, with room for ``rows`` rows. Allocated at the
        generation's full size: on the CPU the C library maps a block this
        large lazily, so only written rows become resident. Larger only for a
        batch with more distinct tokens than a generation holds (a
        ``--batch-size`` far above the default)."""
        import torch

        table = self._tables[0]
        if table is None or table.shape[0] < rows:
            grown = torch.empty((max(rows, self.generation_rows), self.width), device=self.device)
            if table is not None:
                grown[: table.shape[0]] = table
            table = self._tables[0] = grown
        return table


class ElmoEmbedder:
    """Contextual vectors for segmented texts. ``layer_mix``: ``average`` of
    all biLM layers (the prototype's choice), ``top`` layer, or ``scalar``
    (all layers, mixed by learned weights inside the Keras model)."""

    kind = "elmo"
    encodes_in_background = True  # the biLM's time overlaps Keras' (see Scorer._encoded)

    def __init__(self, directory: Path, layer_mix: str = "average", device: str = "auto", batch_size: int | None = None,
                 log: Callable[[str], None] | None = None, threads: int | None = None):
        require_elmoformanylangs()
        import torch

        if layer_mix not in LAYER_MIXES:
            raise UsageError(f"--layer-mix must be one of {', '.join(LAYER_MIXES)}")
        self.directory = Path(directory)
        self.layer_mix = layer_mix
        self.device = resolve_device(device, log)
        self.batch_size = batch_size or BILM_BATCH_TEXTS[self.device]
        # Texts per classifier batch when scoring: the pipeline hands the biLM one such batch at a time,
        # so it is the device's biLM batch too.
        self.score_batch_size = BILM_BATCH_TEXTS[self.device]
        torch.set_num_threads(threads or torch_threads())
        self.model, self.network, word_lexicon, char_lexicon = load_bilm(self.directory, self.device)
        self.tensors = BatchTensors(self.network, word_lexicon, char_lexicon)
        # Token-embedder outputs computed once per recently seen token (exact:
        # the char-CNN sees one token at a time, padded to a fixed width).
        self.cache_tokens = True
        self.token_cache = TokenVectorCache(int(self.network["encoder"]["projection_dim"]), self.device, self._embed_tokens)
        self.precision = "float32"
        self._float32_encoder = None  # the encoder's float32 weights while it runs in bfloat16
        self.torch_version = torch.__version__
        self.n_layers = int(self.network["encoder"]["n_layers"]) + 1  # + the token layer
        self.dim = 2 * int(self.network["encoder"]["projection_dim"])

    @property
    def input_name(self) -> str:
        return "elmo_layers" if self.layer_mix == "scalar" else "elmo_vectors"

    def settings(self) -> dict:
        return {"type": self.kind, "layer_mix": self.layer_mix, "dim": self.dim, "layers": self.n_layers}

    def set_precision(self, precision: str, log: Callable[[str], None] | None = None) -> None:
        """Run the biLM's LSTMs (the encoder: nearly all of its work) in
        ``precision``; the char-CNN, computed once per distinct token, stays
        float32. Scoring only: training reads float32 vectors."""
        import torch

        if precision not in ELMO_PRECISIONS:
            raise UsageError(f"--elmo-precision must be one of {', '.join(ELMO_PRECISIONS)}")
        if precision == self.precision:
            return
        if precision == "bfloat16" and not (self.tensors.cnn and self.cache_tokens):
            raise UsageError("--elmo-precision bfloat16 needs a biLM with a character CNN")
        if precision == "bfloat16" and self.device == "cpu" and log is not None and not _cpu_has_bf16():
            log("sentiscore: this CPU has no bfloat16 instructions; --elmo-precision bfloat16 will be slower than float32")
        encoder = self.model.encoder
        if precision == "bfloat16":
            # Rounding to bf16 loses the float32 weights' low bits: keep them to switch back exactly.
            self._float32_encoder = {name: value.detach().clone() for name, value in encoder.state_dict().items()}
            encoder.to(torch.bfloat16)
        else:
            encoder.to(torch.float32)
            encoder.load_state_dict(self._float32_encoder)
            self._float32_encoder = None
        self.precision = precision

    def _embed_tokens(self, tokens: list[str]):
        """Token-embedder outputs of up to ``_TOKEN_SLICE`` tokens, run padded
        to a power of two. oneDNN builds and keeps kernels for every input
        shape it meets; one per count of unseen tokens cost 50-60 MiB of peak
        RSS on long files (BENCHMARKS.md, "Memory, 2026-12-04 (later)")."""
        size = max(_TOKEN_SLICE_MIN, 1 << (len(tokens) - 1).bit_length())
        padded = tokens + [tokens[-1]] * (size - len(tokens))  # the filler's rows are dropped
        words, chars = self.tensors.token_inputs(padded)
        return self.model.token_embedder(self._tensor(words), self._tensor(chars), (size, 1))[: len(tokens), 0]

    def _tensor(self, array):
        import torch

        return None if array is None else torch.from_numpy(array).to(self.device)

    def _run(self, sentences: list[list[str]]) -> list:
        """The layers of one batch, token layer first, each (B, L, width)
        float32 with ``<bos>``/``<eos>`` included, on the biLM's device. The
        cached char-CNN's token layer comes at the token embedder's width
        (half the encoder's): :meth:`_vectors` doubles it after picking the
        real tokens, so no (layers, B, L, dim) tensor is built per batch."""
        import torch

        if self.tensors.cnn and self.cache_tokens:
            flat, lengths, width, rows, cols = self.tensors.layout(sentences)
            table, vectors = self.token_cache.rows(flat)
            tokens = torch.zeros((len(sentences), width, table.shape[1]), device=self.device)
            tokens[self._tensor(rows), self._tensor(cols)] = table[self._tensor(vectors)]
            mask = np.zeros((len(sentences), width), np.int64)
            mask[rows, cols] = 1
            self.model.encoder.reset_states()
            encoder_dtype = torch.bfloat16 if self.precision == "bfloat16" else torch.float32
            encoded = self.model.encoder(tokens.to(encoder_dtype), self._tensor(mask)).float()
            return [tokens, *encoded]
        words, chars, mask, has_next, has_previous = self.tensors.build(sentences)
        # The frontend moves masks to the GPU itself when use_cuda is set.
        masks = [torch.from_numpy(mask), torch.from_numpy(has_next), torch.from_numpy(has_previous)]
        self.model.encoder.reset_states()
        return list(self.model.forward(self._tensor(words), self._tensor(chars), masks).float())

    def _vectors(self, sentences: list[list[str]]) -> np.ndarray:
        """Mixed vectors of every token of one batch (``<bos>``/``<eos>``
        dropped), flat in text order, on the host. The gather and the mix run
        on the biLM's device, so only the mixed vectors are copied back."""
        import torch

        layers = self._run(sentences)
        lengths = np.fromiter(map(len, sentences), np.int64, len(sentences))
        rows, cols, _ = padded_positions(lengths, layers[0].shape[1] - 2)
        rows, cols = self._tensor(rows), self._tensor(cols + 1)  # +1 skips <bos>
        picked = [layer[rows, cols] for layer in layers]
        if picked[0].shape[1] < self.dim:  # as frontend.Model.forward: the token layer doubled to the encoder's width
            picked[0] = torch.cat([picked[0], picked[0]], dim=1)
        return self._mix(picked).cpu().numpy()

    def _vectors_with_retry(self, sentences: list[list[str]]) -> np.ndarray:
        """:meth:`_vectors`, halving the batch on CUDA out-of-memory. The
        halves' vectors join on the host, in text order: joined on the GPU
        they would need the whole batch's memory again."""
        import torch

        try:
            return self._vectors(sentences)
        except torch.cuda.OutOfMemoryError:
            if len(sentences) <= 1:
                raise
            torch.cuda.empty_cache()
            half = len(sentences) // 2
            return np.concatenate([self._vectors_with_retry(sentences[:half]), self._vectors_with_retry(sentences[half:])])

    def _mix(self, layers: list):
        """Each layer's (N, dim) vectors → what the model consumes, on the
        biLM's device: only the mixed vectors are copied back (a third of the
        layers' bytes for ``average`` and ``top``)."""
        import torch

        if self.layer_mix == "average":
            mixed = layers[0] + layers[1]  # summed in place: no (layers, N, dim) copy
            for layer in layers[2:]:
                mixed += layer
            return mixed.div_(len(layers))
        if self.layer_mix == "top":
            return layers[-1]
        return torch.stack(layers, dim=1)

    def embed(self, token_lists: list[list[str]], progress: Callable[[int], None] | None = None,
              dtype=np.float32, out: np.ndarray | None = None) -> np.ndarray:
        """Vectors of every token of every text, flat in text order (texts
        with no tokens contribute nothing). ``out`` may be a memory map."""
        import torch

        lengths = np.array([len(t) for t in token_lists], np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        shape = (int(offsets[-1]), self.n_layers, self.dim) if self.layer_mix == "scalar" else (int(offsets[-1]), self.dim)
        result = np.zeros(shape, dtype) if out is None else out
        order = np.argsort(lengths, kind="stable")
        order = order[lengths[order] > 0]
        with torch.inference_mode():
            for start in range(0, order.size, self.batch_size):
                batch = order[start : start + self.batch_size]
                vectors = self._vectors_with_retry([token_lists[i] for i in batch])
                rows, cols, _ = padded_positions(lengths[batch], int(lengths[batch].max()))
                result[offsets[batch[rows]] + cols] = vectors.astype(dtype, copy=False)
                if progress is not None:
                    progress(batch.size)
        return result

    def featurize(self, batch: SegmentedBatch) -> ElmoFeatures:
        return ElmoFeatures(None, batch.offsets, batch.lengths, batch.tokens)

    def encode(self, features: ElmoFeatures, rows: np.ndarray, width: int) -> dict[str, np.ndarray]:
        if features.vectors is not None:
            return encode_vectors(features.vectors, features.offsets, features.lengths, rows, width, self.input_name)
        lengths = np.minimum(features.lengths[rows], width)
        starts = features.offsets[rows]
        vectors = self.embed([features.tokens[start : start + n] for start, n in zip(starts, lengths)])
        local = np.concatenate([[0], np.cumsum(lengths)])
        return encode_vectors(vectors, local, lengths, np.arange(rows.size), width, self.input_name)

    def save(self, directory: Path) -> list[str]:
        """Copies the biLM's files into ``directory/elmo``."""
        target = Path(directory) / ELMO_SUBDIR
        target.mkdir(parents=True, exist_ok=True)
        network = network_config_path(self.directory)
        network_name = network.name
        copied = (*ELMO_FILES, PRETRAIN_CARD)  # the card only when 'elmo pretrain' wrote one
        for name in copied:
            source = self.directory / name
            if source.is_file():
                shutil.copyfile(source, target / name)
        shutil.copyfile(network, target / network_name)
        # config_path relative to the folder, so the copy loads anywhere.
        top = json.loads((target / "config.json").read_text(encoding="utf-8"))
        top["config_path"] = network_name
        (target / "config.json").write_text(json.dumps(top, ensure_ascii=False), encoding="utf-8")
        return [f"{ELMO_SUBDIR}/{n}" for n in (*copied, network_name) if (target / n).is_file()]

    @classmethod
    def load(cls, directory: Path, settings: dict, device: str = "auto", log=None) -> "ElmoEmbedder":
        path = Path(directory) / ELMO_SUBDIR
        if not path.is_dir():
            raise ModelError(f"{path} is missing: this model's ELMo embedder needs it")
        embedder = cls(path, layer_mix=settings.get("layer_mix", "average"), device=device, log=log)
        if settings.get("dim") not in (None, embedder.dim):
            raise ModelError(f"{path}: the biLM gives {embedder.dim}-d vectors but the model was trained on {settings['dim']}-d")
        return embedder


def encode_vectors(vectors, offsets, lengths, rows: np.ndarray, width: int, name: str) -> dict[str, np.ndarray]:
    """Rows of a flat vector store, padded to ``(len(rows), width, ...)``,
    float32, with the mask."""
    r, c, _ = padded_positions(lengths[rows], width)
    flat = offsets[rows][r] + c
    matrix = np.zeros((rows.size, width, *vectors.shape[1:]), np.float32)
    matrix[r, c] = vectors[flat]
    mask = np.zeros((rows.size, width), bool)
    mask[r, c] = True
    return {name: matrix, "mask": mask}


def cached_features(embedder: ElmoEmbedder, batch: SegmentedBatch, log: Callable[[str], None],
                    cache_root: Path | None = None) -> ElmoFeatures:
    """ELMo vectors of a training set, computed once and kept as a float16
    memory map keyed by the biLM's files, the layer mix and the tokens, so
    later epochs and later runs on the same data cost only the classifier."""
    import hashlib

    from ..io import sha256_of
    from ..segment import cache_dir

    key = hashlib.sha256()
    for name in sorted(p.name for p in embedder.directory.iterdir() if p.name in ELMO_FILES or p.suffix == ".json"):
        key.update(f"{name}={sha256_of(embedder.directory / name)}\n".encode())
    key.update(f"mix={embedder.layer_mix}\n".encode())
    key.update(batch.lengths.astype(np.int64).tobytes())
    key.update("\x1f".join(batch.tokens).encode("utf-8", "surrogatepass"))
    root = Path(cache_root) if cache_root else cache_dir("elmo")
    path = root / f"{key.hexdigest()[:32]}.npy"
    offsets = batch.offsets
    if path.is_file():
        log(f"ELMo vectors: cache hit {path}")
        return ElmoFeatures(np.load(path, mmap_mode="r"), offsets, batch.lengths)
    token_lists = batch.token_lists()
    tokens = int(offsets[-1])
    shape = (tokens, embedder.n_layers, embedder.dim) if embedder.layer_mix == "scalar" else (tokens, embedder.dim)
    log(f"ELMo vectors: computing {tokens:,} tokens of {len(token_lists):,} texts on {embedder.device} "
        f"(cached at {path}, {np.prod(shape) * 2 / 2**20:,.0f} MiB)")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=shape)
    try:
        from tqdm import tqdm

        with tqdm(total=len(token_lists), unit="text", desc="ELMo", leave=False, mininterval=2,
                  disable=None) as bar:
            embedder.embed(token_lists, progress=bar.update, dtype=np.float16, out=out)
        out.flush()
        del out
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return ElmoFeatures(np.load(path, mmap_mode="r"), offsets, batch.lengths)


def check_bilm_segmenter(directory: Path, segmenter, option: str = "--elmo-model") -> None:
    """The classifier must segment as the biLM's corpus was segmented: the
    same markup handling, HMM, user dictionary and stopwords (a biLM that
    read natural text sees other contexts without its function words).
    biLMs without a sentiscore card (HIT-SCIR's, pre-segmented corpora)
    are taken as they are."""
    from ..segment import stopwords_digest

    card_path = Path(directory) / PRETRAIN_CARD
    trained = (json.loads(card_path.read_text(encoding="utf-8")).get("segmenter") or {}) if card_path.is_file() else {}
    if not trained:
        return
    problems = [f"{key} {trained[key]}" for key in ("hmm", "markup") if key in trained and trained[key] != getattr(segmenter, key)]
    if bool(trained.get("user_dict")) != bool(segmenter.user_dict):
        problems.append("user dictionary " + ("yes" if trained.get("user_dict") else "none"))
    digest = trained.get("stopwords_sha256")
    if digest is None and trained.get("stopwords") in ("builtin", "none"):  # cards before the digest was recorded
        digest = stopwords_digest(trained["stopwords"])
    if digest and digest != stopwords_digest(segmenter.stopwords):
        problems.append(f"stopwords {trained.get('stopwords')}")
    if problems:
        raise UsageError(f"{option} {directory}: its biLM was pretrained on text segmented with other settings "
                         f"({', '.join(problems)}); train with the same (--stopwords, --markup, --user-dict) "
                         "or pretrain a biLM with yours")


def elmo_card(embedder: ElmoEmbedder) -> dict:
    """What a model card records of the biLM it was trained on."""
    card_path = embedder.directory / PRETRAIN_CARD
    card = json.loads(card_path.read_text(encoding="utf-8")) if card_path.is_file() else {}
    return {
        "source": embedder.directory.name,
        "path": ELMO_SUBDIR,
        "size": card.get("size"),
        "pretrained_by": f"sentiscore {card['sentiscore_version']}" if card else "unknown (not made by sentiscore elmo pretrain)",
        "corpus": card.get("corpus"),
        "epochs": len(card.get("history", [])) or None,
        "perplexity": card.get("valid_perplexity", (card.get("history") or [{}])[-1].get("valid_perplexity")),
        "tokens_seen": card.get("tokens_seen"),
        "init": (card.get("init") or {}).get("encoder_sha256"),
        "segmenter": card.get("segmenter"),
    }
