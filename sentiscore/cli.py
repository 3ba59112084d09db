"""Command line: thin wrappers over train / score / evaluate / info. Typed
errors become click exceptions with their exit codes; nothing here holds
logic of its own."""

from __future__ import annotations

import functools
import json
import os
import signal
import sys

import click

from . import __version__
from .config import (
    BINARY_SOURCE_LOSSES,
    DEFAULT_CHUNK_ROWS,
    DEFAULT_LABELS,
    ELMO_CHUNK_ROWS,
    ELMO_PRECISIONS,
    EMBEDDER_TYPES,
    MARKUP_MODES,
    PRIOR_ESTIMATORS,
    PRIORS_MODES,
    RUNTIMES,
    SOURCE_WEIGHTINGS,
    WIDE_TRAININGS,
    WIDE_WEIGHTINGS,
    EmbedderConfig,
    ModelConfig,
    ScoreConfig,
    SegmenterConfig,
    TrainConfig,
    WideConfig,
    parse_labels,
    parse_priors,
)
from .errors import RunStopped, SentiscoreError

INPUT_FORMAT_CHOICES = click.Choice(["csv", "tsv", "parquet", "jsonl"])
OUTPUT_FORMAT_CHOICES = click.Choice(["parquet", "csv", "tsv", "jsonl"])


