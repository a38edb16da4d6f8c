"""bookseg's own Mask R-CNN for TensorFlow 2 / Keras 3, keeping matterport's layer names and losses.

See docs/mrcnn-differences.md for where it deliberately differs from matterport/Mask_RCNN.
"""
