"""bartos_split: Bartos & Akyol's Table 1, ResNet at split ratios 0.70/0.75/0.80 (3 trials).

Protocol (Section III.C): "the best partitioning was decided using ResNet with 50 epochs and the
batch size of 64"; Table 1 lists 70/30, 75/25 and 80/20 (accuracies 0.85, 0.89, 0.94).

Their "test set" is the held-out 30/25/20 % of the training data, i.e. our ``split_ratio``'s
validation part: Table 1's accuracies correspond to ``best_val_accuracy`` (the space's metric). The
common test set (CIFAKE's own 20,000-image test split) is extra, scored for every trial on the
same images. (The paper says 75 % "provided the highest classification accuracy", yet its table
shows 80 % highest; the space runs all three and lets the tables say.)

Judgement calls, with the paper's evidence:

* Depth: the paper never says which ResNet (it cites He et al. and shows a generic residual
  network, Fig. 4). We use ``resnet18``, the torchvision ImageNet-stem ResNet-18: the smallest
  standard ResNet, consistent with "ResNet model took less time to train" than their VAE, and the
  only ResNet of ours with ImageNet weights at this depth (``resnet18_cifar`` has none).
* Resolution: "All image data was processed at a resolution of 64x64 pixels" (Section III.A), so
  ``image_size=64``: 32x32 CIFAKE is upsampled on the device. 64 px is one of ``resnet18``'s
  declared resolutions (the ImageNet stem leaves a 2x2 map before global pooling).
  ``resnet18_cifar`` is declared at 32 px only.
* Pretrained: ``pretrained=True``. The paper's ResNet is the "feature extraction" approach it
  describes as using "a pre-trained deep convolutional neural network (CNN) such as VGG, ResNet,
  or Inception to extract features" (Section I), and its fine tuning "includes using a
  pre-trained ResNet Model, modification of the last classification layer" (Section III.D).
  The ImageNet weights come from ``python -m study.fetch_weights``; offline without them each
  trial fails at its start with that advice, so run ``--set pretrained=false`` there.
* Optimiser: not stated for the ResNet; Adam at 0.001, the rate of their VAE experiment
  ("changing the learning rate parameter (0.001)") and the Keras default.
* No ASHA: Table 1 trains every ratio for the full 50 epochs; no early stopping is mentioned.
"""

from __future__ import annotations

from search_spaces.base import Space, grid

SPACE = Space(
    name="bartos_split",
    description="Bartos & Akyol Table 1: pretrained ResNet-18 at 64px, 50 epochs, batch 64, "
                "split {0.70, 0.75, 0.80}",
    params={"split_ratio": grid(0.70, 0.75, 0.80)},  # Table 1: 70/30, 75/25, 80/20
    fixed={
        "model": "resnet18",
        "pretrained": True,
        "image_size": 64,  # "processed at a resolution of 64x64 pixels" (Section III.A)
        "epochs": 50,  # "ResNet with 50 epochs" (Section III.C)
        "batch_size": 64,  # "and the batch size of 64" (Section III.C)
        "optimizer": "adam",
        "lr": 1e-3,
    },
    asha=None,  # every ratio trains its full 50 epochs, as in Table 1
    paper="Bartos & Akyol 2023, Deep Learning for Image Authentication, Table 1 (Section III.C)",
    data_hint="a CIFAKE archive or folder (--data archive.zip); its test/ split is the common "
              "test set, the validation part of split_ratio is the paper's test set",
)
