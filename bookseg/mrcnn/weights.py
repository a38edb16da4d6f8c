"""Weight I/O: matterport / legacy Keras h5 files by layer name, and bookseg's own checkpoints.

Legacy h5 layout (Keras 2 `save_weights`, what `mask_rcnn_coco.h5` and the ImageNet ResNet files
use): the root (or its `model_weights` group in full-model files) has the
attribute `layer_names`; each name is a group whose attribute `weight_names` lists its arrays in
legacy order (Conv: kernel, bias; BN: gamma, beta, moving_mean, moving_variance). A nested model
(`rpn_model`) is one group listing its inner layers' arrays (`rpn_conv_shared/kernel:0`, ...).
Long attributes may be split into `layer_names0`, `layer_names1`, ... Values are assigned
positionally, as Keras did.

Keras 3 ImageNet ResNet names (`conv1_conv`, `conv4_block7_2_bn`, ...) are recognised and mapped
to matterport's (`conv1`, `bn4g_branch2b`, ...).

Our own training checkpoints are Keras 3 `.weights.h5` files (`model.save_weights`), written
atomically: `save_checkpoint`, `find_last_checkpoint`, `load_checkpoint`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

# Layers whose shapes depend on the number of classes (matterport's standard exclude list, minus
# the weightless `mrcnn_bbox` reshape).
CLASS_HEADS = ("mrcnn_class_logits", "mrcnn_bbox_fc", "mrcnn_mask")
CHECKPOINT_PREFIX = "mask_rcnn_"  # checkpoint names: <prefix><epoch:04d><suffix>
CHECKPOINT_SUFFIX = ".weights.h5"  # Keras 3 `save_weights` accepts no other suffix
MASK_COORDINATES_LAYER = "mrcnn_mask_conv1"  # takes 2 extra inputs with model.mask_head_coordinates
_CASCADE_SUFFIX = re.compile(r"_stage\d+$")  # cascade heads' layers: the box head's names + "_stage<k>"
_KERAS3_RESNET = re.compile(r"^conv(\d)_block(\d+)_(\d)_(conv|bn)$")
_BRANCH = {"0": "branch1", "1": "branch2a", "2": "branch2b", "3": "branch2c"}


class WeightLoadError(ValueError):
    """A weight file does not fit the model (shape or array-count mismatch, unreadable layout)."""


@dataclass
class LoadReport:
    """What `load_weights` did.

    Attributes:
        path: the file read.
        loaded: model layer names that received weights.
        skipped: layer names in the file that were not loaded (reason in `reasons`).
        missing: model layers with weights that the file does not have (they keep their values).
        mismatched: "name: file shapes vs model shapes" for layers not loaded because of a shape or
            count mismatch (only with strict=False; strict raises instead).
        reasons: skipped layer name -> why ("not in model", "excluded", "class count ...").
        renamed: file name -> matterport name, for Keras 3 ImageNet ResNet names.
        notes: other facts worth knowing (auto-exclusion of the class heads, BN epsilon ...).
    """

    path: str = ""
    loaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)
    renamed: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def skip(self, name: str, reason: str) -> None:
        self.skipped.append(name)
        self.reasons[name] = reason

    def summary(self, max_names: int = 12) -> str:
        def names(items):
            items = list(items)
            shown = ", ".join(items[:max_names])
            return shown + (f", ... (+{len(items) - max_names} more)" if len(items) > max_names else "")

        lines = [f"weights from {self.path}: {len(self.loaded)} layers loaded"]
        if self.renamed:
            lines.append(f"  renamed from Keras 3 ResNet names: {len(self.renamed)} layers")
        by_reason: dict[str, list[str]] = {}
        for name in self.skipped:
            by_reason.setdefault(self.reasons.get(name, "skipped"), []).append(name)
        for reason, items in by_reason.items():
            lines.append(f"  skipped ({reason}): {len(items)}: {names(items)}")
        if self.missing:
            lines.append(
                f"  missing in file (kept as initialised): {len(self.missing)}: {names(self.missing)}"
            )
        for item in self.mismatched:
            lines.append(f"  mismatched: {item}")
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


def keras3_resnet_name(name: str) -> str | None:
    """matterport name of a Keras 3 `keras.applications` ResNet layer name, or None if not one.

    conv1_conv -> conv1, conv1_bn -> bn_conv1, conv{S}_block{i}_{0,1,2,3}_{conv,bn} ->
    {res,bn}{S}{chr(96 + i)}_{branch1, branch2a, branch2b, branch2c}.
    """
    if name == "conv1_conv":
        return "conv1"
    if name == "conv1_bn":
        return "bn_conv1"
    match = _KERAS3_RESNET.match(name)
    if not match:
        return None
    stage, block, branch, kind = match.groups()
    prefix = "res" if kind == "conv" else "bn"
    return f"{prefix}{stage}{chr(96 + int(block))}_{_BRANCH[branch]}"


def _str_list(values) -> list[str]:
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def _attribute_list(group, name: str) -> list[str]:
    """A string-list attribute, possibly split by Keras into name0, name1, ... chunks."""
    if name in group.attrs:
        return _str_list(group.attrs[name])
    values, chunk = [], 0
    while f"{name}{chunk}" in group.attrs:
        values += _str_list(group.attrs[f"{name}{chunk}"])
        chunk += 1
    return values


def read_legacy_h5(path) -> dict[str, list[np.ndarray]]:
    """Arrays of every layer with weights in a legacy Keras h5 file, in file order.

    Returns:
        layer name -> list of arrays in the group's `weight_names` order.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weight file not found: {path}")
    with h5py.File(path, "r") as f:
        root = f
        if not _attribute_list(f, "layer_names") and "model_weights" in f:
            root = f["model_weights"]
        layer_names = _attribute_list(root, "layer_names")
        if not layer_names:
            hint = " (looks like a Keras 3 .weights.h5 file: use load_checkpoint)" if "vars" in f else ""
            raise WeightLoadError(
                f"{path}: no 'layer_names' attribute, not a legacy Keras h5 weight file{hint}"
            )
        layers = {}
        for name in layer_names:
            if name not in root:
                raise WeightLoadError(f"{path}: layer {name!r} is listed in layer_names but has no group")
            group = root[name]
            weight_names = _attribute_list(group, "weight_names")
            try:
                arrays = [np.asarray(group[w]) for w in weight_names]
            except KeyError as err:
                raise WeightLoadError(
                    f"{path}: layer {name!r} lists a weight that is missing: {err}"
                ) from None
            if arrays:
                layers[name] = arrays
    return layers


