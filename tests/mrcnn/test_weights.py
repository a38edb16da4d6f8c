"""Weight I/O: legacy (matterport) h5 files written with h5py, Keras 3 checkpoints, and a model round trip."""

import h5py
import keras
import numpy as np
import pytest

from bookseg.mrcnn.weights import (
    WeightLoadError,
    checkpoint_path,
    find_last_checkpoint,
    keras3_resnet_name,
    load_checkpoint,
    load_weights,
    read_legacy_h5,
    save_checkpoint,
)

# ---------------------------------------------------------------------------------- fixtures


def _conv(name, filters, kernel, channels):
    layer = keras.layers.Conv2D(filters, kernel, name=name)
    layer.build((None, 8, 8, channels))
    return layer


def _bn(name, channels):
    layer = keras.layers.BatchNormalization(name=name)
    layer.build((None, 8, 8, channels))
    return layer


def _dense(name, units, inputs):
    layer = keras.layers.Dense(units, name=name)
    layer.build((None, inputs))
    return layer


def _rpn_model(depth=4):
    """A nested model named rpn_model with matterport's three inner layers (anchors per cell = 3)."""
    x = keras.Input((None, None, depth))
    shared = keras.layers.Conv2D(8, 3, padding="same", name="rpn_conv_shared")(x)
    logits = keras.layers.Conv2D(6, 1, name="rpn_class_raw")(shared)
    deltas = keras.layers.Conv2D(12, 1, name="rpn_bbox_pred")(shared)
    return keras.Model(x, [logits, deltas], name="rpn_model")


def _layers(num_classes=2):
    """A small dict of Keras layers with matterport names, as `named_weight_layers` returns."""
    return {
        "conv1": _conv("conv1", 4, 3, 3),
        "bn_conv1": _bn("bn_conv1", 4),
        "res2a_branch2a": _conv("res2a_branch2a", 4, 1, 4),
        "bn2a_branch2a": _bn("bn2a_branch2a", 4),
        "rpn_model": _rpn_model(),
        "mrcnn_class_logits": _dense("mrcnn_class_logits", num_classes, 6),
        "mrcnn_bbox_fc": _dense("mrcnn_bbox_fc", 4 * num_classes, 6),
        "mrcnn_mask": _conv("mrcnn_mask", num_classes, 1, 4),
    }


def _legacy_arrays(layers, first_value=1.0):
    """Legacy-layout content for `layers`: name -> [(weight name, array)], array k filled with value k."""
    content, value = {}, first_value
    for name, layer in layers.items():
        entries = []
        for weight in layer.weights:
            entries.append((f"{weight.path}:0", np.full(weight.shape, value, np.float32)))
            value += 1.0
        content[name] = entries
    return content


def _write_legacy(path, content, *, model_weights=False, split_layer_names=False, extra_root_attrs=True):
    """Write `content` like Keras 2 `save_weights` (or `save` with model_weights=True) did."""
    with h5py.File(path, "w") as f:
        root = f
        if model_weights:
            f.attrs["model_config"] = b"{}"
            root = f.create_group("model_weights")
        names = [n.encode("utf8") for n in content]
        if split_layer_names:
            half = len(names) // 2
            root.attrs["layer_names0"], root.attrs["layer_names1"] = names[:half], names[half:]
        else:
            root.attrs["layer_names"] = names
        if extra_root_attrs:
            root.attrs["backend"] = b"tensorflow"
            root.attrs["keras_version"] = b"2.0.8"
        for name, entries in content.items():
            group = root.create_group(name)
            group.attrs["weight_names"] = [w.encode("utf8") for w, _ in entries]
            for weight_name, array in entries:
                group.create_dataset(weight_name, data=array)
    return path


def _assert_values(layer, expected_values):
    for weight, value in zip(layer.weights, expected_values):
        np.testing.assert_array_equal(weight.numpy(), np.full(weight.shape, value), err_msg=weight.path)


def _values_of(content):
    return {name: [float(array.flat[0]) for _, array in entries] for name, entries in content.items()}


# ---------------------------------------------------------------------------------- legacy h5


@pytest.mark.parametrize("model_weights", [False, True])
def test_every_array_lands_in_its_layer(tmp_path, model_weights):
    content = _legacy_arrays(_layers())
    content["extra_layer"] = [("extra_layer/kernel:0", np.ones((2, 2), np.float32))]
    content["input_1"] = []  # weightless layers are listed too; they are not reported
    path = _write_legacy(tmp_path / "w.h5", content, model_weights=model_weights)
    layers = _layers()
    layers["fpn_p2"] = _conv("fpn_p2", 4, 3, 4)
    report = load_weights(layers, path)
    values = _values_of(content)
    for name in _layers():
        _assert_values(layers[name], values[name])
    assert report.loaded == list(_layers())
    assert report.skipped == ["extra_layer"] and report.reasons["extra_layer"] == "not in model"
    assert report.missing == ["fpn_p2"]
    assert report.mismatched == [] and report.renamed == {}


