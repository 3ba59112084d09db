"""Pretrains a compact Chinese ELMo biLM: our training loop around
elmoformanylangs' own classes (its training ``Model`` with ``ConvTokenEmbedder``,
``ElmobiLm`` and ``SampledSoftmaxLayer``), writing the directory format its
``Embedder`` loads: config.json, the network JSON, char.dic, word.dic,
token_embedder.pkl, encoder.pkl.

Why not the package's own trainer: it fails on current torch
(``loss.data[0]`` on a 0-d tensor), and its sampled softmax loops forever
once one batch holds more distinct words than ``n_samples``; here
``n_samples`` is always raised above the most words a batch can hold.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable


from .. import __version__
from ..config import ElmoPretrainConfig, SegmenterConfig
from ..corpus import read_corpus
from ..errors import TrainingError, UsageError
from .elmo import BatchTensors, resolve_device, write_lexicon

NETWORK_FILE = "network.json"
STATE_FILE = "training_state.pt"  # optimizer + softmax state, for --resume; not needed to embed
CARD_FILE = "sentiscore_elmo.json"
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


def _forward_loss(model, tensors: BatchTensors, sentences: list[list[str]]):
    """Summed forward and backward LM losses, and the number of predicted tokens."""
    import torch

    words, chars, mask, has_next, has_previous = tensors.build(sentences)
    masks = [torch.from_numpy(mask), torch.from_numpy(has_next), torch.from_numpy(has_previous)]
    model.encoder.reset_states()  # texts are independent: no state carried from the last batch
    loss_forward, loss_backward = model(torch.from_numpy(words), torch.from_numpy(chars), masks)
    return loss_forward, loss_backward, int(has_next.size)


def _evaluate(model, tensors, pieces, batches) -> float:
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.inference_mode():  # the model's forward refreshes the softmax columns itself
        for batch in batches:
            loss_forward, loss_backward, n = _forward_loss(model, tensors, [pieces[i] for i in batch])
            total += (loss_forward.item() + loss_backward.item()) / 2
            count += n
    model.train()
    return math.exp(total / max(count, 1))


def _softmax_state(layer) -> dict:
    return {"negative_samples": list(layer.negative_samples), "word_to_column": dict(layer.word_to_column),
            "all_word": list(layer.all_word), "all_word_to_column": dict(layer.all_word_to_column)}


def pretrain(corpus_paths, out_dir, config: ElmoPretrainConfig | None = None, *, text_column: str = "txt",
             segmenter: SegmenterConfig | None = None, workers: int | None = None, resume: bool = False,
             log: Callable[[str], None] = print, progress: bool = True) -> dict:
    """Train a biLM on the corpus and write it to ``out_dir`` after every
    epoch. ``resume`` continues from the last finished epoch there. Returns
    the card (``sentiscore_elmo.json``)."""
    import torch
    from elmoformanylangs.biLM import Model as TrainingModel
    from elmoformanylangs.modules.embedding_layer import EmbeddingLayer

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
        if saved["config"] != asdict(config) | {"epochs": saved["config"]["epochs"]}:
            raise UsageError(f"--resume: {out_dir} was started with other settings; use the same options (only --epochs may change)")
        from .elmo import read_lexicon

        words, chars = read_lexicon(out_dir / "word.dic"), read_lexicon(out_dir / "char.dic")
    else:
        words, chars = build_lexicons(train, config.min_count, config.max_vocab, config.max_chars_per_token)

    # SampledSoftmaxLayer spins forever when a batch's distinct words reach
    # n_samples: keep n_samples above the most a batch can hold.
    most_in_batch = config.batch_size * (config.max_sent_len + 2)
    n_samples = max(config.n_samples, most_in_batch + 1)
    if n_samples != config.n_samples:
        log(f"n_samples raised to {n_samples:,} (a batch holds up to {most_in_batch:,} words)")
    network = replace(config, n_samples=n_samples).network_config()

    torch.manual_seed(config.seed)
    char_layer = EmbeddingLayer(config.char_dim, chars, fix_emb=False, embs=None)
    model = TrainingModel(network, None, char_layer, len(words), use_cuda=device == "cuda")
    model.to(device)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate)
    history: list[dict] = []
    first_epoch = 0
    if resume:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        for key, value in saved["softmax"].items():
            setattr(model.classify_layer, key, value)
        history = list(saved["history"])
        first_epoch = int(saved["epochs_done"])
        torch.set_rng_state(saved["torch_rng"])
        rng.setstate(saved["python_rng"])
        log(f"resuming {out_dir} after epoch {first_epoch}")
    else:
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
    n_tokens = sum(len(s) + 1 for s in train)
    log(f"biLM {config.size}: {sum(p.numel() for p in model.token_embedder.parameters()) + sum(p.numel() for p in model.encoder.parameters()):,} "
        f"parameters kept; vocabulary {len(words):,} words, {len(chars):,} characters; {len(train):,} training windows "
        f"({n_tokens:,} tokens), {len(valid):,} held out; device {device}")
    if first_epoch >= config.epochs:
        log(f"{out_dir} already has {first_epoch} epochs")

    for epoch in range(first_epoch, config.epochs):
        model.train()
        total, count = 0.0, 0
        started = time.monotonic()
        batches = _batches(train, config.batch_size, rng, shuffle=True)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(batches), desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch", leave=False, mininterval=2)
        for step, batch in enumerate(batches):
            optimizer.zero_grad()
            loss_forward, loss_backward, n = _forward_loss(model, tensors, [train[i] for i in batch])
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
        if bar is not None:
            bar.close()
        seconds = time.monotonic() - started
        train_ppl = math.exp(total / max(count, 1))
        valid_ppl = _evaluate(model, tensors, valid, valid_batches) if valid else None
        history.append({"epoch": epoch + 1, "train_perplexity": round(train_ppl, 2),
                        "valid_perplexity": round(valid_ppl, 2) if valid_ppl else None,
                        "seconds": round(seconds, 1), "tokens_per_second": round(count / max(seconds, 1e-9))})
        log(f"epoch {epoch + 1}: train perplexity {train_ppl:.1f}"
            + (f", held-out perplexity {valid_ppl:.1f}" if valid_ppl else "") + f" ({seconds:.0f} s, {count / max(seconds, 1e-9):,.0f} tokens/s)")
        _save_epoch(out_dir, model, optimizer, config, history, epoch + 1, rng)

    card = {
        "sentiscore_version": __version__,
        "size": config.size,
        "settings": asdict(config) | {"n_samples": n_samples},
        "segmenter": segmenter.to_dict() if any(not Path(p).suffix.lower() == ".txt" for p in corpus_paths) else None,
        "corpus": corpus_record,
        "vocabulary": len(words),
        "characters": len(chars),
        "output_dim": 2 * config.projection_dim,
        "layers": config.n_layers + 1,
        "history": history,
        "torch": torch.__version__,
    }
    (out_dir / CARD_FILE).write_text(json.dumps(card, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return card


def _save_epoch(out_dir: Path, model, optimizer, config, history, epochs_done: int, rng: random.Random) -> None:
    """The embedder's two weight files, then the resume state; each written
    to a temp name and renamed, so a kill leaves the last epoch intact."""
    import torch

    def save(obj, name):
        tmp = out_dir / (name + ".tmp")
        torch.save(obj, tmp)
        tmp.replace(out_dir / name)

    save(model.token_embedder.state_dict(), "token_embedder.pkl")
    save(model.encoder.state_dict(), "encoder.pkl")
    save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "softmax": _softmax_state(model.classify_layer),
          "history": history, "epochs_done": epochs_done, "config": asdict(config),
          "torch_rng": torch.get_rng_state(), "python_rng": rng.getstate()}, STATE_FILE)