def _model_layers(model_or_layers) -> dict:
    if isinstance(model_or_layers, dict):
        return model_or_layers
    if hasattr(model_or_layers, "backbone_fpn"):  # bookseg MaskRCNN
        from bookseg.mrcnn.model import named_weight_layers

        return named_weight_layers(model_or_layers)
    return {layer.name: layer for layer in model_or_layers.layers if layer.weights}


def _class_count(shapes_by_layer: dict[str, list[tuple]]) -> int | None:
    """Number of classes implied by the class-dependent heads' bias shapes, if any is present."""
    divisors = {"mrcnn_class_logits": 1, "mrcnn_bbox_fc": 4, "mrcnn_mask": 1}
    for name, divisor in divisors.items():
        shapes = shapes_by_layer.get(name)
        if shapes and len(shapes) >= 2 and len(shapes[1]) == 1:
            return int(shapes[1][0]) // divisor
    return None


def _describe(shapes) -> str:
    return "[" + ", ".join(str(tuple(s)) for s in shapes) + "]"


def load_weights(model_or_layers, path, *, exclude=(), by_name=True, strict=True) -> LoadReport:
    """Load a legacy (matterport / Keras 2) h5 weight file into a model, matching layers by name.

    Args:
        model_or_layers: a bookseg `MaskRCNN` (its `named_weight_layers`), any Keras model (its
            top-level layers with weights), or a dict name -> Keras layer.
        path: the .h5 file (weights-only or full-model file with a `model_weights` group).
        exclude: layer names not to load (matterport's `exclude`, e.g. ["conv1"] for non-RGB input).
        by_name: match by layer name (True), or assign the file's layers with weights to the
            model's in order (False, matterport's topological loading; `exclude` forces by_name).
        strict: raise `WeightLoadError` on a shape or array-count mismatch; with False such layers
            are left as they are and listed in `mismatched`.

    A Keras 3 `.weights.h5` file (bookseg's fold weights and checkpoints, e.g. a synthetic
    pre-training run's) is restored whole instead: it fits only a model of the same architecture
    (model preset, norm, number of anchor ratios and of classes), and `exclude` cannot apply; the one
    exception is a file saved without the model's cascade heads.

    Cascade heads (`cascade_iou_thresholds`) the file lacks start as copies of the file's first box
    head, layer by layer, so a pretrained box head seeds every stage (reported in `notes`).

    Returns:
        `LoadReport`. Class-dependent heads are skipped automatically (and reported) when the
        file's class count differs from the model's.
    """
    path = Path(path)
    if hasattr(model_or_layers, "backbone_fpn") and is_keras3_weights(path):  # a whole bookseg MaskRCNN
        return _load_keras3_weights(model_or_layers, path, exclude)
    file_layers = read_legacy_h5(path)
    targets = _model_layers(model_or_layers)
    report = LoadReport(path=str(path))
    exclude = set(exclude)

    renamed = {name: keras3_resnet_name(name) for name in file_layers}
    if any(renamed.values()) and not any(name in targets for name in file_layers if renamed[name]):
        report.renamed = {k: v for k, v in renamed.items() if v}
        file_layers = {report.renamed.get(name, name): arrays for name, arrays in file_layers.items()}
        report.notes.append(
            "Keras 3 ImageNet ResNet names mapped to matterport names; those BatchNorms were trained "
            "with epsilon 1.001e-5 (matterport's BN uses 1e-3)"
        )

    if not by_name and not exclude:
        return _load_in_order(file_layers, targets, report, strict)

    file_shapes = {name: [a.shape for a in arrays] for name, arrays in file_layers.items()}
    model_shapes = {name: [tuple(w.shape) for w in layer.weights] for name, layer in targets.items()}
    file_classes, model_classes = _class_count(file_shapes), _class_count(model_shapes)
    auto_excluded = set()
    if file_classes is not None and model_classes is not None and file_classes != model_classes:
        auto_excluded = set(CLASS_HEADS)
        report.notes.append(
            f"the file has {file_classes} classes, the model {model_classes}: "
            f"{', '.join(CLASS_HEADS)} not loaded (they start from their initial values)"
        )

    for name, arrays in file_layers.items():
        if name not in targets:
            report.skip(name, "not in model")
        elif name in exclude:
            report.skip(name, "excluded")
        elif name in auto_excluded:
            report.skip(name, f"class count {file_classes} in file vs {model_classes} in model")
        else:
            _assign(name, targets[name], arrays, report, strict, path)
    report.missing = [
        name
        for name, layer in targets.items()
        if layer.weights and name not in file_layers and name not in exclude
    ]
    _seed_cascade_heads(targets, report)
    unknown = sorted(exclude - set(targets) - set(file_layers))
    if unknown:
        report.notes.append(
            f"exclude names neither in the model nor in the file (typo?): {', '.join(unknown)}"
        )
    return report


