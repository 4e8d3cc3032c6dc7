"""Tests of mlic.predict on a tiny random-weight artifact: probabilities, decisions, inputs and errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import mlic
from mlic.data.manifest import Manifest
from mlic.errors import ConfigError, DataError
from mlic.predict import Predictor, find_images, load
from mlic.schema import Attribute, LabelSchema

SCHEMA = LabelSchema(
    ("cat", "dog", "bird", "fish"),
    (Attribute("size", ("s", "m", "l")), Attribute("indoor", ("no", "yes"))),
)


# Label "cat" is always decided (p >= 0), "dog" never (p < 1), the others by their scores.
THRESHOLDS = np.array([0.0, 1.0, 0.5, 0.45])


@pytest.fixture(scope="module")
def artifact_dir(make_artifact, tmp_path_factory) -> Path:
    def spread(model):  # spread the scores so that decisions differ between labels and images
        model.head.fc.weight.mul_(20)

    path = tmp_path_factory.mktemp("predict") / "run" / "artifact"
    return make_artifact(SCHEMA, decision=THRESHOLDS, tweak=spread, path=path).path


@pytest.fixture(scope="module")
def predictor(artifact_dir) -> Predictor:
    return Predictor.from_path(artifact_dir)


def arrays(n: int = 5, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    shapes = [(32, 32, 3), (40, 24, 3), (17, 50), (64, 64), (33, 33, 3)]
    return [rng.integers(0, 256, shapes[i % len(shapes)], dtype=np.uint8) for i in range(n)]


@pytest.fixture(scope="module")
def path_probs(predictor, image_files):
    """Probabilities of the image files, computed once."""
    return predictor.predict_proba(image_files[0])


@pytest.fixture(scope="module")
def image_files(tmp_path_factory) -> tuple[list[Path], list[np.ndarray]]:
    folder = tmp_path_factory.mktemp("images")
    pixels = arrays()
    paths = []
    for i, a in enumerate(pixels):
        paths.append(folder / f"{i}.png")
        Image.fromarray(a).save(paths[-1])
    return paths, pixels


# -- predict ---------------------------------------------------------------------------------------
def check_records(records: list[dict], probs, decided: np.ndarray) -> None:
    for i, r in enumerate(records):
        assert set(r) == {"path", "labels", "scores", "attributes"}
        assert r["labels"] == [SCHEMA.labels[j] for j in np.flatnonzero(decided[i])]
        assert list(r["scores"]) == list(SCHEMA.labels)
        np.testing.assert_allclose(list(r["scores"].values()), probs.labels[i], atol=1e-6)
        assert list(r["attributes"]) == ["size", "indoor"]
        for a, p in zip(SCHEMA.attributes, probs.attributes):
            k = int(p[i].argmax())
            assert r["attributes"][a.name]["class"] == a.classes[k]
            assert r["attributes"][a.name]["probability"] == pytest.approx(p[i, k], abs=1e-6)


def test_predict_paths(predictor, image_files):
    paths, _ = image_files
    records = predictor.predict(paths)
    assert len(records) == len(paths)
    assert [r["path"] for r in records] == [str(p) for p in paths]
    probs = predictor.predict_proba(paths)
    decided = probs.labels >= THRESHOLDS
    check_records(records, probs, decided)
    assert decided[:, 0].all() and not decided[:, 1].any()
    # The scores vary between images, so the decisions are not a constant answer.
    assert probs.labels.std(axis=0)[2:].min() > 0.01


def test_predict_paths_pil_images_and_arrays_agree(predictor, image_files):
    paths, pixels = image_files
    by_path = predictor.predict(paths)
    by_array = predictor.predict(pixels)
    by_pil = predictor.predict([Image.fromarray(a) for a in pixels])
    by_str = predictor.predict([str(p) for p in paths])
    for records in (by_array, by_pil):
        assert [r["path"] for r in records] == [None] * len(pixels)
    for a, b, c, d in zip(by_path, by_array, by_pil, by_str):
        assert a["scores"] == b["scores"] == c["scores"] == d["scores"]
        assert a["labels"] == b["labels"] == c["labels"]
        assert a["attributes"] == b["attributes"] == c["attributes"]


def test_predict_uint8_tensor(predictor, image_files):
    _, pixels = image_files
    tensor = torch.from_numpy(pixels[0]).permute(2, 0, 1).contiguous()
    assert predictor.predict([tensor])[0]["scores"] == predictor.predict([pixels[0]])[0]["scores"]


def test_predict_matches_the_model(artifact_dir, predictor):
    """Scores are the sigmoid of the model's logits on the resized image."""
    a = arrays(1, seed=4)[0]
    assert a.shape == (32, 32, 3)  # already the input size: no resizing
    model = mlic.load_artifact(artifact_dir).build_model()
    with torch.no_grad():
        logits = model(torch.from_numpy(a).permute(2, 0, 1)[None])
    expected = torch.sigmoid(logits[0, :4]).numpy()
    np.testing.assert_allclose(predictor.predict_proba([a]).labels[0], expected, rtol=1e-5)


