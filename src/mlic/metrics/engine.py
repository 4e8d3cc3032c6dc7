"""Exact counts around each positive entry: the shared work of every rank-based metric.

Every rank-based figure needs, for each positive (relevant) entry, only the
number of known negatives of its column (AP, AUROC) or of its row (LRAP,
ranking loss, coverage, one-error, precision@k) that score at least as high
and exactly as high. Positives are sparse in multi-label data, so only they are
sorted:

1. :func:`positives` gathers them once (a sweep of ``y_true``), with an exact
   integer code per score that orders scores as the floats do and keeps ties
   (:func:`_codes`);
2. :func:`column_counts` / :func:`row_counts` sweep blocks of columns / rows,
   mark the entries that score at least the lowest positive of their column /
   row (one exact comparison per entry, no float offsets), and only for those
   candidates find the number of positives of the same column / row at or
   below them, by one binary search of the block's positives (a few thousand
   codes, in cache);
3. histograms of these positions give every positive its counts by prefix sums;
   the positives, candidates themselves, are taken out at the end (each sits,
   tied, at the end of its run of equal scores), so ``y_true`` is read per
   candidate only when it holds unknowns.

The cost is one comparison per entry plus O(log P) per candidate, never a sort
of a column or a row; with scores that rank positives high, candidates are a
few percent of the entries (4% at 50,000 x 10,000 in ``benchmarks/metrics.py``:
2.8 s for every figure). Exact in every case (ties, dense positives, unknowns):
uninformative scores only make more candidates, hence more time (random
scores: 8 s at 50,000 x 1,000 against 1 s). Memory: the inputs, about 250 bytes
per positive entry, and O(block) per sweep.

numpy only, measured on the 2-core benchmark machine: torch's CPU
``searchsorted`` took 52 ns per query against numpy's 34 (64 keys), and
``torch.sort`` 5.9 s against ``np.sort``'s 1.6 s (1,000 x 50,000 float32); a full
``np.sort`` per column would cost ~35 ns per entry, 20 s at 50,000 x 10,000.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from mlic.metrics.blocks import column_blocks, row_blocks

_SHIFT = 32  # composite key: group (column or row) << 32 | code of the score


class Positives(NamedTuple):
    """The positive entries (row-major order) and the counts every figure needs."""

    rows: np.ndarray  # int64 [n_pos]
    cols: np.ndarray  # int64 [n_pos]
    values: np.ndarray  # [n_pos], the scores' dtype
    codes: np.ndarray  # int64 [n_pos], see _codes
    cuts: np.ndarray | None  # sorted distinct positive scores (float64) when codes need them
    per_row: np.ndarray  # int64 [n_samples]: known positives
    per_col: np.ndarray  # int64 [n_labels]
    unknown_rows: np.ndarray  # int64 [n_samples]: entries that are -1
    unknown_cols: np.ndarray  # int64 [n_labels]


def _codes(values: np.ndarray, cuts: np.ndarray | None) -> np.ndarray:
    """int64 codes in [0, 2**32) that compare as ``values`` do against every positive score.

    float32 scores: the IEEE-754 bits made monotone (-0.0 first made +0.0), so
    distinct scores keep distinct codes and equal scores equal codes. Other
    dtypes: ``2 * (number of cuts below v) + (v is a cut)``, with ``cuts`` the
    sorted distinct positive scores; this keeps order and equality against every
    cut, which is all the counts compare.
    """
    if cuts is None:
        bits = (values + np.float32(0)).view(np.uint32).astype(np.int64)
        return np.where(bits >= 1 << 31, (1 << 32) - 1 - bits, bits + (1 << 31))
    v = values.astype(np.float64, copy=False)
    below = np.searchsorted(cuts, v, side="left")
    if cuts.size == 0:
        return 2 * below
    return 2 * below + (cuts[np.minimum(below, cuts.size - 1)] == v)


def positives(y_true: np.ndarray, y_score: np.ndarray) -> Positives:
    """Gather the positive entries of checked ``y_true`` (int8) with their scores and codes."""
    n, n_labels = y_true.shape
    flat = [np.zeros(0, np.int64)]
    unknown_rows, unknown_cols = np.zeros(n, np.int64), np.zeros(n_labels, np.int64)
    has_unknown = y_true.size > 0 and y_true.min() < 0
    if y_true.size:
        for rows in row_blocks(n, n_labels):
            block = y_true[rows]
            nonzero = np.flatnonzero(block != 0)  # 8x faster than on int8 itself
            value = block.reshape(-1)[nonzero]
            flat.append(nonzero[value == 1] + rows.start * n_labels)
            if has_unknown:
                unknown = nonzero[value == -1]
                unknown_rows[rows] += np.bincount(unknown // n_labels, minlength=rows.stop - rows.start)
                unknown_cols += np.bincount(unknown % n_labels, minlength=n_labels)
    flat = np.concatenate(flat)
    rows, cols = np.divmod(flat, max(n_labels, 1))
    values = y_score[rows, cols]
    cuts = None if y_score.dtype == np.float32 else np.unique(values.astype(np.float64))
    return Positives(
        rows=rows,
        cols=cols,
        values=values,
        codes=_codes(values, cuts),
        cuts=cuts,
        per_row=np.bincount(rows, minlength=n),
        per_col=np.bincount(cols, minlength=n_labels),
        unknown_rows=unknown_rows,
        unknown_cols=unknown_cols,
    )


def _gather(a: np.ndarray, flat: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """``a[i, j]``, through the flat indices ``flat`` when ``a`` is C-contiguous (4x faster)."""
    return a.reshape(-1).take(flat) if a.flags.c_contiguous else a[i, j]


def _starts(counts: np.ndarray) -> np.ndarray:
    out = np.zeros(counts.size + 1, np.int64)
    np.cumsum(counts, out=out[1:])
    return out


def _round_down(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``x`` (float64) in ``dtype``, rounded towards -inf: ``score >= result`` keeps every ``score >= x``."""
    with np.errstate(over="ignore"):  # beyond the dtype's range: +-inf, then the largest finite
        out = x.astype(dtype)
    high = out.astype(np.float64) > x
    out[high] = np.nextafter(out[high], dtype.type(-np.inf))
    return out


