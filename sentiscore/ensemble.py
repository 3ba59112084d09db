"""Ensembles: several trained models scored as one, their probabilities
averaged.

An ensemble is a model directory whose ``meta.json`` says ``"kind":
"ensemble"`` and lists member model directories kept under ``members/``;
one manifest covers every member's files. The members must segment alike
(same segmenter settings, stopwords, user dictionary and maxlen) and share
their labels: a chunk is segmented once, then every member runs its own
embedder, n-gram path, cascade and classifier on it. Out of domain, models
trained differently err differently, and their average errs less than
either (BENCHMARKS.md, "Out of domain, 2026-12-02 (night)").
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import re
import shutil
from pathlib import Path

import numpy as np

from . import __version__
from .artifacts import (ENSEMBLE_FORMAT_VERSION, ENSEMBLE_KIND, MEMBERS_DIR, STOPWORDS_FILE, USER_DICT_FILE, LoadedModel, ModelCard,
                        model_dir_writer, read_card, write_card)
from .errors import ModelError, UsageError
from .io import sha256_of
from .pipeline import Forwarded, Prepared, Scorer, check_elmo_precision

# What the members must share, from their cards' segmenter sections: the
# same settings give the same tokens, so one segmentation serves all.
_SHARED_SEGMENTER_KEYS = ("name", "version", "hmm", "max_chars", "markup")


def check_members(cards: list[ModelCard]) -> None:
    """Members that cannot be scored as one raise :class:`ModelError`,
    naming the first member that differs and how."""
    if len(cards) < 2:
        raise UsageError("an ensemble needs at least two models")
    first = cards[0]
    first_files = {name: _file_digest(first.path / name) for name in (STOPWORDS_FILE, USER_DICT_FILE)}
    for card in cards[1:]:
        where = f"{card.name} ({card.path}) and {first.name} ({first.path})"
        if card.members or first.members:
            raise ModelError(f"{where}: an ensemble cannot be a member of another; list its members instead")
        if card.labels != first.labels:
            raise ModelError(f"{where} have different labels ({_labels(card)} vs {_labels(first)}): "
                             "their probabilities cannot be averaged")
        if card.maxlen != first.maxlen:
            raise ModelError(f"{where} cut texts at different lengths (maxlen {card.maxlen} vs {first.maxlen}); "
                             "members are segmented once, so they must share maxlen")
        differ = [k for k in _SHARED_SEGMENTER_KEYS if card.segmenter.get(k) != first.segmenter.get(k)]
        differ += [what for name, what in ((STOPWORDS_FILE, "stopwords"), (USER_DICT_FILE, "user dictionary"))
                   if _file_digest(card.path / name) != first_files[name]]
        if differ:
            raise ModelError(f"{where} segment differently ({', '.join(differ)}); "
                             "members are segmented once, so train them with the same segmenter settings")


def _labels(card: ModelCard) -> str:
    return ", ".join(f"{v}={n}" for v, n in card.labels)


def _file_digest(path: Path) -> str | None:
    return sha256_of(path) if path.is_file() else None


def combine(models: list, out_dir, name: str | None = None, dev_path=None, text_column: str = "txt",
            label_column: str = "label", group_column: str | None = "source", log=None) -> Path:
    """Write an ensemble model directory of ``models`` (directories or
    built-in names), each copied whole under ``members/``. ``dev_path``: a
    held-out labelled file the ensemble is evaluated on, its metrics recorded
    in the card as ``train --dev`` records them. Written to a temp folder
    beside ``out_dir`` and renamed at the end. Returns the path."""
    cards = [read_card(model) for model in models]
    check_members(cards)
    out_dir = Path(out_dir)
    with model_dir_writer(out_dir) as tmp:
        member_dirs = []
        for i, card in enumerate(cards):
            rel = f"{MEMBERS_DIR}/{i}-{_folder_name(card.name)}"
            shutil.copytree(card.path, tmp / rel)
            member_dirs.append(rel)
        # The shared stopwords and user dictionary, where a single model keeps
        # them: segmenting and --stopwords/--user-dict checks read them there.
        for shared in (STOPWORDS_FILE, USER_DICT_FILE):
            if (cards[0].path / shared).is_file():
                shutil.copyfile(cards[0].path / shared, tmp / shared)
        first = cards[0].raw
        sources: dict[str, int] = {}
        for card in cards:
            for source, rows in (card.data.get("sources") or {}).items():
                sources[source] = max(sources.get(source, 0), int(rows))
        meta = {
            "format": "sentiscore-model",
            "format_version": ENSEMBLE_FORMAT_VERSION,
            "sentiscore_version": __version__,
            "kind": ENSEMBLE_KIND,
            "name": name or out_dir.name,
            "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
            "members": member_dirs,
            "member_hashes": [card.hash for card in cards],
            "labels": first["labels"],
            # Settings every member shares (checked above); the members' own cards hold the rest.
            "segmenter": first["segmenter"],
            "embedder": {"type": ENSEMBLE_KIND, "maxlen": cards[0].maxlen, "members": [card.embedder_type for card in cards]},
            "model": {"arch": ENSEMBLE_KIND, "combine": "mean of the members' probabilities"},
            # Training rows per source, the most any member used.
            "data": {"sources": sources},
            "metrics": {},
        }
        write_card(tmp, meta)
        if dev_path is not None:
            from .evaluate import evaluate
            from .train import with_dev_metrics

            dev = evaluate(dev_path, model=tmp, text_column=text_column, label_column=label_column, group_column=group_column)
            write_card(tmp, with_dev_metrics(meta, dev, dev_path))
            if log is not None:
                log(f"dev: accuracy {dev['accuracy']:.4f}, macro-F1 {dev['macro_f1']:.4f} on {dev['rows']:,} rows")
    return out_dir


def _folder_name(name: str) -> str:
    """A model name as a folder name: anything but letters, digits, '.', '-' and '_' becomes '_'."""
    return re.sub(r"[^\w.-]+", "_", name) or "model"


def _members_line(members: list[Scorer], key: str) -> str:
    """One provenance value for an ensemble: its members' distinct values of
    ``key``, in member order, joined by `` | `` (empty when none has it)."""
    return " | ".join(dict.fromkeys(m.provenance[key] for m in members if key in m.provenance))


class EnsembleScorer(Scorer):
    """Scores a chunk with every member and averages their probabilities.
    Preprocessing (dedupe, segmentation), postprocessing and the priors
    plumbing are :class:`Scorer`'s, which do not depend on the model; the
    members (plain Scorers sharing one segmenter) do the rest, each with its
    own embedder, n-gram path, cascade and runtime. ``Scorer.__init__`` is
    not called: there is no single model to load."""

    def __init__(self, card: ModelCard, members: list[Scorer], top_k: int = 3):
        self.card = card
        self.loaded = LoadedModel(card=card, keras_model=None, embedder=None)
        self.members = members
        self.labels = list(card.labels)
        self.maxlen = card.maxlen
        self.segmenter = members[0].segmenter
        self.batch_size = members[0].batch_size
        self.top_k = top_k
        self.prior_shift = None  # matched priors shift the averaged posteriors; given ones each member's (set_priors)
        self.file_model = None  # --adapt-domain: one file model for the averaged probabilities (Scorer.postprocess)
        self._encoder_thread = None
        provenance = {**members[0].provenance}
        for key in ("sentiscore.embedder", "sentiscore.runtime", "sentiscore.torch_version", "sentiscore.cascade"):
            if line := _members_line(members, key):
                provenance[key] = line
        provenance.update({
            "sentiscore.model": card.name,
            "sentiscore.model_hash": card.hash,
            "sentiscore.model_path": str(card.path),
            "sentiscore.members": ", ".join(f"{m.loaded.name}@{m.loaded.hash}" for m in members),
        })
        self.provenance = provenance

    @classmethod
    def from_card(cls, card: ModelCard, *, workers=None, batch_size=None, top_k=3, device: str = "auto",
                  segmenter=None, cascade: bool = True, runtime: str = "auto") -> "EnsembleScorer":
        members: list[Scorer] = []
        try:
            for member in card.members:
                shared = segmenter if segmenter is not None else (members[0].segmenter if members else None)
                members.append(Scorer.from_card(member, workers=workers, batch_size=batch_size, top_k=top_k, device=device,
                                                segmenter=shared, cascade=cascade, runtime=runtime))
        except BaseException:
            for scorer in members:
                scorer.close()
            raise
        return cls(card, members, top_k)

    def set_elmo_precision(self, precision: str) -> None:
        """Every ELMo member's biLM in ``precision``; an error if none has one."""
        check_elmo_precision(self.card, precision)
        for member in self.members:
            if hasattr(member.embedder, "set_precision"):
                member.set_elmo_precision(precision)
        self.provenance["sentiscore.embedder"] = _members_line(self.members, "sentiscore.embedder")

    def set_priors(self, prior, matched: bool = False) -> None:
        """Each member's posteriors under these priors (from its own
        reference prior), then averaged. ``matched`` priors were fitted on
        the averaged posteriors (:meth:`Scorer.matched_priors`), so they
        shift those, from the ensemble's reference prior: shifting each
        member and averaging would give other shares."""
        for member in self.members:
            member.set_priors(None if matched else prior)
        Scorer.set_priors(self, prior if matched else None)

    def _adaptation(self):
        return [member.prior_shift for member in self.members], self.prior_shift, self.file_model

    def _restore_adaptation(self, saved) -> None:
        shifts, self.prior_shift, self.file_model = saved
        for member, shift in zip(self.members, shifts):
            member.prior_shift = shift

    def forward(self, prepared: Prepared, explain: bool = True, logit_parts: bool = False) -> Forwarded:
        segmented = prepared.segmentation()
        # Segmented and hashed once, for every member.
        once = dataclasses.replace(prepared, segmentation=lambda: segmented, shared={})
        outputs = [member.forward(once, explain, logit_parts) for member in self.members]
        probs = self._shifted(np.mean([out.probs for out in outputs], axis=0).astype(np.float32))
        attention = np.mean([out.attention for out in outputs], axis=0).astype(np.float32)
        contribution = _agreeing_contribution(segmented.lengths, probs, outputs) if explain else outputs[0].contribution
        parts = {path: np.mean([out.logit_parts[path] for out in outputs], axis=0)
                 for path in outputs[0].logit_parts if all(path in out.logit_parts for out in outputs)}
        deep = np.logical_or.reduce([out.deep if out.deep is not None else np.ones(len(probs), bool) for out in outputs])
        return Forwarded(segmented, probs, attention, contribution, parts, deep)

    def close(self) -> None:
        for member in self.members:  # the shared segmenter closes once; closing again is a no-op
            member.close()


def _agreeing_contribution(lengths: np.ndarray, probs: np.ndarray, outputs: list[Forwarded]) -> np.ndarray:
    """Each token's contribution to the ensemble's label. A member's are to
    the label it predicts itself, so a text's come from the members that
    predict the ensemble's label, averaged (from all members where none does)."""
    label = probs.argmax(axis=1)
    agree = np.stack([out.probs.argmax(axis=1) == label for out in outputs])  # (members, texts)
    agree[:, ~agree.any(axis=0)] = True
    weights = np.repeat(agree / agree.sum(axis=0), lengths, axis=1)  # (members, tokens)
    return (weights * np.stack([out.contribution for out in outputs])).sum(axis=0).astype(np.float32)
