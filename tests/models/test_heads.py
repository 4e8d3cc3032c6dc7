"""Tests of mlic.models.heads, parametrised over the registry: adding a head adds its tests."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

import mlic.artifact
from mlic.errors import ConfigError
from mlic.models import (
    ModelConfig,
    build_classifier,
    create_head,
    list_heads,
)
from mlic.models.heads import head_options
from mlic.schema import Attribute, LabelSchema

HEADS = list_heads()


LABELS_ONLY = LabelSchema(("a", "b", "c", "d"))


ATTRIBUTES_ONLY = LabelSchema(attributes=(Attribute("size", ("s", "m", "l")), Attribute("on", ("no", "yes"))))


MIXED = LabelSchema(("a", "b"), (Attribute("size", ("s", "m", "l")),))


SCHEMAS = pytest.mark.parametrize(
    "schema", [LABELS_ONLY, ATTRIBUTES_ONLY, MIXED], ids=["labels", "attributes", "mixed"]
)


# Backbones and the image side that suits them: a convnet ([B, C, H, W]) and a ViT ([B, N, C] tokens).
BACKBONES = {"mlic_cnn": 32, "test_vit": 160}


# Non-default options per head, to check that they are applied and saved; a new head may add its own.
OPTIONS = {
    "linear": {"dropout": 0.1},
    "csra": {"temperatures": [2, 99], "lam": 0.3},
    "ml-decoder": {"num_groups": 2, "d_model": 32, "num_heads": 4, "dim_feedforward": 48},
}


def images(b: int = 2, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, 3, size, size), generator=g, dtype=torch.uint8)


def feature_inputs(head: torch.nn.Module, c: int, b: int = 3) -> dict[str, torch.Tensor]:
    """What a head can receive: pooled ``[B, C]``, or unpooled maps in each layout."""
    if head.pooled:
        return {"pooled": torch.randn(b, c)}
    return {
        "nchw": torch.randn(b, c, 3, 4),
        "nhwc": torch.randn(b, 3, 4, c),
        "tokens": torch.randn(b, 7, c),
    }


# -- registry and shapes ---------------------------------------------------------------------------
def test_registry_has_the_issue_heads():
    assert {"linear", "csra", "ml-decoder"} <= set(HEADS)
    assert create_head("linear", 8, 3).pooled is True
    assert create_head("csra", 8, 3).pooled is False
    assert create_head("ml-decoder", 8, 3).pooled is False


@pytest.mark.parametrize("name", HEADS)
def test_options_are_json_values(name):
    """Defaults are JSON values, since head_kwargs are saved in the artifact's mlic.json."""
    options = head_options(name)
    assert json.loads(json.dumps(options)) == json.loads(json.dumps(options, allow_nan=False))
    create_head(name, 16, 5, **json.loads(json.dumps(options)))  # the defaults, spelt out, are accepted


@SCHEMAS
@pytest.mark.parametrize("name", HEADS)
def test_head_output_shape(name, schema):
    torch.manual_seed(0)
    head = create_head(name, 16, schema.num_outputs).eval()
    for layout, x in feature_inputs(head, 16).items():
        with torch.no_grad():
            logits = head(x)
        assert logits.shape == (3, schema.num_outputs), layout
        assert logits.dtype == torch.float32 and torch.isfinite(logits).all(), layout


@pytest.mark.parametrize("name", [n for n in HEADS if not create_head(n, 4, 2).pooled])
def test_unpooled_layouts_agree(name):
    """The same positions as [B, C, H, W], [B, H, W, C] or [B, N, C] give the same logits."""
    torch.manual_seed(0)
    head = create_head(name, 16, 5).eval()
    nchw = torch.randn(2, 16, 3, 4)
    with torch.no_grad():
        expected = head(nchw)
        torch.testing.assert_close(head(nchw.permute(0, 2, 3, 1)), expected)
        torch.testing.assert_close(head(nchw.flatten(2).transpose(1, 2)), expected)


@pytest.mark.parametrize("name", [n for n in HEADS if not create_head(n, 4, 2).pooled])
def test_unpooled_head_rejects_the_wrong_width(name):
    head = create_head(name, 16, 5)
    with pytest.raises(
        ConfigError, match=rf"head '{name}' was built for 16 feature channels.*\(2, 12, 3, 4\)"
    ):
        head(torch.randn(2, 12, 3, 4))


# -- in a classifier -------------------------------------------------------------------------------
@SCHEMAS
@pytest.mark.parametrize("name", HEADS)
def test_classifier_logits_shape(name, schema):
    torch.manual_seed(0)
    model = build_classifier(schema, ModelConfig(head=name)).eval()
    with torch.no_grad():
        logits = model(images(3))
    assert logits.shape == (3, schema.num_outputs) and logits.dtype == torch.float32