class _ExitError(click.ClickException):
    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def _errors_to_exit(func):
    """SentiscoreError → 'Error: message' on stderr and its exit code."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        # SIGTERM (cron timeouts, kill) unwinds like Ctrl-C: temp output is
        # removed and worker processes are stopped on the way out. Handlers
        # are put back afterwards (the CLI may run inside another program).
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        signal.signal(signal.SIGTERM, _raise_terminated)
        try:
            return func(*args, **kwargs)
        except SentiscoreError as exc:
            raise _ExitError(str(exc), exc.exit_code) from exc
        except KeyboardInterrupt:
            click.echo("sentiscore: interrupted; no output was written", err=True)
            sys.exit(130)
        except _Terminated:
            click.echo("sentiscore: terminated; no output was written", err=True)
            sys.exit(143)
        except RunStopped as stop:
            what = "terminated" if stop.signum == signal.SIGTERM else "interrupted"
            click.echo(f"sentiscore: {what}; no output was written", err=True)
            sys.exit(128 + stop.signum)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    return wrapper


class _Terminated(BaseException):
    """Raised from the SIGTERM handler; a BaseException so that cleanup code
    written for KeyboardInterrupt runs for it too."""


def _raise_terminated(signum, frame):
    raise _Terminated()


def prefer_releasing_memory_pool() -> None:
    """Arrow's buffers from its jemalloc pool when the user has not chosen
    one: the default pool (mimalloc) keeps freed pages, so a long file's peak
    RSS settled 10-15% above a 10k-row file's (BENCHMARKS.md, "Memory, 2026-12-03
    (evening)").
    Arrow reads ARROW_DEFAULT_MEMORY_POOL once, when pyarrow is imported, so
    this runs before that; Linux only, where pyarrow's wheels have jemalloc
    (elsewhere Arrow would warn that the backend is missing)."""
    if sys.platform.startswith("linux") and "pyarrow" not in sys.modules:
        os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "jemalloc")


def _stop_at_next_chunk(stop, signum, frame):
    """First SIGINT/SIGTERM: finish the chunk in hand, clean up, exit.
    A second one stops at once."""
    stop.request(signum)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_terminated)


def model_option(func):
    return click.option(
        "--model", "-m", default=None, metavar="DIR|NAME",
        help="Model directory or built-in name: zh-fast (default; learned embeddings) or zh-elmo (ELMo vectors, about 2.5x slower).",
    )(func)


def text_column_option(func):
    return click.option("--text-column", default="txt", show_default=True, help="Column holding the text.")(func)


def workers_option(func):
    return click.option(
        "--workers", type=click.IntRange(min=1), default=None,
        help="Segmentation processes. Default: all cores.",
    )(func)


def markup_option(func):
    """--markup for train and vectors train (a classifier and its vectors must match)."""
    return click.option(
        "--markup", type=click.Choice(list(MARKUP_MODES)), default="social", show_default=True,
        help="social: drop URLs and @mentions, keep #topic# text, make [表情] codes tokens (the same in training and "
             "scoring); keep: segment them as text. train --vectors needs the vectors' setting.",
    )(func)


def device_option(func):
    return click.option(
        "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
        help="Where ELMo runs (auto: the GPU when torch sees one).",
    )(func)


def elmo_precision_option(func):
    return click.option(
        "--elmo-precision", type=click.Choice(list(ELMO_PRECISIONS)), default="float32", show_default=True,
        help="What an ELMo model's biLM computes its LSTMs in. bfloat16: the biLM about twice as fast on CPUs with "
             "bf16 instructions (AVX512-BF16, AMX; zh-elmo 1.6x end to end), slower on CPUs without; each vector moves "
             "by about 0.3% of its size, so about 2 labels in 10,000 change (measured in BENCHMARKS.md). ELMo models only.",
    )(func)


def runtime_option(func):
    return click.option(
        "--runtime", type=click.Choice(list(RUNTIMES)), default="auto", show_default=True,
        help="What runs the classifier. onnx: ONNX Runtime, on a graph built from the Keras model the first time "
             "(cached; ELMo models keep their biLM in torch; not --layer-mix scalar), without loading TensorFlow afterwards; onnx-int8: the "
             "same with the BiLSTM in int8: about 15% faster end to end for zh-fast; probabilities move by up to about 1e-2 and "
             "well under 1 label in 1,000, and since activations are quantised per batch a row's output also depends on "
             "the rows scored with it (so not for runs that must reproduce exactly); auto: onnx where the model and the "
             "install allow, else tensorflow.",
    )(func)


def prior_estimator_option(func):
    return click.option(
        "--prior-estimator", type=click.Choice(list(PRIOR_ESTIMATORS)), default="bbse", show_default=True,
        help="How --adapt-priors estimates the label shares. bbse: from the shares of predicted labels and the "
             "model's validation confusion matrix (Lipton et al. 2018; in the cards of models trained since 2026-12-04 "
             "and of the built-in ones); em: EM over the model's probabilities (Saerens et al. 2002), which reads a "
             "model's doubt on unfamiliar text as label shares more readily. Measured in BENCHMARKS.md, 'When to adapt priors'.",
    )(func)


def adapt_domain_option(func):
    return click.option(
        "--adapt-domain", is_flag=True,
        help="Self-train on this file: a first pass reads IN and the model scores a 20,000-row sample; the half of "
             "each label's sampled rows the model is surest of fit a char n-gram model of the file's own words, and its "
             "probabilities are averaged with the model's (rows whose label it changes say 'file' in scored_by). For a "
             "file from one domain unlike the training data: +1.1 to +1.6 macro-F1 on sources left out of training; "
             "-0.3 on a training source's own rows, -2.6 on a file mixing all of them (BENCHMARKS.md, 'When to adapt to "
             "the file'). zh-fast 1.35-1.6x the time.",
    )(func)


def cascade_option(func):
    return click.option(
        "--cascade/--no-cascade", default=True, show_default=True,
        help="Wide-deep models whose card holds a cascade: rows their char n-gram path is confident about skip the "
             "BiLSTM (and ELMo), marked 'ngrams' in scored_by. Its threshold (at least 0.8) is fitted at training "
             "to change at most 0.05% of validation labels. --no-cascade runs every row through the whole model.",
    )(func)


def engine_options(func):
    """Where ``score`` runs: this machine, or a Ray cluster (sentiscore.ray_engine)."""
    func = click.option("--gpus-per-worker", type=click.FloatRange(min=0), default=None,
                        help="--engine ray: GPUs per scoring actor (e.g. 1, or 0.5 to share one GPU between two).")(func)
    func = click.option("--num-workers", type=click.IntRange(min=1), default=None,
                        help="--engine ray: scoring actors, each loading the model once. Default: one per GPU share, else half the cluster's CPUs.")(func)
    func = click.option("--ray-address", default=None, metavar="auto|ray://HOST:PORT",
                        help="--engine ray: the cluster to use. Default: a local Ray started for this run.")(func)
    func = click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
                        help="local: this machine; ray: Ray Data on a cluster (IN a file, directory or glob; OUT a directory of Parquet parts).")(func)
    return func


def input_options(func):
    func = click.option("--input-format", type=INPUT_FORMAT_CHOICES, default=None, help="Input format; default from the extension (needed for '-').")(func)
    func = click.option("--encoding", default="utf-8", show_default=True, help="Text encoding of CSV/TSV input (e.g. gb18030).")(func)
    return func


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sentiscore")
def cli():
    """Batch sentiment scoring for Chinese text: 负评 / 中评 / 正评.

    \b
    sentiscore score reviews.csv scored.parquet
    sentiscore train data.tsv --out my-model
    sentiscore evaluate dev.parquet --model my-model
    """


@cli.command()
@click.argument("input_path", metavar="IN")
@click.argument("output_path", metavar="OUT")
@model_option
@text_column_option
@input_options
@click.option("--output-format", type=OUTPUT_FORMAT_CHOICES, default=None, help="Output format; default from OUT's extension (needed for '-').")
@click.option("--chunk-size", type=click.IntRange(min=1), default=None,
              help=f"Rows read, scored and written at a time.  [default: {DEFAULT_CHUNK_ROWS}; {ELMO_CHUNK_ROWS} for ELMo models, "
                   "whose batches in flight add to the two chunks held]")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Texts per model batch.  [default: 256; 64 for ELMo models whose biLM runs on the CPU, to bound memory]")
@click.option("--top-k", type=click.IntRange(min=0), default=3, show_default=True, help="Top attended words per row.")
@click.option("--keep-columns", default=None, help="Comma-separated input columns to pass through (default: all).")
@click.option("--prefix", default="", help="Prefix for the added columns, e.g. ss_ when the input already has 'label'.")
@click.option("--maxlen", type=int, default=None, help="Check the model was trained with this maxlen (error if not).")
@click.option("--user-dict", type=click.Path(dir_okay=False), default=None, help="Check the model was trained with this jieba user dictionary (error if not).")
@click.option("--stopwords", default=None, help="Check the model was trained with these stopwords (error if not).")
@click.option("--layer-mix", type=click.Choice(["average", "top", "scalar"]), default=None,
              help="Check an ELMo model was trained with this layer mix (error if not).")
@device_option
@workers_option
@click.option("--worker-nice", type=click.IntRange(0, 19), default=None, metavar="N",
              help="Run the segmentation workers N steps nicer than the scoring process, which waits on them "
                   "(Unix). Default: 10. 0: the same priority, e.g. on a machine shared with jobs they should not yield to.")
@click.option("--on-bad-lines", type=click.Choice(["error", "skip"]), default="error", show_default=True,
              help="CSV rows with the wrong number of fields: stop, or skip them (listed in OUT.bad-lines.tsv).")
@click.option("--resume", is_flag=True, help="OUT is a directory of Parquet parts, one per chunk; rerun the same command after a crash to finish.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary line.")
@click.option("--adapt-priors", is_flag=True,
              help="Estimate this file's share of each label (a first pass over IN, see --prior-estimator) "
                   "and score under it: for a file whose label mix differs from the training data's. Twice the time.")
@prior_estimator_option
@adapt_domain_option
@click.option("--priors", default=None, metavar="LABEL=SHARE,...",
              help="Score under known label shares, e.g. \"-1=0.3,0=0.1,1=0.6\": from the platform's ratings, or a hand-labelled "
                   "sample of 100-300 rows of IN (see --priors-mode).")
@click.option("--priors-mode", type=click.Choice(list(PRIORS_MODES)), default="reweight", show_default=True,
              help="How --priors apply. reweight: every row's probabilities reweighted by share / the model's own prior "
                   "(one pass); match: a first pass scores a 20,000-row sample of IN and fits the reweighting under which "
                   "its labels come out in the shares given. On sources left out of training, with shares from 100 "
                   "labelled rows, match raised macro-F1 by 6.3-6.7 points on the mean (BENCHMARKS.md, 'When you know "
                   "the label shares'); reweight overshot 中评 on Weibo (31-41% where 20% are).")
@cascade_option
@runtime_option
@elmo_precision_option
@engine_options
@_errors_to_exit
def score(input_path, output_path, model, text_column, input_format, encoding, output_format, chunk_size, batch_size,
          top_k, keep_columns, prefix, maxlen, user_dict, stopwords, layer_mix, device, workers, worker_nice, on_bad_lines, resume,
          overwrite, quiet, engine, ray_address, num_workers, gpus_per_worker, adapt_priors, prior_estimator, adapt_domain, priors,
          priors_mode, cascade, runtime, elmo_precision):
    """Score IN (CSV/TSV/Parquet/JSONL, or '-' for stdin) into OUT (Parquet,
    CSV, TSV or JSONL, or '-' for stdout).

    Every input row comes out, in order, with label, label_id, confidence,
    prob_<label>, top_words, top_weights and status added.

    With --engine ray (pip install 'sentiscore[ray]'), IN may also be a
    directory or glob of such files and OUT is a directory of Parquet parts."""
    prefer_releasing_memory_pool()
    from .pipeline import score_file

    ray_flags = {"--ray-address": ray_address, "--num-workers": num_workers, "--gpus-per-worker": gpus_per_worker}
    if engine != "ray" and any(v is not None for v in ray_flags.values()):
        from .errors import UsageError

        raise UsageError(f"{', '.join(k for k, v in ray_flags.items() if v is not None)} need --engine ray")
    stop = None
    if engine == "local":  # Ray stops its own tasks on Ctrl-C; the local engine finishes the chunk in hand
        from functools import partial

        from .pipeline import StopRequest

        stop = StopRequest()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, partial(_stop_at_next_chunk, stop))
    config = ScoreConfig(
        text_column=text_column, chunk_size=chunk_size, batch_size=batch_size, top_k=top_k, workers=workers, worker_nice=worker_nice,
        input_format=input_format, output_format=output_format, encoding=encoding,
        keep_columns=tuple(c.strip() for c in keep_columns.split(",") if c.strip()) if keep_columns is not None else None,
        overwrite=overwrite, quiet=quiet, on_bad_lines=on_bad_lines, resume=resume, device=device,
        adapt_priors=adapt_priors, prior_estimator=prior_estimator, priors=parse_priors(priors) if priors else None, priors_mode=priors_mode, cascade=cascade, runtime=runtime,
        elmo_precision=elmo_precision, adapt_domain=adapt_domain,
    )
    expect = {"maxlen": maxlen, "user_dict": user_dict, "stopwords": stopwords, "layer_mix": layer_mix}
    if engine == "ray":
        from .ray_engine import RayOptions, score_with_ray

        options = RayOptions(address=ray_address, num_workers=num_workers, gpus_per_worker=gpus_per_worker or 0.0)
        summary = score_with_ray(input_path, output_path, model=model, config=config, options=options, prefix=prefix, expect=expect)
        if not quiet:
            click.echo(summary.line(), err=True)
        return
    bar = None
    if not quiet and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(unit=" rows", file=sys.stderr, dynamic_ncols=True)
    try:
        summary = score_file(input_path, output_path, model=model, config=config, prefix=prefix, expect=expect,
                             progress=bar.update if bar is not None else None, stop=stop)
    finally:
        if bar is not None:
            bar.close()
    if not quiet:
        click.echo(summary.line(), err=True)


@cli.command()
@click.argument("data_path", metavar="DATA")
@click.option("--out", "out_dir", required=True, help="Model directory to write.")
@click.option("--name", default=None, help="Model name recorded in meta.json (default: the folder name).")
@click.option("--text-column", default="txt", show_default=True)
@click.option("--label-column", default="label", show_default=True)
@click.option("--labels", "labels_spec", default=",".join(f"{v}={n}" for v, n in DEFAULT_LABELS), show_default=True,
              help="Label values and names, VALUE=NAME,...")
@click.option("--arch", type=click.Choice(["wide-deep", "attention"]), default="wide-deep", show_default=True,
              help="attention: BiLSTM + attention; wide-deep: plus a linear char 1-3-gram path.")
@click.option("--val-fraction", type=float, default=0.1, show_default=True, help="Stratified validation share for early stopping.")
@click.option("--val-source", default=None, metavar="GROUP",
              help="Validate on every row of this source group (the part of --group-column before ':') instead of a random split: "
                   "early stopping and calibration then favour what transfers to unseen sources.")
@click.option("--group-column", default="source", show_default=True, help="Source column for --val-source, --wide-source-intercepts, --binary-source-loss and the --dev breakdown.")
@click.option("--dev", "dev_path", default=None, help="Held-out labelled file to evaluate after training (recorded in the card).")
@click.option("--seed", type=int, default=13, show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=6, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--learning-rate", type=float, default=2e-3, show_default=True)
@click.option("--lr-schedule", type=click.Choice(["constant", "cosine"]), default="constant", show_default=True,
              help="cosine: the learning rate decays to 5% of --learning-rate over --epochs.")
@click.option("--patience", type=click.IntRange(min=0), default=2, show_default=True, help="Epochs without val-loss gain before stopping.")
@click.option("--maxlen", type=click.IntRange(min=1), default=128, show_default=True, help="Tokens per text.")
@click.option("--embedder", type=click.Choice(EMBEDDER_TYPES), default="vocab", show_default=True,
              help="vocab: learned word embeddings; elmo: contextual vectors from --elmo-model; elmo+vocab: both, "
                   "concatenated per token (--vectors starts the word part).")
@click.option("--elmo-model", default=None, metavar="DIR|NAME",
              help="biLM folder (from 'sentiscore elmo pretrain', or HIT-SCIR's zhs.model), or a model (e.g. zh-elmo) whose biLM to reuse.")
@click.option("--layer-mix", type=click.Choice(["average", "top", "scalar"]), default="average", show_default=True,
              help="ELMo layers: their average, the top one, or a learned mix.")
@device_option
@click.option("--embed-dim", type=click.IntRange(min=1), default=96, show_default=True, help="Word vector size (vocab and elmo+vocab embedders).")
@click.option("--min-count", type=click.IntRange(min=1), default=2, show_default=True, help="Minimum word count for the vocabulary.")
@click.option("--lstm-units", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--dropout", type=float, default=0.3, show_default=True)
@click.option("--token-dropout", type=float, default=0.1, show_default=True, help="Share of tokens replaced by OOV while training.")
@click.option("--wide-training", type=click.Choice(list(WIDE_TRAININGS)), default="prefit", show_default=True,
              help="prefit: fit the char n-gram path by logistic regression first and freeze it, and train the BiLSTM to "
                   "correct it; independent: the same n-gram path, but the BiLSTM learns the labels on its own and the "
                   "two paths' logits add up (a product of experts); joint: train the n-gram path with the rest.")
@click.option("--wide-c", type=float, default=ModelConfig.wide_c, show_default=True,
              help="Inverse L2 strength of the prefit char n-gram logistic regression.")
@click.option("--wide-source-intercepts", is_flag=True,
              help="While training, give the n-gram path one intercept per source group (--group-column), so a "
                   "source's own label mix is not learned as evidence from its typical words; scoring uses the "
                   "intercept that reproduces the training label mix.")
@click.option("--wide-l2", type=float, default=1e-6, show_default=True, help="L2 penalty on the char n-gram weights (joint training).")
@click.option("--wide-weighting", type=click.Choice(WIDE_WEIGHTINGS), default=WideConfig.weighting, show_default=True,
              help="count: every n-gram occurrence, over √count; idf: each distinct n-gram by its idf in the training rows, "
                   "over the L2 norm (as TF-IDF), needs a prefit n-gram path (--wide-training prefit or independent).")
@click.option("--wide-buckets", type=click.IntRange(min=2), default=WideConfig.num_buckets, show_default=True,
              help="Hash buckets of the char n-gram path (its table has buckets × classes weights).")
@click.option("--class-weights", type=click.Choice(["sqrt", "balanced", "none"]), default=TrainConfig.class_weights, show_default=True,
              help="Loss weight per class: none (the label mix as it is), the square root of the balanced weights, or "
                   "balanced (n / (classes × count)); sqrt and balanced make rare classes heavier, and 中评 more frequent on new text.")
@click.option("--no-class-weights", is_flag=True, help="Same as --class-weights none (the default).")
@click.option("--source-weights", type=click.Choice(list(SOURCE_WEIGHTINGS)), default=TrainConfig.source_weights, show_default=True,
              help="Loss weight per source group (--group-column): none (each row the same), balanced (every group of "
                   "the training rows the same total weight, so the largest sources do not dominate), or its square root.")
@click.option("--label-smoothing", type=float, default=0.0, show_default=True,
              help="Spread this share of every training target over all classes (a confidence penalty).")
@click.option("--binary-source-loss", type=click.Choice(list(BINARY_SOURCE_LOSSES)), default="full", show_default=True,
              help="polarity: rows of a source group (--group-column) that has no middle-class (中评) row train the "
                   "BiLSTM on negative vs positive only, so a source whose labellers could not say 中评 does not teach "
                   "that its texts are not neutral; full: every row on all classes.")
@click.option("--ema-momentum", type=float, default=0.0, show_default=True,
              help="Average the weights over training steps (an exponential moving average with this momentum, "
                   "e.g. 0.99); validation, early stopping and the saved model use the average. 0: off.")
@markup_option
@click.option("--no-calibration", is_flag=True, help="Skip fitting the temperature (and class biases) on the validation split.")
@click.option("--class-bias/--no-class-bias", default=False, show_default=True,
              help="Also fit per-class logit biases (thresholds) for validation macro-F1: better on the training "
                   "sources, worse on new ones (they learn the training sources' share of neutral).")
@click.option("--vectors", default=None, metavar="DIR|NAME|none",
              help="Start the word embedding from pretrained vectors ('sentiscore vectors train'); their frequent words "
                   "join the vocabulary, so words never seen with a label are not out of vocabulary. Default: the "
                   "built-in zh-corpus-vectors (vocab and elmo+vocab embedders); none: a random start.")
@click.option("--adapt-vectors/--no-adapt-vectors", default=True, show_default=True,
              help="First continue the vectors on DATA's own texts (skip-gram, labels unused; about a minute per 50k "
                   "texts), so they know the words and senses of your domain.")
@click.option("--freeze-vectors", is_flag=True, help="Keep the pretrained vectors fixed instead of fine-tuning them.")
@click.option("--user-dict", type=click.Path(exists=True, dir_okay=False), default=None, help="jieba user dictionary (copied into the model).")
@click.option("--stopwords", default=None,
              help="builtin, none, or a one-word-per-line file. Default: what the --vectors were segmented with "
                   "(none for zh-corpus-vectors: function words kept), builtin without vectors.")
@workers_option
@click.option("--quiet", "-q", is_flag=True)
@_errors_to_exit
def train(data_path, out_dir, name, text_column, label_column, labels_spec, arch, val_fraction, val_source, group_column, dev_path, seed, epochs,
          batch_size, learning_rate, lr_schedule, patience, maxlen, embedder, elmo_model, layer_mix, device, embed_dim, min_count, lstm_units, dropout, token_dropout, wide_training, wide_c, wide_source_intercepts, wide_l2, wide_weighting, wide_buckets, class_weights, no_class_weights, source_weights, label_smoothing, binary_source_loss, ema_momentum, markup, no_calibration, class_bias,
          vectors, adapt_vectors, freeze_vectors, user_dict, stopwords, workers, quiet):
    """Train a model on DATA (CSV/TSV/Parquet/JSONL with text and label
    columns) and write it to --out."""
    from pathlib import Path

    from .embed.vectors import train_vectors_option, vectors_stopwords
    from .train import train as run_training

    vectors = train_vectors_option(vectors, embedder)
    if stopwords is None:
        stopwords = vectors_stopwords(vectors) if vectors else "builtin"

    config = TrainConfig(
        text_column=text_column, label_column=label_column, labels=parse_labels(labels_spec),
        val_fraction=val_fraction, val_source=val_source, seed=seed, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
        lr_schedule=lr_schedule, patience=patience, class_weights="none" if no_class_weights else class_weights, source_weights=source_weights, label_smoothing=label_smoothing, binary_source_loss=binary_source_loss, ema_momentum=ema_momentum, calibrate=not no_calibration, class_bias=class_bias, workers=workers, name=name or Path(out_dir).name,
        segmenter=SegmenterConfig(stopwords=stopwords, user_dict=user_dict, markup=markup),
        embedder=EmbedderConfig(type=embedder, maxlen=maxlen, embed_dim=embed_dim, min_count=min_count, layer_mix=layer_mix),
        elmo_model=elmo_model, device=device, vectors=vectors, vectors_trainable=not freeze_vectors, adapt_vectors=adapt_vectors,
        wide=WideConfig(markup=markup, weighting=wide_weighting, num_buckets=wide_buckets),
        model=ModelConfig(arch=arch, lstm_units=lstm_units, dropout=dropout, token_dropout=token_dropout, wide_training=wide_training, wide_c=wide_c,
                          wide_source_intercepts=wide_source_intercepts, wide_l2=wide_l2),
    )
    log = (lambda msg: None) if quiet else (lambda msg: click.echo(msg, err=True))
    meta = run_training(data_path, out_dir, config, dev_path=dev_path, group_column=group_column, log=log, verbose=0 if quiet else 2)
    val = meta["metrics"]["validation"]
    click.echo(f"wrote {out_dir}: validation accuracy {val['accuracy']:.4f}, macro-F1 {val['macro_f1']:.4f}")


@cli.command()
@click.argument("data_path", metavar="DATA")
@model_option
@click.option("--text-column", default="txt", show_default=True)
@click.option("--label-column", default="label", show_default=True)
@click.option("--group-column", default="source", show_default=True, help="Also report per value of this column (if present).")
@input_options
@click.option("--json", "json_path", default=None, help="Also write the metrics as JSON to this file ('-' for stdout).")
@click.option("--report", "report_path", default=None, help="Also write a self-contained HTML report to this file.")
@click.option("--faithfulness-rows", type=click.IntRange(min=0), default=2000, show_default=True,
              help="Rows sampled for the report's faithfulness measure (0: skip it).")
@click.option("--adapt-priors", is_flag=True, help="Measure 'score --adapt-priors': label shares estimated from DATA's texts (never its labels).")
@prior_estimator_option
@click.option("--adapt-domain", is_flag=True, help="Measure 'score --adapt-domain': a file model self-trained on DATA's texts (never its labels).")
@cascade_option
@runtime_option
@elmo_precision_option
@workers_option
@_errors_to_exit
def evaluate(data_path, model, text_column, label_column, group_column, input_format, encoding, json_path, report_path,
             faithfulness_rows, adapt_priors, prior_estimator, adapt_domain, cascade, runtime, elmo_precision, workers):
    """Measure a model on labelled DATA: accuracy, macro-F1, per-class
    precision/recall/F1 and the confusion matrix."""
    from .evaluate import evaluate as run_evaluation
    from .evaluate import format_report

    from .pipeline import Scorer

    with Scorer.from_model(model, workers=workers, top_k=0, cascade=cascade, runtime=runtime) as scorer:
        scorer.set_elmo_precision(elmo_precision)
        result = run_evaluation(data_path, text_column=text_column, label_column=label_column, group_column=group_column,
                                input_format=input_format, encoding=encoding, scorer=scorer, adapt_priors=adapt_priors,
                                prior_estimator=prior_estimator, adapt_domain=adapt_domain)
        if report_path:
            from .html_report import report_evaluation

            report_evaluation(scorer, result, report_path, data_path, text_column, input_format, encoding, faithfulness_rows)
    if json_path == "-":
        click.echo(json.dumps(result, ensure_ascii=False, indent=2))
        return
    click.echo(format_report(result))
    if json_path:
        with open(json_path, "w", encoding="utf-8") as f:
            json.dump(result, f, ensure_ascii=False, indent=2)


@cli.command()
@click.argument("texts", nargs=-1, metavar="[TEXT]...")
@model_option
@click.option("--file", "text_file", type=click.File("r", encoding="utf-8"), default=None,
              help="Read texts from this file, one per line ('-' for stdin).")
@click.option("--json", "as_json", is_flag=True, help="Print the explanations as JSON lines.")
@click.option("--color/--no-color", default=None, help="Shade tokens by attention (default: when stdout is a terminal).")
@_errors_to_exit
def explain(texts, model, text_file, as_json, color):
    """Show why the model chose a label: every token with its attention
    weight, the label, confidence, class probabilities and (wide-deep) the
    logits of each path.

    \b
    sentiscore explain "物流很快，但是质量太差了"
    """
    from .errors import UsageError
    from .explain import explain_texts, render
    from .pipeline import Scorer

    items = list(texts) + ([line.rstrip("\n") for line in text_file] if text_file is not None else [])
    if not items:
        raise UsageError("give texts as arguments or --file FILE")
    # An explanation shows both paths, with their logits: the whole model, on TensorFlow.
    with Scorer.from_model(model, workers=1, cascade=False, runtime="tensorflow") as scorer:
        explanations = explain_texts(scorer, items)
    use_color = sys.stdout.isatty() if color is None else color
    for e in explanations:
        click.echo(json.dumps(e.to_dict(), ensure_ascii=False) if as_json else render(e, use_color))


@cli.command()
@click.argument("models", nargs=-1, required=True, metavar="MODEL MODEL...")
@click.option("--out", "out_dir", required=True, help="Ensemble model directory to write.")
@click.option("--name", default=None, help="Name recorded in meta.json (default: the folder name).")
@click.option("--dev", "dev_path", default=None, help="Held-out labelled file to evaluate the ensemble on (recorded in the card).")
@click.option("--text-column", default="txt", show_default=True, help="Text column of --dev.")
@click.option("--label-column", default="label", show_default=True, help="Label column of --dev.")
@click.option("--group-column", default="source", show_default=True, help="Also report --dev per value of this column (if present).")
@_errors_to_exit
def ensemble(models, out_dir, name, dev_path, text_column, label_column, group_column):
    """Combine trained models into one that averages their probabilities.

    The members (model directories or built-in names) must share labels,
    segmenter settings, stopwords, user dictionary and maxlen; they are
    copied into OUT, which scores, evaluates and explains like any model."""
    from .ensemble import combine

    path = combine(list(models), out_dir, name=name, dev_path=dev_path, text_column=text_column, label_column=label_column,
                   group_column=group_column, log=lambda m: click.echo(m, err=True))
    click.echo(f"wrote {path} ({len(models)} members)")


@cli.command()
@click.argument("model", required=False, metavar="[MODEL]")
@click.option("--json", "as_json", is_flag=True, help="Print meta.json as JSON.")
@_errors_to_exit
def info(model, as_json):
    """Show a model's card (default: the shipped default model)."""
    from .artifacts import read_card
    from .report import format_card

    card = read_card(model)
    if as_json:
        click.echo(json.dumps(card.raw, ensure_ascii=False, indent=2))
    else:
        click.echo(format_card(card))


