"""The seed papers' models, declared here and registered by ``trainables.models``.

Usage: ``create_model("purba_cnn3")``; at another size: ``purba_cnn3.build(resolution=64)``.

Seeds: Kumar (ResNet-18 fine-tuned at 224x224), Purba & Suparwito (CNN #1-#3 and VGG16, Table 1
parameter counts), Iacob & Nuta (custom CNN, frozen ResNet-50, ConvNeXt-Small, on tiny-GenImage),
Prudhvi et al. (ResNet-50 with a dense head) and Bartos & Akyol (a VAE used as an anomaly
detector, 64x64 input). Layers whose width depends on the input size (a Flatten feeding a Linear)
are built for the registered resolution; the factories take ``resolution`` for direct use at
another size, and the registry builds and tests each model only at its declared resolutions.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from trainables.model_base import declare_model, load_imagenet_weights

# Keras Dropout(0.5) after the first dense layer: Purba & Suparwito (CNN #1), Iacob & Nuta (custom
# CNN and the ResNet-50 head, "deactivated half of the neurons") and Prudhvi et al. (section 10.4).
DROPOUT = 0.5


class _Flatten(nn.Module):
    """``Flatten`` that names the supported resolution when an input of another size arrives."""

    def __init__(self, width: int, resolution: int) -> None:
        super().__init__()
        self.width = width
        self.resolution = resolution

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        if x.shape[1] != self.width:
            raise ValueError(
                f"this model was built for {self.resolution}x{self.resolution} input (flattened "
                f"width {self.width}) but got a width of {x.shape[1]}; its dense layers depend on "
                "the input size, so use one of its declared resolutions (image_size=0)"
            )
        return x

    def extra_repr(self) -> str:
        return f"width={self.width}, resolution={self.resolution}"


def _conv_pool_relu(conv: nn.Conv2d) -> list[nn.Module]:
    """Keras's Conv -> ReLU -> MaxPool(2), with the pooling moved before the ReLU.

    Max-pooling commutes with the monotone ReLU, so outputs and gradients are the same; the ReLU
    and its backward pass then touch a quarter of the values (iacob_cnn trains 1.28x faster on
    the CPU, purba_cnn1 1.13x). Convolutions keep their positions, and so checkpoint keys.
    """
    return [conv, nn.MaxPool2d(2), nn.ReLU(inplace=True)]


def _conv_side(size: int, same: bool, kernel: int = 3) -> int:
    """Side of a Keras Conv2D (stride 1) output followed by MaxPooling2D((2, 2))."""
    return (size if same else size - kernel + 1) // 2


# ---------------------------------------------------------------------------------------------
# Purba & Suparwito: CNN #1-#3 and VGG16 (32x32 CIFAKE, rescale 1/255, sigmoid output)
#
# The paper gives filters (16, 32, 64, 128), 3x3 kernels, ReLU, MaxPooling2D 2x2 after every
# convolution, a dense layer, dropout 0.5 and one sigmoid unit. Padding and the width of the
# dense layer of CNN #2/#3 are not stated; Table 1's parameter counts fix them (a search over
# padding, pooling, dense widths 1-4096 and 1- or 2-unit outputs finds only these):
#
# conv 3->16 (3x3): 16*(3*3*3+1) = 448;   conv 16->32: 32*(3*3*16+1) = 4,640
# conv 32->64: 64*(3*3*32+1) = 18,496;    conv 64->128: 128*(3*3*64+1) = 73,856
#
# CNN #1, 'valid' padding: 32 -conv-> 30 -pool-> 15 -conv-> 13 -pool-> 6; flatten 6*6*32 = 1,152
#   448 + 4,640 + dense 1,152*64+64 = 73,792 + out 64+1 = 65                     =  78,945
# CNN #2, 'valid' padding: ... 6 -conv-> 4 -pool-> 2; flatten 2*2*64 = 256; dense 256
#   448 + 4,640 + 18,496 + dense 256*256+256 = 65,792 + out 256+1 = 257          =  89,633
# CNN #3, 'same' padding (four 'valid' convolutions, each pooled, would shrink 32 px to 0):
#   32 -> 16 -> 8 -> 4 -> 2; flatten 2*2*128 = 512; dense 512
#   448 + 4,640 + 18,496 + 73,856 + dense 512*512+512 = 262,656 + out 512+1 = 513 = 360,609
# (CNN #3 with 'valid' padding and no pooling after its first convolution also gives 512 -> 512;
# we keep the paper's "MaxPooling2D ... after each convolutional layer".)

PURBA_FILTERS = (16, 32, 64, 128)  # "16 and 32 filters", then 64, then 128 (Purba, Modelling)
PURBA_KERNEL = 3  # "a 3x3 kernel" for every convolution (Purba, Modelling)


def _purba_cnn(n_conv: int, same: bool, dense: int, resolution: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    cin, side = 3, resolution
    for cout in PURBA_FILTERS[:n_conv]:
        layers += _conv_pool_relu(
            nn.Conv2d(cin, cout, PURBA_KERNEL, padding="same" if same else 0))
        cin, side = cout, _conv_side(side, same, PURBA_KERNEL)
    if side < 1:
        raise ValueError(f"{resolution}px input is too small for {n_conv} pooled convolutions")
    width = cin * side * side
    layers += [_Flatten(width, resolution), nn.Linear(width, dense), nn.ReLU(inplace=True),
               nn.Dropout(DROPOUT), nn.Linear(dense, 1)]
    return nn.Sequential(*layers)


@declare_model("purba_cnn1", resolution=32, resolutions=(32,), gpu_fraction=0.25)
def purba_cnn1(pretrained: bool = False, resolution: int = 32) -> nn.Module:
    """CNN #1 of Purba & Suparwito: 2 convolutions (16, 32), dense 64, sigmoid; 78,945 params."""
    # Dense 64 is stated ("a fully connected layer with two units, 64 and 1"); Table 1: 78,945.
    return _purba_cnn(2, same=False, dense=64, resolution=resolution)