@pytest.mark.parametrize("backbone", list(BACKBONES))
@pytest.mark.parametrize("name", HEADS)
def test_gradients_reach_head_and_backbone(name, backbone):
    torch.manual_seed(0)
    model = build_classifier(MIXED, ModelConfig(backbone=backbone, head=name)).train()
    logits = model(images(2, BACKBONES[backbone]))
    assert logits.shape == (2, MIXED.num_outputs)
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    loss = F.binary_cross_entropy_with_logits(logits[:, :2], targets) + F.cross_entropy(
        logits[:, 2:], torch.tensor([0, 2])
    )
    loss.backward()
    for part in (model.head, model.backbone):
        missing = [k for k, p in part.named_parameters() if p.requires_grad and p.grad is None]
        assert not missing, missing
    for k, p in model.head.named_parameters():
        assert p.grad.abs().sum() > 0, k
    first = next(p for p in model.backbone.parameters() if p.ndim == 4)  # the stem / patch embedding
    assert first.grad.abs().sum() > 0


@pytest.mark.parametrize("name", HEADS)
def test_artifact_round_trip(make_artifact, name):
    options = OPTIONS.get(name, {})

    def move_the_head(model):  # every parameter away from its initial value
        for p in model.head.parameters():
            p.add_(0.05 * torch.randn_like(p))

    made = make_artifact(MIXED, head=name, head_options=options, tweak=move_the_head)
    saved = json.loads((made.path / "mlic.json").read_text())
    assert saved["model"]["head"] == name and saved["model"]["head_kwargs"] == options
    artifact = mlic.artifact.load_artifact(made.path)
    torch.manual_seed(1)  # a different initialisation, so that only the loaded weights can match
    loaded = artifact.build_model()
    assert artifact.model.head == name and artifact.model.head_kwargs == options
    x = images(4)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), made.model(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", HEADS)
def test_bf16_autocast(name):
    torch.manual_seed(0)
    model = build_classifier(MIXED, ModelConfig(head=name)).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(images(2))
    assert logits.shape == (2, MIXED.num_outputs) and torch.isfinite(logits.float()).all()


@pytest.mark.parametrize("name", [n for n in HEADS if not create_head(n, 4, 2).pooled])
def test_unpooled_head_on_a_backbone_with_pre_logits(name):
    model = build_classifier(MIXED, ModelConfig(backbone="mobilenetv3_small_050", head=name)).eval()
    with torch.no_grad():
        assert model(images(2, 64)).shape == (2, MIXED.num_outputs)


# -- CSRA ------------------------------------------------------------------------------------------
def csra_naive(x: torch.Tensor, weights: torch.Tensor, temperatures, lam: float) -> torch.Tensor:
    """CSRA written out position by position: x [B, C, H, W], weights [heads, K, C] -> [B, K]."""
    b = x.shape[0]
    positions = [x[:, :, i, j] for i in range(x.shape[2]) for j in range(x.shape[3])]
    out = torch.zeros(b, weights.shape[1], dtype=torch.float64)
    for n in range(b):
        for h, t in enumerate(temperatures):
            for k in range(weights.shape[1]):
                w = weights[h, k].double()
                s = [float(p[n].double() @ w / w.norm()) for p in positions]
                base = sum(s) / len(s)
                if t in (99, math.inf):
                    attention = max(s)
                else:
                    e = [math.exp(t * v) for v in s]
                    attention = sum(v * ei / sum(e) for v, ei in zip(s, e))
                out[n, k] += base + lam * attention
    return out


@pytest.mark.parametrize("temperatures", [[1], [99], [math.inf], [1, 99], [0.5, 2, 4, 99]])
@pytest.mark.parametrize("lam", [0.1, 0.5])
def test_csra_equals_its_formula(temperatures, lam):
    torch.manual_seed(0)
    head = create_head("csra", 3, 4, temperatures=temperatures, lam=lam).eval()
    x = torch.randn(2, 3, 2, 3)
    with torch.no_grad():
        logits = head(x)
    expected = csra_naive(x, head.weight.detach(), temperatures, lam)
    torch.testing.assert_close(logits.double(), expected, rtol=1e-5, atol=1e-5)


def test_csra_lambda_zero_is_a_normalised_linear_classifier_on_the_mean():
    torch.manual_seed(0)
    head = create_head("csra", 6, 5, temperatures=[1], lam=0).eval()
    x = torch.randn(2, 6, 4, 4)
    w = head.weight[0] / head.weight[0].norm(dim=1, keepdim=True)
    with torch.no_grad():
        torch.testing.assert_close(head(x), x.mean(dim=(2, 3)) @ w.T, rtol=1e-5, atol=1e-5)


# -- ML-Decoder ------------------------------------------------------------------------------------
def test_ml_decoder_with_10000_outputs():
    torch.manual_seed(0)
    head = create_head("ml-decoder", 64, 10_000, num_groups=100)
    assert head.num_groups == 100 and head.group_size == 100
    assert tuple(head.group_weight.shape) == (100, 256, 100)
    assert sum(p.numel() for p in head.parameters()) < 4e6  # grows with groups, not outputs squared
    x = torch.randn(2, 64, 4, 4)
    logits = head(x)
    assert logits.shape == (2, 10_000)
    targets = (torch.rand(2, 10_000) < 0.001).float()
    F.binary_cross_entropy_with_logits(logits, targets).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in head.parameters())


