"""Shared fixtures. Tiny models are trained once per session on
sample_data/ (a few seconds); nothing is downloaded."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_data"

os.environ.setdefault("SENTISCORE_CACHE_DIR", str(ROOT / "build" / "test-cache"))


def tiny_config(**overrides):
    from sentiscore.config import EmbedderConfig, ModelConfig, SegmenterConfig, TrainConfig, WideConfig

    base = dict(
        epochs=2,
        batch_size=32,
        workers=1,
        name="tiny",
        segmenter=SegmenterConfig(),
        embedder=EmbedderConfig(maxlen=48, embed_dim=16, min_count=1),
        wide=WideConfig(num_buckets=2**12, weighting="count"),
        model=ModelConfig(arch="wide-deep", lstm_units=8),
    )
    base.update(overrides)
    return TrainConfig(**base)


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    return SAMPLE


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A wide-deep model trained for two epochs on the labelled sample."""
    from sentiscore.train import train

    out = tmp_path_factory.mktemp("models") / "tiny"
    train(SAMPLE / "labelled.csv", out, tiny_config(), log=lambda m: None, verbose=0)
    return out


@pytest.fixture(scope="session")
def tiny_idf_model(tmp_path_factory) -> Path:
    """The same, with the idf-weighted n-gram path (each distinct n-gram by
    its idf, over the L2 norm)."""
    from sentiscore.config import WideConfig
    from sentiscore.train import train

    out = tmp_path_factory.mktemp("models") / "tiny-idf"
    train(SAMPLE / "labelled.csv", out, tiny_config(wide=WideConfig(num_buckets=2**14, weighting="idf")), log=lambda m: None, verbose=0)
    return out


@pytest.fixture(scope="session")
def tiny_attention_model(tmp_path_factory) -> Path:
    """The attention-only architecture, two labels, custom names."""
    from sentiscore.config import ModelConfig
    from sentiscore.train import train
    import pandas as pd

    data = tmp_path_factory.mktemp("data") / "binary.csv"
    frame = pd.read_csv(SAMPLE / "labelled.csv", dtype=str)
    frame[frame.label != "0"].to_csv(data, index=False)
    out = tmp_path_factory.mktemp("models") / "tiny-attention"
    config = tiny_config(labels=(("-1", "neg"), ("1", "pos")), model=ModelConfig(arch="attention", lstm_units=8))
    train(data, out, config, log=lambda m: None, verbose=0)
    return out


@pytest.fixture(scope="session")
def tiny_scorer(tiny_model):
    from sentiscore.pipeline import Scorer

    scorer = Scorer.from_model(tiny_model, workers=1, batch_size=16, top_k=3)
    yield scorer
    scorer.close()


def tiny_elmo_config(**overrides):
    from sentiscore.config import ElmoPretrainConfig

    base = dict(filters=((1, 8), (2, 8)), char_dim=8, n_highway=1, lstm_dim=32, projection_dim=8, epochs=1,
                batch_size=16, max_sent_len=20, min_count=1, valid_fraction=0.05)
    base.update(overrides)
    return ElmoPretrainConfig(**base)


@pytest.fixture(scope="session")
def tiny_elmo(tmp_path_factory) -> Path:
    """A biLM pretrained for one epoch on 200 sample texts (seconds)."""
    import pandas as pd

    pytest.importorskip("elmoformanylangs")
    from sentiscore.embed.elmo_pretrain import pretrain

    corpus = tmp_path_factory.mktemp("corpus") / "corpus.csv"
    pd.read_csv(SAMPLE / "labelled.csv", dtype=str).head(200)[["txt"]].to_csv(corpus, index=False)
    out = tmp_path_factory.mktemp("elmo") / "tiny-elmo"
    pretrain([corpus], out, tiny_elmo_config(), workers=1, log=lambda m: None, progress=False)
    return out


def _elmo_classifier(tmp_path_factory, tiny_elmo, name: str, **embedder) -> Path:
    """A wide-deep classifier on the tiny biLM, trained on the labelled sample."""
    from sentiscore.config import EmbedderConfig, ModelConfig
    from sentiscore.train import train

    out = tmp_path_factory.mktemp("models") / name
    config = tiny_config(embedder=EmbedderConfig(maxlen=48, **embedder), elmo_model=str(tiny_elmo),
                         model=ModelConfig(arch="wide-deep", lstm_units=8))
    train(SAMPLE / "labelled.csv", out, config, log=lambda m: None, verbose=0)
    return out


@pytest.fixture(scope="session")
def tiny_elmo_model(tmp_path_factory, tiny_elmo) -> Path:
    """On the tiny biLM's vectors, with a layer mix learned in Keras."""
    return _elmo_classifier(tmp_path_factory, tiny_elmo, "tiny-elmo-clf", type="elmo", layer_mix="scalar")


@pytest.fixture(scope="session")
def tiny_elmo_average_model(tmp_path_factory, tiny_elmo) -> Path:
    """On the tiny biLM's vectors, its layers averaged in torch."""
    return _elmo_classifier(tmp_path_factory, tiny_elmo, "tiny-elmo-average", type="elmo", layer_mix="average")


@pytest.fixture(scope="session")
def tiny_elmo_vocab_model(tmp_path_factory, tiny_elmo) -> Path:
    """On the tiny biLM's vectors beside a learned word embedding (``elmo+vocab``)."""
    return _elmo_classifier(tmp_path_factory, tiny_elmo, "tiny-elmo-vocab", type="elmo+vocab", embed_dim=16, min_count=1)


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray for one test module (2 CPUs), shut down after it."""
    import logging

    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    yield
    ray.shutdown()
