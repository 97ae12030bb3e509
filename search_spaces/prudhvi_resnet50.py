"""prudhvi_resnet50: Prudhvi et al.'s ResNet-50 with a dense head, 70/20/10 split (1 trial).

Protocol (Section X, code cells 10.3-10.6): ``ResNet50(weights='imagenet', include_top=False,
input_shape=(32, 32, 3))`` fine-tuned with a Flatten / Dense 256 / BatchNorm / Dropout 0.5 /
Dense 128 / sigmoid head (``resnet50_dense_head``), images at 32x32 rescaled by 1/255, Adam at
0.001 with ``lr * 0.95`` every epoch, flips (left-right and up-down), brightness (max delta
0.1) and contrast (0.9-1.1) augmentation (our ``augment``), ``EarlyStopping(monitor='val_loss',
patience=3, restore_best_weights=True)`` and ``epochs=10``.

Split: ``train_size = int(len(data) * 0.7)``, ``cv_size = int(len(data) * 0.2)``, the rest
(10 %) test. Their data is one folder of REAL and FAKE images ("Found 20000 files belonging to
2 classes") with no test split of its own, so our loader carves its fixed stratified 10 %
hold-out as the common test set, and of the remaining 90 % pool 0.70 / 0.90 = 7/9 = 0.778 trains
and 2/9 (20 % of all images) validates: 70/20/10 exactly. (On CIFAKE, whose own test split is
the test set, the same ratio trains on 77.8 % of the 100,000 training images.)

Judgement calls, with the paper's evidence:

* Batch size: not stated; 32, the default of ``tf.keras.utils.image_dataset_from_directory``
  that loads their data (their split counts batches of it).
* Their splits take batches of a dataset that reshuffles on every pass, and their augmented
  training set maps over the whole ``data``; we train on a fixed, disjoint training split.
* Keras' ``LearningRateScheduler`` applies ``lr * 0.95`` before the first epoch too (epoch 1 at
  0.00095); our ``lr_decay`` steps after each epoch (epoch 1 at 0.001): a 5 % shift of the
  whole schedule.
* Pretrained: ``pretrained=True`` (ImageNet, as stated). The weights need ``python -m
  study.fetch_weights``; offline without them the trial fails at its start with that advice.
* No ASHA: early stopping (patience 3) is the paper's only stopping rule.
* Text against code: the Methods text trains on "70% ... and 30% for validation" with "random
  rotations, flips, and zooms"; the code (cells 10.3 and 10.6) splits 70/20/10 and augments
  with flips, brightness and contrast. We follow the code, which produced Figure 4.
* ImageNet weights: Keras' ``ResNet50(weights='imagenet')`` are the original Caffe-converted
  weights (BGR input, mean subtraction); torchvision's ``resnet50`` weights are retrained ones
  (RGB, mean/std). Both are ResNet-50 v1 and start from ImageNet; the images here are rescaled
  by 1/255 for either (``normalize="unit"``, as their ``Rescaling``), so neither sees the
  preprocessing it was trained with, as in the paper.
"""

from __future__ import annotations

from search_spaces.base import Space
from trainables.dataset import HOLDOUT_FRACTION

TRAIN_FRACTION = 0.70  # train_size = int(len(data) * 0.7) (cell 10.3)
# Of the pool left after the fixed hold-out (1 - 0.10): 0.70 / 0.90 = 7/9 trains, 2/9 validates.
SPLIT_RATIO = TRAIN_FRACTION / (1.0 - HOLDOUT_FRACTION)

SPACE = Space(
    name="prudhvi_resnet50",
    description="Prudhvi et al.: ImageNet ResNet-50 + dense head at 32px, Adam 0.001 x 0.95 per "
                "epoch, augmentation, patience 3, 10 epochs, 70/20/10 split",
    params={},
    fixed={
        "model": "resnet50_dense_head",
        "pretrained": True,  # ResNet50(weights='imagenet', ...) (cell 10.4)
        "image_size": 32,  # image_size=(32, 32) (cell 10.3)
        "normalize": "unit",  # Rescaling(1./255), not ImageNet's mean/std
        "optimizer": "adam",
        "lr": 1e-3,  # initial_learning_rate = 0.001 (cell 10.5)
        "lr_decay": 0.95,  # lr * 0.95 each epoch (cell 10.5)
        "augment": True,  # flips, brightness 0.1, contrast 0.9-1.1 (cell 10.6)
        "patience": 3,  # EarlyStopping(monitor='val_loss', patience=3, ...) (cell 10.6)
        "epochs": 10,  # model.fit(..., epochs=10) (cell 10.6)
        "batch_size": 32,  # not stated; image_dataset_from_directory's default
        "split_ratio": SPLIT_RATIO,
    },
    asha=None,
    paper="Prudhvi, Adinarayana, Chandu, Musthak & Sireesha, Deep Learning Approach for "
          "Classifying Real and Computer-Generated Images, Section X (cells 10.3-10.6)",
    data_hint="one folder or .zip of <root>/<class>/ images (AI/ and REAL/, like their "
              "20,000-image folder), so the fixed 10% hold-out is the test set; CIFAKE works "
              "too",
)