def _first_values(values: np.ndarray, start: np.ndarray, fill_dtype: np.dtype) -> np.ndarray:
    """The first value of each group (``+inf`` for empty groups)."""
    out = np.full(start.size - 1, np.inf, dtype=fill_dtype)
    has = start[1:] > start[:-1]
    out[has] = values[start[:-1][has]]
    return out


class ColumnCounts(NamedTuple):
    """Per positive, in (column, score) order, and the thresholded counts of negatives."""

    cols: np.ndarray  # int64 [n_pos]
    values: np.ndarray  # scores [n_pos]
    positives_at_or_above: np.ndarray  # int64 [n_pos]: positives of the column scoring >= this one
    negatives_at_or_above: np.ndarray  # int64 [n_pos]: known negatives of the column scoring >= it
    negatives_above: np.ndarray  # int64 [n_pos]: ... scoring > it
    fp_cols: np.ndarray | None  # int64 [n_labels]: known negatives with score >= threshold
    fp_rows: np.ndarray | None  # int64 [n_samples]


def column_counts(
    y_true: np.ndarray, y_score: np.ndarray, pos: Positives, thresholds: np.ndarray | None = None
) -> ColumnCounts:
    """Counts of known negatives at or above each positive of its column (and at the thresholds).

    Candidates are the known entries scoring at least the lowest positive of their
    column (or its threshold, if lower). The positives are candidates too and are
    taken out of the histograms afterwards (each sits, tied, at the end of its run
    of equal scores), which spares reading ``y_true`` when nothing is unknown.
    """
    n, n_labels = y_true.shape
    order = np.lexsort((pos.codes, pos.cols))  # by column, then by score
    cols, values = pos.cols[order], pos.values[order]
    keys = (cols << _SHIFT) | pos.codes[order]
    start = _starts(pos.per_col)
    lowest = _first_values(values, start, y_score.dtype)  # the lowest positive score per column
    bound = lowest.astype(np.float64)
    if thresholds is not None:
        bound = np.minimum(bound, thresholds)
    bound = _round_down(bound, y_score.dtype)  # candidates: score >= bound (a superset, filtered exactly)
    below_lowest = bound < lowest  # columns whose candidates may score below every positive
    has_unknown = bool(pos.unknown_cols.any())
    hist = np.zeros(cols.size + n_labels, np.int64)  # column c: slots start[c] + c ... start[c + 1] + c
    ties = np.zeros_like(hist)
    hits_cols, hits_rows = np.zeros(n_labels, np.int64), np.zeros(n, np.int64)
    for block in column_blocks(n, n_labels) if y_true.size else ():
        c0, c1 = block.start, block.stop
        mask = np.empty((n, c1 - c0), dtype=bool)
        np.greater_equal(y_score[:, block], bound[block], out=mask)
        i, j = np.divmod(np.flatnonzero(mask), c1 - c0)
        j += c0
        flat = i * n_labels + j
        if has_unknown:
            known = _gather(y_true, flat, i, j) >= 0
            i, j, flat = i[known], j[known], flat[known]
        v = _gather(y_score, flat, i, j)
        if thresholds is not None:
            hit = v >= thresholds[j]
            hits_cols[block] += np.bincount(j[hit] - c0, minlength=c1 - c0)
            hits_rows += np.bincount(i[hit], minlength=n)
        if below_lowest[block].any():
            keep = v >= lowest[j]
            j, v = j[keep], v[keep]
        lo, hi = start[c0], start[c1]
        comp = (j << _SHIFT) | _codes(v, pos.cuts)
        _histogram(keys, lo, hi, comp, j, lo + c0, hi - lo + c1 - c0, hist, ties)
    run_start, run_end = np.searchsorted(keys, keys, "left"), np.searchsorted(keys, keys, "right")
    own = np.bincount(run_end + cols, minlength=hist.size)  # the positives' own slots
    hist -= own
    ties -= own
    at_or_above, above = _counts_at(cols, start, run_end, hist, ties)
    fp_cols = fp_rows = None
    if thresholds is not None:
        tp = pos.values >= thresholds[pos.cols]
        fp_cols = hits_cols - np.bincount(pos.cols[tp], minlength=n_labels)
        fp_rows = hits_rows - np.bincount(pos.rows[tp], minlength=n)
    return ColumnCounts(
        cols=cols,
        values=values,
        positives_at_or_above=start[cols + 1] - run_start,
        negatives_at_or_above=at_or_above,
        negatives_above=above,
        fp_cols=fp_cols,
        fp_rows=fp_rows,
    )