def is_keras3_weights(path) -> bool:
    """True for a Keras 3 `save_weights` file (its top level holds `vars` / `layers`, no `layer_names`)."""
    try:
        with h5py.File(path, "r") as f:
            return (
                "layer_names" not in f.attrs and "model_weights" not in f and ("vars" in f or "layers" in f)
            )
    except OSError:  # missing or not HDF5: `read_legacy_h5` reports it
        return False


def _array_count(path: Path) -> int:
    """Model arrays in a Keras 3 weights file; a training checkpoint's optimizer slots are not counted."""
    count = 0

    def visit(name, item):
        nonlocal count
        count += isinstance(item, h5py.Dataset) and not name.startswith("optimizer/")

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return count


def _seed_cascade_heads(targets: dict, report: LoadReport) -> None:
    """Give each cascade-head layer the file lacks the weights of the loaded box-head layer it copies."""
    seeded = []
    for name in report.missing:
        first_stage = _CASCADE_SUFFIX.sub("", name)
        if first_stage != name and first_stage in report.loaded:
            targets[name].set_weights(targets[first_stage].get_weights())
            seeded.append(name)
    if seeded:
        report.missing = [name for name in report.missing if name not in seeded]
        report.loaded += seeded
        report.notes.append(
            f"{len(seeded)} cascade-head layers are not in the file: they start as copies of the first box head's"
        )


def _mask_conv1_inputs(path: Path) -> int | None:
    """Input channels of the mask head's first conv in a Keras 3 file, or None if not found. Keras 3 stores
    layers by position (`layers/functional_3/layers/conv2d/vars/0`), so the mask head is found as the group
    holding the only transposed convolution."""
    suffix = "/layers/conv2d_transpose"
    with h5py.File(path, "r") as f:
        names = []
        f.visit(names.append)
        kernels = [f"{name[: -len(suffix)]}/layers/conv2d/vars/0" for name in names if name.endswith(suffix)]
        shapes = [f[k].shape for k in kernels if k in f]
    return int(shapes[0][2]) if len(shapes) == 1 else None


