"""Tests of mlic.data.images.bad_images: the list of skipped images, one line each."""

from __future__ import annotations

from mlic.data.images.bad_images import log_bad_image, read_bad_images


def test_bad_image_lines_stay_one_line_each(tmp_path):
    log = tmp_path / "bad.txt"
    log_bad_image(log, "a\tb.png", "a\tb.png: cannot decode image (two\nlines)")
    log_bad_image(log, "c.png", "no such file")
    log_bad_image(None, "d.png", "not written anywhere")
    assert read_bad_images(log) == {"a b.png": "cannot decode image (two lines)", "c.png": "no such file"}
