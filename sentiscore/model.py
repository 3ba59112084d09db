"""Builds the Keras classifier from config, and runs it for inference.
The only module (with layers.py and train.py) that touches TensorFlow/Keras."""

from __future__ import annotations

import os

# TF's native log lines (oneDNN notices at level E among them) would bury the
# summary line on stderr; real failures still arrive as Python exceptions.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import contextlib
import sys

import numpy as np

from .config import EmbedderConfig, ModelConfig, WideConfig

ATTENTION_LAYER = "attention"
PROBS_LAYER = "probs"
LOGITS_LAYER = "logits"


@contextlib.contextmanager
def _stderr_silenced():
    """TF's native start-up lines (oneDNN notices) bypass Python logging and
    TF_CPP_MIN_LOG_LEVEL; they would bury the summary line users parse from
    stderr. Python exceptions still propagate. SENTISCORE_DEBUG=1 shows them."""
    if os.environ.get("SENTISCORE_DEBUG") or "tensorflow" in sys.modules:
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_tensorflow():
    with _stderr_silenced():
        import keras  # noqa: F401
        import tensorflow as tf
    return tf


def configure_tensorflow() -> None:
    """Memory growth on every GPU: TF otherwise takes the whole card and torch
    (ELMo) in the same process has nothing left."""
    tf = import_tensorflow()

    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialised: too late, and harmless
            pass


def framework_versions() -> dict[str, str]:
    import keras

    tf = import_tensorflow()

    return {"tensorflow": tf.__version__, "keras": keras.__version__}


def build_classifier(
    model_config: ModelConfig,
    embedder_config: EmbedderConfig,
    wide_config: WideConfig | None,
    vocab_size: int,
    n_classes: int,
    elmo_shape: tuple[int, int] | None = None,
):
    """TextAttBiRNN: tokens → BiLSTM(sequences) → feed-forward attention → Dense,
    plus (``wide-deep``) a linear layer over hashed char n-grams whose logits
    are summed with the deep logits before the softmax. The tokens come in
    as ids (``vocab``: learned embeddings) or as ELMo vectors (``elmo``:
    ``elmo_shape`` = (biLM layers, dim))."""
    import_tensorflow()
    import keras

    from .layers import FeedForwardAttention, HashedNgramLinear, ScalarMix, TokenDropout

    inputs = []
    if embedder_config.uses_elmo:
        # Padding rows are all-zero vectors (real ELMo vectors never are), so
        # Masking gives the BiLSTM and the attention the real tokens only.
        layers_in = embedder_config.layer_mix == "scalar"
        shape = (None, elmo_shape[0], elmo_shape[1]) if layers_in else (None, elmo_shape[1])
        inputs.append(keras.Input(shape=shape, dtype="float32", name="elmo_layers" if layers_in else "elmo_vectors"))
        x = ScalarMix(name="scalar_mix")(inputs[-1]) if layers_in else inputs[-1]
        x = keras.layers.Masking(0.0, name="elmo_masking" if embedder_config.uses_vocab else "embedding")(x)
        # Token dropout for vectors: whole tokens zeroed while training.
        elmo_x = keras.layers.Dropout(model_config.token_dropout, noise_shape=(None, None, 1), name="token_dropout")(x)
    if embedder_config.uses_vocab:
        inputs.append(keras.Input(shape=(None,), dtype="int32", name="token_ids"))
        # With ELMo beside it the word part drops its own tokens (to OOV): the model cannot lean on either alone.
        x = TokenDropout(model_config.token_dropout, name="word_dropout" if embedder_config.uses_elmo else "token_dropout")(inputs[-1])
        x = keras.layers.Embedding(vocab_size, embedder_config.embed_dim, mask_zero=True, name="embedding")(x)
        if embedder_config.uses_elmo:
            x = keras.layers.Concatenate(name="elmo_and_words")([elmo_x, x])
    else:
        x = elmo_x
    x = keras.layers.Dropout(model_config.dropout, name="embedding_dropout")(x)
    x = keras.layers.Bidirectional(
        keras.layers.LSTM(model_config.lstm_units, return_sequences=True), name="bilstm"
    )(x)
    context, _alpha = FeedForwardAttention(embedder_config.maxlen, name=ATTENTION_LAYER)(x)
    context = keras.layers.Dropout(model_config.dropout, name="context_dropout")(context)
    logits = keras.layers.Dense(n_classes, name="deep_logits")(context)
    if model_config.arch == "wide-deep":
        assert wide_config is not None
        ngram_ids = keras.Input(shape=(None,), dtype="int32", name="ngram_ids")
        inputs.append(ngram_ids)
        wide_logits = HashedNgramLinear(
            wide_config.num_buckets, n_classes, l2=model_config.wide_l2, dropout=model_config.wide_dropout,
            weighting=wide_config.weighting,
            name="wide_logits",
        )(ngram_ids)
        logits = keras.layers.Add(name="wide_deep_logits")([logits, wide_logits])
    logits = keras.layers.Identity(name=LOGITS_LAYER)(logits)
    probs = keras.layers.Activation("softmax", name=PROBS_LAYER)(logits)
    return keras.Model(inputs, probs, name="sentiscore_classifier")


