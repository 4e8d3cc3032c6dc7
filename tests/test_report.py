"""Tests of mlic.report: an offline HTML page of an evaluation, checked as text and in headless Chromium."""

from __future__ import annotations

import shutil
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mlic.data.manifest import Manifest
from mlic.errors import ConfigError, DataError
from mlic.metrics import evaluate_arrays
from mlic.report import COLUMNS, write_report
from mlic.schema import Attribute, LabelSchema

DIGITS = LabelSchema(
    tuple(f"label_{j}" for j in range(8)),
    (Attribute("count", ("1", "2", "3", "4")), Attribute("size", ("small", "large"))),
)
HOSTILE = LabelSchema(
    ("<script>alert(1)</script>", 'say "hi"', "x & y", "$\\alpha$", "50% $", "a_b^c{", "</td></tr>"),
    (Attribute("<img src=x onerror=alert(1)>", ("<b>", "</table>")),),
)


def inputs(schema: LabelSchema, n: int = 60, seed: int = 0, files: Path | None = None) -> dict:
    """write_report's keyword arguments: targets, scores correlated with them, and an image manifest.

    Label 1 has no positive; about 5% of label targets and 10% of attribute targets are unknown.
    Images are in-memory pixels, or PNG files written under ``files``.
    """
    rng = np.random.default_rng(seed)
    n_labels = schema.n_labels
    y = (rng.random((n, n_labels)) < 0.3).astype(np.int8)
    if n_labels > 1:
        y[:, 1] = 0
    y[rng.random(y.shape) < 0.05] = -1
    logit = 2.5 * np.where(y == 1, 1.0, -1.0) + rng.normal(0, 1.5, y.shape)
    score = 1 / (1 + np.exp(-logit))
    attr_true = np.zeros((n, schema.n_attributes), np.int64)
    attr_probs = []
    for j, a in enumerate(schema.attributes):
        attr_true[:, j] = rng.integers(0, len(a.classes), n)
        z = rng.normal(0, 1, (n, len(a.classes)))
        z[np.arange(n), attr_true[:, j]] += 2.0
        attr_probs.append(np.exp(z) / np.exp(z).sum(axis=1, keepdims=True))
        attr_true[rng.random(n) < 0.1, j] = -1
    thresholds = rng.uniform(0.3, 0.7, n_labels)
    pixels = rng.integers(0, 256, (n, 24, 40, 3), dtype=np.uint8)  # not square, small: enlarged
    if files is None:
        images = Manifest(schema, [f"mem/{i:04d}" for i in range(n)], y, attr_true, pixels=pixels)
    else:
        files.mkdir(parents=True, exist_ok=True)
        paths = [str(files / f"{i:04d}.png") for i in range(n)]
        for path, p in zip(paths, pixels):
            Image.fromarray(p).save(path)
        images = Manifest(schema, paths, y, attr_true)
    args = (schema, y, score, attr_true, attr_probs)
    figures = evaluate_arrays(*args, thresholds)
    figures["at_0.5"] = {k: v for k, v in evaluate_arrays(*args, 0.5).items() if k != "mAP"}
    figures |= {"artifact": "runs/x/artifact", "data": "synthetic.csv"}
    return dict(
        figures=figures,
        schema=schema,
        label_true=y,
        label_score=score,
        attr_true=attr_true,
        attr_probs=attr_probs,
        thresholds=thresholds,
        images=images,
    )


