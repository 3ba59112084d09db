"""sentiscore: batch sentiment scoring for Chinese text.

Importing this package is cheap: TensorFlow is imported only when a model is
loaded, so ``sentiscore --help`` stays fast.
"""

__version__ = "0.2.0"

__all__ = ["__version__", "load", "score_file", "Scorer"]


def load(model=None, **options):
    """Load a model (a directory or a built-in name; default ``zh-fast``) and
    return a :class:`sentiscore.pipeline.Scorer` ready for ``predict``."""
    from .pipeline import Scorer

    return Scorer.from_model(model, **options)


def score_file(input_path, output_path, model=None, prefix: str = "", **options):
    """Score a CSV/TSV/Parquet/JSONL file into OUTPUT_PATH, as ``sentiscore
    score`` does. ``options`` are :class:`sentiscore.config.ScoreConfig`
    fields (``text_column``, ``chunk_size``, ``overwrite``...). Returns a
    :class:`sentiscore.pipeline.ScoreSummary`."""
    from .config import ScoreConfig
    from .pipeline import score_file as _score_file

    return _score_file(input_path, output_path, model=model, config=ScoreConfig(**options), prefix=prefix)


def __getattr__(name):
    if name == "Scorer":
        from .pipeline import Scorer

        return Scorer
    raise AttributeError(name)