def test_predict_batches_agree(artifact_dir, image_files):
    paths, _ = image_files
    one = Predictor.from_path(artifact_dir, batch_size=1).predict_proba(paths)
    many = Predictor.from_path(artifact_dir, batch_size=64).predict_proba(paths)
    np.testing.assert_allclose(one.labels, many.labels, atol=1e-5)


def test_predict_manifest_matches_predict(predictor):
    pixels = np.stack([a for a in arrays(5, seed=2) if a.shape == (32, 32, 3)] * 2)
    n = len(pixels)
    manifest = Manifest(
        SCHEMA, [f"m{i}" for i in range(n)], np.zeros((n, 4)), np.zeros((n, 2)), pixels=pixels
    )
    np.testing.assert_array_equal(
        predictor.predict_manifest(manifest).labels, predictor.predict_proba(list(pixels)).labels
    )


def test_predict_nothing(predictor):
    assert predictor.predict([]) == []


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_threshold_override(predictor, image_files, path_probs, threshold):
    paths, _ = image_files
    probs = path_probs
    records = predictor.predict(paths, threshold=threshold)
    check_records(records, probs, probs.labels >= threshold)


def test_threshold_override_bounds(predictor, image_files):
    paths, _ = image_files
    assert all(r["labels"] == list(SCHEMA.labels) for r in predictor.predict(paths, threshold=0.0))
    assert all(r["labels"] == [] for r in predictor.predict(paths, threshold=1.0))


@pytest.mark.parametrize("k", [1, 2, 3])
def test_top_k(predictor, image_files, path_probs, k):
    paths, _ = image_files
    probs = path_probs
    records = predictor.predict(paths, top_k=k)
    for i, r in enumerate(records):
        assert len(r["labels"]) == k
        best = sorted(np.argsort(-probs.labels[i], kind="stable")[:k])
        assert r["labels"] == [SCHEMA.labels[j] for j in best]


def test_top_k_above_the_number_of_labels_gives_every_label(predictor, image_files):
    paths, _ = image_files
    assert all(r["labels"] == list(SCHEMA.labels) for r in predictor.predict(paths[:2], top_k=10))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"top_k": 0}, "top-k must be at least 1, got 0"),
        ({"top_k": -2}, "top-k must be at least 1, got -2"),
        ({"threshold": 1.5}, r"threshold must lie in \[0, 1\], got 1.5"),
        ({"threshold": -0.1}, r"threshold must lie in \[0, 1\], got -0.1"),
    ],
)
def test_bad_decision_options(predictor, image_files, kwargs, message):
    paths, _ = image_files
    with pytest.raises(ConfigError, match=message):
        predictor.predict(paths[:1], **kwargs)


# -- inputs ----------------------------------------------------------------------------------------
def test_non_uint8_array_is_refused(predictor):
    with pytest.raises(DataError, match=r"must be uint8.*float32"):
        predictor.predict([np.zeros((8, 8, 3), dtype=np.float32)])
    with pytest.raises(DataError, match=r"must be uint8.*int64"):
        predictor.predict([np.zeros((8, 8), dtype=np.int64)])


def test_unsupported_input_type_is_refused(predictor):
    with pytest.raises(DataError, match="cannot use list as an image"):
        predictor.predict([[[0, 0, 0]]])
    with pytest.raises(DataError, match="cannot use Tensor"):
        predictor.predict([torch.zeros(3, 8, 8)])  # float tensors are not images