class Page(HTMLParser):
    """The tags of a page, with their attributes, and the rows of the per-label table."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.rows: list[list[str]] = []
        self._table = self._cell = None
        self._body = False
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        in_body = self._table == "label-table" and self._body
        if tag == "table":
            self._table = attrs.get("id")
        elif tag == "tbody":
            self._body = True
        elif in_body and tag == "tr":
            self.rows.append([])
        elif in_body and tag == "td":
            self._cell = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._table = None
        elif tag == "tbody":
            self._body = False
        elif tag == "td" and self._cell is not None:
            self.rows[-1].append(self._cell)
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell += data

    def all(self, tag: str) -> list[dict]:
        return [a for t, a in self.tags if t == tag]


def read(path: Path) -> tuple[str, Page]:
    text = path.read_text(encoding="utf-8")
    return text, Page(text)


def check_offline(path: Path) -> Page:
    """Every image is a file inside the report folder; nothing refers to the network."""
    text, page = read(path)
    assert "http://" not in text.lower() and "https://" not in text.lower()
    for img in page.all("img"):
        src = img["src"]
        assert src.startswith("img/") or src.startswith("data:image/"), src
        if not src.startswith("data:"):
            assert (path.parent / src).is_file(), src
            with Image.open(path.parent / src) as im:
                im.verify()
    for tag, attrs in page.tags:
        for key in ("href", "src"):
            value = attrs.get(key) or ""
            assert not value.startswith(("/", "file:", "//")), (tag, value)
    assert not page.all("link")
    return page


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    kw = inputs(DIGITS, n=60)
    path = write_report(tmp_path_factory.mktemp("report") / "out", max_worst=10, **kw)
    return {"path": path, **kw}


def test_writes_an_offline_page_with_every_section(report):
    path = report["path"]
    assert path.name == "index.html" and path.is_file()
    page = check_offline(path)
    ids = {a.get("id") for _, a in page.tags}
    assert {
        "summary",
        "labels",
        "curves",
        "frequency",
        "calibration",
        "attributes",
        "worst",
        "no-positives",
    } <= ids
    srcs = [a["src"] for a in page.all("img")]
    assert len([s for s in srcs if "worst_" in s]) == 10
    for name in (
        "pr_curves",
        "f1_threshold",
        "label_frequency",
        "cooccurrence",
        "attribute_0",
        "attribute_1",
        "reliability",
    ):
        assert f"img/{name}.png" in srcs
    assert len(page.all("script")) == 1


def test_table_has_one_row_per_label_with_its_counts(report):
    _, page = read(report["path"])
    y, pred = report["label_true"], report["label_score"] >= report["thresholds"]
    assert [row[0] for row in page.rows] == list(DIGITS.labels)
    for j, row in enumerate(page.rows):
        cell = dict(zip(("label", *COLUMNS), row))
        tp, fp, fn, tn = (int(cell[k]) for k in ("TP", "FP", "FN", "TN"))
        assert tp == ((y[:, j] == 1) & pred[:, j]).sum() and fn == ((y[:, j] == 1) & ~pred[:, j]).sum()
        assert fp + tn == (y[:, j] == 0).sum() and int(cell["support"]) == tp + fn
        ap = report["figures"]["per_label"][DIGITS.labels[j]]["ap"]
        assert cell["AP"] == ("–" if ap is None else f"{ap:.4f}")


def test_labels_without_positives_are_listed(report):
    text, _ = read(report["path"])
    listed = text.split('id="no-positives"')[1].split("</details>")[0]
    assert "label_1" in listed and "label_0" not in listed


def history(epochs: int = 6) -> dict[str, np.ndarray]:
    """A training history as ``load_history`` reads it: validation mAP best at epoch 3, one figure missing."""
    e = np.arange(epochs, dtype=np.float64)
    m_ap = np.array([0.2, 0.4, 0.5, 0.6, 0.55, 0.58])[:epochs]
    f1 = m_ap - 0.1
    f1[0] = np.nan  # not logged that epoch
    return {"epoch": e, "train/loss": 1 / (1 + e), "val/loss": 1.2 / (1 + e) + 0.05 * e, "val/mAP": m_ap,
            "val/micro_f1": f1, "val/count_accuracy": 0.5 + e / 20,
            "val/size_accuracy": 0.6 + e / 30}  # fmt: skip


def test_training_curves_are_drawn_from_a_history_and_absent_without(report, tmp_path):
    assert "training" not in {a.get("id") for _, a in read(report["path"])[1].tags}
    path = write_report(tmp_path / "out", max_worst=0, history=history(), **inputs(DIGITS, n=20, seed=2))
    page = check_offline(path)
    assert "training" in {a.get("id") for _, a in page.tags}
    assert {"href": "#training"} in page.all("a")
    assert "img/training_curves.png" in [a["src"] for a in page.all("img")]
    text = path.read_text(encoding="utf-8").split('id="training"')[1].split("</section>")[0]
    assert "6 epoch(s)" in text and "best validation mAP 0.6000 at epoch 3" in text
    one = write_report(tmp_path / "one", max_worst=0, history=history(1), **inputs(DIGITS, n=20, seed=2))
    assert "best validation mAP 0.2000 at epoch 0" in one.read_text(encoding="utf-8")
    empty = {"epoch": np.arange(3.0), "val/mAP": np.full(3, np.nan)}  # nothing to draw: no section
    none = write_report(tmp_path / "none", max_worst=0, history=empty, **inputs(DIGITS, n=20, seed=2))
    assert 'id="training"' not in none.read_text(encoding="utf-8")


def test_image_files_are_copied_so_the_report_can_move(tmp_path):
    kw = inputs(DIGITS, n=20, seed=1, files=tmp_path / "images")
    path = write_report(tmp_path / "report", max_worst=5, **kw)
    moved = Path(shutil.move(tmp_path / "report", tmp_path / "moved")) / "index.html"
    shutil.rmtree(tmp_path / "images")
    page = check_offline(moved)
    assert len([a for a in page.all("img") if "worst_" in a["src"]]) == 5
    assert str(tmp_path / "images") in moved.read_text()  # the original paths are shown as text
    assert not path.exists()


def test_hostile_names_are_escaped(tmp_path):
    kw = inputs(HOSTILE, n=30, seed=2)
    path = write_report(tmp_path / "r", title="<script>alert('t')</script>", **kw)
    text, page = read(path)
    check_offline(path)
    assert "<script>alert" not in text and "<img src=x" not in text and "</table>" not in text.split("<")[0]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "say &quot;hi&quot;" in text
    assert len(page.all("script")) == 1 and not any("onerror" in a for _, a in page.tags)
    assert [row[0] for row in page.rows] == list(HOSTILE.labels)  # every row parsed whole


@pytest.mark.parametrize(
    ("schema", "present", "absent"),
    [
        (LabelSchema(("a", "b", "c")), {"labels", "curves", "frequency", "worst"}, {"attributes"}),
        (
            LabelSchema((), (Attribute("colour", ("red", "green", "blue")),)),
            {"attributes", "worst"},
            {"labels", "curves", "frequency"},
        ),
    ],
    ids=["labels-only", "attributes-only"],
)
def test_schemas_with_labels_only_or_attributes_only(tmp_path, schema, present, absent):
    kw = inputs(schema, n=25)
    path = write_report(tmp_path / "r", **kw)
    page = check_offline(path)
    ids = {a.get("id") for _, a in page.tags}
    assert present <= ids and not absent & ids
    assert len(page.rows) == schema.n_labels
    lacking = ("attr_true", "attr_probs") if schema.n_labels else ("label_true", "label_score", "thresholds")
    none = dict(kw, **dict.fromkeys(lacking))
    write_report(tmp_path / "again", **none)  # a part the schema lacks may be None


def test_refuses_a_file_and_inputs_that_do_not_fit(tmp_path):
    kw = inputs(DIGITS, n=10)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        write_report(tmp_path / "file", **kw)
    with pytest.raises(DataError, match="expected 9 rows"):
        write_report(tmp_path / "r", **dict(kw, images=kw["images"].subset(range(9))))
    with pytest.raises(DataError, match="attr_probs has 1 arrays"):
        write_report(tmp_path / "r", **dict(kw, attr_probs=kw["attr_probs"][:1]))


def test_ten_thousand_labels_stay_small_and_fast(tmp_path):
    rng = np.random.default_rng(3)
    n, n_labels = 300, 10_000
    schema = LabelSchema(tuple(f"tag_{j:05d}" for j in range(n_labels)))
    y = (rng.random((n, n_labels)) < np.geomspace(0.3, 0.001, n_labels)).astype(np.int8)
    score = (1 / (1 + np.exp(-(3 * (2 * y - 1) + rng.normal(0, 2, y.shape))))).astype(np.float32)
    images = Manifest(
        schema, [f"i{i}" for i in range(n)], y, np.zeros((n, 0)), pixels=np.zeros((n, 8, 8), np.uint8)
    )
    figures = evaluate_arrays(schema, y, score, None, None, 0.5)
    start = time.perf_counter()
    path = write_report(
        tmp_path / "r",
        figures=figures,
        schema=schema,
        label_true=y,
        label_score=score,
        attr_true=None,
        attr_probs=None,
        thresholds=np.full(n_labels, 0.5),
        images=images,
        max_worst=8,
    )
    elapsed = time.perf_counter() - start
    page = check_offline(path)
    assert len(page.rows) == n_labels
    assert elapsed < 30, f"{elapsed:.1f} s"
    assert path.stat().st_size < 4_000_000
    # curves, frequency, heatmap, reliability, thumbnails
    assert len(list((tmp_path / "r" / "img").iterdir())) == 5 + 8


def test_page_in_headless_chromium(report, tmp_path, chromium):
    """Every image loads, nothing leaves file://, and the table sorts by a numeric column both ways."""
    requests, errors = [], []
    page = chromium.new_page(viewport={"width": 1400, "height": 900})
    page.on("request", lambda r: requests.append(r.url))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(report["path"].as_uri(), wait_until="load")
    images = page.evaluate("Array.from(document.images, (i) => [i.getAttribute('src'), i.naturalWidth])")
    column = list(("label", *COLUMNS)).index("AP")
    read_column = f"rows => rows.map(r => r.cells[{column}].textContent)"

    def ap_column() -> list[float]:
        cells = page.eval_on_selector_all("#label-table tbody tr", read_column)
        return [float("nan") if c == "–" else float(c) for c in cells]

    page.click("#label-table th:text-is('AP')")
    ascending = ap_column()
    page.click("#label-table th:text-is('AP')")
    descending = ap_column()
    sort_state = page.get_attribute("#label-table th:text-is('AP')", "aria-sort")
    page.fill("#label-filter", "label_2")
    visible = page.eval_on_selector_all("#label-table tbody tr:not([hidden])", "rows => rows.length")
    page.fill("#label-filter", "")
    page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    assert len(images) >= 16 and all(width > 0 for _, width in images), images
    assert all(url.startswith("file://") for url in requests), requests
    assert not errors
    known = [v for v in ascending if not np.isnan(v)]
    assert known == sorted(known) and np.isnan(ascending[-1])  # label_1 has no AP: last
    known = [v for v in descending if not np.isnan(v)]
    assert known == sorted(known, reverse=True) and known[0] > known[-1] and np.isnan(descending[-1])
    assert sort_state == "descending" and visible == 1
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_report_links_an_audit(tmp_path):
    from mlic.auditing.run import write_review

    args = inputs(DIGITS, n=30)
    audit = tmp_path / "audit"
    write_review(audit, args["images"], args["label_score"].astype(np.float32))
    summary = '{"suggestions": {"missing": 3, "wrong": 1}, "folds": 5, "mode": "full"}'
    (audit / "audit.json").write_text(summary)
    text = write_report(tmp_path / "report", **args, audit=audit).read_text()
    assert 'href="../audit/review.html"' in text and "3 likely missing and 1 likely wrong" in text
    assert 'id="audit"' in text
    with pytest.raises(ConfigError, match="not a finished audit"):
        write_report(tmp_path / "report2", **args, audit=tmp_path / "nothing")