@cli.group()
def elmo():
    """ELMo biLMs: pretrain one for the elmo embedder."""


@elmo.command()
@click.argument("corpus", nargs=-1, required=True, metavar="CORPUS...")
@click.option("--out", "out_dir", required=True, help="Folder to write the biLM to (elmoformanylangs' format).")
@click.option("--size", type=click.Choice(["tiny", "small", "base", "large"]), default="small", show_default=True,
              help="tiny: 2×LSTM 256/64, 128-d (CPU, about 2× small's speed); small: 512/128, 256-d (CPU); "
                   "base: 2048/256, 512-d; large: HIT-SCIR's 4096/512, 1024-d (GPU). Ignored with --init.")
@click.option("--init", default=None, metavar="DIR|NAME",
              help="Continue from this biLM (a folder, or a model such as zh-elmo): domain adaptation on your own "
                   "text. Its shape is kept; the LM vocabulary is rebuilt from CORPUS.")
@click.option("--checkpoint-minutes", type=click.FloatRange(min=0), default=10, show_default=True,
              help="Also save (weights, card, --resume state) this often within an epoch; 0: only after each epoch.")
@click.option("--epochs", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--anneal-epochs", type=click.IntRange(min=0), default=0, show_default=True,
              help="Over the last this-many epochs the learning rate falls linearly to 0 (constant before). "
                   "May change on --resume: continue a finished run with --epochs N+1 --anneal-epochs 1.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--learning-rate", type=float, default=1e-3, show_default=True)
