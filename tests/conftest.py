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
        wide=WideConfig(num_buckets=2**12),
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
