"""Pretrains a compact Chinese ELMo biLM: elmoformanylangs' own token
embedder (``ConvTokenEmbedder``) and encoder (``ElmobiLm``) under our
training loop, writing the directory format its ``Embedder`` loads:
config.json, the network JSON, char.dic, word.dic, token_embedder.pkl,
encoder.pkl.

The language-model head is torch's ``AdaptiveLogSoftmaxWithLoss`` (Grave et
al. 2017), not the package's ``SampledSoftmaxLayer``: that one scores each
batch against a queue of recently seen words with no sampling correction
(so its training loss says little about the full-vocabulary perplexity),
loops in Python over every token, and spins forever once a batch holds more
distinct words than its ``n_samples``. The adaptive softmax gives exact,
normalised probabilities over the whole vocabulary, so the held-out
perplexity in the card is the true one. The package's own trainer is not
used either: it fails on current torch (``loss.data[0]`` on a 0-d tensor).
Only the token embedder and the encoder are what the Embedder loads; the
head lives in the ``--resume`` state alone.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable


from .. import __version__
from ..config import ElmoPretrainConfig, SegmenterConfig
from ..corpus import read_corpus
from ..errors import TrainingError, UsageError
from ..io import sha256_of
from ..segment import stopwords_digest
from .elmo import PRETRAIN_CARD as CARD_FILE, BatchTensors, require_elmoformanylangs, resolve_device, write_lexicon

NETWORK_FILE = "network.json"
STATE_FILE = "training_state.pt"  # optimizer + LM head state, for --resume; not needed to embed
RESUMABLE_CHANGES = ("epochs", "anneal_epochs")  # the settings a --resume may change
SPECIAL_WORDS = ("<oov>", "<bos>", "<eos>", "<pad>")
SPECIAL_CHARS = ("<bos>", "<eos>", "<oov>", "<pad>", "<bow>", "<eow>")


def windows(sentences: list[list[str]], max_len: int) -> list[list[str]]:
    """Sentences cut into pieces of at most ``max_len`` tokens."""
    out = []
    for s in sentences:
        for start in range(0, len(s), max_len):
            out.append(s[start : start + max_len])
    return out


def build_lexicons(pieces: list[list[str]], min_count: int, max_vocab: int, max_chars: int):
    """Word lexicon (softmax targets: specials first, then words by
    frequency) and character lexicon (every character seen)."""
    from collections import Counter

    counts = Counter(t[: max_chars - 2] for s in pieces for t in s)
    ranked = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))[:max_vocab]
    words = {w: i for i, w in enumerate(SPECIAL_WORDS)}
    for w in ranked:
        words.setdefault(w, len(words))
    chars: dict[str, int] = {}
    for w in sorted(counts):
        for ch in w:
            # A whitespace character could not be written to char.dic (the
            # reader strips lines); such characters become <oov>.
            if ch not in chars and not ch.isspace():
                chars[ch] = len(chars)
    for special in SPECIAL_CHARS:
        chars.setdefault(special, len(chars))
    return words, chars


def _batches(pieces: list[list[str]], batch_size: int, rng: random.Random, shuffle: bool) -> list[list[int]]:
    """Indices grouped by similar length (little padding), batch order shuffled."""
    order = list(range(len(pieces)))
    if shuffle:
        rng.shuffle(order)
    order.sort(key=lambda i: len(pieces[i]))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if shuffle:
        rng.shuffle(batches)
    return batches


def softmax_cutoffs(requested: tuple[int, ...], n_words: int) -> list[int]:
    """The adaptive softmax's cluster edges that fit the vocabulary (word ids
    are ranked by frequency, so the head holds the frequent words)."""
    cutoffs = [c for c in requested if 0 < c < n_words - 1]
    return cutoffs or [max(1, n_words // 2)]


def learning_rate_at(config: ElmoPretrainConfig, epoch: int, step: int, n_batches: int) -> float:
    """The rate for batch ``step`` of ``epoch`` (both from 0): constant,
    then falling linearly to 0 over the last ``anneal_epochs`` epochs."""
    decay_from = config.epochs - config.anneal_epochs
    if epoch < decay_from:
        return config.learning_rate
    done = (epoch - decay_from) * n_batches + step
    return config.learning_rate * max(0.0, 1.0 - done / (config.anneal_epochs * n_batches))


def _resume_settings(settings: dict) -> dict:
    """What must match between a run and its --resume: every setting but
    those in RESUMABLE_CHANGES; a setting newer than the saved run counts
    at its default."""
    full = asdict(ElmoPretrainConfig()) | settings
    return {key: value for key, value in full.items() if key not in RESUMABLE_CHANGES}


def build_trainer(network: dict, config: ElmoPretrainConfig, chars: dict[str, int], n_words: int, device: str):
    """The biLM with its LM head: token_embedder and encoder (what the
    Embedder loads, same state-dict names) plus ``softmax``."""
    import torch
    from elmoformanylangs.modules.elmo import ElmobiLm
    from elmoformanylangs.modules.embedding_layer import EmbeddingLayer
    from elmoformanylangs.modules.token_embedder import ConvTokenEmbedder

    use_cuda = device == "cuda"
    char_layer = EmbeddingLayer(config.char_dim, chars, fix_emb=False, embs=None)
    model = torch.nn.ModuleDict({
        "token_embedder": ConvTokenEmbedder(network, None, char_layer, use_cuda),
        "encoder": ElmobiLm(network, use_cuda),
        "softmax": torch.nn.AdaptiveLogSoftmaxWithLoss(config.projection_dim, n_words,
                                                       softmax_cutoffs(config.softmax_cutoffs, n_words),
                                                       div_value=config.softmax_div),
    })
    return model.to(device)


def _forward_loss(model, tensors: BatchTensors, sentences: list[list[str]], dropout: float, device: str):
    """Summed forward and backward LM losses (nats), and the number of
    predicted tokens per direction. The forward LM's state at a token
    predicts the next one; the backward LM's, the previous one."""
    import torch
    import torch.nn.functional as F

    words, chars, mask, has_next, has_previous = tensors.build(sentences)
    batch, width = mask.shape
    model.encoder.reset_states()  # texts are independent: no state carried from the last batch
    embedded = model.token_embedder(None, torch.from_numpy(chars).to(device), (batch, width))
    embedded = F.dropout(embedded, dropout, model.training)
    top = model.encoder(embedded, torch.from_numpy(mask).to(device))[1]  # the top layer, both directions
    top = F.dropout(top, dropout, model.training)
    forward, backward = top.split(top.shape[-1] // 2, dim=2)
    dim = forward.shape[-1]
    next_at = torch.from_numpy(has_next).to(device)
    previous_at = torch.from_numpy(has_previous).to(device)
    targets = torch.from_numpy(words).to(device).reshape(-1)
    n = int(has_next.size)
    loss_forward = model.softmax(forward.reshape(-1, dim).index_select(0, next_at), targets.index_select(0, previous_at)).loss * n
    loss_backward = model.softmax(backward.reshape(-1, dim).index_select(0, previous_at), targets.index_select(0, next_at)).loss * n
    return loss_forward, loss_backward, n


def _evaluate(model, tensors, pieces, batches, device: str) -> float:
    """Held-out perplexity: exact, over the whole LM vocabulary (the mean of
    both directions' losses)."""
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.inference_mode():
        for batch in batches:
            loss_forward, loss_backward, n = _forward_loss(model, tensors, [pieces[i] for i in batch], 0.0, device)
            total += (loss_forward.item() + loss_backward.item()) / 2
            count += n
    model.train()
    return math.exp(total / max(count, 1))


def pretrain(corpus_paths, out_dir, config: ElmoPretrainConfig | None = None, *, text_column: str = "txt",
             segmenter: SegmenterConfig | None = None, workers: int | None = None, resume: bool = False,
             init: Path | None = None, checkpoint_minutes: float | None = 10.0,
             log: Callable[[str], None] = print, progress: bool = True) -> dict:
    """Train a biLM on the corpus and write it to ``out_dir`` after every
    epoch and every ``checkpoint_minutes`` within one. ``resume`` continues
    from the last checkpoint there. ``init`` (a biLM folder) starts from its
    weights instead of random ones: domain adaptation; ``config`` must then
    have its shape (``ElmoPretrainConfig.from_network``). Its character
    lexicon is kept and extended, the softmax vocabulary is rebuilt from
    this corpus. Returns the card (``sentiscore_elmo.json``)."""
    require_elmoformanylangs()
    import torch

    config = config or ElmoPretrainConfig()
    segmenter = segmenter or SegmenterConfig()
    out_dir = Path(out_dir)
    state_path = out_dir / STATE_FILE
    if out_dir.exists() and any(out_dir.iterdir()) and not resume:
        raise UsageError(f"{out_dir} is not empty; pass --resume to continue the run there, or choose another --out")
    if resume and not state_path.is_file():
        if out_dir.exists() and any(out_dir.iterdir()):
            raise UsageError(f"--resume: {state_path} is missing, so {out_dir} holds no run to continue")
        resume = False
    out_dir.mkdir(parents=True, exist_ok=True)
    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device, log)

    sentences, corpus_record = read_corpus(corpus_paths, text_column, segmenter, workers, log)
    pieces = windows(sentences, config.max_sent_len)
    rng = random.Random(config.seed)
    order = list(range(len(pieces)))
    rng.shuffle(order)
    n_valid = min(int(len(pieces) * config.valid_fraction), 5000) if len(pieces) >= 20 else 0
    valid = [pieces[i] for i in order[:n_valid]]
    train = [pieces[i] for i in order[n_valid:]]

    if resume:
        saved = torch.load(state_path, map_location="cpu", weights_only=True)
        if _resume_settings(saved["config"]) != _resume_settings(asdict(config)):
            raise UsageError(f"--resume: {out_dir} was started with other settings; use the same options "
                             "(only --epochs and --anneal-epochs may change)")
        from .elmo import read_lexicon

        words, chars = read_lexicon(out_dir / "word.dic"), read_lexicon(out_dir / "char.dic")
    else:
        words, chars = build_lexicons(train, config.min_count, config.max_vocab, config.max_chars_per_token)
        if init is not None:
            init_chars = _check_init(init, config)
            chars = _extend_lexicon(init_chars, chars)

    network = config.network_config()
    network["classifier"]["cutoffs"] = softmax_cutoffs(config.softmax_cutoffs, len(words))

    torch.manual_seed(config.seed)
    model = build_trainer(network, config, chars, len(words), device)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate)
    history: list[dict] = []
    first_epoch = first_step = 0
    partial = {"loss": 0.0, "tokens": 0, "seconds": 0.0}
    init_record = None
    if resume:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        history = list(saved["history"])
        first_epoch = int(saved["epochs_done"])
        first_step = int(saved.get("step", 0))
        partial = dict(saved.get("partial", partial))
        init_record = saved.get("init")
        torch.set_rng_state(saved["torch_rng"])
        rng.setstate(saved["python_rng"])
        log(f"resuming {out_dir} after epoch {first_epoch}" + (f", batch {first_step:,} of epoch {first_epoch + 1}" if first_step else ""))
    else:
        if init is not None:
            init_record = _load_init(model, Path(init), len(init_chars))
            seen = init_record["tokens_seen"]
            log(f"starting from the biLM in {init} ({f'{seen:,}' if seen else 'an unknown number of'} tokens seen there)")
        write_lexicon(out_dir / "word.dic", words)
        write_lexicon(out_dir / "char.dic", chars)
        (out_dir / NETWORK_FILE).write_text(json.dumps(network, indent=2) + "\n", encoding="utf-8")
        (out_dir / "config.json").write_text(json.dumps({
            "config_path": NETWORK_FILE, "max_sent_len": config.max_sent_len, "batch_size": config.batch_size,
            "min_count": config.min_count, "max_vocab_size": config.max_vocab, "seed": config.seed,
            "optimizer": "adam", "lr": config.learning_rate, "clip_grad": config.clip_grad,
        }, indent=2) + "\n", encoding="utf-8")

    tensors = BatchTensors(network, words, chars)
    valid_batches = _batches(valid, 64, random.Random(0), shuffle=False)

    def evaluate() -> float | None:
        return _evaluate(model, tensors, valid, valid_batches, device) if valid else None

    n_tokens = sum(len(s) + 1 for s in train)
    log(f"biLM {config.size}: {sum(p.numel() for p in model.token_embedder.parameters()) + sum(p.numel() for p in model.encoder.parameters()):,} "
        f"parameters kept; vocabulary {len(words):,} words, {len(chars):,} characters; {len(train):,} training windows "
        f"({n_tokens:,} tokens), {len(valid):,} held out; device {device}")
    if first_epoch >= config.epochs:
        log(f"{out_dir} already has {first_epoch} epochs")

    def card() -> dict:
        return _card(config, network, segmenter, corpus_paths, corpus_record, words, chars, history, partial, init_record)

    checkpoint_every = checkpoint_minutes * 60 if checkpoint_minutes else None
    for epoch in range(first_epoch, config.epochs):
        model.train()
        epoch_rng = rng.getstate()  # a mid-epoch checkpoint regenerates this epoch's batches from it
        batches = _batches(train, config.batch_size, rng, shuffle=True)
        skip = first_step if epoch == first_epoch else 0
        if not skip:
            partial = {"loss": 0.0, "tokens": 0, "seconds": 0.0}
        total, count = partial["loss"], partial["tokens"]
        started = time.monotonic() - partial["seconds"]
        last_checkpoint = time.monotonic()
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(batches), initial=skip, desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch", leave=False, mininterval=2)
        for step, batch in enumerate(batches):
            if step < skip:
                continue
            rate = learning_rate_at(config, epoch, step, len(batches))
            for group in optimizer.param_groups:
                group["lr"] = rate
            optimizer.zero_grad()
            loss_forward, loss_backward, n = _forward_loss(model, tensors, [train[i] for i in batch], config.dropout, device)
            loss = (loss_forward + loss_backward) / (2 * n)
            if not torch.isfinite(loss):
                raise TrainingError(f"epoch {epoch + 1}, batch {step}: the loss is {loss.item()}; lower --learning-rate")
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad)
            optimizer.step()
            total += loss.item() * n
            count += n
            if bar is not None:
                bar.update(1)
                if step % 20 == 0:
                    bar.set_postfix(ppl=f"{math.exp(total / count):.1f}", refresh=False)
            if checkpoint_every and time.monotonic() - last_checkpoint >= checkpoint_every and step + 1 < len(batches):
                partial = {"loss": total, "tokens": count, "seconds": time.monotonic() - started}
                valid_ppl = evaluate()
                partial["valid_perplexity"] = round(valid_ppl, 2) if valid_ppl else None
                partial["batches"], partial["of"] = step + 1, len(batches)
                _save_state(out_dir, model, optimizer, config, history, epoch, epoch_rng, step + 1, partial, init_record)
                _write_card(out_dir, card())
                log(f"epoch {epoch + 1}, batch {step + 1:,}/{len(batches):,}: train perplexity {math.exp(total / max(count, 1)):.1f}"
                    + (f", held-out perplexity {valid_ppl:.1f}" if valid_ppl else "") + f" ({count / max(partial['seconds'], 1e-9):,.0f} tokens/s); checkpoint saved")
                last_checkpoint = time.monotonic()
        if bar is not None:
            bar.close()
        seconds = time.monotonic() - started
        train_ppl = math.exp(total / max(count, 1))
        valid_ppl = evaluate()
        history.append({"epoch": epoch + 1, "train_perplexity": round(train_ppl, 2),
                        "valid_perplexity": round(valid_ppl, 2) if valid_ppl else None, "tokens": count,
                        "last_learning_rate": optimizer.param_groups[0]["lr"],  # the rate its last batch ran at
                        "seconds": round(seconds, 1), "tokens_per_second": round(count / max(seconds, 1e-9))})
        partial = {"loss": 0.0, "tokens": 0, "seconds": 0.0}
        log(f"epoch {epoch + 1}: train perplexity {train_ppl:.1f}"
            + (f", held-out perplexity {valid_ppl:.1f}" if valid_ppl else "") + f" ({seconds:.0f} s, {count / max(seconds, 1e-9):,.0f} tokens/s)")
        _save_state(out_dir, model, optimizer, config, history, epoch + 1, rng.getstate(), 0, partial, init_record)
        _write_card(out_dir, card())

    result = card()
    _write_card(out_dir, result)
    return result


