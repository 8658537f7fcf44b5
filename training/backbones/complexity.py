"""Parameter and multiply-accumulate (MAC) counts of a backbone.

The figures the field quotes for face backbones (IResNet-50 6.31 G, IResNet-100 12.09 G,
MobileFaceNet 0.44 G) are the multiply-accumulates of convolutions and fully connected layers
only; that is also what ``torch.utils.flop_counter.FlopCounterMode`` reports (as 2 FLOPs per
MAC). We count with forward hooks, which needs no tracing support from the model and lets us
optionally add the cheap element-wise layers (BatchNorm, PReLU, biases) that tools such as
``ptflops`` include (+0.3 % on IResNet-50, +2.6 % on MobileFaceNet).

Per layer, for one forward pass of a single image:

* ``Conv2d``: ``out_elements * (in_channels / groups) * kh * kw``
* ``Linear``: ``in_features * out_features`` per row
* with ``include_elementwise``: + ``out_elements`` per bias, ``numel`` per BatchNorm
  (x2 when affine: scale and shift), ``numel`` per PReLU/ReLU
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["count_params", "count_params_flops"]


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (buffers such as BN running stats excluded)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _macs(module: nn.Module, inp: torch.Tensor, out: torch.Tensor, elementwise: bool) -> int:
    batch = out.shape[0]
    bias = out.numel() if elementwise and getattr(module, "bias", None) is not None else 0
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        macs = out.numel() * (module.in_channels // module.groups) * kh * kw + bias
    elif isinstance(module, nn.Linear):
        rows = out.numel() // module.out_features
        macs = rows * module.in_features * module.out_features + bias
    elif not elementwise:
        return 0
    elif isinstance(module, nn.modules.batchnorm._BatchNorm):
        macs = inp.numel() * (2 if module.affine else 1)
    elif isinstance(module, (nn.PReLU, nn.ReLU)):
        macs = inp.numel()
    else:
        return 0
    return macs // batch


_COUNTED = (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm, nn.PReLU, nn.ReLU)


@torch.no_grad()
def count_params_flops(
    model: nn.Module, input_size: tuple[int, int] = (112, 112), include_elementwise: bool = False
) -> tuple[int, int]:
    """Return ``(parameters, MACs per image)`` of ``model`` for a 3-channel ``input_size`` input.

    Parameters include frozen ones (IResNet's BN1d scale); MACs are conv + linear unless
    ``include_elementwise``.

    Runs one forward pass of a single image in eval mode (BatchNorm1d refuses a batch of 1 in
    training mode) and restores the previous mode. Divide MACs by 1e9 for GMACs.
    """
    total = 0
    handles = []

    def hook(module: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        total += _macs(module, args[0], out, include_elementwise)

    for m in model.modules():
        if isinstance(m, _COUNTED):
            handles.append(m.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        model(torch.zeros(1, 3, *input_size, device=device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return count_params(model), total
