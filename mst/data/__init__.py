"""Images to model input: decoding, the multi-scale patch representation, augmentation, the
tf.data pipelines of training and evaluation, and the tfds dataset builders (`datasets/`)."""
