"""``mlic data inspect``'s text: ``describe``'s figures as tables for a terminal."""

from __future__ import annotations


def format_description(figures: dict, *, max_rows: int = 20) -> str:
    """``describe``'s figures as terminal text; tables longer than ``max_rows`` are cut, with a count."""
    lines = _overview(figures)
    lines += _label_table(figures, max_rows)
    lines += _pair_lines(figures)
    for a in figures["attributes"]:
        classes = ", ".join(f"{c} {n:,}" for c, n in a["classes"].items())
        lines.append(
            f"attribute {a['name']}: {classes}" + (f", unknown {a['unknown']:,}" if a["unknown"] else "")
        )
    lines += _file_lines(figures["files"], max_rows)
    return "\n".join(lines)


def _overview(f: dict) -> list[str]:
    lines = [f"data: {f['source'] or '(in memory)'}" + (f" ({f['format']})" if f["format"] else "")]
    lines.append(f"images       {f['images']:,}")
    per = f["labels_per_image"]
    lines.append(
        f"labels       {f['labels']:,}: cardinality {f['cardinality']:.3f} positives per image "
        f"(min {per['min']}, median {per['median']}, max {per['max']}), density {f['density']:.4f}"
        if per
        else f"labels       {f['labels']:,}"
    )
    lines.append(f"no positive  {f['images_without_labels']:,} images")
    sets = f["label_sets"]
    common = "; ".join(f"{{{', '.join(s['labels']) or 'none'}}} {s['images']:,}" for s in sets["most_common"])
    lines.append(
        f"label sets   {sets['distinct']:,} distinct" + (f"; most common: {common}" if common else "")
    )
    imb = f["imbalance"]
    if imb["ratio"] is not None:
        top, low = imb["most_frequent"], imb["rarest"]
        lines.append(
            f"imbalance    ratio {imb['ratio']:.1f} ({top['label']} {top['positive']:,} / "
            f"{low['label']} {low['positive']:,}), "
            f"mean IR {imb['mean_ir']:.2f}; {imb['rare_labels']:,} labels have fewer than "
            f"{imb['rare_below']} positives"
        )
    none = imb["without_positives"]
    if none["count"]:
        shown = ", ".join(none["labels"][:10]) + (
            f", ... ({none['count']:,} in all)" if none["count"] > 10 else ""
        )
        lines.append(f"no positives {shown}")
    u = f["unknown"]
    lines.append(
        f"unknown      {_percent(u['label_fraction'])} of label targets "
        f"({u['images_with_unknown_labels']:,} images), "
        f"{_percent(u['attribute_fraction'])} of attribute targets"
    )
    return lines


def _percent(x: float) -> str:
    """A share as a percentage with three significant digits, so that 0.003% does not read as 0.00%."""
    return f"{100 * x:.3g}%"


def _label_table(f: dict, max_rows: int) -> list[str]:
    rows = sorted(f["label_counts"], key=lambda r: -r["positive"])
    if not rows:
        return []
    width = max(12, *(len(r["label"]) for r in rows[:max_rows]))
    lines = ["", f"{'label':<{width}} {'positive':>10} {'negative':>10} {'unknown':>10} {'prevalence':>10}"]
    head, tail = (
        (rows, []) if len(rows) <= max_rows else (rows[: max_rows - max_rows // 4], rows[-(max_rows // 4) :])
    )
    for r in head + tail:
        if tail and r is tail[0]:
            lines.append(f"... {len(rows) - len(head) - len(tail):,} more labels ...")
        known = r["positive"] + r["negative"]
        share = _percent(r["positive"] / known) if known else "-"
        lines.append(
            f"{r['label']:<{width}} {r['positive']:>10,} {r['negative']:>10,} {r['unknown']:>10,} {share:>10}"
        )
    return [*lines, "(prevalence: positives over known targets)"]


def _pair_lines(f: dict) -> list[str]:
    if not f["pairs"]:
        return []
    lines = ["", "most frequent co-occurring pairs (images, Jaccard):"]
    for p in f["pairs"]:
        lines.append(f"  {' + '.join(p['labels'])}: {p['images']:,} ({p['jaccard']:.2f})")
    return [*lines, ""]


def _file_lines(files: dict | None, max_rows: int) -> list[str]:
    if files is None:
        return ["", "files: not checked"]
    in_memory = files["checked"] == "in-memory"
    how = {"header": "headers read; --full decodes every image", "full": "every image decoded"}
    size = f"{files['bytes'] / 1e6:,.1f} MB"
    head = (
        f"images in memory: {size}"
        if in_memory
        else f"files ({how[files['checked']]}): {files['files']:,}, {size}"
    )
    d = files["duplicates"]
    lines = ["", head, f"  {'missing':<12} {files['missing']['count']:,}"]
    lines += [f"    {p}" for p in files["missing"]["paths"][:max_rows]]
    lines.append(f"  {'corrupt':<12} {files['corrupt']['count']:,}")
    lines += [f"    {c['path']}: {c['error']}" for c in files["corrupt"]["files"][:max_rows]]
    what = "images" if in_memory else "files"
    lines.append(
        f"  {'duplicates':<12} {d['groups']:,} groups of identical {what}, {d['redundant_files']:,} redundant"
    )
    lines += [f"    {' = '.join(g)}" for g in d["examples"][:max_rows]]
    if files["duplicate_entries"]["count"]:
        lines.append(f"  listed more than once: {files['duplicate_entries']['count']:,} paths")
    if files["width"]:
        lines += [f"  {side:<12} {_min_median_max(files[side])}" for side in ("width", "height")]
        for key in ("common_sizes", "modes", "formats"):
            lines.append(
                f"  {key.replace('_', ' '):<12} " + ", ".join(f"{k} {v:,}" for k, v in files[key].items())
            )
    return lines


def _min_median_max(s: dict) -> str:
    return f"min {s['min']}, median {s['median']}, max {s['max']}"
