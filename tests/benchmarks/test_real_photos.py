"""benchmarks/real_photos.py on a few MultiDigits PNGs, so that the benchmark cannot rot between real runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import benchmark_script, write_png_split


@pytest.fixture(scope="module")
def real_photos():
    with benchmark_script("real_photos") as module:
        yield module


def test_both_columns_report_the_same_figures(real_photos, tmp_path, capsys):
    train = write_png_split(tmp_path, "train", 48)
    test = write_png_split(tmp_path, "test", 24)
    result = real_photos.main(["--data", str(train), "--test", str(test), "--backbone", "mlic_cnn",
                               "--image-size", "32", "--epochs", "1", "--top-k", "2",
                               "--out", str(tmp_path / "out")])  # fmt: skip
    mlic, loop = result["mlic"], result["loop"]
    figures = {"mAP", "micro_f1@rule", "micro_f1@0.5", "macro_f1@rule", "macro_f1@0.5", "top2"}
    assert figures <= set(mlic) and figures <= set(loop)
    assert 0.0 <= mlic["mAP"] <= 1.0 and 0.0 <= loop["mAP"] <= 1.0
    assert mlic["rule"] in {"fixed", "global", "per-label"} and loop["rule"] == "0.5"
    assert mlic["decision"]["policy"] == mlic["rule"]
    # a ratio for every figure both columns have (wall_s only when the loop's rounds above 0 s)
    assert set(result["mlic/loop"]) >= {"mAP", "micro_f1@rule", "train_images_per_s"}
    assert mlic["wall_s"] > 0 and loop["wall_s"] >= 0
    assert mlic["top2"]["words"] == loop["top2"]["words"] == mlic["top2_by_score"]["words"] > 0
    assert mlic["top_k_balance"] in (0.0, 0.25, 0.5, 0.75, 1.0)
    # the loop autocasts to bf16 only where the CPU runs it natively, as mlic's default precision does
    assert loop["precision"] == ("bf16" if real_photos.LOOP_BF16 else "fp32")
    assert mlic["precision"] == ("bf16-mixed" if real_photos.LOOP_BF16 else "32-true")


def test_holdout_takes_a_count_and_refuses_one_that_leaves_nothing(real_photos, tmp_path):
    data = write_png_split(tmp_path, "train", 40)
    args = real_photos.parse_args(["--data", str(data), "--holdout", "10"])
    _, test = real_photos.prepare(args, tmp_path / "out")
    held = Path(test).read_text().splitlines()
    assert 8 <= len(held) <= 12  # 10 images, give or take the stratification
    args = real_photos.parse_args(["--data", str(data), "--holdout", "40"])
    with pytest.raises(SystemExit, match=r"--holdout 40: .* has 40 images; hold out fewer"):
        real_photos.prepare(args, tmp_path / "out")