def test_nested_rpn_model_group_is_read_in_legacy_order(tmp_path):
    content = _legacy_arrays(_layers())
    assert [w for w, _ in content["rpn_model"]] == [
        "rpn_conv_shared/kernel:0",
        "rpn_conv_shared/bias:0",
        "rpn_class_raw/kernel:0",
        "rpn_class_raw/bias:0",
        "rpn_bbox_pred/kernel:0",
        "rpn_bbox_pred/bias:0",
    ]
    path = _write_legacy(tmp_path / "w.h5", content)
    with h5py.File(path) as f:  # the layout Keras 2 wrote: datasets nested under the inner layer name
        assert f["rpn_model/rpn_class_raw/bias:0"].shape == (6,)
    layers = _layers()
    load_weights(layers, path)
    inner = {layer.name: layer for layer in layers["rpn_model"].layers}
    base = _values_of(content)["rpn_model"]
    _assert_values(inner["rpn_conv_shared"], base[0:2])
    _assert_values(inner["rpn_class_raw"], base[2:4])
    _assert_values(inner["rpn_bbox_pred"], base[4:6])


def test_exclude_keeps_initial_weights(tmp_path):
    path = _write_legacy(tmp_path / "w.h5", _legacy_arrays(_layers()))
    layers = _layers()
    before = [w.numpy().copy() for w in layers["conv1"].weights]
    report = load_weights(layers, path, exclude=["conv1", "bn_conv1", "conv_1"])
    for weight, value in zip(layers["conv1"].weights, before):
        np.testing.assert_array_equal(weight.numpy(), value)
    assert set(report.skipped) == {"conv1", "bn_conv1"}
    assert report.reasons["conv1"] == "excluded"
    assert "conv1" not in report.loaded and "conv1" not in report.missing
    assert "res2a_branch2a" in report.loaded
    assert report.notes == ["exclude names neither in the model nor in the file (typo?): conv_1"]


def test_class_count_mismatch_auto_excludes_the_heads(tmp_path):
    path = _write_legacy(tmp_path / "coco.h5", _legacy_arrays(_layers(num_classes=81)))
    layers = _layers(num_classes=2)
    report = load_weights(layers, path)
    assert set(report.skipped) == {"mrcnn_class_logits", "mrcnn_bbox_fc", "mrcnn_mask"}
    assert report.reasons["mrcnn_mask"] == "class count 81 in file vs 2 in model"
    assert any("81 classes" in note for note in report.notes)
    assert set(report.loaded) == {"conv1", "bn_conv1", "res2a_branch2a", "bn2a_branch2a", "rpn_model"}
    assert "class count 81 in file vs 2 in model" in report.summary()


def test_other_shape_mismatch_raises_naming_layer_and_shapes(tmp_path):
    content = _legacy_arrays(_layers())
    content["res2a_branch2a"][0] = ("res2a_branch2a/kernel:0", np.ones((1, 1, 4, 5), np.float32))
    path = _write_legacy(tmp_path / "w.h5", content)
    with pytest.raises(
        WeightLoadError,
        match=r"res2a_branch2a: file has \[\(1, 1, 4, 5\), \(4,\)\], "
        r"model has \[\(1, 1, 4, 4\), \(4,\)\]",
    ):
        load_weights(_layers(), path)
    report = load_weights(_layers(), path, strict=False)
    assert report.mismatched == [
        "res2a_branch2a: file has [(1, 1, 4, 5), (4,)], model has [(1, 1, 4, 4), (4,)]"
    ]
    assert "res2a_branch2a" not in report.loaded and "bn2a_branch2a" in report.loaded
    # Excluding the layer is the way out.
    assert "res2a_branch2a" in load_weights(_layers(), path, exclude=["res2a_branch2a"]).skipped


def test_array_count_mismatch_raises(tmp_path):
    content = _legacy_arrays(_layers())
    content["conv1"] = content["conv1"][:1]  # a conv without bias
    path = _write_legacy(tmp_path / "w.h5", content)
    with pytest.raises(WeightLoadError, match=r"conv1: file has \[\(3, 3, 3, 4\)\], model has"):
        load_weights(_layers(), path)