def _load_keras3_variant(model, path: Path, variant) -> LoadReport:
    """Restore a Keras 3 file saved by `variant`, the model's config without its cascade heads and/or mask
    position inputs (e.g. a pre-training run's), then copy it layer by layer: cascade heads start as copies
    of the box head, the mask head's first conv gets zero rows for the position inputs."""
    from bookseg.mrcnn.model import MaskRCNN, named_weight_layers

    saved = MaskRCNN(variant)
    load_checkpoint(saved, path)
    targets = _model_layers(model)
    report = LoadReport(path=str(path))
    for name, layer in named_weight_layers(saved).items():
        if layer.weights:
            _assign(name, targets[name], layer.get_weights(), report, True, path)
    report.missing = [name for name, layer in targets.items() if layer.weights and name not in report.loaded]
    _seed_cascade_heads(targets, report)
    lacks = [
        what
        for what, differs in (
            ("cascade heads", variant.cascade_iou_thresholds != model.config.cascade_iou_thresholds),
            ("mask position inputs", variant.mask_head_coordinates != model.config.mask_head_coordinates),
        )
        if differs
    ]
    report.notes.append(f"Keras 3 weights file of the same architecture without {' and '.join(lacks)}")
    return report


def _load_keras3_weights(model, path: Path, exclude) -> LoadReport:
    if exclude:
        raise WeightLoadError(
            f"{path}: a Keras 3 .weights.h5 file is restored whole; exclude={sorted(exclude)} "
            "needs a legacy h5 (matterport layout)"
        )
    in_file, in_model = _array_count(path), len(model.weights)
    variant = model.config
    cascade_arrays = sum(len(head.weights) for head in model.cascade_heads)
    if cascade_arrays and in_file == in_model - cascade_arrays:
        variant = variant.replace(cascade_iou_thresholds=())
    if variant.mask_head_coordinates and _mask_conv1_inputs(path) == variant.top_down_pyramid_size:
        variant = variant.replace(mask_head_coordinates=False)
    if variant != model.config:
        return _load_keras3_variant(model, path, variant)
    if in_file != in_model:  # Keras would skip the file's extra arrays silently
        raise WeightLoadError(
            f"{path}: holds {in_file} arrays, the model {in_model}. A Keras 3 weights file fits only the "
            "architecture it was saved from: same model preset, model.norm, number of anchor ratios and classes"
        )
    try:
        load_checkpoint(model, path)
    except WeightLoadError as err:
        first_lines = " ".join(str(err).split("\n")[:3])  # Keras goes on to list every layer
        raise WeightLoadError(
            f"{first_lines} ... A Keras 3 weights file fits only the architecture it was saved from: same model "
            "preset, model.norm, number of anchor ratios and classes"
        ) from err
    report = LoadReport(
        path=str(path), loaded=[name for name, layer in _model_layers(model).items() if layer.weights]
    )
    report.notes.append("Keras 3 weights file: every layer restored (same architecture)")
    return report


def _with_coordinate_inputs(arrays, model_shapes):
    """A conv layer's (kernel, bias) widened by zero kernel rows for the 2 position channels
    `RoiCoordinates` adds, or None when the shapes differ in any other way. With zeros the layer computes
    what the file's did until training uses the positions."""
    if len(arrays) != 2 or len(model_shapes) != 2 or tuple(arrays[1].shape) != model_shapes[1]:
        return None
    kernel = np.asarray(arrays[0])
    if (
        kernel.ndim != 4
        or tuple(kernel.shape[:2]) + tuple(kernel.shape[3:]) != model_shapes[0][:2] + model_shapes[0][3:]
    ):
        return None
    if model_shapes[0][2] != kernel.shape[2] + 2:
        return None
    return [np.pad(kernel, ((0, 0), (0, 0), (0, 2), (0, 0))), np.asarray(arrays[1])]


