"""The project's own baseline models: ``small_cnn`` and ``resnet18_cifar``.

Usage: ``create_model("small_cnn")`` (registered by ``trainables.models``; the seed papers'
models live in ``trainables.zoo``, the fast recipe's in ``trainables.fast``).
"""

from __future__ import annotations

from torch import nn

from trainables.model_base import declare_model


@declare_model("small_cnn", resolution=32, resolutions=(32, 64), gpu_fraction=0.25)
def small_cnn(pretrained: bool = False) -> nn.Module:
    """A small fast CNN (3 conv blocks with batch norm, global pooling), for quick studies."""

    def block(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )

    return nn.Sequential(
        block(3, 16), block(16, 32), block(32, 64),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 2),
    )


@declare_model("resnet18_cifar", resolution=32, resolutions=(32,), gpu_fraction=0.5)
def resnet18_cifar(pretrained: bool = False) -> nn.Module:
    """ResNet-18 with a CIFAR-style stem (3x3 conv, stride 1, no max-pool) for 32x32 input."""
    from torchvision.models import resnet18 as tv_resnet18

    model = tv_resnet18(weights=None, num_classes=2)
    model.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


SPECS = (small_cnn, resnet18_cifar)
