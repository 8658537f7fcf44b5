"""IResNet-18/34/50/100, the ArcFace "improved ResNet" (InsightFace ``arcface_torch`` definition).

Why this exact layout: every published ArcFace/KappaFace number (and every pretrained
``arcface_torch`` checkpoint) was produced with it, so attribute names, layer order and
initialisation follow the original one to one; an ``arcface_torch`` ``state_dict`` loads with
``load_state_dict(..., strict=True)``.

Differences from a torchvision ResNet, all deliberate in the original:

* 3x3 stride-1 stem (no 7x7/max-pool): 112x112 faces are small, early downsampling hurts.
* pre-activation style block ``BN -> conv3x3 -> BN -> PReLU -> conv3x3(stride) -> BN``, with
  the stride on the *second* conv and PReLU instead of ReLU.
* the 512x7x7 map is not pooled: ``BN2d -> flatten -> dropout -> Linear(512*7*7, emb) ->
  BN1d``; the spatial layout of the face carries identity, global pooling would discard it.
  The final ``BatchNorm1d`` has its scale frozen at 1 (only the shift learns), as in the
  original ``features`` layer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import nn

__all__ = ["IRESNET_LAYERS", "IBasicBlock", "IResNet", "iresnet18", "iresnet34", "iresnet50", "iresnet100"]

#: Blocks per stage for each depth (stage widths are always 64/128/256/512).
IRESNET_LAYERS: dict[int, tuple[int, int, int, int]] = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 14, 3),
    100: (3, 13, 30, 3),
}

_BN_EPS = 1e-5


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


def autocast_context(enabled: bool, device_type: str) -> contextlib.AbstractContextManager:
    """Mixed precision for the convolutional trunk only.

    fp16 on CUDA, bf16 on CPU (CPU autocast has no fp16 kernels worth using). The embedding
    layers run in fp32 afterwards because the 25088x512 ``fc`` and the BN1d statistics are the
    numerically sensitive part, exactly as ``arcface_torch`` does with ``x.float()``.
    """
    if not enabled:
        return contextlib.nullcontext()
    dtype = torch.float16 if device_type == "cuda" else torch.bfloat16
    return torch.autocast(device_type=device_type, dtype=dtype)


class IBasicBlock(nn.Module):
    """Residual unit ``BN-conv3x3-BN-PReLU-conv3x3(stride)-BN`` plus an identity/projection shortcut."""

    expansion = 1

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=_BN_EPS)
        self.conv1 = _conv3x3(inplanes, planes)
        self.bn2 = nn.BatchNorm2d(planes, eps=_BN_EPS)
        self.prelu = nn.PReLU(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes, eps=_BN_EPS)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.bn1(x)
        out = self.conv1(out)
        out = self.bn2(out)
        out = self.prelu(out)
        out = self.conv2(out)
        out = self.bn3(out)
        return out + identity


class IResNet(nn.Module):
    """IResNet trunk + "OE" embedding head; input (N, 3, 112, 112), output (N, embedding_size).

    Args:
        layers: blocks per stage, e.g. ``IRESNET_LAYERS[50]``.
        embedding_size: output dimension (``num_features`` in the original), 512 by default.
        dropout: dropout before ``fc`` (the original recipes use 0).
        fp16: run the trunk under autocast (fp16 on CUDA, bf16 on CPU); the embedding stays fp32.
        zero_init_residual: zero the scale of each block's ``bn2`` (as the original does) so
            every residual branch starts as zero and the network starts close to identity paths.
    """

    fc_scale = 7 * 7  # spatial size of the last map for a 112x112 input

    def __init__(
        self,
        layers: tuple[int, int, int, int] | list[int],
        embedding_size: int = 512,
        dropout: float = 0.0,
        fp16: bool = False,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        if len(layers) != 4:
            raise ValueError(f"IResNet needs 4 stage depths, got {layers!r}")
        self.fp16 = fp16
        self.embedding_size = embedding_size
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes, eps=_BN_EPS)
        self.prelu = nn.PReLU(self.inplanes)
        self.layer1 = self._make_layer(64, layers[0], stride=2)
        self.layer2 = self._make_layer(128, layers[1], stride=2)
        self.layer3 = self._make_layer(256, layers[2], stride=2)
        self.layer4 = self._make_layer(512, layers[3], stride=2)
        self.bn2 = nn.BatchNorm2d(512 * IBasicBlock.expansion, eps=_BN_EPS)
        self.dropout = nn.Dropout(p=dropout, inplace=True)
        self.fc = nn.Linear(512 * IBasicBlock.expansion * self.fc_scale, embedding_size)
        self.features = nn.BatchNorm1d(embedding_size, eps=_BN_EPS)
        # Frozen unit scale: the embedding's per-dimension scale is left to ``fc``; only the
        # shift of the final BN learns (this is what the original does, and checkpoints rely on it).
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0, 0.1)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, IBasicBlock):
                    nn.init.constant_(m.bn2.weight, 0)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * IBasicBlock.expansion:
            downsample = nn.Sequential(
                _conv1x1(self.inplanes, planes * IBasicBlock.expansion, stride),
                nn.BatchNorm2d(planes * IBasicBlock.expansion, eps=_BN_EPS),
            )
        stage: list[nn.Module] = [IBasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * IBasicBlock.expansion
        stage.extend(IBasicBlock(self.inplanes, planes) for _ in range(1, blocks))
        return nn.Sequential(*stage)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with autocast_context(self.fp16, x.device.type):
            x = self.conv1(x)
            x = self.bn1(x)
            x = self.prelu(x)
            x = self.layer1(x)
            x = self.layer2(x)
            x = self.layer3(x)
            x = self.layer4(x)
            x = self.bn2(x)
            x = torch.flatten(x, 1)
            x = self.dropout(x)
        x = self.fc(x.float() if self.fp16 else x)
        return self.features(x)


def _factory(depth: int) -> Callable[..., IResNet]:
    def build(embedding_size: int = 512, **kw: object) -> IResNet:
        return IResNet(IRESNET_LAYERS[depth], embedding_size=embedding_size, **kw)  # type: ignore[arg-type]

    build.__name__ = f"iresnet{depth}"
    build.__doc__ = f"IResNet-{depth} (stages {IRESNET_LAYERS[depth]}), 112x112 input."
    return build


iresnet18 = _factory(18)
iresnet34 = _factory(34)
iresnet50 = _factory(50)
iresnet100 = _factory(100)