@pytest.mark.parametrize("shape", [(8, 8, 4), (8,)], ids=["four-channels", "one-dimensional"])
def test_uint8_array_of_wrong_shape_is_refused(predictor, shape):
    with pytest.raises(DataError, match=r"\[H, W\] or \[H, W, 3\]"):
        predictor.predict([np.zeros(shape, dtype=np.uint8)])


def test_missing_image_file_names_the_path(predictor, tmp_path):
    with pytest.raises(DataError, match=r"gone\.png"):
        predictor.predict([tmp_path / "gone.png"])


# -- find_images -----------------------------------------------------------------------------------
def test_find_images_recursive_sorted_images_only(tmp_path):
    for name in ["b.png", "a.JPG", "sub/c.webp", "sub/deeper/d.tif", "folder.png/e.jpeg", "sub/z.bmp"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    for name in ["notes.txt", "sub/labels.json", "sub/deeper/model.safetensors", "noext"]:
        (tmp_path / name).write_bytes(b"")
    found = find_images([tmp_path])
    assert found == [
        tmp_path / "a.JPG",
        tmp_path / "b.png",
        tmp_path / "folder.png" / "e.jpeg",
        tmp_path / "sub" / "c.webp",
        tmp_path / "sub" / "deeper" / "d.tif",
        tmp_path / "sub" / "z.bmp",
    ]


def test_find_images_keeps_files_as_given(tmp_path):
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "x.png").write_bytes(b"")
    (tmp_path / "scan.raw").write_bytes(b"")
    (tmp_path / "b.png").write_bytes(b"")
    found = find_images([str(tmp_path / "b.png"), tmp_path / "dir", tmp_path / "scan.raw"])
    assert found == [tmp_path / "b.png", tmp_path / "dir" / "x.png", tmp_path / "scan.raw"]
    assert find_images([tmp_path / "dir" / "x.png"]) == [tmp_path / "dir" / "x.png"]
    assert find_images([]) == []


