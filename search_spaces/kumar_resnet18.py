"""kumar_resnet18: Kumar's pretrained ResNet-18 (224 px) against a custom CNN, 10 epochs.

Protocol: ResNet-18 fine-tuned from ImageNet weights ("we leveraged transfer learning by
fine-tuning a pretrained ResNet-18 model", Section IV.A), images "resized to a standard
dimension of 224x224 pixels" and normalised with ImageNet's mean and standard deviation
(Section III.A), the final layer "adjusted to output two classes", cross-entropy loss,
``optim.Adam(model_restnet18.parameters(), lr=0.001)``, and curves "across 10 epochs" (Section
V.D) for both models. The best model is checkpointed on validation, as our best-epoch test
metrics are (lowest validation loss).

Judgement calls, with the paper's evidence:

* Custom CNN = ``iacob_cnn``. Kumar gives only its shape (Section IV.B): "an initial
  convolutional layer with a 3x3 kernel, followed by ReLU activation and max pooling",
  "multiple convolutional layers ... each followed by ReLU activation and pooling", and "fully
  connected layers ... output the final class probabilities". ``iacob_cnn`` is exactly that:
  three 3x3 convolutions each with ReLU and max pooling, then two dense layers (128, then a
  two-way softmax, matching Kumar's two-class cross-entropy). The Purba CNNs end in one sigmoid
  unit, and ``small_cnn`` has batch norm and a single dense layer.
* The custom CNN sees 32x32 input, not 224x224 ("trained using the same dataset and
  preprocessing techniques as ResNet-18"): ``iacob_cnn``'s dense layer is sized for 32 px, its
  only declared resolution, and ``image_size`` is one value for both models, so it stays 0 (each
  model's native size: 224 for ``resnet18``, 32 for ``iacob_cnn``). CIFAKE is 32x32, so the 224
  px copies carry no extra information; the CNN also gets unit rather than ImageNet
  normalisation. A 224-px custom CNN would need a model registered at that size.
* Pretrained: ``per_model`` gives ``resnet18`` its ImageNet weights and ``iacob_cnn`` (which has
  none) random initialisation, as in the paper. The weights need ``python -m study.fetch_weights``
  where there is network access; offline without them the ResNet trial fails at its start with
  that advice. ``--set pretrained=false`` runs both from scratch, which is also the control for
  Kumar's hypothesis that pretraining helps "compared to training a model from scratch".
* Split: Kumar's confusion matrices each sum to 10,000 images (ResNet-18: 4703 + 4955 + 88 +
  254), half of CIFAKE's 20,000-image test split, so we keep a validation set of that size:
  ``split_ratio=0.9`` of the 100,000 training images (10,000 validation). The common test set is
  CIFAKE's whole test split.
* Batch size: not stated; 32, the common default (PyTorch examples, Keras).
* No ASHA, no early stopping: both models train their 10 epochs.
"""

from __future__ import annotations

from search_spaces.base import Space, grid, per_model

SPACE = Space(
    name="kumar_resnet18",
    description="Kumar: pretrained ResNet-18 at 224px vs a custom CNN (iacob_cnn), Adam 0.001, "
                "10 epochs",
    params={
        "model": grid("resnet18", "iacob_cnn"),
        "pretrained": per_model({"resnet18": True, "iacob_cnn": False}),
    },
    fixed={
        "image_size": 0,  # native: 224 for resnet18 (Section III.A), 32 for iacob_cnn
        "epochs": 10,  # "across 10 epochs" (Section V.D)
        "optimizer": "adam",
        "lr": 1e-3,  # optim.Adam(..., lr=0.001) (Section IV.A)
        "batch_size": 32,  # not stated
        "split_ratio": 0.9,  # 10,000 validation images, the size of their test set
    },
    asha=None,
    paper="Kumar, Detecting AI-Generated Synthetic Images using Deep Learning, Sections "
          "III.A, IV.A-B, V.D-E",
    data_hint="a CIFAKE archive or folder (--data archive.zip)",
)