def test_keras3_resnet_name_mapping():
    assert keras3_resnet_name("conv1_conv") == "conv1"
    assert keras3_resnet_name("conv1_bn") == "bn_conv1"
    assert keras3_resnet_name("conv2_block1_1_conv") == "res2a_branch2a"
    assert keras3_resnet_name("conv3_block4_2_bn") == "bn3d_branch2b"
    assert keras3_resnet_name("conv4_block23_3_conv") == "res4w_branch2c"
    assert keras3_resnet_name("conv5_block1_0_bn") == "bn5a_branch1"
    assert keras3_resnet_name("conv2_block1_out") is None
    assert keras3_resnet_name("res2a_branch2a") is None


def test_keras3_imagenet_file_is_mapped_automatically(tmp_path):
    layers = {
        "conv1": _conv("conv1", 4, 3, 3),
        "bn_conv1": _bn("bn_conv1", 4),
        "res2a_branch2a": _conv("res2a_branch2a", 4, 1, 4),
        "res2a_branch1": _conv("res2a_branch1", 4, 1, 4),
        "bn4w_branch2b": _bn("bn4w_branch2b", 4),
    }
    keras3_names = [
        "conv1_conv",
        "conv1_bn",
        "conv2_block1_1_conv",
        "conv2_block1_0_conv",
        "conv4_block23_2_bn",
    ]
    content, value = {}, 1.0
    for k3, name in zip(keras3_names, layers):
        entries = []
        for weight in layers[name].weights:
            entries.append((f"{k3}/{weight.path.split('/')[-1]}:0", np.full(weight.shape, value, np.float32)))
            value += 1
        content[k3] = entries
    content["conv1_pad"] = []
    content["probs"] = [("probs/kernel:0", np.ones((4, 10), np.float32))]
    path = _write_legacy(tmp_path / "resnet_k3.h5", content, model_weights=True)
    report = load_weights(layers, path)
    values = _values_of(content)
    for k3, name in zip(keras3_names, layers):
        _assert_values(layers[name], values[k3])
    assert report.renamed["conv4_block23_2_bn"] == "bn4w_branch2b"
    assert len(report.renamed) == 5
    assert report.skipped == ["probs"]
    assert any("epsilon" in note for note in report.notes)


def test_split_layer_names_attribute_and_in_order_loading(tmp_path):
    content = _legacy_arrays(_layers())
    path = _write_legacy(tmp_path / "split.h5", content, split_layer_names=True)
    assert list(read_legacy_h5(path)) == list(content)
    # by_name=False: the i-th file layer goes to the i-th model layer, names ignored.
    renamed = {f"layer_{i}": entries for i, entries in enumerate(content.values())}
    path = _write_legacy(tmp_path / "positional.h5", renamed)
    layers = _layers()
    report = load_weights(layers, path, by_name=False)
    assert report.loaded == list(layers)
    values = _values_of(content)
    for name in layers:
        _assert_values(layers[name], values[name])
    del renamed["layer_0"]
    path = _write_legacy(tmp_path / "short.h5", renamed)
    with pytest.raises(WeightLoadError, match="the file has 7 layers with weights, the model 8"):
        load_weights(_layers(), path, by_name=False)


def test_unreadable_files_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="weight file not found"):
        load_weights(_layers(), tmp_path / "nope.h5")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d")])
    model.save_weights(str(tmp_path / "k3.weights.h5"))
    with pytest.raises(WeightLoadError, match="Keras 3 .weights.h5 file: use load_checkpoint"):
        load_weights(_layers(), tmp_path / "k3.weights.h5")


def test_summary_lists_everything(tmp_path):
    content = _legacy_arrays(_layers(num_classes=5))
    content["extra_layer"] = [("extra_layer/kernel:0", np.ones((2, 2), np.float32))]
    path = _write_legacy(tmp_path / "w.h5", content)
    layers = _layers()
    layers["fpn_p2"] = _conv("fpn_p2", 4, 3, 4)
    text = load_weights(layers, path, exclude=["conv1"]).summary()
    assert "4 layers loaded" in text
    assert "skipped (not in model): 1: extra_layer" in text
    assert "skipped (excluded): 1: conv1" in text
    assert "missing in file (kept as initialised): 1: fpn_p2" in text
    assert "the file has 5 classes, the model 2" in text


# ---------------------------------------------------------------------------------- checkpoints


def _small_model(seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(4, name="a"), keras.layers.Dense(2, name="b")]
    )