def stacked_training_model(keras_model, n_classes: int):
    """A training view of the classifier: the deep logits plus a fixed
    ``wide_offset`` input (out-of-fold logits of the prefit wide path). It
    shares its layers with ``keras_model``, so training it trains them."""
    import keras

    deep_inputs = {t.name: t for t in keras_model.inputs if t.name != "ngram_ids"}
    offset = keras.Input(shape=(n_classes,), dtype="float32", name="wide_offset")
    deep = keras_model.get_layer("deep_logits").output
    logits = keras.layers.Add(name="stacked_logits")([deep, offset])
    probs = keras.layers.Activation("softmax", name="stacked_probs")(logits)
    return keras.Model({**deep_inputs, "wide_offset": offset}, probs)


def logits_model(keras_model):
    import keras

    return keras.Model(keras_model.inputs, keras_model.get_layer(LOGITS_LAYER).output)


def calibrated(keras_model, temperature: float, bias):
    """The same layers, uncompiled (saving leaves out Adam's state, which
    would double the file), with calibrated logits before the softmax."""
    import keras

    from .layers import LogitCalibration

    logits = keras_model.get_layer(LOGITS_LAYER).output
    adjusted = LogitCalibration(temperature, bias, name="calibration")(logits)
    probs = keras.layers.Activation("softmax", name=PROBS_LAYER)(adjusted)
    return keras.Model(keras_model.inputs, probs, name=keras_model.name)


def input_names(keras_model) -> list[str]:
    return [t.name for t in keras_model.inputs]


def padded_rows(rows: int, batch_size: int) -> int:
    """Rows to run a batch of ``rows`` as: the next power of two, at most
    ``batch_size`` (full batches run as they are). TensorFlow's CPU kernels
    keep state per input shape, so a last batch of any size in every chunk
    made memory grow with the file (~0.15 MiB per 1,000 rows); this bounds
    the shapes to log2(batch_size) + 1 per width."""
    if rows >= batch_size:
        return rows
    return min(batch_size, 1 << max(0, rows - 1).bit_length())