@click.option("--max-sent-len", type=click.IntRange(min=2), default=40, show_default=True, help="Tokens per training window.")
@click.option("--min-count", type=click.IntRange(min=1), default=3, show_default=True, help="Rarer words are <oov> as LM targets.")
@click.option("--max-vocab", type=click.IntRange(min=10), default=100_000, show_default=True,
              help="The most frequent words the LM predicts; the rest are <oov> as targets (the char-CNN still reads them).")
@click.option("--stopwords", default="builtin", show_default=True,
              help="builtin, none, or a file: removed before the biLM sees the text. The classifier trained on this "
                   "biLM must use the same (train --stopwords); 'none' lets the LM see natural text.")
@markup_option
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch CPU threads (default: torch's choice).")
@click.option("--text-column", default="txt", show_default=True, help="Text column of table corpora.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint (same options; only --epochs and --anneal-epochs may change).")
@device_option
@workers_option
@click.option("--quiet", "-q", is_flag=True)
@_errors_to_exit
def pretrain(corpus, out_dir, size, init, checkpoint_minutes, epochs, anneal_epochs, batch_size, learning_rate, max_sent_len, min_count, max_vocab,
             stopwords, markup, seed, threads, text_column, resume, device, workers, quiet):
    """Pretrain a compact Chinese ELMo on CORPUS files: .txt files of
    segmented sentences (one per line, tokens split by spaces), or any file
    'score' reads (segmented here with the built-in segmenter settings).

    The folder loads with elmoformanylangs.Embedder unchanged and feeds
    'sentiscore train --embedder elmo --elmo-model OUT'."""
    from .config import ElmoPretrainConfig

    from .embed.elmo_pretrain import pretrain as run_pretrain  # torch only once it runs (elmo.require_elmoformanylangs)
    from .embed.elmo import read_network_config, resolve_elmo_dir

    settings = dict(epochs=epochs, anneal_epochs=anneal_epochs, batch_size=batch_size, learning_rate=learning_rate, max_sent_len=max_sent_len,
                    min_count=min_count, max_vocab=max_vocab, seed=seed, device=device, threads=threads)
    init_dir = resolve_elmo_dir(init, "--init") if init else None
    config = (ElmoPretrainConfig.from_network(read_network_config(init_dir), **settings) if init_dir
              else ElmoPretrainConfig.sized(size, **settings))
    log = (lambda msg: None) if quiet else (lambda msg: click.echo(msg, err=True))
    card = run_pretrain(list(corpus), out_dir, config, text_column=text_column, workers=workers, resume=resume, init=init_dir,
                        segmenter=SegmenterConfig(stopwords=stopwords, markup=markup),
                        checkpoint_minutes=checkpoint_minutes or None, log=log, progress=not quiet and sys.stderr.isatty())
    click.echo(f"wrote {out_dir}: {card['output_dim']}-d ELMo, {len(card['history'])} epochs, "
               f"{card['tokens_seen']:,} tokens seen, held-out perplexity {card['valid_perplexity']}")


@cli.group()
def vectors():
    """Word vectors: pretrain them for the vocab embedder (train --vectors)."""


@vectors.command("train")
@click.argument("corpus", nargs=-1, required=True, metavar="CORPUS...")
@click.option("--out", "out_dir", required=True, help="Folder to write the vectors to.")
@click.option("--dim", type=click.IntRange(min=2), default=96, show_default=True, help="Vector size (train's --embed-dim must match).")
@click.option("--epochs", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--window", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--min-count", type=click.IntRange(min=1), default=3, show_default=True, help="Rarer words get no vector.")
@click.option("--max-words", type=click.IntRange(min=1), default=100_000, show_default=True, help="Keep the most frequent words.")
@click.option("--init", default=None, metavar="DIR|NAME",
              help="Continue from these vectors (a folder, or the built-in zh-corpus-vectors): domain adaptation on your own text.")
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--text-column", default="txt", show_default=True, help="Text column of table corpora.")
@markup_option
@click.option("--stopwords", default="builtin", show_default=True,
              help="builtin, none, or a one-word-per-line file: removed before training, as train --stopwords removes "
                   "them; a classifier must use the same.")
@workers_option
@click.option("--quiet", "-q", is_flag=True)
@_errors_to_exit
def vectors_train(corpus, out_dir, dim, epochs, window, min_count, max_words, init, seed, text_column, markup, stopwords,
                  workers, quiet):
    """Train skip-gram word vectors (gensim) on CORPUS files: .txt files of
    segmented sentences (one per line, tokens split by spaces), or any file
    'score' reads (segmented here as the classifier segments).

    Use them with 'sentiscore train DATA --vectors OUT'."""
    from .embed.vectors import VectorsConfig, resolve_vectors_dir, train_vectors

    config = VectorsConfig(dim=dim, window=window, min_count=min_count, max_words=max_words, epochs=epochs, seed=seed)
    log = (lambda msg: None) if quiet else (lambda msg: click.echo(msg, err=True))
    result = train_vectors(list(corpus), out_dir, config, text_column=text_column, segmenter=SegmenterConfig(markup=markup, stopwords=stopwords),
                           init=resolve_vectors_dir(init) if init else None, workers=workers, log=log)
    click.echo(f"wrote {out_dir}: {len(result.words):,} words, {result.dim}-d, {result.card['tokens_seen']:,} tokens seen")
