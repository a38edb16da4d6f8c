"""Each validation rule has one home: model rules in `MrcnnConfig.validate`, training rules in
`bookseg.mrcnn.training`; config validation reuses them and names the config key that set the value."""

import subprocess
import sys

import pytest

from bookseg.config.compose import compose_config
from bookseg.config.validate import ConfigError, keyed, validate
from bookseg.mrcnn.config import MrcnnConfig, MrcnnConfigError


def _problems(overrides) -> list[str]:
    with pytest.raises(ConfigError) as error:
        validate(compose_config(overrides))
    return str(error.value).split("\n  - ")[1:]


def test_mrcnn_config_lists_every_problem_with_its_field():
    config = MrcnnConfig(precision="float16", norm="layer_norm", image_max_dim=300, rpn_anchor_scales=(32,))
    with pytest.raises(MrcnnConfigError) as error:
        config.validate()
    assert [field for field, _ in error.value.problems] == [
        "rpn_anchor_scales",
        "image_max_dim",
        "norm",
        "precision",
    ]
    assert isinstance(error.value, ValueError)
    assert "unknown precision 'float16'" in str(error.value)


@pytest.mark.parametrize(
    "overrides, problem",
    [
        (["model.image_max_dim=300"], "model.image_max_dim=300 is not divisible by 64"),
        (
            ["model.image_resize_mode=pad64", "model.images_per_batch=1", "model.image_min_dim=300"],
            "model.image_min_dim=300 must be divisible by 64 for pad64",
        ),
        (["anchors.scales=[32,64,128]"], "anchors.scales has 3 values but the pyramid has 5 levels"),
        (["anchors.stride=0"], "anchors.stride=0 must be >= 1"),
        (["model.roi_canonical_size=0"], "model.roi_canonical_size=0.0 must be positive"),
        (["model.mask_pool_size=0"], "model.mask_pool_size=0 must be >= 1"),
        (
            ["model.cascade_iou_thresholds=[0.6,1.2]"],
            "model.cascade_iou_thresholds=[0.6, 1.2] must lie in (0, 1), one per extra box head",
        ),
        (["strategy=tpu"], "strategy='tpu': use default or mirrored"),
        (["model.tiny_channels=[8,16]"], "model.tiny_channels needs 4 widths (C2..C5), got [8, 16]"),
        (["model.backbone=vgg"], "model.backbone='vgg': use resnet50, resnet101 or tiny"),
        (["optimizer.weight_decay_mode=l1"], "optimizer.weight_decay_mode='l1': use matterport or l2"),
        (["optimizer.name=adam"], "optimizer.name: unknown optimizer 'adam': use sgd or adamw"),
        (["optimizer.clipnorm=-1"], "optimizer.clipnorm must be > 0 or None, got -1.0"),
        (
            ["stages.schedule=[{layers: heads, epochs: 1, learning_rate: 0}]"],
            "stages.schedule[0]: Stage 'heads': learning_rate must be > 0",
        ),
    ],
)
def test_reused_rules_name_the_config_key(overrides, problem):
    problems = _problems(overrides)
    assert len(problems) == 1 and problems[0].startswith(problem), problems


def test_the_runners_narrower_rule_replaces_the_models():
    assert _problems(["model.image_resize_mode=crop"]) == [
        "model.image_resize_mode='crop': use square or pad64"
    ]


def test_keyed_restates_a_field_message_for_the_key():
    assert keyed("model.norm", "norm", "unknown norm 'x': use a") == "model.norm='x': use a"
    assert keyed("anchors.stride", "rpn_anchor_stride", "rpn_anchor_stride=0 must be >= 1") == (
        "anchors.stride=0 must be >= 1"
    )
    assert keyed("model.norm", "norm", "normalisation fails") == "model.norm: normalisation fails"


def test_config_errors_found_without_keras_do_not_import_it():
    code = (
        "import sys\n"
        "from bookseg.config.compose import compose_config\n"
        "from bookseg.config.validate import ConfigError, validate\n"
        "try:\n"
        "    validate(compose_config(['model.precision=float16', 'cv.k=1']))\n"
        "except ConfigError as error:\n"
        "    print(str(error).count('\\n  - '), 'keras' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["2", "False"]
