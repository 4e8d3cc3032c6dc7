"use strict";
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

async function showMap(i, name) {  // the label's map over image i (fetched once), or the image again
  const c = $("results").children[i], img = c.querySelector(".pic img"), note = c.querySelector(".map-note");
  const p = result.predictions[i];
  if (img.dataset.map === name) {
    img.src = urls[i];
    delete img.dataset.map;
    note.textContent = "click a label to see where it is";
    return;
  }
  if (!(p.maps && p.maps[name])) {
    note.textContent = `mapping ${name}…`;
    const form = new FormData(), q = new URLSearchParams(query().slice(1));
    form.append("files", files[i], files[i].name);
    q.set("explain", "true");
    q.set("labels", name);
    try {
      const answer = await readJson(await fetch(`predict?${q}`, {method: "POST", body: form}));
      p.maps = Object.assign(p.maps || {}, answer.predictions[0].maps);
    } catch (e) {
      note.textContent = `no map: ${e.message}`;
      return;
    }
  }
  img.src = p.maps[name];
  img.dataset.map = name;
  note.textContent = `map of ${name} (click it again for the image)`;
}

function card(p, url, d, i) {
  const c = el("section", "card"), pic = el("div", "pic"), body = el("div", "body"), img = el("img");
  img.src = url;
  img.alt = p.path || "uploaded image";
  pic.append(img, el("div", "name", p.path || "(no name)"), el("div", "map-note", "click a label to see where it is"));
  const clickable = (e, name) => {
    e.classList.add("mappable");
    e.title = `${e.title ? e.title + " · " : ""}click: map of ${name}`;
    e.addEventListener("click", () => showMap(i, name));
  };
  const chips = el("div", "chips");
  for (const name of p.labels) {
    const chip = el("span", "chip", name);
    clickable(chip, name);
    chips.append(chip);
  }
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
      clickable(row, `${name}=${a.class}`);
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
    clickable(row, name);
    bars.append(row);
  }
  if (scores.length) body.append(el("h3", null, "label probabilities"), bars, el("div", "more"));
  c.append(pic, body);
  return c;
}

function render() {
  $("results").replaceChildren(...result.predictions.map((p, i) => card(p, urls[i], result.decision, i)));
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
loadSchema();