def test_worst_images_show_their_label_maps_and_calibration_compares_two_curves(tmp_path):
    from types import SimpleNamespace

    kw = inputs(DIGITS, n=30, seed=2)
    names = [*DIGITS.labels, "count=1", "count=2", "count=3", "count=4", "size=small", "size=large"]
    asked = []

    def explain(rows):
        asked.extend(rows)
        rng = np.random.default_rng(0)
        maps = [rng.normal(size=(len(names), 24, 40)).astype(np.float32) for _ in rows]
        images = [kw["images"].pixels[i] for i in rows]
        return SimpleNamespace(names=names, maps=maps, images=images, method="cam")

    raw = np.clip(kw["label_score"] ** 2, 0, 1)
    path = write_report(tmp_path / "r", max_worst=4, explain=explain, uncalibrated_score=raw, **kw)
    page = check_offline(path)
    maps = [a["src"] for a in page.all("img") if "map_" in a["src"]]
    assert len(asked) == 4 and 4 <= len(maps) <= 4 * 4
    assert all((tmp_path / "r" / src).is_file() for src in maps)
    text = path.read_text()
    assert "uncalibrated" in text and "label maps of up to 4" in text
    with pytest.raises(DataError, match="uncalibrated_score"):
        write_report(tmp_path / "x", uncalibrated_score=raw[:, :3], **kw)
