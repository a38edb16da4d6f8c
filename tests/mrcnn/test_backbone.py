"""Layer names, weight shapes and order of matterport's backbone, tiny strides."""

import keras
import pytest

from bookseg.mrcnn.backbone import backbone_graph
from bookseg.mrcnn.config import MrcnnConfig
from bookseg.mrcnn.model import MaskRCNN, named_weight_layers
from bookseg.mrcnn.normalization import BatchNorm

from .conftest import tiny_config


def expected_resnet_layers(stage4_blocks: int) -> dict:
    """{layer name: [weight shapes]} of the backbone, written from the layer table of docs/mrcnn-contract.md."""
    conv = lambda k, cin, cout: [(k, k, cin, cout), (cout,)]
    bn = lambda c: [(c,)] * 4
    layers = {"conv1": conv(7, 3, 64), "bn_conv1": bn(64)}
    stages = [(2, 3, 64, 256), (3, 4, 128, 512), (4, stage4_blocks, 256, 1024), (5, 3, 512, 2048)]
    cin = 64
    for stage, blocks, mid, out in stages:
        for i in range(blocks):
            block = chr(97 + i)
            block_in = cin if i == 0 else out
            layers[f"res{stage}{block}_branch2a"] = conv(1, block_in, mid)
            layers[f"res{stage}{block}_branch2b"] = conv(3, mid, mid)
            layers[f"res{stage}{block}_branch2c"] = conv(1, mid, out)
            for suffix, channels in (("2a", mid), ("2b", mid), ("2c", out)):
                layers[f"bn{stage}{block}_branch{suffix}"] = bn(channels)
            if i == 0:
                layers[f"res{stage}a_branch1"] = conv(1, block_in, out)
                layers[f"bn{stage}a_branch1"] = bn(out)
        cin = out
    return layers


def expected_head_layers(num_classes: int) -> dict:
    layers = {
        "fpn_c5p5": [(1, 1, 2048, 256), (256,)],
        "fpn_c4p4": [(1, 1, 1024, 256), (256,)],
        "fpn_c3p3": [(1, 1, 512, 256), (256,)],
        "fpn_c2p2": [(1, 1, 256, 256), (256,)],
        "rpn_model": [(3, 3, 256, 512), (512,), (1, 1, 512, 6), (6,), (1, 1, 512, 12), (12,)],
        "mrcnn_class_conv1": [(7, 7, 256, 1024), (1024,)],
        "mrcnn_class_bn1": [(1024,)] * 4,
        "mrcnn_class_conv2": [(1, 1, 1024, 1024), (1024,)],
        "mrcnn_class_bn2": [(1024,)] * 4,
        "mrcnn_class_logits": [(1024, num_classes), (num_classes,)],
        "mrcnn_bbox_fc": [(1024, 4 * num_classes), (4 * num_classes,)],
        "mrcnn_mask_deconv": [(2, 2, 256, 256), (256,)],
        "mrcnn_mask": [(1, 1, 256, num_classes), (num_classes,)],
    }
    for level in (2, 3, 4, 5):
        layers[f"fpn_p{level}"] = [(3, 3, 256, 256), (256,)]
    for i in (1, 2, 3, 4):
        layers[f"mrcnn_mask_conv{i}"] = [(3, 3, 256, 256), (256,)]
        layers[f"mrcnn_mask_bn{i}"] = [(256,)] * 4
    return layers


@pytest.fixture(scope="module")
def r101_coco():
    return MaskRCNN(MrcnnConfig(backbone="resnet101", num_classes=81))


def test_r101_has_every_matterport_layer_with_its_weight_shapes(r101_coco):
    named = named_weight_layers(r101_coco)
    expected = {**expected_resnet_layers(23), **expected_head_layers(81)}
    assert set(named) == set(expected)
    for name, shapes in expected.items():
        assert [tuple(w.shape) for w in named[name].weights] == shapes, name


def test_r101_legacy_weight_order(r101_coco):
    named = named_weight_layers(r101_coco)
    assert [w.name for w in named["conv1"].weights] == ["kernel", "bias"]
    assert [w.name for w in named["bn4w_branch2c"].weights] == [
        "gamma",
        "beta",
        "moving_mean",
        "moving_variance",
    ]
    assert [w.path for w in named["rpn_model"].weights] == [
        "rpn_conv_shared/kernel",
        "rpn_conv_shared/bias",
        "rpn_class_raw/kernel",
        "rpn_class_raw/bias",
        "rpn_bbox_pred/kernel",
        "rpn_bbox_pred/bias",
    ]
    convs = [
        n
        for n, layer in named.items()
        if isinstance(layer, keras.layers.Conv2D) and n.startswith(("conv", "res"))
    ]
    bns = [n for n, layer in named.items() if isinstance(layer, BatchNorm) and n.startswith("bn")]
    assert len(convs) == 104 and len(bns) == 104


def test_r50_backbone_has_53_convs_and_53_bns():
    model = MaskRCNN(MrcnnConfig(backbone="resnet50"))
    named = named_weight_layers(model)
    assert {n for n in named if n.startswith(("conv1", "bn_conv1", "res", "bn"))} == set(
        expected_resnet_layers(6)
    )
    assert sum(n.startswith(("conv1", "res")) for n in named) == 53
    assert sum(n.startswith(("bn_conv1", "bn")) for n in named) == 53
    # BN epsilon and conv biases as matterport.
    assert named["bn3a_branch2a"].epsilon == pytest.approx(1e-3)
    assert named["res3a_branch2a"].strides == (2, 2) and named["res3a_branch2b"].strides == (1, 1)


@pytest.mark.parametrize("backbone", ["tiny", "resnet50"])
def test_backbone_strides_for_a_non_square_image(backbone):
    config = tiny_config(backbone=backbone)
    image = keras.Input(shape=(128, 192, 3))
    features = backbone_graph(image, config)
    assert [tuple(f.shape[1:3]) for f in features] == [(32, 48), (16, 24), (8, 12), (4, 6)]
    if backbone == "tiny":
        assert [f.shape[-1] for f in features] == list(config.tiny_channels)
    else:
        assert [f.shape[-1] for f in features] == [256, 512, 1024, 2048]


def test_tiny_names_never_clash_with_resnet_or_heads():
    named = named_weight_layers(MaskRCNN(tiny_config()))
    backbone = [n for n in named if not n.startswith(("fpn_", "rpn_", "mrcnn_"))]
    assert backbone and all(n.startswith("tiny_c") for n in backbone)
    assert len(backbone) == 20  # 5 stages x (2 convs + 2 BNs)
