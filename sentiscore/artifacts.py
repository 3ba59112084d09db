"""A model is a directory:

    meta.json       name, version, labels, arch, segmenter/embedder/wide
                    settings, metrics, training-data provenance, versions
    model.keras     the Keras model (registered layers only, no Lambda)
    vocab.txt       embedder files
    stopwords.txt   the stopwords used at training (always copied)
    userdict.txt    the jieba user dictionary, when one was used
    manifest.json   sha256 of every file above

An ensemble (``"kind": "ensemble"`` in meta.json, written by
:func:`sentiscore.ensemble.combine`) holds no Keras file of its own: its
members are whole model directories under ``members/``, covered by its one
manifest, and its stopwords and user dictionary are theirs (they share them).

Loading checks the manifest before anything is built or deserialised, and
loads Keras with ``safe_mode=True``. ``read_card`` does the checks and
parses meta.json once into a :class:`ModelCard`, the one typed view of a
card that scoring, the Ray engine and ``info`` read; ``load_model`` then
builds the Keras model and the embedder from it.
"""

from __future__ import annotations

import json
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from . import __version__
from .config import ELMO_EMBEDDERS
from .errors import ModelError
from .io import sha256_of

META_FILE = "meta.json"
MANIFEST_FILE = "manifest.json"
KERAS_FILE = "model.keras"
STOPWORDS_FILE = "stopwords.txt"
USER_DICT_FILE = "userdict.txt"
# Card formats: single models are written as 1; ensembles as 2, so that a
# sentiscore that predates them refuses them by version instead of by a missing file.
FORMAT_VERSION = 2  # the newest this sentiscore reads
SINGLE_FORMAT_VERSION = 1
ENSEMBLE_FORMAT_VERSION = 2
ENSEMBLE_KIND = "ensemble"
MEMBERS_DIR = "members"
DEFAULT_MODEL = "zh-fast"  # an ensemble: the best leave-one-source-out mean (README); zh-elmo is below it and 1.5x slower


def builtin_models() -> dict[str, Path]:
    root = Path(str(resources.files("sentiscore.models")))
    return {p.name: p for p in sorted(root.iterdir()) if (p / META_FILE).is_file()}


def resolve_model_path(model: str | Path | None) -> Path:
    """A model directory, or the name of a built-in model (default zh-fast)."""
    if model is None:
        model = DEFAULT_MODEL
    path = Path(model)
    if path.is_dir():
        return path
    builtins = builtin_models()
    if str(model) in builtins:
        return builtins[str(model)]
    names = ", ".join(builtins) or "none installed"
    if path.exists():
        raise ModelError(f"--model {model}: not a directory; a model is a directory holding {META_FILE}")
    raise ModelError(f"--model {model}: no such directory or built-in model (built-in: {names})")


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def read_meta(model_dir: Path) -> dict:
    meta_path = model_dir / META_FILE
    if not meta_path.is_file():
        raise ModelError(f"{model_dir} is not a sentiscore model: {META_FILE} is missing")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{meta_path} is not valid JSON ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != "sentiscore-model":
        raise ModelError(f"{meta_path} is not a sentiscore model card (no \"format\": \"sentiscore-model\")")
    return meta


