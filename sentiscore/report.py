"""Plain-text rendering of a model card (:class:`artifacts.ModelCard`)."""

from __future__ import annotations

from .artifacts import ModelCard
from .config import ELMO_EMBEDDERS


def _metric_line(name: str, m: dict) -> str:
    return f"  {name:<12} accuracy {m['accuracy']:.4f}  macro-F1 {m['macro_f1']:.4f}  ({m.get('rows', 0):,} rows)"


def _word_embedding(emb: dict) -> str:
    vectors = emb.get("vectors")
    start = ""
    if vectors:
        adapted = vectors.get("adapted_to_training_texts")
        continued = f" continued on the training texts ({adapted['tokens']:,} tokens)" if adapted else ""
        start = (f"; starts from word vectors {vectors['name']}{continued} ({vectors['vocabulary_words_pretrained']:,} words "
                 f"pretrained, {'fine-tuned' if vectors.get('trainable') else 'frozen'})")
    size = emb.get("vocab_size")
    return f"dim {emb.get('embed_dim')}, vocabulary {f'{size:,}' if size else '?'}{start}"


def _embedder_line(emb: dict) -> str:
    if emb.get("type") in ELMO_EMBEDDERS:
        elmo = emb.get("elmo") or {}
        corpus = ", ".join(f"{c['path']} ({c['tokens']:,} tokens)" for c in elmo.get("corpus") or []) or "unknown corpus"
        return (f"  embedder: ELMo {elmo.get('source')} ({emb.get('dim')}-d, {emb.get('layers')} layers, mix {emb.get('layer_mix')}, "
                f"maxlen {emb['maxlen']}; pretrained by {elmo.get('pretrained_by')} on {corpus}, {elmo.get('epochs')} epochs, "
                f"held-out perplexity {elmo.get('perplexity')}"
                + (f", {elmo['tokens_seen']:,} tokens seen" if elmo.get("tokens_seen") else "") + ")"
                + (f"\n  beside it: learned word embedding ({_word_embedding(emb)})" if emb["type"] == "elmo+vocab" else ""))
    return f"  embedder: {emb['type']} (maxlen {emb['maxlen']}, {_word_embedding(emb)})"


def _calibration_line(calibration: dict | None) -> str:
    if not calibration:
        return "  calibration: none"
    biases = calibration.get("bias") or []
    # Cards written before class biases became optional have no "class_bias" key.
    fitted = calibration.get("class_bias", any(biases))
    reference = calibration.get("reference_prior")
    return (f"  calibration: temperature {calibration.get('temperature')}; class biases "
            + (", ".join(f"{b:+.2f}" for b in biases) if fitted else "none (fitted only with train --class-bias)")
            + (f"; reference prior {', '.join(f'{p:.3f}' for p in reference)} (for --adapt-priors)" if reference
               else "; no reference prior (--adapt-priors needs a model trained by sentiscore 0.2)")
            + ("; validation confusion recorded (for --prior-estimator bbse)" if calibration.get("confusion")
               else "; no validation confusion (--prior-estimator bbse needs it: scripts/fit_confusion.py)"))


def _class_weighting(training: dict) -> str:
    # Cards before 0.2 list the weights only (square root of balanced when present).
    mode = training.get("class_weighting") or ("sqrt" if training.get("class_weights") else "none")
    weights = training.get("class_weights")
    return mode + (f" ({', '.join(f'{w:.2f}' for w in weights)})" if weights else "")


def _cascade_line(card: ModelCard) -> str:
    cascade = card.cascade
    if cascade is None:
        return "  cascade: none (every row runs the whole model)" + (
            "; scripts/fit_cascade.py can fit one" if card.arch == "wide-deep" else "")
    return (f"  cascade: rows the n-gram path is ≥ {cascade.threshold:.3f} sure of skip the BiLSTM"
            f"{' and ELMo' if card.embedder_type != 'vocab' else ''} ({cascade.skip_share:.1%} of "
            f"{cascade.rows:,} validation rows, {cascade.label_change:.3%} of labels changed; score --no-cascade to turn off)")


def _wide_weighting(wide) -> str:
    kind = "idf-weighted distinct n-grams over the L2 norm" if wide.weighting == "idf" else "n-gram counts over √count"
    return f"{kind}, {wide.num_buckets:,} buckets"


def _dev_lines(metrics: dict) -> list[str]:
    if "dev" not in metrics:
        return []
    return [_metric_line("dev", metrics["dev"])] + [_metric_line(f"  {group}", m) for group, m in metrics["dev"].get("by_group", {}).items()]


def _header_lines(card: ModelCard) -> list[str]:
    return [
        f"{card.name}  ({card.path})",
        f"  hash {card.hash} · made by sentiscore {card.made_by} on {card.raw.get('created')}",
        "  labels: " + ", ".join(f"{value}={name}" for value, name in card.labels),
    ]


def _format_ensemble(card: ModelCard) -> str:
    lines = [
        *_header_lines(card),
        f"  ensemble of {len(card.members)} models: the mean of their probabilities; each runs its own embedder, "
        "n-gram path and cascade on one shared segmentation",
        "  reference prior: " + (", ".join(f"{p:.3f}" for p in card.reference_prior) + " (the members' mean, for --adapt-priors)"
                                 if card.reference_prior else "none (a member has none)"),
        "  validation confusion (for --prior-estimator bbse): " + (
            "the ensemble's own" if card.confusion_is_own
            else "the members' mean" if card.confusion is not None else "none (scripts/fit_confusion.py adds it)"),
        "  metrics:",
        *_dev_lines(card.metrics),
    ]
    for i, member in enumerate(card.members, 1):
        lines.append(f"member {i} of {len(card.members)}: " + format_card(member))
    return "\n".join(lines)


def format_card(card: ModelCard) -> str:
    if card.members:
        return _format_ensemble(card)
    seg, data = card.segmenter, card.data
    lines = [
        *_header_lines(card),
        f"  architecture: {card.arch} (BiLSTM {card.raw['model'].get('lstm_units')}×2 + feed-forward attention"
        + (f", + hashed char 1-3-gram linear path, {_wide_weighting(card.wide)})" if card.arch == "wide-deep" else ")"),
        _embedder_line(card.embedder),
        f"  segmenter: {seg.get('name')} {seg.get('version')} (HMM {seg.get('hmm')}, stopwords {seg.get('stopwords_source')}, "
        f"user dictionary {'yes' if seg.get('user_dict') else 'none'}, markup {seg.get('markup', 'keep')})",
        f"  trained on: {data.get('path')} ({data.get('train_rows', 0):,} train / {data.get('val_rows', 0):,} validation rows)"
        + (f"; sources: {', '.join(f'{g} {n:,}' for g, n in data['sources'].items())}" if data.get("sources") else ""),
        f"  class weights: {_class_weighting(card.training)}",
        _calibration_line(card.training.get("calibration")),
        _cascade_line(card),
        "  metrics:",
    ]
    metrics = card.metrics
    if "validation" in metrics:
        lines.append(_metric_line("validation", metrics["validation"]))
    lines += _dev_lines(metrics)
    if card.arch == "wide-deep":
        lines.append("  note: the character n-gram path contributes to the label too; top_words count both paths' contributions.")
    return "\n".join(lines)
