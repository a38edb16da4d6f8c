"""Overlay drawing: shapes, exact fill and outline colours, tags, captions and saving."""

import cv2
import numpy as np
import pytest

from bookseg.data.viz import draw_instances, instance_colors, line_width, save_image, side_by_side


def gray_image(height, width, value=100):
    return np.full((height, width, 3), value, np.uint8)


def ellipse_and_rect(height, width):
    masks = np.zeros((height, width, 2), np.uint8)
    first = np.zeros((height, width), np.uint8)
    cv2.ellipse(first, (width // 3, height // 2), (width // 8, height // 3), 15, 0, 360, 1, cv2.FILLED)
    masks[..., 0] = first
    masks[height // 5 : height * 4 // 5, width * 2 // 3 : width * 5 // 6, 1] = 1
    return masks.astype(bool)


def boundary(mask):
    """Mask pixels with a 4-neighbour outside the mask (the image border counts as outside)."""
    padded = np.pad(mask, 1)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def test_instance_colors_are_distinct_and_deterministic():
    colors = instance_colors(60)
    assert colors.shape == (60, 3) and colors.dtype == np.uint8
    assert len({tuple(c) for c in colors}) == 60
    np.testing.assert_array_equal(colors, instance_colors(60))
    assert not np.array_equal(instance_colors(5, seed=1), instance_colors(5, seed=0))
    assert instance_colors(0).shape == (0, 3)


@pytest.mark.parametrize("size", [(256, 192), (1500, 2000)])
def test_fill_and_outline_colours(size):
    height, width = size
    image = gray_image(height, width)
    masks = ellipse_and_rect(height, width)
    out = draw_instances(image, masks, numbered=False, alpha=0.5)
    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(image, gray_image(height, width))  # input untouched
    colors = instance_colors(2)
    for k in range(2):
        edge = boundary(masks[..., k])
        assert edge.sum() > 20
        assert (out[edge] == colors[k]).all(), f"instance {k}: outline pixels not in its colour"
        # Deep inside (farther than the line width from the edge): exact 50 % blend.
        far = cv2.erode(
            masks[..., k].astype(np.uint8), np.ones((3, 3), np.uint8), iterations=line_width(image.shape) + 1
        ).astype(bool)
        expected = np.rint(0.5 * 100 + 0.5 * colors[k].astype(float)).astype(np.uint8)
        assert (out[far] == expected).all()
    # Far from every instance nothing changes.
    outside = ~cv2.dilate(
        masks.any(-1).astype(np.uint8), np.ones((3, 3), np.uint8), iterations=line_width(image.shape) + 1
    ).astype(bool)
    assert (out[outside] == 100).all()


def test_outline_of_mask_touching_image_border():
    image = gray_image(64, 64)
    masks = np.zeros((64, 64, 1), bool)
    masks[:, :20, 0] = True  # touches top, bottom and left edges
    out = draw_instances(image, masks, numbered=False, alpha=0.0)
    edge = boundary(masks[..., 0])
    assert (out[edge] == instance_colors(1)[0]).all()
    assert (out[30, 10] == 100).all()  # alpha 0: interior keeps the image


def test_tags_are_drawn_inside_the_instance():
    image = gray_image(256, 256)
    masks = np.zeros((256, 256, 1), bool)
    masks[40:200, 100:140, 0] = True  # a 40-px wide spine
    plain = draw_instances(image, masks, numbered=False)
    tagged = draw_instances(image, masks, scores=np.array([0.87]), labels=["book"])
    changed = np.argwhere((plain != tagged).any(-1))
    assert len(changed) > 30
    center = changed.mean(axis=0)
    assert 100 <= center[0] <= 140 and 100 <= center[1] <= 140  # around the spine's middle


def test_tag_text_scales_with_image_size():
    def tag_height(size):
        image = gray_image(size, size)
        masks = np.zeros((size, size, 1), bool)
        masks[size // 4 : size * 3 // 4, size // 4 : size * 3 // 4, 0] = True
        diff = (draw_instances(image, masks, numbered=False) != draw_instances(image, masks)).any(-1)
        rows = np.flatnonzero(diff.any(axis=1))
        return rows[-1] - rows[0] + 1

    small, large = tag_height(256), tag_height(2000)
    assert 8 <= small <= 25
    assert large > 2 * small


def test_boxes_are_drawn():
    image = gray_image(100, 100)
    masks = np.zeros((100, 100, 1), bool)
    masks[30:60, 30:60, 0] = True
    out = draw_instances(image, masks, boxes=np.array([[10, 10, 90, 90]]), numbered=False)
    color = instance_colors(1)[0]
    assert (out[10, 10:90] == color).all() and (out[89, 10:90] == color).all()
    assert (out[10:90, 89] == color).all()


def test_zero_instances_and_empty_masks():
    image = gray_image(50, 70)
    out = draw_instances(image, np.zeros((50, 70, 0), bool), scores=np.zeros(0), labels=[])
    np.testing.assert_array_equal(out, image)
    out = draw_instances(image, np.zeros((50, 70, 2), bool), scores=np.array([0.5, 0.4]))
    np.testing.assert_array_equal(out, image)


def test_bad_inputs_raise():
    image = gray_image(50, 70)
    with pytest.raises(ValueError, match="masks must be"):
        draw_instances(image, np.zeros((50, 71, 1), bool))
    with pytest.raises(ValueError, match="2 scores for 1 masks"):
        draw_instances(image, np.zeros((50, 70, 1), bool), scores=[0.1, 0.2])
    with pytest.raises(ValueError, match="uint8"):
        draw_instances(image.astype(np.float32), np.zeros((50, 70, 0), bool))


def test_side_by_side_layout():
    left = gray_image(80, 120, 10)
    right = gray_image(60, 100, 200)
    both = side_by_side(left, right)
    assert both.dtype == np.uint8
    bar = both.shape[0] - 80
    assert bar > 10
    assert both.shape[1] > 220
    np.testing.assert_array_equal(both[bar:, :120], left)
    gap = both.shape[1] - 220
    np.testing.assert_array_equal(both[bar : bar + 60, 120 + gap :], right)
    assert (both[:bar, :120] > 150).any()  # light caption text on the dark bar
    assert (both[:bar, 120 + gap :] > 150).any()


def test_save_image_round_trip_and_refuses_overwrite(tmp_path):
    image = np.zeros((20, 30, 3), np.uint8)
    image[..., 0] = 255  # pure red in RGB
    path = save_image(tmp_path / "sub" / "red.png", image)
    np.testing.assert_array_equal(cv2.imread(str(path))[..., ::-1], image)
    with pytest.raises(FileExistsError):
        save_image(path, image)
    save_image(path, image[..., ::-1].copy(), overwrite=True)
    assert cv2.imread(str(path))[0, 0].tolist() == [255, 0, 0]  # BGR of pure blue
    with pytest.raises(OSError):
        save_image(tmp_path / "x.unknown_suffix", image)


def test_tags_of_neighbouring_thin_spines_do_not_stack():
    image = gray_image(256, 256)
    masks = np.zeros((256, 256, 2), bool)
    masks[20:236, 120:126, 0] = True  # two 6-px spines side by side: tags are wider than a spine
    masks[20:236, 127:133, 1] = True

    def tag_rows(m):
        diff = (draw_instances(image, m, numbered=False) != draw_instances(image, m)).any(-1)
        return np.flatnonzero(diff.any(axis=1))

    one = tag_rows(masks[..., :1])
    both = tag_rows(masks)
    tag_height = one[-1] - one[0] + 1
    assert tag_height >= 8
    # The second tag moved along its spine instead of covering the first: rows of two tags.
    assert len(both) >= 2 * tag_height
    assert 20 <= both[0] and both[-1] < 236