@declare_model("purba_cnn2", resolution=32, resolutions=(32,), gpu_fraction=0.25)
def purba_cnn2(pretrained: bool = False, resolution: int = 32) -> nn.Module:
    """CNN #2 of Purba & Suparwito: 3 convolutions (16-64), dense 256, sigmoid; 89,633 params."""
    # Dense 256 is the only width giving Table 1's 89,633 (see the arithmetic above).
    return _purba_cnn(3, same=False, dense=256, resolution=resolution)


@declare_model("purba_cnn3", resolution=32, resolutions=(32,), gpu_fraction=0.25)
def purba_cnn3(pretrained: bool = False, resolution: int = 32) -> nn.Module:
    """CNN #3 of Purba & Suparwito: 4 convolutions (16-128), dense 512, sigmoid; 360,609 params."""
    # 'same' padding and dense 512 give Table 1's 360,609 (see the arithmetic above).
    return _purba_cnn(4, same=True, dense=512, resolution=resolution)


# VGG16 of Purba & Suparwito: the Keras VGG16 convolutional base (include_top=False, 13
# convolutions, 14,714,688 parameters) and three dense layers (Table 1: "3 Fully Connected").
# At 32x32 the base ends at 1x1x512, so Flatten gives 512, and the head holds
# 14,879,041 - 14,714,688 = 164,353 parameters:
#   dense 512*256+256 = 131,328 + dense 256*128+128 = 32,896 + out 128+1 = 129 = 164,353.
# (256 -> 128 -> 1 is the only power-of-two solution.) The paper mentions no dropout for VGG16.
VGG16_HEAD = (256, 128)


@declare_model("vgg16", resolution=32, resolutions=(32,), normalize="imagenet",
               gpu_fraction=0.5, pretrained=True)
def vgg16(pretrained: bool = False, resolution: int = 32) -> nn.Module:
    """VGG16 of Purba & Suparwito: ImageNet conv base, dense 256-128-1 head; 14,879,041 params."""
    from torchvision.models import VGG16_Weights
    from torchvision.models.vgg import cfgs, make_layers

    features = make_layers(cfgs["D"], batch_norm=False)  # torchvision's VGG16 "features"
    if pretrained:
        weights = load_imagenet_weights(VGG16_Weights)
        get_state_dict = weights.get_state_dict  # type: ignore[attr-defined]
        state = get_state_dict(progress=True, check_hash=True)
        features.load_state_dict({k.removeprefix("features."): v for k, v in state.items()
                                  if k.startswith("features.")})
    else:
        for m in features.modules():  # torchvision's VGG initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
    side = resolution // 32  # five 2x2 max-pools
    if side < 1:
        raise ValueError(f"VGG16 needs at least 32px input, got {resolution}")
    width = 512 * side * side
    d1, d2 = VGG16_HEAD
    return nn.Sequential(
        features, _Flatten(width, resolution),
        nn.Linear(width, d1), nn.ReLU(inplace=True),
        nn.Linear(d1, d2), nn.ReLU(inplace=True),
        nn.Linear(d2, 1),
    )