def test_checkpoint_save_find_load(tmp_path):
    directory = tmp_path / "ckpt"
    assert find_last_checkpoint(directory) is None
    model = _small_model(0)
    for epoch in (1, 3, 12):
        path = save_checkpoint(model, directory, epoch)
    assert path.name == "mask_rcnn_0012.weights.h5"
    (directory / "mask_rcnn_0099.weights.h5.bak").write_text("not a checkpoint")
    (directory / ".tmp_1_mask_rcnn_0050.weights.h5").write_text("half written")
    assert find_last_checkpoint(directory) == (directory / "mask_rcnn_0012.weights.h5", 12)
    fresh = _small_model(1)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert not np.allclose(fresh.predict(x, verbose=0), model.predict(x, verbose=0))
    load_checkpoint(fresh, directory / "mask_rcnn_0012.weights.h5")
    np.testing.assert_allclose(fresh.predict(x, verbose=0), model.predict(x, verbose=0))
    with pytest.raises(FileNotFoundError):
        load_checkpoint(fresh, directory / "mask_rcnn_0013.weights.h5")


def test_crash_while_saving_leaves_no_checkpoint(tmp_path, monkeypatch):
    model = _small_model(0)
    save_checkpoint(model, tmp_path, 1)

    def crash(path):
        with open(path, "wb") as f:
            f.write(b"\x89HDF half")
        raise KeyboardInterrupt

    monkeypatch.setattr(model, "save_weights", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(model, tmp_path, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask_rcnn_0001.weights.h5"]
    assert find_last_checkpoint(tmp_path) == (tmp_path / "mask_rcnn_0001.weights.h5", 1)


def test_checkpoint_prefix_and_suffixes(tmp_path):
    model = _small_model(0)
    save_checkpoint(model, tmp_path, 7)  # default prefix: ignored by the prefixed search below
    for epoch in (2, 3):
        path = save_checkpoint(model, tmp_path, epoch, prefix="mask_rcnn_book_")
    assert (
        path
        == checkpoint_path(tmp_path, 3, prefix="mask_rcnn_book_")
        == tmp_path / "mask_rcnn_book_0003.weights.h5"
    )
    assert find_last_checkpoint(tmp_path, prefix="mask_rcnn_book_") == (path, 3)
    assert find_last_checkpoint(tmp_path) == (tmp_path / "mask_rcnn_0007.weights.h5", 7)
    (tmp_path / "mask_rcnn_book_0004.h5").write_bytes(b"")  # a matterport (Keras 2) checkpoint
    assert find_last_checkpoint(tmp_path, prefix="mask_rcnn_book_") == (path, 3)
    found = find_last_checkpoint(tmp_path, prefix="mask_rcnn_book_", suffixes=(".weights.h5", ".h5"))
    assert found == (tmp_path / "mask_rcnn_book_0004.h5", 4)
    assert find_last_checkpoint(tmp_path, prefix="mask_rcnn_dvd_") is None


def test_incompatible_checkpoint_raises_weight_load_error(tmp_path):
    path = save_checkpoint(_small_model(0), tmp_path, 1)
    other = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(5, name="a"), keras.layers.Dense(2, name="b")]
    )
    with pytest.raises(WeightLoadError, match="cannot restore this checkpoint"):
        load_checkpoint(other, path)


# ---------------------------------------------------------------------------------- the real model


def test_tiny_mask_rcnn_legacy_round_trip(tmp_path, tiny_cfg):
    """Weights of a tiny MaskRCNN written in matterport's layout load into a fresh one: same outputs."""
    from bookseg.mrcnn.model import MaskRCNN, named_weight_layers

    keras.utils.set_random_seed(1)
    source = MaskRCNN(tiny_cfg)
    content = {
        name: [(f"{w.path}:0", w.numpy()) for w in layer.weights]
        for name, layer in named_weight_layers(source).items()
    }
    path = _write_legacy(tmp_path / "tiny.h5", content)
    keras.utils.set_random_seed(2)
    target = MaskRCNN(tiny_cfg)
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    molded = (image.astype(np.float32) - np.float32(tiny_cfg.mean_pixel))[None]
    assert not np.allclose(source.backbone_fpn(molded)[0], target.backbone_fpn(molded)[0])
    report = load_weights(target, path)
    assert report.missing == [] and report.skipped == [] and len(report.loaded) == len(content)
    for a, b in zip(source.backbone_fpn(molded), target.backbone_fpn(molded)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    expected = source.detect([image], min_confidence=0.0)[0]
    got = target.detect([image], min_confidence=0.0)[0]
    assert len(expected["scores"]) > 0
    for key in ("rois", "class_ids", "scores", "masks"):
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
