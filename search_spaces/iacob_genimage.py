"""iacob_genimage: Iacob & Nuta's custom CNN, frozen ResNet-50 and ConvNeXt-Small on tiny-GenImage.

Protocol (Sections 3-4): the Kaggle tiny-GenImage (7 generators, each with train/ and val/
folders of ``ai`` and ``nature`` images), all generators pooled ("We used all the training and
validation images from all the folders"); no data augmentation; Keras with Adam; seed 42. Three
models, one trial each:

* ``iacob_cnn``: "images of dimensions 32x32x3", trained from scratch.
* ``resnet50_frozen_head``: "initialized with ImageNet weights", "inputs of 224 x 224 x 3", the
  convolutional base frozen, a pooling / dense 256 / dropout / sigmoid head.
* ``convnext_small``: "a ConvNextSmall network adapted for binary classification", 224 px.

Judgement calls, with the paper's evidence:

* The paper is a draft with no results section: epochs, batch size and the validation split are
  not stated. We use 10 epochs, batch 32 (the Keras default) and ``split_ratio=0.8`` (20 % of
  each generator's train/ folder for validation). tiny-GenImage's val/ folders, which the paper
  calls validation, are our common test set.
* Resolution: ``image_size=0`` gives each model its native input, which is the paper's: 32 px for
  the CNN, 224 px for ResNet-50 and ConvNeXt.
* Pretrained: ImageNet weights for ResNet-50 (stated) and ConvNeXt-Small (not stated; the
  weights Keras' ``ConvNeXtSmall`` loads by default, and the paper's draft section on it is
  unfinished); none for the custom CNN ("instead of learning from scratch, like in the first
  example"), so ``pretrained`` follows the model. ``resnet50_frozen_head`` freezes its base
  only when pretrained. Offline without cached weights (``python -m study.fetch_weights``) the
  two pretrained trials fail at their start with that advice.
* Learning rate: not stated; 0.001, Keras' Adam default.
* ConvNeXt-Small frozen or fine-tuned: the draft says only for ResNet-50 that its base is frozen;
  ``convnext_small`` fine-tunes every layer (its section is unfinished). Set
  ``--set pretrained=false`` to train it from scratch instead.
* No ASHA, no early stopping: none is mentioned.
"""

from __future__ import annotations

from search_spaces.base import Space, grid, per_model

SPACE = Space(
    name="iacob_genimage",
    description="Iacob & Nuta: custom CNN (32px) vs frozen ImageNet ResNet-50 and ConvNeXt-Small "
                "(224px) on tiny-GenImage",
    params={
        "model": grid("iacob_cnn", "resnet50_frozen_head", "convnext_small"),
        "pretrained": per_model({"iacob_cnn": False, "resnet50_frozen_head": True,
                                 "convnext_small": True}),
    },
    fixed={
        "image_size": 0,  # native: 32 for the CNN, 224 for ResNet-50 and ConvNeXt (Section 4)
        "augment": False,  # "We didn't use any data augmentation techniques"
        "seed": 42,  # "we set the seed to 42"
        "optimizer": "adam",
        "lr": 1e-3,  # not stated; Keras' Adam default
        "epochs": 10,  # not stated
        "batch_size": 32,  # not stated; the Keras default
        "split_ratio": 0.8,  # not stated
    },
    asha=None,
    paper="Iacob & Nuta, Evaluating Deep Learning Methods for Detection of AI Generated Images: "
          "A Study on GenImage, Sections 3-4 (draft; no results tables)",
    data_hint="tiny-GenImage (Kaggle yangsangtai/tiny-genimage) as a folder or .zip in the "
              "<generator>/{train,val}/{ai,nature}/ layout: --data tiny-genimage.zip "
              "--image-size 224 (val/ is the common test set; the generator is a column)",
)
