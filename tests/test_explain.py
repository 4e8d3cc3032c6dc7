"""mlic.explain: overlays of the decided labels' maps, written per image, and encoded for the API."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from mlic.errors import ConfigError
from mlic.explain import drawn, encoded, explain_to_folder
from mlic.predict import Predictor


@pytest.fixture(scope="module")
def predictor(make_artifact, tmp_path_factory) -> Predictor:
    made = make_artifact(path=tmp_path_factory.mktemp("explain") / "artifact")
    return Predictor.from_path(made.path, batch_size=2, bad_images="skip")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> list:
    folder = tmp_path_factory.mktemp("pictures")
    rng = np.random.default_rng(0)
    paths = []
    for i, shape in enumerate([(40, 30, 3), (20, 20, 3), (25, 50, 3)]):
        paths.append(folder / f"pic {i}.png")
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(paths[-1])
    (folder / "broken.png").write_bytes(b"no")
    return [*paths, folder / "broken.png"]


def test_folder_gets_one_png_per_shown_output_and_a_record(predictor, files, tmp_path):
    records = list(explain_to_folder(predictor, files, tmp_path / "maps", ["bird"]))
    assert [r.get("error") is not None for r in records] == [False, False, False, True]
    for i, (record, path) in enumerate(zip(records[:3], files)):
        folder = tmp_path / "maps" / f"{i:04d}_pic_{i}"
        assert record["folder"] == str(folder) and record["method"] == "cam"
        assert json.loads((folder / "maps.json").read_text()) == record
        names = list(record["maps"])
        assert names[: len(record["labels"])] == record["labels"] and "bird" in names
        assert any(n.startswith("size=") for n in names)
        for file in record["maps"].values():
            with Image.open(file) as im:
                assert im.size == Image.open(path).size and im.mode == "RGB"
    assert "broken.png" in records[3]["error"]


def test_every_output_and_a_file_in_the_way(predictor, files, tmp_path):
    (record,) = explain_to_folder(predictor, files[:1], tmp_path / "all", every=True)
    assert list(record["maps"]) == ["cat", "dog", "bird", "size=s", "size=m", "size=l"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is not a folder"):
        list(explain_to_folder(predictor, files[:1], tmp_path / "file"))
    with pytest.raises(ConfigError, match="unknown label 'cow'"):
        list(explain_to_folder(predictor, files[:1], tmp_path / "x", ["cow"]))


def test_drawn_overlays_are_images_and_encode_to_png_urls(predictor, files):
    _, pictures = drawn(predictor, files[:2], ["dog"])
    assert pictures[0]["dog"].shape == (40, 30, 3) and pictures[0]["dog"].dtype == np.uint8
    urls = encoded(pictures[0], max_side=16)
    for url in urls.values():
        assert url.startswith("data:image/png;base64,")
        with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as im:
            assert max(im.size) == 16
