"""evaluate --report: a self-contained HTML page, parsed and rendered in a
real headless Chromium (installed by .ci/run)."""

import base64
import re
import shutil
import subprocess
from html.parser import HTMLParser

import pytest
from click.testing import CliRunner

from sentiscore.cli import cli


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tables = 0
        self.images = []
        self.external = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self.tables += 1
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        for key in ("src", "href"):
            if attrs.get(key, "").startswith(("http:", "https:", "//")):
                self.external.append(attrs[key])


@pytest.fixture(scope="module")
def report(tiny_model, sample_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("report") / "report.html"
    result = CliRunner().invoke(cli, ["evaluate", str(sample_dir / "labelled.parquet"), "-m", str(tiny_model), "--workers", "1",
                                      "--report", str(path), "--faithfulness-rows", "100", "--json", str(path.with_suffix(".json"))])
    assert result.exit_code == 0, result.output
    return path


def test_report_is_self_contained_with_tables_and_png_plots(report):
    page = report.read_text(encoding="utf-8")
    parsed = _Collector()
    parsed.feed(page)
    assert parsed.tables >= 6  # summary, per class, confusion, per source, faithfulness, mistakes
    assert parsed.external == []  # nothing fetched at view time
    assert len(parsed.images) == 2
    for src in parsed.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    for heading in ("Per class", "Confusion matrix", "Per source", "Faithfulness of top words", "most confident mistakes"):
        assert heading in page
    assert len(re.findall(r'class="tok"', page)) > 20  # mistakes' tokens shaded by attention


def test_report_numbers_match_the_json(report):
    import json

    metrics = json.loads(report.with_suffix(".json").read_text(encoding="utf-8"))
    page = report.read_text(encoding="utf-8")
    assert f"<td>{metrics['accuracy']}</td>" in page and f"<td>{metrics['macro_f1']}</td>" in page
    assert len(metrics["most_confident_mistakes"]) == min(20, sum(metrics["confusion_matrix"][i][j] for i in range(3) for j in range(3) if i != j))
    assert set(metrics["faithfulness"]) == {"texts", "k=1", "k=3"}


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (.ci/run installs Debian's chromium)")
def test_report_renders_in_headless_chromium(report, tmp_path):
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--no-first-run", "--disable-quic", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert dom.count("<table") >= 6 and "Confusion matrix" in dom
    shot = tmp_path / "report.png"
    subprocess.run([CHROMIUM, *flags, f"--screenshot={shot}", "--window-size=1100,2000", report.as_uri()],
                   capture_output=True, timeout=120, check=True)
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)
    # Not a blank page: a real share of the pixels is drawn (text, tables, both plots).
    drawn = (pixels[..., :3].mean(axis=2) < 0.9).mean()
    assert pixels.shape[:2] == (2000, 1100) and drawn > 0.02
