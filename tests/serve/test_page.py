"""Tests of mlic.serve.page: the page loads nothing from elsewhere, and works in headless Chromium."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import httpx

from helpers import upload
from mlic.serve.page import PAGE


class Tags(HTMLParser):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append((tag, dict(attrs)))


def test_the_page_loads_nothing_from_elsewhere(client):
    answer = client.get("/")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    assert answer.text == PAGE
    assert "default-src 'none'" in answer.headers["content-security-policy"]
    text = answer.text.lower()
    assert "http://" not in text and "https://" not in text
    tags = Tags(answer.text).tags
    assert not [t for t, _ in tags if t in ("link", "iframe", "object", "embed", "base")]
    for tag, attrs in tags:
        for key in ("src", "href", "action"):
            assert key not in attrs or not attrs[key].startswith(("/", "http", "file:")), (tag, attrs)
    ids = {a.get("id") for _, a in tags}
    assert {"file", "drop", "threshold", "top-k", "filter", "results", "error"} <= ids


def test_page_in_headless_chromium(live, digit_files, tmp_path, chromium):
    """Upload a MultiDigits image through the file input; the page shows what the API decides."""

    def api(path: Path, **params) -> dict:
        return httpx.post(f"{live}/predict", params=params, files=upload(path), timeout=60).json()

    # an image on which the artifact's thresholds decide something, so that highlighting is tested
    paths = digit_files["paths"]
    image = next((p for p in paths if api(p)["predictions"][0]["labels"]), paths[0])
    own, top2 = api(image)["predictions"][0], api(image, top_k=2)["predictions"][0]
    page, requests, errors = page_with_results(chromium, live, image)
    shown = read_card(page)
    page.fill("#top-k", "2")
    page.press("#top-k", "Enter")
    page.wait_for_selector("#results[data-done='2']")
    shown_top2 = read_card(page)
    page.fill("#threshold", "1.5")  # clears top k; the server refuses it and the page says so
    page.press("#threshold", "Enter")
    page.wait_for_selector("#results[data-done='3']")
    error = page.text_content("#error") if page.is_visible("#error") else None
    page.screenshot(path=str(tmp_path / "serve.png"), full_page=True)
    assert not errors, errors
    assert all(url.startswith((live, "blob:", "data:")) for url in requests), requests
    assert_card(shown, own, marks=10)
    assert_card(shown_top2, top2, marks=0)
    assert len(shown_top2["chips"]) == 2
    assert error is not None and error.startswith("invalid_query: query parameter 'threshold'")


def read_card(page) -> dict:
    """What the first result card shows: chips, highlighted bars, every bar's label and text, attributes."""
    card = page.query_selector(".card")
    rows = card.query_selector_all(".bar-row:not([hidden])")
    return {
        "name": card.query_selector(".name").text_content(),
        "chips": [c.text_content() for c in card.query_selector_all(".chip")],
        "on": [r.get_attribute("data-label") for r in card.query_selector_all(".bar-row.on")],
        "bars": {r.get_attribute("data-label"): r.query_selector(".p").text_content() for r in rows},
        "marks": len(card.query_selector_all(".mark")),
        "attributes": {
            a.get_attribute("data-attribute"): a.query_selector(".v").text_content()
            for a in card.query_selector_all(".attr")
        },
    }


def assert_card(shown: dict, record: dict, marks: int) -> None:
    assert shown["name"] == record["path"]
    assert sorted(shown["chips"]) == sorted(record["labels"]) == sorted(shown["on"])
    assert shown["bars"] == {name: f"{p:.3f}" for name, p in record["scores"].items()}
    assert list(shown["bars"]) == sorted(record["scores"], key=record["scores"].get, reverse=True)
    assert shown["marks"] == marks
    assert shown["attributes"] == {name: a["class"] for name, a in record["attributes"].items()}


def test_the_page_is_three_package_files_put_together():
    """index.html links page.css and page.js, so it opens from its folder; the server puts them inline."""
    from importlib import resources

    from mlic.serve.page import SCRIPT, STYLESHEET, build_page

    static = resources.files("mlic.serve") / "static"
    html = (static / "index.html").read_text(encoding="utf-8")
    assert STYLESHEET in html and SCRIPT in html and "<style>" not in html and "<script>" not in html
    css, js = (static / "page.css").read_text(), (static / "page.js").read_text()
    assert css.strip() in PAGE and js.strip() in PAGE and build_page() == PAGE
    assert PAGE.count("<style>") == 1 and PAGE.count("<script>") == 1


def test_clicking_a_label_shows_its_map(live, digit_files, tmp_path, chromium):
    """A click on a label's bar fetches its map once and shows it over the image; a second click undoes it."""
    page, requests, errors = page_with_results(chromium, live, digit_files["paths"][0])
    page.click(".bar-row[data-label='digit_4']")
    page.wait_for_selector(".pic img[data-map='digit_4']")
    src = page.get_attribute(".pic img", "src")
    note = page.text_content(".map-note")
    page.click(".bar-row[data-label='digit_4']")
    page.wait_for_selector(".pic img:not([data-map])")
    back = page.get_attribute(".pic img", "src")
    page.click(".bar-row[data-label='digit_4']")  # shown again from what the page kept
    page.wait_for_selector(".pic img[data-map='digit_4']")
    page.screenshot(path=str(tmp_path / "map.png"), full_page=True)
    assert not errors, errors
    assert src.startswith("data:image/png;base64,") and "map of digit_4" in note and back.startswith("blob:")
    explained = [url for url in requests if "explain=true" in url]
    assert len(explained) == 1 and "labels=digit_4" in explained[0]


def page_with_results(chromium, live: str, image) -> tuple:
    """The served page once ``image`` is uploaded and answered; the URLs it requested, its errors."""
    requests, errors = [], []
    page = chromium.new_page(viewport={"width": 1200, "height": 900})
    page.on("request", lambda r: requests.append(r.url))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{live}/", wait_until="load")
    # a selector, not wait_for_function: polling a JavaScript string needs eval, which the page's CSP forbids
    page.wait_for_selector("#meta:has-text('10 labels')")
    page.set_input_files("#file", str(image))
    page.wait_for_selector("#results[data-done='1']")
    return page, requests, errors