def _card(config, network, segmenter, corpus_paths, corpus_record, words, chars, history, partial, init_record) -> dict:
    """``sentiscore_elmo.json``: settings, corpus, perplexities and the tokens
    seen (this run's finished epochs, the epoch in progress, and those of
    the biLM it started from)."""
    import torch

    run_tokens = sum(int(h.get("tokens", 0)) for h in history) + int(partial.get("tokens", 0))
    inherited = (init_record or {}).get("tokens_seen")
    last = history[-1] if history else {}
    if partial.get("tokens") and partial.get("valid_perplexity") is not None:
        last = partial
    return {
        "sentiscore_version": __version__,
        "size": config.size,
        "settings": asdict(config) | {"softmax_cutoffs": network["classifier"]["cutoffs"]},
        "segmenter": (segmenter.to_dict() | {"stopwords_sha256": stopwords_digest(segmenter.stopwords)}
                      if any(not Path(p).suffix.lower() == ".txt" for p in corpus_paths) else None),
        "corpus": corpus_record,
        "init": init_record,
        "vocabulary": len(words),
        "characters": len(chars),
        "output_dim": 2 * config.projection_dim,
        "layers": config.n_layers + 1,
        "tokens_seen": run_tokens + (inherited if isinstance(inherited, int) else 0),
        "tokens_seen_this_run": run_tokens,
        "valid_perplexity": last.get("valid_perplexity"),
        "in_progress": {k: v for k, v in partial.items() if k != "loss"} if partial.get("tokens") else None,
        "history": history,
        "torch": torch.__version__,
    }