@pytest.mark.parametrize(
    ("outputs", "groups", "expected_groups", "expected_size"),
    [(7, None, 7, 1), (250, None, 100, 3), (250, 100, 100, 3), (10, 4, 4, 3), (5, 50, 5, 1)],
)
def test_ml_decoder_groups(outputs, groups, expected_groups, expected_size):
    head = create_head("ml-decoder", 8, outputs, num_groups=groups, d_model=16, num_heads=2)
    assert (head.num_groups, head.group_size) == (expected_groups, expected_size)
    assert head(torch.randn(2, 8, 2, 2)).shape == (2, outputs)


def test_ml_decoder_output_i_comes_from_group_i_div_k():
    """Group decoding: output i is read from query i // k by that group's own weights."""
    torch.manual_seed(0)
    head = create_head("ml-decoder", 8, 10, num_groups=4, d_model=16, num_heads=2).eval()  # k = 3
    x = torch.randn(2, 8, 3, 3)
    with torch.no_grad():
        before = head(x)
        head.group_weight[2].add_(1.0)  # group 2 decodes outputs 6, 7, 8
        changed = (head(x) != before).any(dim=0)
    assert changed.tolist() == [i in (6, 7, 8) for i in range(10)]


def test_ml_decoder_fixed_queries():
    learned = create_head("ml-decoder", 8, 5, d_model=16, num_heads=2)
    fixed = create_head("ml-decoder", 8, 5, d_model=16, num_heads=2, learn_queries=False)
    assert "queries" in dict(learned.named_parameters())
    assert "queries" not in dict(fixed.named_parameters()) and "queries" in fixed.state_dict()


# -- bad options -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", HEADS)
def test_unknown_option(name):
    with pytest.raises(ConfigError, match=rf"head '{name}' has no option 'colour' \(options: ") as info:
        create_head(name, 8, 3, colour=1)
    for option in head_options(name):
        assert f"{option}=" in str(info.value)
    with pytest.raises(ConfigError, match=rf"head '{name}' has no option"):
        build_classifier(MIXED, ModelConfig(head=name, head_kwargs={"colour": 1}))


@pytest.mark.parametrize("name", HEADS)
def test_unknown_option_suggests_a_close_match(name):
    option = next(iter(head_options(name)))
    with pytest.raises(ConfigError, match=rf"did you mean '{option}'\?"):
        create_head(name, 8, 3, **{option + "x": 1})


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("linear", {"dropout": 1.5}, r"dropout must be a number >= 0.0 and < 1.0, got 1.5"),
        ("csra", {"temperatures": []}, r"temperatures must be a non-empty list"),
        ("csra", {"temperatures": "hot"}, r"temperatures must be a non-empty list"),
        ("csra", {"temperatures": [1, -2]}, r"temperatures\[1\] must be a number"),
        ("csra", {"lam": "x"}, r"lam must be a number >= 0.0, got 'x'"),
        ("csra", {"lam": float("nan")}, r"lam must be a number"),
        ("ml-decoder", {"num_groups": 0}, r"num_groups must be an integer >= 1, got 0"),
        ("ml-decoder", {"num_groups": 2.5}, r"num_groups must be an integer"),
        ("ml-decoder", {"d_model": 30}, r"d_model \(30\) must be a multiple of num_heads \(8\)"),
        ("ml-decoder", {"num_layers": True}, r"num_layers must be an integer"),
        ("ml-decoder", {"learn_queries": "yes"}, r"learn_queries must be true or false"),
        ("ml-decoder", {"dropout": -0.1}, r"dropout must be a number >= 0.0"),
    ],
)
def test_bad_option_values(name, options, message):
    with pytest.raises(ConfigError, match=rf"head '{name}': {message}.*\(options: ") as info:
        create_head(name, 16, 5, **options)
    for option in head_options(name):
        assert f"{option}=" in str(info.value)


# -- heads -----------------------------------------------------------------------------------------
def test_heads_registry():
    assert "linear" in list_heads()
    assert list_heads() == sorted(list_heads())
    head = create_head("linear", 16, 7)
    assert head.pooled is True
    assert head(torch.randn(3, 16)).shape == (3, 7)
    assert create_head("linear", 16, 7, dropout=0.3).drop.p == 0.3


def test_unknown_head():
    with pytest.raises(
        ConfigError, match=r"unknown head 'linaer'; did you mean 'linear'\? \(valid: .*linear"
    ):
        create_head("linaer", 16, 7)
    with pytest.raises(ConfigError, match=r"unknown head 'zzz' \(valid: "):
        create_head("zzz", 16, 7)
    with pytest.raises(ConfigError, match="unknown head"):
        build_classifier(MIXED, ModelConfig(head="zzz"))