def _histogram(keys, lo, hi, comp, group, offset, size, hist, ties) -> np.ndarray:
    """Add candidates (composite keys ``comp`` of ``group``) to the histograms of their positions.

    A candidate's position is the number of positives of its group scoring at or
    below it (a binary search of the block's positives ``keys[lo:hi]``); it lands
    in slot ``g + group`` so that each group owns P + 1 slots, and the block owns
    ``hist[offset : offset + size]``. ``ties`` counts candidates equal to the
    positive just below them. Returns a mask of the tied candidates and their slots.
    """
    g = np.searchsorted(keys[lo:hi], comp, side="right") + lo
    slot = g + group
    hist[offset : offset + size] += np.bincount(slot - offset, minlength=size)
    tied = keys[g - 1] == comp  # g == 0 reads the last key, larger than comp: not tied
    ties[offset : offset + size] += np.bincount(slot[tied] - offset, minlength=size)
    return tied, slot[tied]


def _counts_at(groups, start, run_end, hist, ties) -> tuple[np.ndarray, np.ndarray]:
    """Per positive: candidates of its group at or above it, and strictly above it."""
    csum = np.cumsum(hist)
    at_or_above = csum[start[groups + 1] + groups] - csum[run_end + groups - 1]
    return at_or_above, at_or_above - ties[run_end + groups]