# ---------------------------------------------------------------------------------------------
# Iacob & Nuta (tiny-GenImage): custom CNN, frozen ResNet-50, ConvNeXt-Small

# The paper gives 32x32x3 input, three 'same'-padded ReLU convolutions each halving the size with
# max-pooling, dense 128, dropout 0.5 and a 2-way softmax, but neither filter counts nor kernel
# size: we assume the common Keras doubling 32, 64, 128 with 3x3 kernels.
IACOB_FILTERS = (32, 64, 128)  # assumption: not stated by Iacob & Nuta
IACOB_DENSE = 128  # "dense layers, which consist of 128 neurons" (Iacob & Nuta, section 4)


@declare_model("iacob_cnn", resolution=32, resolutions=(32,), gpu_fraction=0.25)
def iacob_cnn(pretrained: bool = False, resolution: int = 32) -> nn.Module:
    """Custom CNN of Iacob & Nuta: 3 same-padded convolutions, dense 128, dropout, softmax."""
    layers: list[nn.Module] = []
    cin, side = 3, resolution
    for cout in IACOB_FILTERS:
        layers += _conv_pool_relu(nn.Conv2d(cin, cout, 3, padding=1))
        cin, side = cout, side // 2
    width = cin * side * side  # 128 * 4 * 4 = 2,048 at 32px
    layers += [_Flatten(width, resolution), nn.Linear(width, IACOB_DENSE), nn.ReLU(inplace=True),
               nn.Dropout(DROPOUT), nn.Linear(IACOB_DENSE, 2)]
    return nn.Sequential(*layers)


