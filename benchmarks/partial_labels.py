"""How much test mAP each loss and missing-label policy keeps when training positives are hidden.

    python benchmarks/partial_labels.py                       # the whole grid (~20 trainings)
    python benchmarks/partial_labels.py --rates 0 0.5 --settings bce hill --jobs 2
    python benchmarks/partial_labels.py --results runs/partial.jsonl   # resumable

Each run trains the default MultiDigits model (``mlic.train``, every option
at its default except those of the setting) with a share of the positive
labels of its training and validation sets hidden (``hide_positives``):

- **silent**: hidden positives are written as negatives, the common real
  case where nobody knows which labels are missing. Settings differ in the
  label loss (``bce``, ``asl``, ``hill``, ``splc``, ...).
- **marked**: hidden positives are marked unknown (-1). Settings differ in the
  policy for unknowns (``--missing ignore`` masks them, ``selective`` ...).

The test split is always fully labelled. Each run prints test mAP; the
summary gives it as a share of the full-label mAP (the default setting,
``bce`` with nothing hidden). Runs finished in ``--results`` are not run
again, so a killed benchmark continues where it stopped. With ``--jobs N``,
N runs share the cores (torch threads = cores / N).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# name -> (how hidden positives are written, training options)
SETTINGS: dict[str, tuple[str, dict]] = {
    "bce": ("negative", {}),
    "asl": ("negative", {"loss": "asl"}),
    "hill": ("negative", {"loss": "hill"}),
    "splc": ("negative", {"loss": "splc"}),
    "focal": ("negative", {"loss": "focal"}),
    "bce-neg0.5": ("negative", {"neg_weight": 0.5}),
    "ignore": ("unknown", {"missing": "ignore"}),
    "selective": ("unknown", {"missing": "selective"}),
    "negative": ("unknown", {"missing": "negative"}),
}
DEFAULT_SETTINGS = ("bce", "asl", "hill", "splc", "ignore")
RATES = (0.0, 0.3, 0.5, 0.7)
REFERENCE = ("bce", 0.0)


def run_one(setting: str, rate: float, max_epochs: int | None, seed: int) -> dict:
    """Train one setting at one hidden share in this process; return its test figures."""
    import mlic

    hidden_as, options = SETTINGS[setting]
    out = tempfile.mkdtemp(prefix=f"mlic-partial-{setting}-{rate}-")
    options = {**options, "out": out, "progress": False, "seed": seed,
               "hide_positives": rate, "hidden_as": hidden_as}  # fmt: skip
    if max_epochs:
        options["max_epochs"] = max_epochs
    started = time.perf_counter()
    artifact = mlic.train(**options)
    figures = mlic.evaluate(artifact, "demo")
    return {
        "setting": setting,
        "hidden": rate,
        "hidden_as": hidden_as if rate else "-",
        "options": SETTINGS[setting][1],
        "test_mAP": round(figures["mAP"], 5),
        "test_micro_f1": round(figures["micro_f1"], 5),
        "seconds": round(time.perf_counter() - started, 1),
    }


def grid(settings: list[str], rates: list[float]) -> list[tuple[str, float]]:
    """Every (setting, rate); at 0% hidden every setting of one loss is the same run, so run it once."""
    runs = [REFERENCE]
    for setting in settings:
        hidden_as, options = SETTINGS[setting]
        for rate in rates:
            same_as_reference = rate == 0.0 and (hidden_as == "unknown" or not options)
            if not same_as_reference and (setting, rate) not in runs:
                runs.append((setting, rate))
    return runs


def child(setting: str, rate: float, args: argparse.Namespace, threads: int) -> dict:
    command = [sys.executable, __file__, "--one", "--settings", setting, "--rates", str(rate),
               "--seed", str(args.seed)]  # fmt: skip
    if args.max_epochs:
        command += ["--max-epochs", str(args.max_epochs)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MLIC_BENCH_THREADS": str(threads)}
    out = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if out.returncode:
        return {"setting": setting, "hidden": rate, "error": out.stderr.strip()[-2000:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def summary(results: list[dict]) -> dict:
    """Each run's test mAP as a share of the reference's, and the best setting per case."""
    found = [r for r in results if (r["setting"], r["hidden"]) == REFERENCE and "test_mAP" in r]
    if not found:
        return {}
    full = found[0]["test_mAP"]
    for r in results:
        if "test_mAP" in r:
            r["share_of_full"] = round(r["test_mAP"] / full, 4)
    best: dict = {}
    for r in results:
        if "share_of_full" not in r or not r["hidden"]:
            continue
        key = f"{r['hidden_as']} {round(100 * r['hidden'])}%"
        if key not in best or r["share_of_full"] > best[key]["share_of_full"]:
            best[key] = {"setting": r["setting"], "share_of_full": r["share_of_full"]}
    return {"full_label_mAP": full, "best": dict(sorted(best.items()))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", default=list(DEFAULT_SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--rates", nargs="+", type=float, default=list(RATES))
    parser.add_argument("--max-epochs", type=int, default=None, help="default: mlic train's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1, help="runs at once, sharing the cores")
    parser.add_argument("--results", default=None, help="JSON lines of finished runs (read and appended)")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a child process's run
    args = parser.parse_args()

    if args.one:
        import torch

        torch.set_num_threads(int(os.environ.get("MLIC_BENCH_THREADS", torch.get_num_threads())))
        print(json.dumps(run_one(args.settings[0], args.rates[0], args.max_epochs, args.seed)))
        return

    started, load_before = time.perf_counter(), os.getloadavg()
    done: dict[tuple[str, float], dict] = {}
    results_file = Path(args.results) if args.results else None
    if results_file and results_file.is_file():
        for line in results_file.read_text().splitlines():
            r = json.loads(line)
            if "test_mAP" in r:
                done[(r["setting"], r["hidden"])] = r
    runs = [run for run in grid(args.settings, args.rates) if run not in done]
    threads = max(1, (os.cpu_count() or 1) // args.jobs)

    def work(run: tuple[str, float]) -> dict:
        result = child(*run, args, threads)
        print(json.dumps(result), file=sys.stderr, flush=True)
        if results_file and "test_mAP" in result:
            with results_file.open("a") as f:  # one short line per append: a killed run loses at most it
                f.write(json.dumps(result) + "\n")
        return result

    with ThreadPoolExecutor(args.jobs) as pool:
        fresh = list(pool.map(work, runs))
    wanted = set(grid(args.settings, args.rates))
    results = [r for key, r in done.items() if key in wanted] + fresh
    results.sort(key=lambda r: (r["setting"], r["hidden"]))
    print(json.dumps({
        "benchmark": "partial_labels",
        "data": "MultiDigits (default sizes); hidden positives in train and validation, full test labels",
        "max_epochs": args.max_epochs or "default",
        "seed": args.seed,
        "jobs": args.jobs,
        "cpu_cores": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in load_before],
        "wall_seconds": round(time.perf_counter() - started, 1),
        **summary(results),
        "results": results,
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
