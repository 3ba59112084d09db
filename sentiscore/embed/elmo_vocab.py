"""ELMo vectors and a learned word embedding side by side (embedder type
``elmo+vocab``): the Keras model reads both and concatenates them per token.
The word embedding can start from pretrained vectors (``train --vectors``),
so the two kinds of transfer (a corpus biLM, corpus word vectors) meet in
one model. Both parts see the same tokens, so their masks agree."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError
from .elmo import ElmoEmbedder
from .vocab import VocabEmbedder

KIND = "elmo+vocab"


@dataclass
class ElmoVocabFeatures:
    elmo: Any  # ElmoFeatures
    words: Any  # TokenIds

    @property
    def lengths(self) -> np.ndarray:  # tokens per text, as the other embedders' features have
        return self.words.lengths


class ElmoVocabEmbedder:
    """An :class:`~sentiscore.embed.Embedder` made of an ELMo embedder and a
    vocabulary; the model's ``elmo_*`` and ``token_ids`` inputs."""

    kind = KIND
    encodes_in_background = True  # the biLM's work

    def __init__(self, elmo: ElmoEmbedder, words: VocabEmbedder):
        self.elmo = elmo
        self.words = words
        # What the pipeline, training and the model builder read from an ELMo embedder or a vocabulary.
        self.score_batch_size = elmo.score_batch_size
        self.device = elmo.device
        self.torch_version = elmo.torch_version
        self.n_layers, self.dim, self.layer_mix = elmo.n_layers, elmo.dim, elmo.layer_mix
        self.size = words.size

    def settings(self) -> dict:
        return {**self.elmo.settings(), "type": self.kind, "vocab_size": self.words.size}

    def featurize(self, batch) -> ElmoVocabFeatures:
        return ElmoVocabFeatures(self.elmo.featurize(batch), self.words.featurize(batch))

    def encode(self, features: ElmoVocabFeatures, rows: np.ndarray, width: int) -> dict[str, np.ndarray]:
        return {**self.elmo.encode(features.elmo, rows, width), **self.words.encode(features.words, rows, width)}

    def save(self, directory: Path) -> list[str]:
        return self.elmo.save(directory) + self.words.save(directory)

    def set_precision(self, precision: str, log=None) -> None:
        self.elmo.set_precision(precision, log)

    @property
    def precision(self) -> str:
        return self.elmo.precision

    @classmethod
    def load(cls, directory: Path, settings: dict, device: str = "auto", log=None) -> "ElmoVocabEmbedder":
        embedder = cls(ElmoEmbedder.load(directory, settings, device=device, log=log), VocabEmbedder.load(directory, settings))
        if settings.get("vocab_size") not in (None, embedder.size):
            raise ModelError(f"{directory}: vocab.txt gives {embedder.size} ids but the model was trained on {settings['vocab_size']}")
        return embedder