class _BackboneHead(nn.Module):
    """A backbone followed by a head; a frozen backbone also stays in inference mode.

    Freezing follows Keras ``trainable=False``: no gradient to its weights and batch-norm layers
    keep their ImageNet statistics, even while the head trains.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, frozen: bool) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.frozen = frozen
        if frozen:
            for p in backbone.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> _BackboneHead:
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


@declare_model("resnet18", resolution=224, resolutions=(224, 64), normalize="imagenet",
               gpu_fraction=1.0, pretrained=True)
def resnet18(pretrained: bool = False) -> nn.Module:
    """ResNet-18 as fine-tuned by Kumar: ImageNet stem, 224x224 input, two-way head."""
    from torchvision.models import ResNet18_Weights
    from torchvision.models import resnet18 as tv_resnet18

    weights = load_imagenet_weights(ResNet18_Weights) if pretrained else None
    model = tv_resnet18(weights=weights)
    model.fc = nn.Linear(model.fc.in_features, 2)
    return model


RESNET50_FEATURES = 2048  # channels of ResNet-50's last stage
HEAD_DENSE = 256  # Iacob & Nuta: "a dense layer with 256 neurons"; Prudhvi et al.: Dense(256)


@declare_model("resnet50_frozen_head", resolution=224, resolutions=(224, 64),
               normalize="imagenet", gpu_fraction=1.0, pretrained=True)
def resnet50_frozen_head(pretrained: bool = False) -> nn.Module:
    """ResNet-50 of Iacob & Nuta: frozen ImageNet base, global pooling, dense 256, sigmoid.

    The base is frozen (no gradients, batch norm in inference mode) only when ``pretrained``:
    freezing a randomly initialised base would leave random features, so without ImageNet weights
    the whole network trains. Iacob & Nuta's sigmoid is near 1 for real photographs; here, as in
    every model of the registry, it is the probability of FAKE.
    """
    from torchvision.models import ResNet50_Weights
    from torchvision.models import resnet50 as tv_resnet50

    weights = load_imagenet_weights(ResNet50_Weights) if pretrained else None
    base = tv_resnet50(weights=weights)
    base.fc = nn.Identity()  # keep torchvision's global average pooling, drop the 1000-way top
    head = nn.Sequential(nn.Linear(RESNET50_FEATURES, HEAD_DENSE), nn.ReLU(inplace=True),
                         nn.Dropout(DROPOUT), nn.Linear(HEAD_DENSE, 1))
    return _BackboneHead(base, head, frozen=pretrained)


PRUDHVI_DENSE2 = 128  # Dense(128, relu) before the output (Prudhvi et al., section 10.4)


@declare_model("resnet50_dense_head", resolution=32, resolutions=(32,), normalize="imagenet",
               gpu_fraction=0.5, pretrained=True)
def resnet50_dense_head(pretrained: bool = False, resolution: int = 32) -> nn.Module:
    """ResNet-50 of Prudhvi et al.: 32x32 input, flatten, dense 256, BN, dropout, 128, sigmoid.

    The base is fine-tuned, not frozen (section 10.4 adds it trainable). Their Keras base has no
    pooling, so Flatten sees (resolution / 32)^2 positions of 2,048 channels: 2,048 at 32px.
    """
    from torchvision.models import ResNet50_Weights
    from torchvision.models import resnet50 as tv_resnet50

    weights = load_imagenet_weights(ResNet50_Weights) if pretrained else None
    base = tv_resnet50(weights=weights)
    base.avgpool = nn.Identity()  # include_top=False, no pooling: torchvision then flattens
    base.fc = nn.Identity()
    side = math.ceil(resolution / 32)  # stride-2 stem, max-pool and three stride-2 stages
    width = RESNET50_FEATURES * side * side
    head = nn.Sequential(
        _Flatten(width, resolution),
        nn.Linear(width, HEAD_DENSE), nn.ReLU(inplace=True),
        nn.BatchNorm1d(HEAD_DENSE, eps=1e-3, momentum=0.01),  # Keras BatchNormalization defaults
        nn.Dropout(DROPOUT),
        nn.Linear(HEAD_DENSE, PRUDHVI_DENSE2), nn.ReLU(inplace=True),
        nn.Linear(PRUDHVI_DENSE2, 1),
    )
    return _BackboneHead(base, head, frozen=False)


@declare_model("convnext_small", resolution=224, resolutions=(224, 64), normalize="imagenet",
               gpu_fraction=1.0, pretrained=True)
def convnext_small(pretrained: bool = False) -> nn.Module:
    """ConvNeXt-Small of Iacob & Nuta: ImageNet weights, 224x224 input, two-way head."""
    from torchvision.models import ConvNeXt_Small_Weights
    from torchvision.models import convnext_small as tv_convnext_small

    weights = load_imagenet_weights(ConvNeXt_Small_Weights) if pretrained else None
    model = tv_convnext_small(weights=weights)
    last = model.classifier[-1]
    assert isinstance(last, nn.Linear)
    model.classifier[-1] = nn.Linear(last.in_features, 2)
    return model


# ---------------------------------------------------------------------------------------------
# Bartos & Akyol: a variational autoencoder as an anomaly detector (64x64 CIFAKE)
#
# The paper shows the VAE only as a figure (Kingma & Welling's), trains it with Keras'
# 'binary_crossentropy' reconstruction loss (and tried mean squared error) and flags generated
# images as anomalies of a model of real ones. We use a small fully convolutional VAE whose
# latent is a (LATENT_CHANNELS, H/8, W/8) map, so one model serves 64px and 32px input.

VAE_WIDTHS = (32, 64, 64)  # encoder channels of the three stride-2 convolutions; small for CPUs
LATENT_CHANNELS = 8  # 8 x 8 x 8 = 512 latent numbers at 64px (of 12,288 input numbers)
LOGVAR_LIMIT = 10.0  # clamp log-variance so exp() can neither overflow nor vanish


class ConvVAE(nn.Module):
    """Convolutional VAE: trained on REAL images only, scores an image by its negative ELBO."""

    def __init__(self, widths: tuple[int, ...] = VAE_WIDTHS,
                 latent_channels: int = LATENT_CHANNELS, reconstruction: str = "bce") -> None:
        super().__init__()
        if reconstruction not in ("bce", "mse"):
            raise ValueError(f"reconstruction {reconstruction!r} must be 'bce' or 'mse'")
        self.reconstruction = reconstruction
        enc: list[nn.Module] = []
        cin = 3
        for w in widths:
            enc += [nn.Conv2d(cin, w, 4, stride=2, padding=1), nn.ReLU(inplace=True)]
            cin = w
        enc.append(nn.Conv2d(cin, 2 * latent_channels, 3, padding=1))  # mean and log-variance
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [nn.Conv2d(latent_channels, widths[-1], 3, padding=1),
                                nn.ReLU(inplace=True)]
        outs = (*reversed(widths[:-1]), 3)
        cin = widths[-1]
        for i, w in enumerate(outs):
            dec.append(nn.ConvTranspose2d(cin, w, 4, stride=2, padding=1))
            if i < len(outs) - 1:
                dec.append(nn.ReLU(inplace=True))
            cin = w
        self.decoder = nn.Sequential(*dec)  # Bernoulli logits of every pixel
        # Polarity of the anomaly score, set on the validation set with the threshold (see
        # ``score``); a buffer, so checkpoints and every later scoring use the same one.
        self.register_buffer("direction", torch.tensor(1.0))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar.clamp(-LOGVAR_LIMIT, LOGVAR_LIMIT)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(reconstruction logits, posterior mean, posterior log-variance); samples in training."""
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if self.training else mu
        return self.decoder(z), mu, logvar

    def neg_elbo(self, x: torch.Tensor) -> torch.Tensor:
        """Per-image negative ELBO (N,): reconstruction + KL(q(z|x) || N(0, I)).

        The reconstruction term is the summed binary cross-entropy of Bartos & Akyol less its
        minimum (the input's own entropy), i.e. the Bernoulli KL divergence: a perfect
        reconstruction costs zero whatever the image, and gradients are unchanged.
        """
        logits, mu, logvar = self(x)
        x = x.float().clamp(0.0, 1.0)
        if self.reconstruction == "mse":
            # Bartos & Akyol's retry: Keras' mean_squared_error of the reconstruction, summed
            # over the pixels as Keras' VAE example scales it (mse * original_dim), so that it
            # weighs against the KL term as the cross-entropy does.
            recon = (logits.float().sigmoid() - x).pow(2).flatten(1).sum(1)
        else:
            bce = F.binary_cross_entropy_with_logits(logits.float(), x, reduction="none")
            entropy = -(torch.special.xlogy(x, x) + torch.special.xlogy(1 - x, 1 - x))
            recon = (bce - entropy).flatten(1).sum(1)
        mu, logvar = mu.float(), logvar.float()
        kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).flatten(1).sum(1)
        return recon + kl

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean negative ELBO over the REAL images (y == 0) of the batch; FAKE ones are unseen."""
        real = y == 0
        if not bool(real.any()):
            # Nothing to learn from; a zero that still backpropagates (to zero gradients).
            return 0.0 * sum(p.sum() for p in self.parameters())  # type: ignore[return-value]
        return self.neg_elbo(x[real]).mean()

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """Anomaly score (N,): negative ELBO at the posterior mean; higher = more likely FAKE.

        ``direction`` flips it when generated images are *better* explained by the model of real
        ones than real images are (fakes decoded by an autoencoder are smoother than photos, so
        a VAE of photos reconstructs them more easily): the classic failure of one-sided
        reconstruction scores. The training loop sets it on the validation set, where the
        threshold is also fitted, and reports it.
        """
        was_training = self.training
        self.eval()  # the posterior mean, not a sample
        try:
            return self.direction * self.neg_elbo(x)
        finally:
            self.train(was_training)


@declare_model("vae_detector", resolution=64, resolutions=(64, 32), gpu_fraction=0.25)
def vae_detector(pretrained: bool = False) -> nn.Module:
    """VAE anomaly detector of Bartos & Akyol: trained on REAL images, 64x64, scored by -ELBO."""
    return ConvVAE()


@declare_model("vae_detector_mse", resolution=64, resolutions=(64, 32), gpu_fraction=0.25)
def vae_detector_mse(pretrained: bool = False) -> nn.Module:
    """Bartos & Akyol's VAE retry: the same VAE with a mean-squared-error reconstruction."""
    return ConvVAE(reconstruction="mse")


SPECS = (resnet18, purba_cnn1, purba_cnn2, purba_cnn3, vgg16, iacob_cnn, resnet50_frozen_head,
         resnet50_dense_head, convnext_small, vae_detector, vae_detector_mse)
