"""The page that ``mlic serve`` answers at ``GET /``: one self-contained HTML document.

Inline CSS and JavaScript, system fonts, no external resource, so it works
offline (the server sends a Content-Security-Policy that forbids any other
source). It reads ``schema`` and posts to ``predict`` by relative URL, so it
also works behind a path prefix. Drop, paste or pick images; each gets a card:
the image, its decided labels, each attribute's class with its probability,
and a bar per label (probability, threshold marker, decided labels
highlighted), most probable first. Large label sets show the top N (decided
labels always) with a filter. Every name from the server reaches the page as
text (``textContent``), never as HTML.

Hooks for tests: ``#file`` (the file input), ``#threshold``, ``#top-k``,
``#show``, ``#filter``, ``#error`` (shown on a failed request),
``#results[data-done]`` (completed requests), ``.card``, ``.chip`` (decided
labels), ``.bar-row`` (``.on`` when decided; ``data-label``), ``.attr``.
"""

from __future__ import annotations

CSS = """:root{--fg:#1f2328;--muted:#59636e;--line:#d8dee4;--head:#f3f5f7;--on:#1a7f37;--accent:#0969da}
*{box-sizing:border-box}body{margin:0;color:var(--fg);
font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif}
main{max-width:1280px;margin:0 auto;padding:28px 32px 64px}h1{font-size:28px;margin:0 0 6px}
h3{font-size:13px;text-transform:uppercase;letter-spacing:.04em;color:var(--muted);margin:14px 0 6px}
.meta,.more,.none{color:var(--muted);font-size:13px}
.drop{display:block;position:relative;margin:18px 0 12px;padding:34px 20px;text-align:center;cursor:pointer;
border:2px dashed var(--line);border-radius:10px;background:#fafbfc}
.drop:hover,.drop.over,.drop:focus-within{border-color:var(--accent);background:#eef4ff}
.drop u{color:var(--accent)}.drop input{position:absolute;width:1px;height:1px;opacity:0}
.controls{display:flex;flex-wrap:wrap;gap:10px 18px;align-items:center;font-size:13px;color:var(--muted)}
input[type=number],input[type=search],select{font:inherit;color:var(--fg);padding:3px 8px;
border:1px solid var(--line);border-radius:6px}input[type=number]{width:7em}input[type=search]{width:16em}
.error{margin:12px 0;padding:10px 14px;border:1px solid #ff8182;background:#ffebe9;border-radius:8px}
#status{margin:10px 0}
.card{display:grid;grid-template-columns:minmax(160px,280px) 1fr;gap:24px;margin:16px 0;padding:16px;
border:1px solid var(--line);border-radius:10px}
@media (max-width:700px){.card{grid-template-columns:1fr}}
.pic img{width:100%;height:auto;display:block;background:#eee;border-radius:6px;image-rendering:pixelated}
.name{font-weight:600;font-size:13px;margin-top:6px;word-break:break-all}
.chip{display:inline-block;padding:1px 9px;margin:2px 4px 2px 0;border-radius:12px;font-size:13px;
background:#dafbe1;border:1px solid #4ac26b}
.bar-row,.attr{display:grid;grid-template-columns:minmax(6em,14em) 1fr 4.2em;gap:10px;align-items:center;
font-size:13px;padding:1px 4px;border-radius:4px;font-variant-numeric:tabular-nums}
.attr{grid-template-columns:minmax(6em,14em) minmax(5em,10em) 1fr 4.2em}
.bar-row .name,.attr .k{margin:0;font-weight:400;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.bar-row.on{background:#eafbef}.bar-row.on .name{font-weight:700;color:var(--on)}
.track{position:relative;height:12px;background:var(--head);border-radius:3px}
.fill{position:absolute;left:0;top:0;bottom:0;background:#8c959f;border-radius:3px}
.on .fill,.attr .fill{background:var(--on)}
.mark{position:absolute;top:-3px;bottom:-3px;width:2px;margin-left:-1px;background:#cf222e}
.p{text-align:right}.attr .v{font-weight:600}#results[data-state=error]{opacity:.45}"""