def test_find_images_missing_path(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    with pytest.raises(DataError, match="no such file or folder") as info:
        find_images([tmp_path / "a.png", tmp_path / "missing"])
    assert str(tmp_path / "missing") in str(info.value)


# -- load ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["artifact", "run"])
def test_mlic_load(artifact_dir, image_files, which):
    path = artifact_dir if which == "artifact" else artifact_dir.parent
    predictor = mlic.load(path)
    assert isinstance(predictor, mlic.Predictor)
    assert predictor.schema == SCHEMA
    np.testing.assert_array_equal(predictor.artifact.thresholds, THRESHOLDS)
    assert load(str(path)).artifact.path == artifact_dir
    paths, _ = image_files
    assert len(predictor.predict(paths[:2])) == 2


def test_mlic_load_of_a_non_artifact(tmp_path):
    with pytest.raises(mlic.ArtifactError):
        mlic.load(tmp_path)


# -- explain ---------------------------------------------------------------------------------------
def test_explain_maps_every_output_at_each_images_size(predictor, image_files):
    paths, pixels = image_files
    maps = predictor.explain(paths)
    assert maps.names == [*SCHEMA.labels, "size=s", "size=m", "size=l", "indoor=no", "indoor=yes"]
    assert maps.method == "cam" and maps.errors == [None] * len(paths)
    for m, image, a in zip(maps.maps, maps.images, pixels):
        assert m.shape == (9, *a.shape[:2]) and m.dtype == np.float32 and image.shape == (*a.shape[:2], 3)
    probs = predictor.predict_proba(paths)
    np.testing.assert_allclose(maps.probabilities.labels, probs.labels, atol=1e-5)
    np.testing.assert_array_equal(maps.decided, predictor.decide(probs))


def test_explain_chosen_outputs_input_resolution_and_a_size_cap(predictor, image_files):
    paths, _ = image_files
    every = predictor.explain(paths[:2], resolution="input")
    some = predictor.explain(paths[:2], ["dog", "size", "indoor=yes"], resolution="input")
    assert some.names == ["dog", "size=s", "size=m", "size=l", "indoor=yes"]
    np.testing.assert_allclose(some.maps[0], every.maps[0][[1, 4, 5, 6, 8]], atol=1e-6)
    assert every.maps[1].shape == (9, 32, 32)
    big = predictor.explain([np.zeros((100, 300, 3), np.uint8)], ["cat"], max_side=60)
    assert big.maps[0].shape == (1, 20, 60) and big.images[0].shape == (20, 60, 3)


def test_explain_names_unknown_labels_and_bad_options(predictor):
    with pytest.raises(ConfigError, match="unknown label 'dgo'; did you mean 'dog'"):
        predictor.explain([np.zeros((8, 8), np.uint8)], ["dgo"])
    with pytest.raises(ConfigError, match="resolution must be"):
        predictor.explain([np.zeros((8, 8), np.uint8)], resolution="screen")


def test_explain_skips_or_names_unreadable_files(artifact_dir, image_files, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    paths = [image_files[0][0], broken, image_files[0][1]]
    with pytest.raises(DataError, match=r"broken\.png"):
        Predictor.from_path(artifact_dir).explain(paths)
    maps = Predictor.from_path(artifact_dir, bad_images="skip", batch_size=2).explain(paths)
    assert maps.maps[1] is None and "broken.png" in maps.errors[1] and maps.maps[2].shape[0] == 9
    assert np.isnan(maps.probabilities.labels[1]).all() and not maps.decided[1].any()


def test_explain_shown_lists_decisions_then_classes_then_extras(predictor, image_files):
    maps = predictor.explain(image_files[0][:1])
    shown = maps.shown(0, SCHEMA, ["fish"])
    decided = [SCHEMA.labels[j] for j in np.flatnonzero(maps.decided[0])]
    assert shown[: len(decided)] == decided and "cat" in decided and "dog" not in shown
    assert shown[len(decided)].startswith("size=") and shown[len(decided) + 1].startswith("indoor=")
    assert shown[-1] == "fish" or "fish" in decided


def test_explain_maps_with_the_float32_classifier_under_bf16_and_onnx(exported, monkeypatch):
    """bf16 wraps the classifier (explain takes it out), ONNX has none (explain loads the weights)."""
    pytest.importorskip("onnxruntime")
    from mlic.inference import precision
    from mlic.inference.torch_runtime import Bfloat16Network
    from mlic.models import Classifier

    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: True)  # bf16 on any CPU (emulated)
    images = arrays(3, seed=5)
    want = Predictor.from_path(exported["linear"]).explain(images)
    bf16 = Predictor.from_path(exported["linear"], precision="bf16")
    onnx = Predictor.from_path(exported["linear"], runtime="onnx")
    assert isinstance(bf16.model, Bfloat16Network) and bf16.torch_model() is bf16.model.model
    assert not isinstance(onnx.model, Classifier) and isinstance(onnx.torch_model(), Classifier)
    assert onnx.torch_model() is onnx.torch_model()  # loaded once
    for got in (bf16.explain(images), onnx.explain(images)):
        assert got.names == want.names and got.method == want.method == "cam"
        for a, b in zip(got.maps, want.maps):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(got.probabilities.labels, want.probabilities.labels, atol=1e-5)


def test_calibrated_artifact_predicts_calibrated_probabilities_with_the_same_decisions(
    make_artifact, tmp_path
):
    from mlic.artifact import load_artifact
    from mlic.models.calibration import Calibration

    made = make_artifact(SCHEMA, decision=THRESHOLDS, tweak=lambda m: m.head.fc.weight.mul_(20),
                         path=tmp_path / "artifact")  # fmt: skip
    images = arrays(5, seed=4)
    before = Predictor.from_path(made.path)
    artifact = load_artifact(made.path)
    calibration = Calibration("platt", np.array([0.5, 2.0, 1.0, 0.7]), np.array([0.3, -1, 0, 0.2]),
                              np.array([2.0, 0.5]), {})  # fmt: skip
    artifact.calibration = calibration
    artifact.decision.thresholds = calibration.thresholds(artifact.decision.thresholds)
    artifact.save_config()
    after = Predictor.from_path(made.path)
    p, q = before.predict_proba(images), after.predict_proba(images)
    assert not np.allclose(p.labels, q.labels)
    np.testing.assert_array_equal(before.decide(p), after.decide(q))
    assert all((a.argmax(1) == b.argmax(1)).all() for a, b in zip(p.attributes, q.attributes))
    assert [r["labels"] for r in before.predict(images)] == [r["labels"] for r in after.predict(images)]
