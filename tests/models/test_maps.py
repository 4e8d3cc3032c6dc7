"""mlic.models.maps: every head's maps, in one pass, consistent with the logits they explain."""

from __future__ import annotations

import pytest
import torch

from mlic.data.formats.demo import SCHEMA
from mlic.errors import ConfigError
from mlic.models import ModelConfig, build_classifier
from mlic.models.maps import GRAD_CHUNK, label_maps, map_method, output_names
from mlic.models.transfer import LabelTransfer


def model(head: str = "linear", backbone: str = "mlic_cnn", **options):
    torch.manual_seed(0)
    return build_classifier(SCHEMA, ModelConfig(backbone=backbone, head=head, head_kwargs=options)).eval()


def images(n: int = 3, side: int = 64) -> torch.Tensor:
    return torch.randint(
        0, 256, (n, 3, side, side), generator=torch.Generator().manual_seed(1), dtype=torch.uint8
    )


@pytest.mark.parametrize(
    ("head", "method"), [("linear", "cam"), ("csra", "csra"), ("ml-decoder", "attention")]
)
def test_one_pass_gives_every_output_and_the_models_logits(head, method):
    m, x = model(head), images()
    with torch.no_grad():
        expected = m(x)
    logits, maps, used = label_maps(m, x)
    assert used == method == map_method(m)
    assert maps.shape == (3, SCHEMA.num_outputs, 8, 8) and len(output_names(SCHEMA)) == SCHEMA.num_outputs
    torch.testing.assert_close(logits, expected.float(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("head", ["linear", "csra"])
def test_cam_and_csra_maps_average_to_the_logit(head):
    m, x = model(head, **({"temperatures": [1, 4, 99]} if head == "csra" else {})), images()
    logits, maps, _ = label_maps(m, x)
    torch.testing.assert_close(maps.mean(dim=(2, 3)), logits, atol=1e-4, rtol=1e-4)


def test_decoder_attention_is_a_distribution_shared_by_a_group():
    m = model("ml-decoder", num_groups=5)  # 17 outputs: groups of 4
    _, maps, _ = label_maps(m, images())
    torch.testing.assert_close(maps.sum(dim=(2, 3)), torch.ones(3, 17), atol=1e-4, rtol=1e-4)
    assert (
        (maps >= 0).all() and torch.equal(maps[:, 0], maps[:, 3]) and not torch.equal(maps[:, 0], maps[:, 4])
    )


def test_grad_cam_on_a_linear_head_equals_cam_less_the_bias():
    m, x = model(), images()
    _, cam, _ = label_maps(m, x)
    _, grad, used = label_maps(m, x, "grad-cam")
    assert used == "grad-cam"
    torch.testing.assert_close(grad, cam - m.head.fc.bias.view(1, -1, 1, 1), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("head", ["csra", "ml-decoder"])
def test_grad_cam_works_for_every_head_in_chunks(head, monkeypatch):
    monkeypatch.setattr("mlic.models.maps.GRAD_CHUNK", 5)  # 17 outputs: four chunks
    m, x = model(head), images(2)
    logits, maps, used = label_maps(m, x, "grad-cam")
    assert used == "grad-cam" and maps.shape == (2, 17, 8, 8) and torch.isfinite(maps).all()
    with torch.no_grad():
        torch.testing.assert_close(logits, m(x).float(), atol=1e-5, rtol=1e-5)
    assert GRAD_CHUNK >= 1


def test_grad_cam_runs_inside_inference_mode():
    m, x = model(), images(2)
    with torch.inference_mode():
        _, maps, _ = label_maps(m, x, "grad-cam")
    assert maps.abs().sum() > 0


def test_a_backbone_that_does_more_than_average_falls_back_to_grad_cam():
    m = model()
    assert label_maps(m, images(2))[2] == "cam"  # remembered per model: a changed backbone is checked anew
    m = model()
    pool = m.backbone.forward_head
    m.backbone.forward_head = lambda f, pre_logits=False: pool(f, pre_logits) * 2  # not the mean any more
    _, _, used = label_maps(m, images(2))
    assert used == "grad-cam"


def test_label_transfer_is_in_the_logits_not_in_the_maps():
    m, x = model(), images()
    m.transfer = LabelTransfer(8, 256, SCHEMA.n_labels, k=3, temperature=0.1, alpha=0.5)
    m.transfer.fill(torch.randn(8, 256), torch.randint(0, 2, (8, SCHEMA.n_labels)))
    with torch.no_grad():
        expected = m(x)
    logits, maps, _ = label_maps(m, x)
    torch.testing.assert_close(logits, expected.float(), atol=1e-5, rtol=1e-5)
    _, plain, _ = label_maps(model(), x)
    torch.testing.assert_close(maps, plain)


def test_unknown_or_unfit_method():
    with pytest.raises(ConfigError, match="unknown map method 'lime'"):
        label_maps(model(), images(1), "lime")
    with pytest.raises(ConfigError, match="needs a CSRAHead"):
        label_maps(model(), images(1), "csra")


def test_token_and_channels_last_features_map_onto_a_grid():
    from types import SimpleNamespace

    from mlic.models.maps import _grid

    stub = SimpleNamespace(backbone=SimpleNamespace(num_features=8, num_prefix_tokens=1),
                           config=SimpleNamespace(backbone="stub"))  # fmt: skip
    tokens = torch.randn(2, 1 + 16, 8)
    grid = _grid(stub, tokens)
    assert grid.shape == (2, 8, 4, 4) and torch.equal(grid[:, :, 0, 1], tokens[:, 2])
    nhwc = torch.randn(2, 3, 5, 8)
    assert torch.equal(_grid(stub, nhwc), nhwc.permute(0, 3, 1, 2))
    with pytest.raises(ConfigError, match="no spatial grid"):
        _grid(stub, torch.randn(2, 1 + 15, 8))