def padded_width(width: int) -> int:
    """``width`` rounded up to one of four steps per power of two (at most
    25% padding): n-gram counts per batch take any value, and each distinct
    shape costs memory for the rest of the run (see :func:`padded_rows`)."""
    step = 1 << max(0, width.bit_length() - 3)
    return -(-width // step) * step


class Predictor:
    """Inference over padded batches: one traced function with a fixed input
    signature (no retracing per batch shape), no training-mode ops. Returns
    NumPy class probabilities, attention weights and each token's share of
    the deep logits.

    The deep logits are Dense(Σ_t α_t h_t) = Σ_t α_t (W h_t) + b, so
    α_t (W h_t) is each token's exact additive contribution to them."""

    def __init__(self, keras_model, batch_size: int = 256):
        tf = import_tensorflow()
        import keras

        configure_tensorflow()
        attention = keras_model.get_layer(ATTENTION_LAYER)
        states = keras_model.get_layer("bilstm").output  # h_t, what the attention weighs
        self._explaining = keras.Model(keras_model.inputs, [keras_model.outputs[0], attention.output[1], states])
        self.input_names = input_names(keras_model)
        kernel = keras_model.get_layer("deep_logits").kernel
        names = {layer.name for layer in keras_model.layers}
        self.temperature = float(keras_model.get_layer("calibration").temperature) if "calibration" in names else 1.0
        # The n-gram path's weights, for explanations and for the cascade's NumPy copy of that path.
        wide = keras_model.get_layer("wide_logits").get_weights() if "wide_logits" in names else [None, None]
        self.wide_table, self.wide_bias = wide[:2]
        self.wide_idf = wide[2] if len(wide) > 2 else None  # idf weighting (HashedNgramLinear)

        def run(inputs):
            probs, alpha, h = self._explaining(inputs, training=False)
            token_logits = tf.einsum("btd,dc->btc", h, tf.convert_to_tensor(kernel)) * alpha[..., None]
            return probs, alpha, token_logits

        signature = [{t.name: tf.TensorSpec([None, *t.shape[1:]], t.dtype, name=t.name) for t in keras_model.inputs}]
        self._run = tf.function(run, input_signature=signature)
        self._oom_error = tf.errors.ResourceExhaustedError
        self.batch_size = batch_size
        self.versions = framework_versions()
        self.runtime = f"tensorflow {self.versions['tensorflow']}"

    def logit_parts(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Each path's logits before calibration: ``deep`` (attention BiLSTM)
        and, for wide-deep models, ``wide`` (char n-grams). For explanations;
        not on the scoring path."""
        import keras

        if not hasattr(self, "_parts"):
            model = self._explaining
            names = [n for n in ("deep_logits", "wide_logits") if any(layer.name == n for layer in model.layers)]
            self._parts_names = [n.split("_")[0] for n in names]
            self._parts = keras.Model(model.inputs, [model.get_layer(n).output for n in names])
        outputs = self._parts({name: inputs[name] for name in self.input_names}, training=False)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        return {name: np.asarray(out) for name, out in zip(self._parts_names, outputs)}

    def __call__(self, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Probabilities (B, classes), attention (B, T) and token logits
        (B, T, classes). On out-of-memory the batch is halved and retried,
        down to single rows."""
        feed = {name: inputs[name] for name in self.input_names}
        if "ngram_ids" in feed:  # its width is any count of n-grams: bucket it too (0 = padding)
            ngrams = feed["ngram_ids"]
            feed["ngram_ids"] = np.pad(ngrams, ((0, 0), (0, padded_width(ngrams.shape[1]) - ngrams.shape[1])))
        rows = next(iter(feed.values())).shape[0]
        padded = padded_rows(rows, self.batch_size)
        try:
            if padded == rows:
                return tuple(t.numpy() for t in self._run(feed))
            # All-zero rows are fully masked; they are computed and dropped.
            feed = {k: np.concatenate([v, np.zeros((padded - rows, *v.shape[1:]), v.dtype)]) for k, v in feed.items()}
            return tuple(t.numpy()[:rows] for t in self._run(feed))
        except self._oom_error:
            if rows <= 1:
                raise
            half = rows // 2
            first = self({k: v[:half] for k, v in feed.items()})
            second = self({k: v[half:rows] for k, v in feed.items()})
            return tuple(np.concatenate([a, b]) for a, b in zip(first, second))
