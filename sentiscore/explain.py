"""Explanations: every token's attention weight for a text, rendered for a
terminal, the split of the logits between the model's two paths, and the
faithfulness of ``top_words`` (ERASER comprehensiveness: how much the
predicted class's probability drops when the top attended words are
removed, against removing as many random words)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .segment import normalize_text


@dataclass
class Explanation:
    text: str | None
    status: str
    label: str | None
    confidence: float | None
    probabilities: dict[str, float]
    tokens: list[str]
    weights: list[float]  # attention
    contributions: list[float]  # to the predicted class's logit (calibrated units): what top_words ranks by
    logit_split: dict[str, dict[str, float]] = field(default_factory=dict)  # path -> class -> logit

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def explain_texts(scorer, texts: list, logit_split: bool = True) -> list[Explanation]:
    from .pipeline import STATUS_NO_TOKENS, STATUS_OK, STATUS_TRUNCATED

    prepared = scorer.preprocess(texts)
    forwarded = scorer.forward(prepared, logit_parts=logit_split)
    segmented, probs, attention, contribution = forwarded.segmented, forwarded.probs, forwarded.attention, forwarded.contribution
    offsets = segmented.offsets
    names = [name for _, name in scorer.labels]
    parts = forwarded.logit_parts
    out = []
    for i, text in enumerate(texts):
        u = int(prepared.row_to_unique[i])
        if u < 0:
            out.append(Explanation(text, str(prepared.row_status[i]), None, None, {}, [], [], []))
            continue
        lo, hi = offsets[u], offsets[u + 1]
        if hi == lo:
            out.append(Explanation(text, STATUS_NO_TOKENS, None, None, {}, [], [], []))
            continue
        p = probs[u]
        best = int(p.argmax())
        out.append(Explanation(
            text=text,
            status=STATUS_TRUNCATED if segmented.truncated[u] else STATUS_OK,
            label=names[best],
            confidence=round(float(p[best]), 4),
            probabilities={n: round(float(v), 4) for n, v in zip(names, p)},
            tokens=segmented.tokens[lo:hi],
            weights=[round(float(w), 4) for w in attention[lo:hi]],
            contributions=[round(float(c), 4) for c in contribution[lo:hi]],
            logit_split={path: {n: round(float(v), 3) for n, v in zip(names, logits[u])} for path, logits in parts.items()},
        ))
    return out


def render(explanation: Explanation, color: bool) -> str:
    """Tokens shaded by attention (ANSI background) on a terminal; plain
    ``token[attention|contribution]`` otherwise. Then label, confidence and
    probabilities."""
    e = explanation
    if e.label is None:
        return f"{e.text!r}: no label ({e.status})"
    top = max(e.weights) if e.weights else 1.0
    pieces = []
    for token, weight, share in zip(e.tokens, e.weights, e.contributions):
        if color:
            shade = int(255 - 200 * (weight / top if top > 0 else 0))
            pieces.append(f"\x1b[48;2;255;{shade};{shade}m\x1b[30m{token}\x1b[0m{share:+.2f}")
        else:
            pieces.append(f"{token}[{weight:.2f}|{share:+.2f}]")
    probs = " · ".join(f"{n} {v:.3f}" for n, v in e.probabilities.items())
    lines = [f"{e.label}  confidence {e.confidence:.3f}  ({probs})" + ("" if e.status == "ok" else f"  [{e.status}]"),
             "  " + " ".join(pieces)]
    if len(e.logit_split) > 1:
        split = "; ".join(
            f"{path}: " + ", ".join(f"{n} {v:+.2f}" for n, v in logits.items()) for path, logits in e.logit_split.items()
        )
        lines.append(f"  logits by path (before calibration) — {split}")
    return "\n".join(lines)


def _without(text: str, drop: set[str]) -> str:
    """The normalised text with every occurrence of the given words removed."""
    out = normalize_text(text)
    for word in sorted(drop, key=len, reverse=True):
        out = out.replace(word, " ")
    return out


def comprehensiveness(scorer, texts: list[str], ks=(1, 3), seed: int = 13) -> dict:
    """Mean drop of the predicted class's probability when the top-k words
    (as ``top_words`` ranks them: by contribution to the predicted class) are
    removed from the text, and when k random distinct words are removed
    instead (ERASER's comprehensiveness; DeYoung et al. 2020)."""
    rng = np.random.default_rng(seed)
    base = explain_texts(scorer, texts, logit_split=False)
    scored = [e for e in base if e.label is not None and len(set(e.tokens)) > 1]
    names = [n for _, n in scorer.labels]
    result = {"texts": len(scored)}
    for k in ks:
        top_texts, random_texts = [], []
        for e in scored:
            totals: dict[str, float] = {}
            for token, share in zip(e.tokens, e.contributions):
                totals[token] = totals.get(token, 0.0) + share
            distinct = sorted(totals, key=lambda t: (-totals[t], t))
            kk = min(k, len(distinct) - 1)  # always leave a word
            top_texts.append(_without(e.text, set(distinct[:kk])))
            random_texts.append(_without(e.text, set(rng.choice(distinct, size=kk, replace=False).tolist())))
        predicted = np.array([names.index(e.label) for e in scored])
        before = np.array([e.probabilities[e.label] for e in scored])

        def prob_after(variants):
            frame = scorer.predict(variants)
            probs = frame[[f"prob_{n}" for n in names]].to_numpy(dtype=float, na_value=np.nan)
            after = probs[np.arange(len(variants)), predicted]
            return np.where(np.isnan(after), 0.0, after)  # a text left with no words has lost all support

        drop_top = float(np.mean(before - prob_after(top_texts)))
        drop_random = float(np.mean(before - prob_after(random_texts)))
        result[f"k={k}"] = {
            "drop_top": round(drop_top, 4),
            "drop_random": round(drop_random, 4),
            "ratio": round(drop_top / drop_random, 2) if drop_random > 0 else None,
        }
    return result