class RowCounts(NamedTuple):
    """Per positive, in (row, score, column) order."""

    rows: np.ndarray  # int64 [n_pos]
    cols: np.ndarray  # int64 [n_pos]
    positives_at_or_above: np.ndarray  # positives of the row scoring >= this one
    positives_above: np.ndarray  # ... scoring > it
    positives_tied_before: np.ndarray  # ... tied with it, in a lower column
    negatives_at_or_above: np.ndarray  # known negatives of the row scoring >= it
    negatives_above: np.ndarray  # ... scoring > it
    negatives_tied_before: np.ndarray  # ... tied with it, in a lower column


def row_counts(y_true: np.ndarray, y_score: np.ndarray, pos: Positives) -> RowCounts:
    """Counts of known negatives at or above each positive of its row, and ties before it.

    Candidates are the known entries scoring at least the lowest positive of their
    row; as in :func:`column_counts`, the positives are taken out afterwards.
    """
    n, n_labels = y_true.shape
    composite = (pos.rows << _SHIFT) | pos.codes
    order = np.argsort(composite, kind="stable")  # by row, then score, then column
    rows, cols, keys = pos.rows[order], pos.cols[order], composite[order]
    start = _starts(pos.per_row)
    lowest = _first_values(pos.values[order], start, y_score.dtype)
    has_unknown = bool(pos.unknown_rows.any())
    hist = np.zeros(rows.size + n, np.int64)  # row r: slots start[r] + r ... start[r + 1] + r
    ties = np.zeros_like(hist)
    run_start, run_end = np.searchsorted(keys, keys, "left"), np.searchsorted(keys, keys, "right")
    slot = run_end + rows  # where each positive sits, and the candidates tied with it
    tied_before = np.zeros(rows.size, np.int64)  # candidates tied with a positive, in a lower column
    for block in row_blocks(n, n_labels) if y_true.size else ():
        r0, r1 = block.start, block.stop
        mask = np.empty((r1 - r0, n_labels), dtype=bool)
        np.greater_equal(y_score[block], lowest[block, None], out=mask)
        flat = np.flatnonzero(mask) + r0 * n_labels
        i, j = np.divmod(flat, n_labels)
        if has_unknown:
            known = _gather(y_true, flat, i, j) >= 0
            i, j, flat = i[known], j[known], flat[known]
        comp = (i << _SHIFT) | _codes(_gather(y_score, flat, i, j), pos.cuts)
        lo, hi = start[r0], start[r1]
        tied, slots = _histogram(keys, lo, hi, comp, i, lo + r0, hi - lo + r1 - r0, hist, ties)
        if slots.size:  # rows do not straddle blocks, so ties are settled block by block
            by_slot = np.sort(slots * n_labels + j[tied])
            here = slot[lo:hi] * n_labels
            tied_before[lo:hi] = np.searchsorted(by_slot, here + cols[lo:hi]) - np.searchsorted(by_slot, here)
    own = np.bincount(slot, minlength=hist.size)  # the positives' own slots
    hist -= own
    ties -= own
    at_or_above, above = _counts_at(rows, start, run_end, hist, ties)
    positives_tied_before = np.arange(rows.size) - run_start  # positives sort by column within ties
    return RowCounts(
        rows=rows,
        cols=cols,
        positives_at_or_above=start[rows + 1] - run_start,
        positives_above=start[rows + 1] - run_end,
        positives_tied_before=positives_tied_before,
        negatives_at_or_above=at_or_above,
        negatives_above=above,
        negatives_tied_before=tied_before - positives_tied_before,
    )
