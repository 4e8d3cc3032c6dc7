"""The pointing game of label maps on MultiDigits, where the truth is known: is each map's peak on its digit?

    python benchmarks/pointing_game.py --artifact runs/demo          # a trained MultiDigits artifact
    python benchmarks/pointing_game.py --train runs/pointing        # train the default model first (minutes)
    python benchmarks/pointing_game.py --artifact runs/demo --method grad-cam

Every MultiDigits canvas holds one to four digits, one per quadrant
(``mlic.data.formats.demo.canvas_layout`` says which digit lies where). For
each test canvas, ``Predictor.explain`` maps every output at the canvas's
64 x 64 pixels. A **pair** is a canvas and a digit label present on it; it is a
hit when the peak (argmax) of that label's map lies in a quadrant that holds
that digit (a digit drawn twice on one canvas is one pair, hit by either
quadrant). ``in_box`` counts the stricter hit where the peak lies inside the
digit's own square. For the attribute ``largest``, the map of the canvas's
true class (small / medium / large) is a hit when its peak lies in a quadrant
holding a digit of that size, the largest; ``largest_two_or_more`` counts only
canvases with two digits or more, where the question is not trivial.

Prints one JSON object: the hit rates and counts, the map method, the number
of canvases, the artifact and the seed. Acceptance (issue 17): ``digit_rate``
>= 0.95 and ``largest_rate`` >= 0.90 for the default model.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import mlic
from mlic.data.formats.demo import QUADRANT, SIZES, canvas_layout, multidigits

BATCH = 256


def pointing_game(predictor, n: int = 2000, seed: int = 0, method: str | None = None) -> dict:
    """The pointing game of ``predictor`` (a MultiDigits artifact's) on ``n`` test canvases."""
    manifest = multidigits("test", n, seed=seed)
    layout = canvas_layout(n, "test", seed)
    schema = predictor.schema
    digit_columns = [schema.labels.index(f"digit_{d}") for d in range(10)]
    largest = schema.attribute_names.index("largest")
    sizes = schema.attributes[largest].classes
    wanted = [*(f"digit_{d}" for d in range(10)), *(f"largest={c}" for c in sizes)]
    pairs = hits = in_box = big = big_hits = big2 = big2_hits = 0
    used = ""
    for start in range(0, n, BATCH):
        rows = range(start, min(n, start + BATCH))
        maps = predictor.explain([manifest.pixels[i] for i in rows], wanted, method=method)
        used = maps.method
        for k, i in enumerate(rows):
            m = maps.maps[k]  # [10 + 3, 64, 64]
            peaks = m.reshape(len(m), -1).argmax(axis=1)
            py, px = np.divmod(peaks, m.shape[-1])
            quadrant = (py >= QUADRANT) * 2 + (px >= QUADRANT)
            where = layout[i]  # [4, (class, size, y0, x0)]
            for d in np.flatnonzero(manifest.labels[i, digit_columns] == 1):
                pairs += 1
                hits += bool(where[quadrant[d], 0] == d)
                boxes = where[where[:, 0] == d]
                size = np.array(SIZES)[boxes[:, 1]]
                inside = (boxes[:, 2] <= py[d]) & (py[d] < boxes[:, 2] + size)
                inside &= (boxes[:, 3] <= px[d]) & (px[d] < boxes[:, 3] + size)
                in_box += bool(inside.any())
            c = int(manifest.attributes[i, largest])
            q = quadrant[10 + c]
            hit = bool(where[q, 0] >= 0 and where[q, 1] == c)
            big, big_hits = big + 1, big_hits + hit
            if (where[:, 0] >= 0).sum() >= 2:
                big2, big2_hits = big2 + 1, big2_hits + hit
    return {
        "digit_rate": round(hits / max(pairs, 1), 4),
        "digit_in_box_rate": round(in_box / max(pairs, 1), 4),
        "largest_rate": round(big_hits / max(big, 1), 4),
        "largest_two_or_more_rate": round(big2_hits / max(big2, 1), 4),
        "pairs": pairs,
        "digit_hits": hits,
        "largest_canvases": big,
        "largest_two_or_more_canvases": big2,
        "method": used,
        "canvases": n,
        "seed": seed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--artifact", type=Path, help="A trained MultiDigits artifact (or run) directory.")
    group.add_argument("--train", type=Path, help="Train the default model into this run directory first.")
    parser.add_argument("--n", type=int, default=2000, help="Test canvases (default: the whole test split).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--method", help="cam, csra, attention or grad-cam (default: the head's own).")
    args = parser.parse_args()
    artifact = args.artifact or mlic.train(out=str(args.train), progress=False)
    predictor = mlic.load(artifact, batch_size=BATCH)
    started = time.perf_counter()
    figures = pointing_game(predictor, args.n, args.seed, args.method)
    figures |= {"artifact": str(predictor.artifact.path), "seconds": round(time.perf_counter() - started, 1)}
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