JS = """"use strict";
const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
};
const fmt = (p) => Number(p).toFixed(3);
let schema = null, files = [], urls = [], result = null, done = 0;

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

async function readJson(response) {  // the body, or an Error saying "code: detail"
  let body = null;
  try { body = await response.json(); } catch (_) { /* not JSON */ }
  if (!response.ok)
    throw new Error(body && body.error ? `${body.error}: ${body.detail}` : `HTTP ${response.status}`);
  return body;
}

async function loadSchema() {
  try {
    schema = await readJson(await fetch("schema"));
    const m = schema.model || {};
    $("meta").textContent = [`${schema.labels.length} labels`, `${schema.attributes.length} attributes`,
      `backbone ${m.backbone}`, `head ${m.head}`, `decision ${schema.decision.policy}`,
      `up to ${schema.limits.max_files} images per request`].join(" · ");
    if (result) render();
  } catch (e) {
    showError(`cannot read the model description: ${e.message}`);
  }
}

function query() {
  const q = new URLSearchParams(), k = $("top-k").value.trim(), t = $("threshold").value.trim();
  if (k) q.set("top_k", k);
  if (t) q.set("threshold", t);
  const s = q.toString();
  return s ? `?${s}` : "";
}

async function predict(chosen) {
  if (!chosen.length) return;
  if (chosen !== files) {
    urls.forEach((u) => URL.revokeObjectURL(u));
    files = chosen;
    urls = files.map((f) => URL.createObjectURL(f));
  }
  showError("");
  $("results").dataset.state = "busy";
  $("status").textContent = `predicting ${files.length} image(s)…`;
  const form = new FormData();
  for (const f of files) form.append("files", f, f.name);
  try {
    result = await readJson(await fetch(`predict${query()}`, {method: "POST", body: form}));
    render();
    $("status").textContent = `${result.predictions.length} image(s) · decided by ${rule(result.decision)}`;
    $("results").dataset.state = "done";
  } catch (e) {
    showError(e.message);
    $("status").textContent = "";
    $("results").dataset.state = "error";
  }
  $("results").dataset.done = String(++done);
}

function rule(d) {
  const own = d.source === "query" ? "" : " (artifact)";
  if (d.policy === "top-k") return `the ${d.k} most probable label(s)${own}`;
  if (d.source === "query") return `threshold ${d.threshold} for every label`;
  return `the artifact's ${d.policy} thresholds (red marks)`;
}

function thresholdOf(label, d) {
  if (d.policy === "top-k") return null;
  if (d.source === "query") return d.threshold;
  return schema && label in schema.thresholds ? schema.thresholds[label] : null;
}

function bar(p, threshold) {
  const track = el("span", "track"), fill = el("span", "fill");
  fill.style.width = `${(100 * p).toFixed(2)}%`;
  track.append(fill);
  if (threshold !== null) {
    const mark = el("span", "mark");
    mark.style.left = `${(100 * Math.min(Math.max(threshold, 0), 1)).toFixed(2)}%`;
    mark.title = `threshold ${fmt(threshold)}`;
    track.append(mark);
  }
  return track;
}

function card(p, url, d) {
  const c = el("section", "card"), pic = el("div", "pic"), body = el("div", "body"), img = el("img");
  img.src = url;
  img.alt = p.path || "uploaded image";
  pic.append(img, el("div", "name", p.path || "(no name)"));
  const chips = el("div", "chips");
  for (const name of p.labels) chips.append(el("span", "chip", name));
  if (!p.labels.length) chips.append(el("span", "none", "no label decided"));
  body.append(el("h3", null, "labels"), chips);
  const attributes = Object.entries(p.attributes);
  if (attributes.length) {
    body.append(el("h3", null, "attributes"));
    for (const [name, a] of attributes) {
      const row = el("div", "attr");
      row.dataset.attribute = name;
      row.append(el("span", "k", name), el("span", "v", a.class), bar(a.probability, null),
        el("span", "p", fmt(a.probability)));
      body.append(row);
    }
  }
  const decided = new Set(p.labels), bars = el("div", "bars");
  const scores = Object.entries(p.scores).sort((a, b) => b[1] - a[1]);
  for (const [name, score] of scores) {
    const row = el("div", decided.has(name) ? "bar-row on" : "bar-row"), t = thresholdOf(name, d);
    row.dataset.label = name;
    row.title = `${name}: ${fmt(score)}` + (t === null ? "" : ` (threshold ${fmt(t)})`);
    row.append(el("span", "name", name), bar(score, t), el("span", "p", fmt(score)));
    bars.append(row);
  }
  if (scores.length) body.append(el("h3", null, "label probabilities"), bars, el("div", "more"));
  c.append(pic, body);
  return c;
}

function render() {
  $("results").replaceChildren(...result.predictions.map((p, i) => card(p, urls[i], result.decision)));
  filter();
}

function filter() {  // the top N matching labels of each card, and every decided one that matches
  const f = $("filter").value.trim().toLowerCase(), n = parseInt($("show").value, 10) || Infinity;
  for (const c of $("results").children) {
    let shown = 0, matching = 0;
    for (const row of c.querySelectorAll(".bar-row")) {
      const match = row.dataset.label.toLowerCase().includes(f);
      const visible = match && (shown < n || row.classList.contains("on"));
      row.hidden = !visible;
      matching += match;
      shown += visible;
    }
    const more = c.querySelector(".more");
    if (more) more.textContent = matching > shown ? `${matching - shown} more label(s) not shown` : "";
  }
}

const drop = $("drop"), input = $("file");
input.addEventListener("change", () => { predict(Array.from(input.files)); input.value = ""; });
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  predict(Array.from(e.dataTransfer.files));
});
document.addEventListener("paste", (e) => {
  const pasted = Array.from(e.clipboardData.files);
  if (pasted.length) predict(pasted);
});
for (const [id, other] of [["threshold", "top-k"], ["top-k", "threshold"]]) {
  $(id).addEventListener("input", () => { if ($(id).value) $(other).value = ""; });
  $(id).addEventListener("change", () => { if (files.length) predict(files); });
}
$("show").addEventListener("change", filter);
$("filter").addEventListener("input", filter);
loadSchema();"""

BODY = """<main><h1>mlic</h1><div class="meta" id="meta">reading the model description…</div>
<label id="drop" class="drop" for="file"><b>Drop images here</b>, paste them, or <u>choose files</u>
<input id="file" type="file" multiple
accept="image/png,image/jpeg,image/gif,image/bmp,image/tiff,image/webp"></label>
<div class="controls">
<label>threshold <input id="threshold" type="number" min="0" max="1" step="0.01"
placeholder="artifact's"></label>
<label>or top k <input id="top-k" type="number" min="1" step="1" placeholder="off"></label>
<label>labels shown <select id="show"><option value="10">10</option><option value="20" selected>20</option>
<option value="50">50</option><option value="0">all</option></select></label>
<input id="filter" type="search" placeholder="filter labels" aria-label="filter labels"></div>
<div id="error" class="error" role="alert" hidden></div>
<div id="status" class="meta" aria-live="polite"></div>
<div id="results" data-done="0"></div></main>"""

PAGE = (
    '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
    '<meta name="viewport" content="width=device-width, initial-scale=1"><title>mlic</title>'
    f"<style>{CSS}</style></head><body>{BODY}<script>{JS}</script></body></html>\n"
)
"""The page, as served."""