def verify(model_dir: Path) -> dict:
    """Check meta.json, the sentiscore version that made the model and every
    file's sha256 in the manifest. Returns the meta dict."""
    model_dir = Path(model_dir)
    meta = read_meta(model_dir)
    made_by = str(meta.get("sentiscore_version", "0"))
    if _version_tuple(made_by)[:2] > _version_tuple(__version__)[:2]:
        raise ModelError(
            f"{model_dir} was made by sentiscore {made_by}, newer than this sentiscore {__version__}; "
            "upgrade sentiscore to load it"
        )
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise ModelError(f"{model_dir / META_FILE}: model format {meta.get('format_version')} is newer than this sentiscore reads")
    manifest_path = model_dir / MANIFEST_FILE
    if not manifest_path.is_file():
        raise ModelError(f"{manifest_path} is missing: cannot check the model's files")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))["files"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ModelError(f"{manifest_path} is unreadable ({exc})") from exc
    required = (META_FILE,) if meta.get("kind") == ENSEMBLE_KIND else (META_FILE, KERAS_FILE)
    if any(name not in manifest for name in required):
        raise ModelError(f"{manifest_path} does not list {' and '.join(required)}")
    for name, expected in manifest.items():
        path = model_dir / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise ModelError(f"{manifest_path} names a file outside the model directory: {name}")
        if not path.is_file():
            raise ModelError(f"{path} is missing (listed in {MANIFEST_FILE})")
        if sha256_of(path) != expected:
            raise ModelError(f"{path} does not match its sha256 in {MANIFEST_FILE}: the file was changed or damaged")
    return meta


def model_hash(model_dir: Path) -> str:
    """Short id of a model: sha256 of its manifest."""
    return sha256_of(Path(model_dir) / MANIFEST_FILE)[:12]


def write_manifest(model_dir: Path) -> None:
    files = sorted(p for p in model_dir.rglob("*") if p.is_file() and p.name != MANIFEST_FILE)
    manifest = {"files": {str(p.relative_to(model_dir)): sha256_of(p) for p in files}}
    (model_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")


@contextmanager
def model_dir_writer(out_dir: Path):
    """A temp folder beside ``out_dir`` to write a model into: renamed to
    ``out_dir`` (replacing it) when the block ends, removed if it fails, so a
    crash never leaves a half model that looks whole."""
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-model")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_card(model_dir: Path, meta: dict) -> None:
    """meta.json as given (written beside and renamed over the old one, so a
    crash leaves either card whole), then a manifest of every file in the
    directory."""
    tmp = model_dir / (META_FILE + ".tmp")
    tmp.write_text(json.dumps(meta, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    tmp.replace(model_dir / META_FILE)
    write_manifest(model_dir)


def save_model_dir(out_dir: Path, keras_model, meta: dict, embedder, stopwords_text: str, user_dict: str | None) -> Path:
    """Write a complete model directory (see :func:`model_dir_writer`)."""
    with model_dir_writer(out_dir) as tmp:
        keras_model.save(tmp / KERAS_FILE)
        embedder.save(tmp)
        (tmp / STOPWORDS_FILE).write_text(stopwords_text, encoding="utf-8")
        if user_dict:
            shutil.copyfile(user_dict, tmp / USER_DICT_FILE)
        write_card(tmp, {**meta, "format": "sentiscore-model", "format_version": SINGLE_FORMAT_VERSION, "sentiscore_version": __version__})
    return Path(out_dir)


def add_card_section(model_dir: Path, key: str, value: dict) -> None:
    """Add (or replace) one top-level section of an existing model's card
    and renew its manifest; the weights are not touched. For sections fitted
    after training, such as a cascade fitted to a model trained before
    cascades existed. The manifest is checked first: a damaged model is not
    re-signed."""
    model_dir = Path(model_dir)
    write_card(model_dir, {**verify(model_dir), key: value})


def trained_segmenter_config(model_dir: Path, meta: dict, host: str | None = None):
    """The segmenter settings a model was trained with, pointing at its own
    stopword and user-dictionary files; an error when this machine (``host``,
    for cluster workers) cannot segment as it did."""
    from .config import SegmenterConfig
    from .errors import SettingsMismatchError
    from .segment import segmenter_version

    seg = dict(meta["segmenter"])
    if seg.get("name") != "jieba_fast":
        raise SettingsMismatchError(f"{model_dir}: segmenter {seg.get('name')!r} is not available here (jieba_fast is)")
    if seg.get("version") and seg["version"] != segmenter_version():
        where, scope = (f" on {host}", " on every node") if host else ("", "")
        raise SettingsMismatchError(
            f"{model_dir} was trained with jieba_fast {seg['version']} but {segmenter_version()} is installed{where}; "
            f"tokens would differ. Install jieba_fast=={seg['version']}{scope}"
        )
    return SegmenterConfig(
        name="jieba_fast",
        hmm=bool(seg["hmm"]),
        stopwords=str(Path(model_dir) / STOPWORDS_FILE),
        user_dict=str(Path(model_dir) / USER_DICT_FILE) if seg.get("user_dict") else None,
        max_chars=int(seg["max_chars"]),
        markup=seg.get("markup", "keep"),  # cards before 0.2 segmented markup as text
    )


def trained_wide_config(meta: dict):
    """The wide path's settings from a card (cards before 0.2 hashed URLs
    and mentions like any text, and cards before idf weighting counted
    every n-gram)."""
    from .config import WideConfig

    return WideConfig(**{"markup": "keep", "weighting": "count", **meta["wide"]})


@dataclass(frozen=True)
class ModelCard:
    """A model's meta.json, parsed and checked once (:func:`read_card`).
    The typed fields are what scoring needs; ``raw`` keeps the whole card
    for reports and for fields only some models have."""

    path: Path
    hash: str
    name: str
    made_by: str  # the sentiscore version that wrote it
    labels: tuple[tuple[str, str], ...]  # (value, name), in the model's output order
    arch: str
    maxlen: int
    embedder: dict  # the embedder's own settings (type, maxlen, vocab or ELMo fields)
    segmenter: dict
    wide: object  # WideConfig of the char n-gram path (wide-deep), else None
    reference_prior: tuple[float, ...] | None  # mean calibrated validation posterior (cards from 0.2)
    raw: dict
    cascade: object = None  # CascadeConfig: when the n-gram path alone decides a row (wide-deep cards from 0.2)
    members: tuple["ModelCard", ...] = ()  # an ensemble's member models, in order; empty for a single model

    @property
    def embedder_type(self) -> str:
        return str(self.embedder.get("type"))

    @property
    def runs_bilm(self) -> bool:
        """Scoring with it runs a biLM (for an ensemble: in some member)."""
        return any(c.embedder_type in ELMO_EMBEDDERS for c in self.members or (self,))

    @property
    def training(self) -> dict:
        return self.raw.get("training") or {}

    @property
    def _own_confusion(self):
        """The confusion matrix recorded in this card itself (an ensemble's at
        its top level, a model's under training), or None."""
        calibration = (self.raw if self.members else self.training).get("calibration") or {}
        return calibration.get("confusion")

    @property
    def confusion_is_own(self) -> bool:
        """Whether :attr:`confusion` is this card's own rather than an
        ensemble's members' mean."""
        return self._own_confusion is not None

    @property
    def confusion(self):
        """P(predicted i, true j) on the validation split (cards from
        2026-12-04, or completed by scripts/fit_confusion.py), for
        ``--prior-estimator bbse``. An ensemble's is its own where its card
        has one (fit_confusion.py, when the members share a validation split),
        else its members' mean; None if a member has none."""
        import numpy as np

        recorded = self._own_confusion
        if recorded is None:
            own = [member.confusion for member in self.members]
            return None if not own or any(c is None for c in own) else np.mean(own, axis=0)
        matrix = np.asarray(recorded, np.float64)
        if matrix.shape != (len(self.labels), len(self.labels)):
            raise ModelError(f"{self.path / META_FILE}: the validation confusion is {matrix.shape}, not one row and column per label")
        return matrix

    @property
    def data(self) -> dict:
        return self.raw.get("data") or {}

    @property
    def metrics(self) -> dict:
        return self.raw.get("metrics") or {}

    def segmenter_config(self, host: str | None = None):
        """The segmenter settings it was trained with (see :func:`trained_segmenter_config`)."""
        return trained_segmenter_config(self.path, self.raw, host=host)


def parse_card(model_dir: Path, meta: dict, hash_: str) -> ModelCard:
    """The typed card of a meta dict; a card missing what scoring needs is a
    :class:`ModelError` here, not a KeyError later."""
    where = Path(model_dir) / META_FILE
    if meta.get("kind") == ENSEMBLE_KIND:
        return _parse_ensemble_card(Path(model_dir), meta, hash_)
    try:
        labels = tuple((str(item["value"]), str(item["name"])) for item in meta["labels"])
        embedder = dict(meta["embedder"])
        maxlen = int(embedder["maxlen"])
        arch = str(meta["model"]["arch"])
        segmenter = dict(meta["segmenter"])
        wide = trained_wide_config(meta) if arch == "wide-deep" else None
        reference = ((meta.get("training") or {}).get("calibration") or {}).get("reference_prior")
        prior = tuple(float(p) for p in reference) if reference is not None else None
        cascade = _cascade_of(meta) if wide is not None else None
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{where}: the card is incomplete or malformed ({type(exc).__name__}: {exc})") from exc
    if len(labels) < 2:
        raise ModelError(f"{where}: a model needs at least two labels")
    if prior is not None and len(prior) != len(labels):
        raise ModelError(f"{where}: the reference prior has {len(prior)} shares for {len(labels)} labels")
    return ModelCard(path=Path(model_dir), hash=hash_, name=str(meta.get("name", Path(model_dir).name)),
                     made_by=str(meta.get("sentiscore_version", "0")), labels=labels, arch=arch, maxlen=maxlen,
                     embedder=embedder, segmenter=segmenter, wide=wide, reference_prior=prior, raw=meta,
                     cascade=cascade)


def _parse_ensemble_card(model_dir: Path, meta: dict, hash_: str) -> ModelCard:
    """An ensemble's card: its members' cards (their files are covered by the
    ensemble's manifest, their own manifests by the hashes it records), checked
    to be scorable as one."""
    from .ensemble import check_members

    where = model_dir / META_FILE
    try:
        relative = [Path(str(rel)) for rel in meta["members"]]
        recorded = [str(h) for h in meta["member_hashes"]]
        labels = tuple((str(item["value"]), str(item["name"])) for item in meta["labels"])
        segmenter = dict(meta["segmenter"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{where}: the ensemble's card is incomplete or malformed ({type(exc).__name__}: {exc})") from exc
    if len(relative) != len(recorded) or len(relative) < 2:
        raise ModelError(f"{where}: an ensemble needs two or more members, each with its hash "
                         f"({len(relative)} members, {len(recorded)} hashes)")
    members = []
    for rel, expected in zip(relative, recorded):
        if rel.is_absolute() or ".." in rel.parts or rel.parts[:1] != (MEMBERS_DIR,):
            raise ModelError(f"{where}: member {rel} is not a folder under {MEMBERS_DIR}/")
        path = model_dir / rel
        if not (path / MANIFEST_FILE).is_file():
            raise ModelError(f"{where} names member {rel}, but {path / MANIFEST_FILE} is missing")
        if model_hash(path) != expected:
            raise ModelError(f"{path / MANIFEST_FILE} does not match the hash {where} records: the member was changed or damaged")
        members.append(parse_card(path, read_meta(path), expected))
    check_members(members)
    if labels != members[0].labels:
        raise ModelError(f"{where}: the ensemble's labels differ from its members'")
    priors = [m.reference_prior for m in members]
    # What the ensemble believes the prior to be: the mean of its members' beliefs.
    reference = None if any(p is None for p in priors) else tuple(sum(shares) / len(shares) for shares in zip(*priors))
    first = members[0]
    return ModelCard(path=model_dir, hash=hash_, name=str(meta.get("name", model_dir.name)),
                     made_by=str(meta.get("sentiscore_version", "0")), labels=labels, arch=ENSEMBLE_KIND, maxlen=first.maxlen,
                     embedder=dict(meta.get("embedder") or {"type": ENSEMBLE_KIND, "maxlen": first.maxlen}),
                     segmenter=segmenter, wide=None, reference_prior=reference, raw=meta, members=tuple(members))


def _cascade_of(meta: dict):
    from .cascade import CascadeConfig

    raw = meta.get("cascade")
    return CascadeConfig.from_dict(raw) if raw else None


def read_card(model: str | Path | None) -> ModelCard:
    """A model's card, its files checked against the manifest; no TensorFlow."""
    path = resolve_model_path(model)
    return parse_card(path, verify(path), model_hash(path))


@dataclass
class LoadedModel:
    card: ModelCard
    keras_model: object
    embedder: object

    @property
    def path(self) -> Path:
        return self.card.path

    @property
    def hash(self) -> str:
        return self.card.hash

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def labels(self) -> list[tuple[str, str]]:
        return list(self.card.labels)


def load_model_dir(model: str | Path | None, device: str = "auto", log=None) -> LoadedModel:
    return load_model(read_card(model), device=device, log=log)


def load_model(card: ModelCard, device: str = "auto", log=None, with_keras: bool = True) -> LoadedModel:
    """The Keras model (``safe_mode``) and the embedder of a checked card.
    ``with_keras=False``: the embedder only (another runtime runs the
    classifier), without importing TensorFlow."""
    from .embed import load_embedder

    path = card.path
    if not with_keras:
        return LoadedModel(card=card, keras_model=None, embedder=load_embedder(path, card.embedder, device=device, log=log))
    from .model import import_tensorflow

    import_tensorflow()
    import keras

    from . import layers  # noqa: F401  (registers the custom layers)

    try:
        keras_model = keras.saving.load_model(path / KERAS_FILE, safe_mode=True, compile=False)
    except Exception as exc:  # Keras raises many types for a bad file
        raise ModelError(f"{path / KERAS_FILE} could not be loaded safely: {exc}") from exc
    embedder = load_embedder(path, card.embedder, device=device, log=log)
    return LoadedModel(card=card, keras_model=keras_model, embedder=embedder)
