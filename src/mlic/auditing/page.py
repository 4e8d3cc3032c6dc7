"""The review page: one self-contained HTML file, and a small local server that saves its decisions.

``review.html`` holds every suggestion it shows with its image embedded (a
JPEG thumbnail as a data URI), so it opens from disk with nothing else. Keys:
``a`` accept, ``r`` reject, ``s`` or space skip, ``u`` undo the last
decision, ``j`` / ``k`` (or the arrows) move. Decisions are kept in the
browser's storage and can be downloaded as ``decisions.json``; when the page
is served by ``mlic audit review AUDIT`` (``serve_review``, Python's own HTTP
server on 127.0.0.1), every decision is also saved at once to
``AUDIT/decisions.json``, which ``mlic audit apply`` reads.
"""

from __future__ import annotations

import base64
import html
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from mlic.auditing.review import (
    DECISIONS,
    PAGE,
    SUGGESTIONS,
    check_decisions,
    read_suggestions,
    write_decisions,
)
from mlic.errors import DataError
from mlic.fileio import atomic_write_text

THUMBNAIL = 256
"""Longest side of an embedded image, in pixels."""
MAX_BODY = 20 << 20
"""Largest decisions upload the server reads."""


def thumbnail(path: str, size: int = THUMBNAIL) -> str | None:
    """A JPEG data URI of the image at ``path``, at most ``size`` px a side; None if it cannot be read."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.thumbnail((size, size))
            buffer = io.BytesIO()
            image.convert("RGB").save(buffer, format="JPEG", quality=85)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def write_page(path: Path, records: list[dict], images: list[str], *, title: str = "mlic audit") -> Path:
    """Write the review page for ``records`` (review-file records), embedding each image once."""
    pictures: dict[int, str | None] = {}
    for r in records:
        if r["row"] not in pictures:
            pictures[r["row"]] = thumbnail(images[r["row"]])
    keys = (
        "rank",
        "row",
        "image",
        "label",
        "kind",
        "given",
        "probability",
        "threshold",
        "confidence",
        "reason",
    )
    items = [{k: r.get(k) for k in keys} for r in records]
    data = {"suggestions": items, "images": {str(k): v for k, v in pictures.items()}, "title": title}
    payload = json.dumps(data).replace("</", "<\\/")
    page = _PAGE.replace("__TITLE__", html.escape(title)).replace("__DATA__", payload)
    atomic_write_text(path, page)
    return path


class _Handler(BaseHTTPRequestHandler):
    audit_dir: Path
    suggestions: list[dict]
    lock = threading.Lock()

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def _answer(self, code: int, body: bytes, kind: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path in ("/", "/" + PAGE):
            self._answer(200, (self.audit_dir / PAGE).read_bytes(), "text/html; charset=utf-8")
        elif self.path == "/decisions":
            target = self.audit_dir / DECISIONS
            self._answer(200, target.read_bytes() if target.is_file() else b'{"decisions": []}')
        else:
            self._answer(404, b'{"error": "not found"}')

    def do_POST(self) -> None:
        if self.path != "/decisions":
            self._answer(404, b'{"error": "not found"}')
            return
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= MAX_BODY:
            self._answer(413, b'{"error": "empty or too large"}')
            return
        try:
            body = json.loads(self.rfile.read(length))
            decisions = check_decisions(body, self.suggestions, "the page's decisions")
        except (ValueError, DataError) as e:
            self._answer(400, json.dumps({"error": str(e)}).encode())
            return
        with self.lock:
            write_decisions(self.audit_dir / DECISIONS, decisions)
        self._answer(200, json.dumps({"saved": len(decisions)}).encode())


def review_server(audit_dir: str | Path, host: str = "127.0.0.1", port: int = 8765) -> ThreadingHTTPServer:
    """An HTTP server (not started) for the page of ``audit_dir``, saving decisions to ``decisions.json``."""
    audit_dir = Path(audit_dir)
    suggestions = read_suggestions(audit_dir / SUGGESTIONS)
    if not (audit_dir / PAGE).is_file():
        raise DataError(f"{audit_dir / PAGE}: no such file (run mlic audit first)")
    handler = type("Handler", (_Handler,), {"audit_dir": audit_dir, "suggestions": suggestions})
    return ThreadingHTTPServer((host, port), handler)


_PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:15px/1.4 system-ui,sans-serif;margin:0;background:#f6f6f4;color:#222}
header{padding:10px 18px;background:#1d3557;color:#fff;display:flex;gap:18px;align-items:center;
  flex-wrap:wrap}
header h1{font-size:17px;margin:0}#status{margin-left:auto;font-size:13px}
main{display:flex;gap:18px;padding:18px}
#card{flex:1;background:#fff;border-radius:8px;padding:18px;min-width:320px}
#card img{image-rendering:pixelated;width:320px;height:auto;max-height:420px;object-fit:contain;
  background:#eee}
.label{font-size:26px;font-weight:600}.missing{color:#2a7d2a}.wrong{color:#b3261e}
#list{width:420px;max-height:80vh;overflow:auto;background:#fff;border-radius:8px}
#list div{padding:4px 10px;border-bottom:1px solid #eee;cursor:pointer;font-size:13px}
#list div.current{background:#dde7f5}#list .accept::before{content:"\2714 ";color:#2a7d2a}
#list .reject::before{content:"\2716 ";color:#b3261e}
kbd{background:#eee;border:1px solid #bbb;border-radius:3px;padding:0 4px;color:#222}
button{font-size:14px;margin-right:6px}.reason{color:#555;margin:8px 0}.decided{font-weight:600}
</style></head><body>
<header><h1>__TITLE__</h1><span id="counts"></span>
<span><kbd>a</kbd> accept <kbd>r</kbd> reject <kbd>s</kbd> skip <kbd>u</kbd> undo
  <kbd>j</kbd>/<kbd>k</kbd> move</span>
<button id="download">Download decisions.json</button><span id="status">not saved yet</span></header>
<main><section id="card"></section><nav id="list"></nav></main>
<script id="data" type="application/json">__DATA__</script>
<script>
"use strict";
const DATA = JSON.parse(document.getElementById("data").textContent);
const S = DATA.suggestions, KEY = "mlic-audit:" + DATA.title + ":" + S.length;
let decisions = {}, order = [], pos = 0, served = location.protocol.startsWith("http");
try { decisions = JSON.parse(localStorage.getItem(KEY) || "{}"); } catch (e) { decisions = {}; }
const $ = (id) => document.getElementById(id);
function text(s) { const d = document.createElement("div"); d.textContent = s; return d.innerHTML; }
function records() {
  return S.filter((s) => decisions[s.rank]).map((s) => ({rank: s.rank, row: s.row, label: s.label,
    kind: s.kind, decision: decisions[s.rank]}));
}
async function save() {
  try { localStorage.setItem(KEY, JSON.stringify(decisions)); } catch (e) {}
  if (!served) { $("status").textContent = "kept in this browser; download to save"; return; }
  try {
    const r = await fetch("decisions", {method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({decisions: records()})});
    const a = await r.json();
    $("status").textContent = r.ok ? "saved " + a.saved + " decisions" : "not saved: " + a.error;
    $("status").dataset.saved = r.ok ? String(a.saved) : "";
  } catch (e) { $("status").textContent = "not saved: " + e; }
}
function render() {
  const s = S[pos];
  const n = Object.values(decisions);
  $("counts").textContent = S.length + " suggestions, " + n.filter((d) => d === "accept").length +
    " accepted, " + n.filter((d) => d === "reject").length + " rejected";
  if (!s) { $("card").textContent = "No suggestions."; return; }
  const img = DATA.images[String(s.row)];
  const given = s.given === 1 ? "given" : s.given === 0 ? "absent" : "unknown";
  const action = s.kind === "missing" ? "add" : "remove";
  $("card").innerHTML = `<div>#${s.rank} of ${S.length}</div>
    <div class="label ${s.kind}">${action} <span id="label">${text(s.label)}</span></div>
    <div>probability ${s.probability === null ? "-" : s.probability.toFixed(3)}, the label's threshold
      ${s.threshold === null ? "-" : s.threshold.toFixed(3)}, confidence ${s.confidence.toFixed(2)};
      in the data: ${given}</div>
    <div class="reason">${text(s.reason)}</div>
    ${img ? `<img src="${img}" alt="${text(s.image)}">` : "<p>(image not readable)</p>"}
    <div>${text(s.image)}</div>
    <p class="decided" id="decision">${decisions[s.rank] ? "decision: " + decisions[s.rank] : "undecided"}</p>
    <button data-d="accept">Accept (a)</button><button data-d="reject">Reject (r)</button>`;
  $("card").querySelectorAll("button[data-d]").forEach((b) => b.onclick = () => decide(b.dataset.d));
  document.querySelectorAll("#list div").forEach((d, i) => {
    d.className = (i === pos ? "current " : "") + (decisions[S[i].rank] || "");
  });
  const cur = document.querySelectorAll("#list div")[pos];
  if (cur) cur.scrollIntoView({block: "nearest"});
}
function next() {
  for (let i = pos + 1; i < S.length; i++) if (!decisions[S[i].rank]) { pos = i; return; }
  pos = Math.min(pos + 1, S.length - 1);
}
function decide(d) {
  const s = S[pos]; if (!s) return;
  decisions[s.rank] = d; order.push(s.rank); next(); render(); save();
}
function undo() {
  const rank = order.pop(); if (rank === undefined) return;
  delete decisions[rank]; pos = S.findIndex((s) => s.rank === rank); render(); save();
}
$("list").innerHTML = S.map((s) => `<div>${s.rank}. ${s.kind === "missing" ? "+" : "&minus;"} ${text(s.label)}
  <small>${s.probability === null ? "" : s.probability.toFixed(2)}</small></div>`).join("");
document.querySelectorAll("#list div").forEach((d, i) => d.onclick = () => { pos = i; render(); });
$("download").onclick = () => {
  const blob = new Blob([JSON.stringify({decisions: records()}, null, 1)], {type: "application/json"});
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob); a.download = "decisions.json"; a.click();
};
document.addEventListener("keydown", (e) => {
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  const k = e.key;
  if (k === "a" || k === "y") decide("accept");
  else if (k === "r" || k === "n") decide("reject");
  else if (k === "s" || k === " ") { next(); render(); }
  else if (k === "u" || k === "Backspace") undo();
  else if (k === "j" || k === "ArrowDown" || k === "ArrowRight") {
    pos = Math.min(pos + 1, S.length - 1); render();
  }
  else if (k === "k" || k === "ArrowUp" || k === "ArrowLeft") { pos = Math.max(pos - 1, 0); render(); }
  else return;
  e.preventDefault();
});
(async () => {
  if (served) {
    try {
      const r = await fetch("decisions"); const a = await r.json();
      for (const d of a.decisions || []) decisions[d.rank] = d.decision;
    } catch (e) { served = false; }
  }
  pos = Math.max(0, S.findIndex((s) => !decisions[s.rank])); render();
  document.body.dataset.ready = "1";
})();
</script></body></html>
"""
