"""The Inception-v3 network of FID (Heusel et al. 2017), in plain PyTorch, for a local weights file.

    net = load_inception("/path/pt_inception-2015-12-05-6726825d.pth", torch.device("cpu"))
    features = inception_features(net, images)        # (N, C, H, W) in [-1, 1] -> (N, 2048)

The architecture is torchvision's `Inception3` stem and blocks with the FID
patches of pytorch-fid (mseitzer/pytorch-fid, src/pytorch_fid/inception.py:
`FIDInceptionA/C/E_1/E_2`): the A, C and first E blocks average-pool without
counting the zero padding (TensorFlow's pooling), the last E block max-pools.
Module names follow torchvision's, so the state_dict of pytorch-fid's
`pt_inception-2015-12-05-6726825d.pth` (the TensorFlow FID graph ported to
PyTorch, with its 1008-way `fc`) loads with strict=True. Nothing is downloaded:
the file must be on disk (GANFORGE_INCEPTION_WEIGHTS).

Inputs as pytorch-fid: resized to 299×299 (bilinear, align_corners=False), in
[-1, 1] (pytorch-fid scales its [0, 1] input by 2x − 1; our images are stored in
[-1, 1] already); grey images are repeated to 3 channels. The feature is pool3,
the 2048-d global average of Mixed_7c.
"""

from __future__ import annotations

import threading
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

INPUT_SIZE = 299
FEATURES = 2048
FC_CLASSES = 1008  # the TensorFlow graph's 1008-way logits; unused for FID, kept so the file loads strictly


class BasicConv2d(nn.Module):
    """Conv (no bias) → batch norm (ε = 0.001) → ReLU, as torchvision's."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int = 1,
        padding: int | tuple[int, int] = 0,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


def _tf_avg_pool(x: Tensor) -> Tensor:
    # TensorFlow's 3×3 average pool leaves the zero padding out of the mean (FID patch).
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """35×35 block (Mixed_5b-d); pytorch-fid's FIDInceptionA."""

    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, 1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, 1)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch5x5_2(self.branch5x5_1(x)),
                self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                self.branch_pool(_tf_avg_pool(x)),
            ],
            1,
        )


class InceptionB(nn.Module):
    """Grid reduction 35 → 17 (Mixed_6a)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat(
            [
                self.branch3x3(x),
                self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                F.max_pool2d(x, kernel_size=3, stride=2),
            ],
            1,
        )


class InceptionC(nn.Module):
    """17×17 block with factorised 7×7 convolutions (Mixed_6b-e); pytorch-fid's FIDInceptionC."""

    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        dbl = self.branch7x7dbl_3(self.branch7x7dbl_2(self.branch7x7dbl_1(x)))
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x))),
                self.branch7x7dbl_5(self.branch7x7dbl_4(dbl)),
                self.branch_pool(_tf_avg_pool(x)),
            ],
            1,
        )


class InceptionD(nn.Module):
    """Grid reduction 17 → 8 (Mixed_7a)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        seven = self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x)))
        return torch.cat(
            [
                self.branch3x3_2(self.branch3x3_1(x)),
                self.branch7x7x3_4(seven),
                F.max_pool2d(x, kernel_size=3, stride=2),
            ],
            1,
        )


class InceptionE(nn.Module):
    """8×8 block with expanded filter banks (Mixed_7b, Mixed_7c); pytorch-fid's FIDInceptionE_1 (`max_pool`
    False: TensorFlow's average pool) and FIDInceptionE_2 (`max_pool` True, as the FID graph has it)."""

    def __init__(self, in_channels: int, max_pool: bool) -> None:
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(in_channels, 320, 1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        three = self.branch3x3_1(x)
        dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool else _tf_avg_pool(x)
        return torch.cat(
            [
                self.branch1x1(x),
                torch.cat([self.branch3x3_2a(three), self.branch3x3_2b(three)], 1),
                torch.cat([self.branch3x3dbl_3a(dbl), self.branch3x3dbl_3b(dbl)], 1),
                self.branch_pool(pooled),
            ],
            1,
        )


class FIDInceptionV3(nn.Module):
    """The FID Inception-v3: `forward` maps (N, C, H, W) images in [-1, 1] (C = 1 or 3) to (N, 2048) pool3
    features. Its state_dict has 566 tensors (94 conv+BN units × 6, plus fc.weight (1008, 2048) and fc.bias)."""

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, max_pool=False)
        self.Mixed_7c = InceptionE(2048, max_pool=True)
        self.fc = nn.Linear(FEATURES, FC_CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[1] != 3:
            raise ValueError(f"Inception takes 1- or 3-channel images, got {x.shape[1]} channels")
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        blocks: tuple[nn.Module, ...] = (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b)
        blocks += (self.Mixed_6c, self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c)
        for block in blocks:
            x = block(x)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


_LOADED: dict[tuple[str, str], FIDInceptionV3] = {}
_LOCK = threading.Lock()


def load_inception(path: str | Path, device: torch.device) -> FIDInceptionV3:
    """The network with the weights at `path` (a state_dict saved by torch.save, loaded with
    weights_only=True and strict=True), in eval mode without gradients, on `device`; cached per process.

    Raises FileNotFoundError for a missing file and RuntimeError naming the path for a file that is not
    this network's state_dict (wrong keys or shapes).
    """
    resolved = Path(path).expanduser().resolve()
    key = (str(resolved), str(device))
    with _LOCK:
        if key in _LOADED:
            return _LOADED[key]
        if not resolved.is_file():
            raise FileNotFoundError(f"GANFORGE_INCEPTION_WEIGHTS: no file at {resolved}")
        state = torch.load(resolved, map_location="cpu", weights_only=True)
        net = FIDInceptionV3()
        try:
            net.load_state_dict(state, strict=True)
        except (RuntimeError, TypeError, AttributeError) as exc:
            raise RuntimeError(
                f"GANFORGE_INCEPTION_WEIGHTS={resolved} is not the FID Inception-v3 state_dict "
                f"(pytorch-fid's pt_inception-2015-12-05-6726825d.pth): {str(exc)[:500]}"
            ) from None
        net.requires_grad_(False)
        net.eval()
        _LOADED[key] = net.to(device)
        return _LOADED[key]


@torch.no_grad()
def inception_features(net: FIDInceptionV3, images: Tensor, batch: int = 50) -> Tensor:
    """(N, C, H, W) images in [-1, 1] → (N, 2048) float64 CPU pool3 features, `batch` images at a time."""
    device = next(net.parameters()).device
    chunks = [net(chunk.to(device, torch.float32)).double().cpu() for chunk in images.split(batch)]
    return torch.cat(chunks) if chunks else torch.zeros((0, FEATURES), dtype=torch.float64)
