"""purba_cnns: Purba & Suparwito's CNN #1-#3 and VGG16 at 32x32, early stopping, patience 2.

Protocol (Materials and methods; Tables 1-3): CIFAKE at 32x32, pixels rescaled to [0, 1], Adam
with "a learning rate of 0.001 ... across all model architectures", "trained for 100 epochs", an
"Early-Stopping callback will monitor the validation loss, stopping training after 2 consecutive
epochs without improvement" (Training the model; Table 2). The four architectures are Table
1's (parameter counts 78,945 / 89,633 / 360,609 / 14,879,041, matched by the registered models).
One trial each.

Judgement calls, with the paper's evidence:

* Split: they train on all 100,000 training images and validate on the 20,000 test images
  ("train_data_gen and valid_data_gen"); Table 3 ("results on the validation dataset") is
  therefore on CIFAKE's test split, which is our common test set: compare Table 3 with the
  ``test_*`` columns. Our early stopping needs a validation set drawn from the training pool, so
  ``split_ratio=0.8`` keeps 20,000 validation images, as many as theirs (training then sees
  80,000, not 100,000). TrainConfig cannot validate on the test split itself.
* Table 4 (20 Unsplash / Stable Diffusion images) is not available and is not reproduced.
* Batch size: not stated; 32, the default of Keras' ``ImageDataGenerator.flow_from_directory``
  and ``fit`` that their TensorFlow pipeline uses.
* Pretrained: the paper compares the CNNs "with the pre-trained VGG16 algorithm", so ``vgg16``
  gets ImageNet weights (``per_model``); the custom CNNs have none. Offline without cached
  weights (``python -m study.fetch_weights``) the VGG16 trial fails at its start with that
  advice; ``--set pretrained=false`` trains it from scratch.
* Which model is scored: their ``EarlyStopping`` names no ``restore_best_weights``, so Keras'
  default (off) keeps the weights training stopped with, two epochs past the best. Our trials
  record both: ``test_*`` (the best epoch, restored) and ``final_test_*`` (the stopping
  epoch's weights); the paper tables compare ``final_test_*``.
* Positive class of F1 and mAP: not stated. Keras' ``flow_from_directory`` numbers the class
  folders alphabetically (FAKE 0, REAL 1) and a sigmoid output scores class 1, which would make
  REAL the positive class; their text treats detecting FAKE as the task. We report FAKE as the
  positive class (``test_f1``, ``test_ap``) and REAL's too (``test_f1_real``): on balanced
  CIFAKE the two F1s differ by well under a point when accuracy is above 0.9.
* VGG16 frozen or fine-tuned: not stated. We fine-tune every layer (the ImageNet weights are the
  starting point), as their one optimiser over "the model" suggests; ``resnet50_frozen_head``
  is this project's frozen-base counterpart.
* Table 4 contradicts Figs 16-17: the confusion matrices give VGG16 and CNN #3 14 of 20 right
  (0.70), where Table 4 prints 0.80 and 0.83. The paper table shows Table 4 as printed and says
  so in its note.
* No ASHA: early stopping (patience 2) is the paper's only stopping rule.
* Normalisation: every input is divided by 255, VGG16 included (their ``rescale=1./255``), so
  ``normalize="unit"`` overrides VGG16's ImageNet mean/std.
"""

from __future__ import annotations

from search_spaces.base import Space, grid, per_model

SPACE = Space(
    name="purba_cnns",
    description="Purba & Suparwito Tables 1-3: CNN #1-#3 and pretrained VGG16 at 32px, Adam "
                "0.001, 100 epochs, early stopping patience 2",
    params={
        "model": grid("purba_cnn1", "purba_cnn2", "purba_cnn3", "vgg16"),  # Table 1
        "pretrained": per_model({"purba_cnn1": False, "purba_cnn2": False,
                                 "purba_cnn3": False, "vgg16": True}),
    },
    fixed={
        "image_size": 32,  # "120,000 images of 32x32 pixels in RGB format"
        "epochs": 100,  # Table 2
        "patience": 2,  # "2 consecutive epochs without improvement" on validation loss
        "optimizer": "adam",
        "lr": 1e-3,  # Table 2
        "batch_size": 32,  # not stated; the Keras default
        "split_ratio": 0.8,  # 20,000 validation images, as many as their validation set
        # "rescale=1./255" for every model, VGG16 included (their ImageDataGenerator)
        "normalize": "unit",
    },
    asha=None,
    paper="Purba & Suparwito 2025, Classifying AI-Generated and Original Images Using a CNN "
          "Algorithm, Tables 1-3 (Table 4's 20 outside images are not available)",
    data_hint="a CIFAKE archive or folder (--data archive.zip); its test/ split is the paper's "
              "validation set (Table 3)",
)
