"""The page that ``mlic serve`` answers at ``GET /``: one self-contained HTML document.

The page is three files shipped as package data: ``static/index.html``, which
links ``page.css`` and ``page.js`` (so it opens from the folder as it is), and
those two. ``PAGE`` is that document with the stylesheet and the script put
inline, read once at import: the server answers it from memory, touches no
file per request, and sends a Content-Security-Policy (``PAGE_HEADERS``) that
forbids any other source, so the page works offline. It reads ``schema`` and
posts to ``predict`` by relative URL, so it also works behind a path prefix.

Drop, paste or pick images; each gets a card: the image, its decided labels,
each attribute's class with its probability, and a bar per label
(probability, threshold marker, decided labels highlighted), most probable
first. Large label sets show the top N (decided labels always) with a filter.
Clicking a label (its bar or chip) or an attribute shows that output's map over
the image (``POST predict?explain=true&labels=NAME`` for that image, once);
clicking it again shows the image.
Every name from the server reaches the page as text (``textContent``), never
as HTML.

Hooks for tests: ``#file`` (the file input), ``#threshold``, ``#top-k``,
``#show``, ``#filter``, ``#error`` (shown on a failed request),
``#results[data-done]`` (completed requests), ``.card``, ``.chip`` (decided
labels), ``.bar-row`` (``.on`` when decided; ``data-label``), ``.attr``, ``.pic img[data-map]`` (the
output whose map is shown), ``.map-note``.
"""

from __future__ import annotations

from importlib import resources

STYLESHEET = '<link rel="stylesheet" href="page.css">'
SCRIPT = '<script src="page.js"></script>'


def _read(name: str) -> str:
    return (resources.files("mlic.serve") / "static" / name).read_text(encoding="utf-8")


def build_page() -> str:
    """``index.html`` with ``page.css`` and ``page.js`` inline, where it links them."""
    html = _read("index.html")
    if html.count(STYLESHEET) != 1 or html.count(SCRIPT) != 1:
        raise RuntimeError(
            f"static/index.html must link the stylesheet and the script once: {STYLESHEET} {SCRIPT}"
        )
    css, js = _read("page.css").removesuffix("\n"), _read("page.js").removesuffix("\n")
    return html.replace(STYLESHEET, f"<style>{css}</style>").replace(SCRIPT, f"<script>{js}</script>")


PAGE = build_page()
"""The page, as served."""

PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src blob: data:; style-src 'unsafe-inline'; "
    "script-src 'unsafe-inline'; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}
"""The page may load nothing from anywhere, and talk to this server only."""
