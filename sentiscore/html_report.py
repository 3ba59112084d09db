"""A self-contained HTML evaluation report: metrics tables, confusion
matrix and reliability plots (matplotlib, embedded as PNG), per-source
table, the most confident mistakes with their tokens shaded by attention,
and the faithfulness of top_words. Nothing is fetched when it is viewed."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _plots(result: dict) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")  # no display, no GUI toolkit
    import matplotlib.pyplot as plt
    import numpy as np

    plt.rcParams["font.sans-serif"] = ["Noto Sans CJK SC", "WenQuanYi Zen Hei", "DejaVu Sans"]
    # Class names may be Chinese and a CJK font may be missing: the axes use ids, the tables the names.
    names = result["labels"]
    ticks = [str(i) for i in range(len(names))]
    matrix = np.array(result["confusion_matrix"], dtype=float)
    fig, ax = plt.subplots(figsize=(4, 3.4))
    shown = ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(names)), ticks)
    ax.set_yticks(range(len(names)), ticks)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, f"{int(value):,}", ha="center", va="center", color="white" if value > matrix.max() / 2 else "black")
    fig.colorbar(shown, ax=ax)
    confusion = _png(fig)
    plt.close(fig)

    bins = result["calibration"]["bins"]
    fig, ax = plt.subplots(figsize=(4, 3.4))
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect")
    ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], marker="o", label="model")
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(f"ECE {result['calibration']['ece']:.3f}")
    ax.legend()
    calibration = _png(fig)
    plt.close(fig)
    return {"confusion": confusion, "calibration": calibration}


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _shaded(tokens: list[str], weights: list[float]) -> str:
    top = max(weights) if weights else 1.0
    spans = []
    for token, weight in zip(tokens, weights):
        alpha = 0.1 + 0.8 * (weight / top if top > 0 else 0)
        spans.append(f'<span class="tok" style="background: rgba(220,40,40,{alpha:.2f})" title="{weight:.3f}">{html.escape(token)}</span>')
    return " ".join(spans)


def write_html_report(result: dict, path, explanations: list, faithfulness: dict | None, data_name: str) -> Path:
    """``explanations``: one per entry of ``result['most_confident_mistakes']``."""
    plots = _plots(result)
    names = result["labels"]
    per_class = [[n, m["precision"], m["recall"], m["f1"], f"{m['support']:,}"] for n, m in result["per_class"].items()]
    confusion_rows = [[f"{i} {n}"] + [f"{v:,}" for v in row] for i, (n, row) in enumerate(zip(names, result["confusion_matrix"]))]
    sections = [
        f"<h1>sentiscore evaluation: {html.escape(result['model'])}@{html.escape(result['model_hash'])}</h1>",
        f"<p>Data: {html.escape(data_name)} · {result['rows']:,} rows · {result.get('unscored', 0):,} without a label</p>",
        _table(["accuracy", "macro-F1", "ECE"], [[result["accuracy"], result["macro_f1"], result["calibration"]["ece"]]]),
        "<h2>Per class</h2>",
        _table(["class", "precision", "recall", "F1", "support"], per_class),
        "<h2>Confusion matrix</h2>",
        _table(["true \\ predicted"] + [f"{i} {n}" for i, n in enumerate(names)], confusion_rows),
        f'<div class="plots"><img alt="confusion matrix" src="data:image/png;base64,{plots["confusion"]}">'
        f'<img alt="reliability diagram" src="data:image/png;base64,{plots["calibration"]}"></div>',
    ]
    if result.get("by_group"):
        sections += ["<h2>Per source</h2>", _table(["source", "rows", "accuracy", "macro-F1 (classes present)"]
                                                   + [f"{n} % true / predicted" for n in names],
                     [[g, f"{m['rows']:,}", m["accuracy"], m["macro_f1"]]
                      + [f"{m['label_shares']['true'][n] * 100:.1f} / {m['label_shares']['predicted'][n] * 100:.1f}" for n in names]
                      for g, m in result["by_group"].items()])]
    if faithfulness:
        rows = [[k, faithfulness[k]["drop_top"], faithfulness[k]["drop_random"], faithfulness[k]["ratio"]]
                for k in faithfulness if k.startswith("k=")]
        sections += ["<h2>Faithfulness of top words</h2>",
                     f"<p>ERASER comprehensiveness on {faithfulness['texts']:,} texts: the mean drop of the predicted "
                     "class's probability when the top-k attended words are removed, against k random words.</p>",
                     _table(["k", "drop (top-k words)", "drop (random words)", "ratio"], rows)]
    mistakes = result.get("most_confident_mistakes", [])
    if mistakes:
        rows = "".join(
            f"<tr><td>{m['confidence']:.3f}</td><td>{html.escape(m['true'])}</td><td>{html.escape(m['predicted'])}</td>"
            f"<td>{_shaded(e.tokens, e.weights) if e.tokens else html.escape(m['text'] or '')}</td></tr>"
            for m, e in zip(mistakes, explanations)
        )
        sections += [f"<h2>The {len(mistakes)} most confident mistakes</h2>",
                     "<p>Tokens shaded by attention (darker: more weight). The character n-gram path is not shown.</p>",
                     f'<table class="mistakes"><thead><tr><th>confidence</th><th>true</th><th>predicted</th><th>tokens</th></tr></thead>'
                     f"<tbody>{rows}</tbody></table>"]
    style = ("body{font-family:\"Noto Sans CJK SC\",\"PingFang SC\",\"Microsoft YaHei\",sans-serif;max-width:1000px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}"
             ".plots img{margin-right:1em}.tok{padding:1px 2px;border-radius:3px}")
    page = (f'<!DOCTYPE html><html lang="zh"><head><meta charset="utf-8"><title>sentiscore evaluation</title>'
            f"<style>{style}</style></head><body>{''.join(sections)}</body></html>")
    path = Path(path)
    path.write_text(page, encoding="utf-8")
    return path


def report_evaluation(scorer, result: dict, report_path, data_path, text_column: str, input_format, encoding: str,
                      faithfulness_rows: int) -> Path:
    """Explain the shown mistakes, measure faithfulness on a sample of the
    data (stored in ``result['faithfulness']``) and write the report."""
    import numpy as np

    from .explain import comprehensiveness, explain_texts
    from .io import INPUT_FORMATS, detect_format, read_table

    explanations = explain_texts(scorer, [m["text"] for m in result["most_confident_mistakes"]], logit_split=False)
    faithfulness = None
    if faithfulness_rows:
        fmt = detect_format(data_path, input_format, INPUT_FORMATS, "--input-format")
        texts = [t for t in read_table(data_path, fmt, [text_column], encoding).column(0).to_pylist() if t]
        if len(texts) > faithfulness_rows:
            pick = np.random.default_rng(13).choice(len(texts), faithfulness_rows, replace=False)
            texts = [texts[i] for i in sorted(pick)]
        faithfulness = comprehensiveness(scorer, texts)
        result["faithfulness"] = faithfulness
    return write_html_report(result, report_path, explanations, faithfulness, data_name=str(data_path))
