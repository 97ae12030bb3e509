"""cifake_tpe: Optuna's TPE over learning rate, weight decay, batch size, augmentation and
architecture on CIFAKE, pruned by ASHA (40 trials).

Not a reproduction: a search over the knobs the seed papers fixed by hand (Adam at 0.001
wherever a seed states its rate; batch sizes 16-128 in Bartos & Akyol, Table 2; augmentation in
Prudhvi et al.). TPE needs sampled values, so every searched key is a ``choice()`` or a range;
the study's ``--seed`` seeds the sampler.

Choices:

* Architectures: every registered classifier that trains from scratch at CIFAKE's native 32x32
  (``image_size=0``): the Purba CNNs and VGG16, Iacob's CNN, the small CNN, the CIFAR-stem
  ResNet-18 and Prudhvi's ResNet-50 head. Left out: the 224-px models (``resnet18``,
  ``resnet50_frozen_head``, ``convnext_small``), which would upsample each 32-px image 49-fold
  and dominate the budget, and ``vae_detector``, an anomaly detector whose Table 2 accuracy
  (at most 0.71, Bartos & Akyol) TPE would only spend trials confirming.
* ``pretrained=False`` for all: TPE cannot tie a value to the model it picked (``per_model``), and
  mixing ImageNet-initialised and random models would confound the architecture choice.
* lr log-uniform in [1e-4, 1e-2], a decade either side of the papers' 0.001; weight decay among
  0 (every paper) and 1e-5..1e-3; batch size 16-128 (Bartos & Akyol, Table 2).
* 40 epochs per trial: Bartos & Akyol saw the validation loss reach "a plateau state" after 40.
  ASHA rungs at 5, 10 and 20 epochs stop the weak samples; 40 samples of an 8-architecture space.
"""

from __future__ import annotations

from search_spaces.base import Asha, Space, choice, loguniform

MODELS = (
    "purba_cnn1", "purba_cnn2", "purba_cnn3", "vgg16", "iacob_cnn", "small_cnn",
    "resnet18_cifar", "resnet50_dense_head",
)

SPACE = Space(
    name="cifake_tpe",
    description="Optuna TPE over lr, weight decay, batch size, augmentation and 32px "
                "architecture, 40 epochs, ASHA",
    params={
        "model": choice(*MODELS),
        "lr": loguniform(1e-4, 1e-2),
        "weight_decay": choice(0.0, 1e-5, 1e-4, 1e-3),
        "batch_size": choice(16, 32, 64, 128),
        "augment": choice(False, True),
    },
    fixed={"epochs": 40, "optimizer": "adam", "image_size": 0, "pretrained": False,
           "split_ratio": 0.8},
    search="optuna_tpe",
    num_samples=40,
    asha=Asha(grace_period=5, reduction_factor=2),
    paper="search over the seeds' fixed choices (Bartos & Akyol Table 2 batch sizes and 40-epoch "
          "plateau; their Adam 0.001; Prudhvi et al. augmentation)",
    data_hint="a CIFAKE archive or folder (--data archive.zip)",
)