def _assign(name, layer, arrays, report: LoadReport, strict: bool, path, file_name=None) -> None:
    model_shapes = [tuple(w.shape) for w in layer.weights]
    file_shapes = [tuple(a.shape) for a in arrays]
    widened = _with_coordinate_inputs(arrays, model_shapes) if name == MASK_COORDINATES_LAYER else None
    if widened is not None:
        layer.set_weights(widened)
        report.loaded.append(name)
        report.notes.append(f"{name}: the file has no position inputs; their kernel rows start at zero")
        return
    if model_shapes != file_shapes:
        shown = name if file_name in (None, name) else f"{name} (file layer {file_name})"
        message = f"{shown}: file has {_describe(file_shapes)}, model has {_describe(model_shapes)}"
        if strict:
            raise WeightLoadError(
                f"{path}: layer {message}. Pass exclude=[{name!r}] to keep the model's own weights"
            )
        report.mismatched.append(message)
        return
    layer.set_weights(list(arrays))
    report.loaded.append(name)


def _load_in_order(file_layers, targets, report: LoadReport, strict: bool) -> LoadReport:
    """matterport's by_name=False: the i-th file layer with weights goes to the i-th model layer."""
    model_items = [(name, layer) for name, layer in targets.items() if layer.weights]
    file_items = list(file_layers.items())
    if len(file_items) != len(model_items):
        raise WeightLoadError(
            f"{report.path}: the file has {len(file_items)} layers with weights, the model "
            f"{len(model_items)}; load by name instead"
        )
    for (file_name, arrays), (name, layer) in zip(file_items, model_items):
        _assign(name, layer, arrays, report, strict, report.path, file_name=file_name)
    return report


def save_legacy_weights(model_or_layers, path) -> Path:
    """Write weights in the legacy Keras h5 layout `load_weights` (and matterport) read.

    Nested models (rpn_model) become one group listing `inner_layer/weight:0` names.
    """
    path = Path(path)
    layers = _model_layers(model_or_layers)
    with h5py.File(path, "w") as f:
        names = [name for name, layer in layers.items() if layer.weights]
        f.attrs["layer_names"] = [n.encode("utf8") for n in names]
        f.attrs["backend"] = b"tensorflow"
        for name in names:
            group = f.create_group(name)
            weight_names = []
            for weight in layers[name].weights:
                weight_name = f"{weight.path}:0"
                weight_names.append(weight_name.encode("utf8"))
                group.create_dataset(weight_name, data=np.asarray(weight.numpy()))
            group.attrs["weight_names"] = weight_names
    return path


def checkpoint_path(directory, epoch: int, *, prefix: str = CHECKPOINT_PREFIX) -> Path:
    """`directory/<prefix><epoch:04d>.weights.h5` (default prefix "mask_rcnn_")."""
    return Path(directory) / f"{prefix}{int(epoch):04d}{CHECKPOINT_SUFFIX}"


def save_checkpoint(model, directory, epoch: int, *, prefix: str = CHECKPOINT_PREFIX) -> Path:
    """Save `model`'s weights as `checkpoint_path(directory, epoch, prefix=prefix)`, atomically.

    The file is written under a temporary name in the same directory and renamed, so a crash never
    leaves a half-written checkpoint under the real name. Returns the checkpoint's path.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = checkpoint_path(directory, epoch, prefix=prefix)
    tmp = directory / f".tmp_{os.getpid()}_{final.name}"  # Keras 3 wants the .weights.h5 suffix
    try:
        model.save_weights(str(tmp))
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()
    return final


def find_last_checkpoint(
    directory, *, prefix: str = CHECKPOINT_PREFIX, suffixes=(CHECKPOINT_SUFFIX,)
) -> tuple[Path, int] | None:
    """(path, epoch) of the checkpoint with the highest epoch in `directory`, or None.

    Checkpoints are the files named `<prefix><digits><suffix>` for one of `suffixes` (e.g. also
    ".h5" to find matterport's legacy checkpoints); between equal epochs the greater name wins.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return None
    pattern = re.compile(f"^{re.escape(prefix)}(\\d+)(?:{'|'.join(map(re.escape, suffixes))})$")
    found = []
    for path in directory.iterdir():
        match = pattern.match(path.name)
        if match and path.is_file():
            found.append((int(match.group(1)), path))
    if not found:
        return None
    epoch, path = max(found)
    return path, epoch


def load_checkpoint(model, path) -> None:
    """Restore weights saved by `save_checkpoint` into a model built with the same config."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        model.load_weights(str(path))
    except ValueError as err:
        raise WeightLoadError(f"{path}: cannot restore this checkpoint into the model: {err}") from err