def _write_card(out_dir: Path, card: dict) -> None:
    tmp = out_dir / (CARD_FILE + ".tmp")
    tmp.write_text(json.dumps(card, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    tmp.replace(out_dir / CARD_FILE)


def _check_init(init: Path, config: ElmoPretrainConfig) -> dict[str, int]:
    """The init biLM's character lexicon, once its shape is known to be ``config``'s."""
    from .elmo import read_lexicon, read_network_config

    init = Path(init)
    theirs = ElmoPretrainConfig.from_network(read_network_config(init))
    shape = ("filters", "n_highway", "char_dim", "max_chars_per_token", "lstm_dim", "projection_dim", "n_layers")
    if any(getattr(theirs, key) != getattr(config, key) for key in shape):
        raise UsageError(f"--init {init}: its network differs from these settings; build them with ElmoPretrainConfig.from_network")
    return read_lexicon(init / "char.dic")


def _extend_lexicon(base: dict[str, int], new: dict[str, int]) -> dict[str, int]:
    """``base`` unchanged (its ids index the pretrained character
    embedding), then the characters only ``new`` has."""
    merged = dict(base)
    for ch in new:
        merged.setdefault(ch, len(merged))
    return merged


def _load_init(model, init: Path, init_characters: int) -> dict:
    """The init biLM's token embedder and encoder weights into ``model``;
    characters new to it (ids from ``init_characters`` on) get fresh
    embedding rows. Returns what the card records of it."""
    import torch

    state = torch.load(init / "token_embedder.pkl", map_location="cpu", weights_only=True)
    key = "char_emb_layer.embedding.weight"
    own = model.token_embedder.state_dict()[key]
    if key in state and state[key].shape[0] < own.shape[0]:
        if state[key].shape[0] != init_characters:
            raise UsageError(f"--init {init}: char.dic and token_embedder.pkl disagree")
        state[key] = torch.cat([state[key], own[init_characters:]], dim=0)
    try:
        model.token_embedder.load_state_dict(state)
        model.encoder.load_state_dict(torch.load(init / "encoder.pkl", map_location="cpu", weights_only=True))
    except (RuntimeError, KeyError) as exc:
        raise UsageError(f"--init {init}: cannot load its weights ({exc})") from exc
    digest = sha256_of(init / "encoder.pkl")[:12]
    card_path = init / CARD_FILE
    theirs = json.loads(card_path.read_text(encoding="utf-8")) if card_path.is_file() else {}
    tokens = theirs.get("tokens_seen")
    return {"path": str(init), "encoder_sha256": digest, "tokens_seen": tokens if isinstance(tokens, int) else None,
            "characters": init_characters}


def _save_state(out_dir: Path, model, optimizer, config, history, epochs_done: int, python_rng, step: int,
                partial: dict, init_record: dict | None) -> None:
    """The embedder's two weight files, then the resume state; each written
    to a temp name and renamed, so a kill leaves the last checkpoint intact.
    ``step`` > 0: a checkpoint within epoch ``epochs_done + 1``, whose
    batches ``python_rng`` (the state at that epoch's start) regenerates."""
    import torch

    def save(obj, name):
        tmp = out_dir / (name + ".tmp")
        torch.save(obj, tmp)
        tmp.replace(out_dir / name)

    save(model.token_embedder.state_dict(), "token_embedder.pkl")
    save(model.encoder.state_dict(), "encoder.pkl")
    save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
          "history": history, "epochs_done": epochs_done, "step": step, "partial": partial, "init": init_record,
          "config": asdict(config), "torch_rng": torch.get_rng_state(), "python_rng": python_rng}, STATE_FILE)

