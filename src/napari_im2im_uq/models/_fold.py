"""The inference copy of a network: eval-mode batch norm folded into its convolution (torch).

Inference runs :func:`inference_network` of a model's network, not the network itself: a
copy in which every ``Conv2d`` directly followed (in an ``nn.Sequential``) by an eval-mode
``BatchNorm2d`` carries the normalisation in its weights and bias (the batch norm becomes an
``Identity``), every 2 x 2, stride-2 ``ConvTranspose2d`` is one matrix product per image
written straight to its place (the same sums, without the transposed convolution's scatter
and copies), every 1 x 1 ``Conv2d`` one matrix product per image (torch's own 1 x 1 convolution
rounds differently with one thread and with several), and every 2 x 2 ``MaxPool2d`` the
maximum of four strided views (exact). Every other module (dropout added by hand, a module in
training mode) is kept as it is, so the copy computes the same function as the network, up
to float rounding: ``w * gamma / sqrt(var + eps)`` is computed in float64 and rounded once.

The copy is made once per network and kept while the network lives; it is made again when
anything it was made from changes: a parameter or buffer replaced, moved or changed in
place (``_version``, which ``optimizer.step()``, ``load_state_dict`` and ``.to()`` all
change), a module replaced, or a module's training flag. Every prediction of a model (tiled,
untiled, in any process) runs the same copy, so tiled and untiled outputs stay equal bit for
bit; the copy differs from the network itself by float rounding only.
"""

from __future__ import annotations

import copy
import threading
import weakref

import torch
from torch import nn

__all__ = ["fold_network", "inference_network"]

_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def _frozen(t: torch.Tensor) -> nn.Parameter:
    """``t`` as a contiguous parameter without gradients (the copy is never trained)."""
    return nn.Parameter(t.contiguous(), requires_grad=False)


def _bias_of(layer: nn.Module, like: torch.Tensor) -> torch.Tensor:
    """Return the layer's bias, or zeros shaped like ``like`` when it has none."""
    return layer.bias.detach() if layer.bias is not None else torch.zeros_like(like)


class _ShuffleUp(nn.Module):
    """A 2 x 2, stride-2 transposed convolution as one matrix product per image.

    Row ``co * 4 + ki * 2 + kj`` of the product is written to ``(co, 2i + ki, 2j + kj)``: the
    same sums over input channels as the transposed convolution, with no scatter.
    """

    def __init__(self, up: nn.ConvTranspose2d):
        super().__init__()
        w = up.weight.detach()  # (c_in, c_out, 2, 2)
        c_in, c_out = w.shape[:2]
        self.c_out = int(c_out)
        self.weight = _frozen(w.permute(1, 2, 3, 0).reshape(c_out * 4, c_in))
        self.bias = _frozen(_bias_of(up, w[0, :, 0, 0]).repeat_interleave(4).view(-1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        out = x.new_empty((n, self.c_out, 2 * h, 2 * w))
        for i in range(n):
            z = torch.addmm(self.bias, self.weight, x[i].reshape(c, h * w))
            out[i].view(self.c_out, h, 2, w, 2).copy_(
                z.view(self.c_out, 2, 2, h, w).permute(0, 3, 1, 4, 2)
            )
        return out


class _Pointwise(nn.Module):
    """A 1 x 1 convolution as one matrix product per image.

    torch runs a 1 x 1 convolution through oneDNN with several threads and through its own
    matrix product with one, whose last bits differ: the product is the same with any number
    of threads.
    """

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        w = conv.weight.detach()
        self.weight = _frozen(w.reshape(w.shape[0], w.shape[1]))
        self.bias = _frozen(_bias_of(conv, w[:, 0, 0, 0]).view(-1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        out = x.new_empty((n, self.weight.shape[0], h, w))
        for i in range(n):
            torch.addmm(self.bias, self.weight, x[i].reshape(c, h * w),
                        out=out[i].view(-1, h * w))
        return out


class _MaxPool2(nn.Module):
    """A 2 x 2, stride-2 max-pool as the maximum of four strided views (exact, faster)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
        m = torch.maximum(x[..., 0:h:2, 0:w:2], x[..., 0:h:2, 1:w:2])
        torch.maximum(m, x[..., 1:h:2, 0:w:2], out=m)
        return torch.maximum(m, x[..., 1:h:2, 1:w:2], out=m)


def _shuffle_up_fits(m: nn.Module) -> bool:
    return (
        type(m) is nn.ConvTranspose2d
        and m.kernel_size == (2, 2)
        and m.stride == (2, 2)
        and m.padding == (0, 0)
        and m.output_padding == (0, 0)
        and m.dilation == (1, 1)
        and m.groups == 1
        and m.padding_mode == "zeros"
    )


def _pointwise_fits(m: nn.Module) -> bool:
    return (
        type(m) is nn.Conv2d
        and m.kernel_size == (1, 1)
        and m.stride == (1, 1)
        and m.padding in ((0, 0), "valid", "same")
        and m.dilation == (1, 1)
        and m.groups == 1
    )


def _pool_fits(m: nn.Module) -> bool:
    pair = lambda v: v if isinstance(v, tuple) else (v, v)  # noqa: E731
    return (
        type(m) is nn.MaxPool2d
        and pair(m.kernel_size) == (2, 2)
        and pair(m.stride if m.stride is not None else m.kernel_size) == (2, 2)
        and pair(m.padding) == (0, 0)
        and pair(m.dilation) == (1, 1)
        and not m.ceil_mode
        and not m.return_indices
    )


def _foldable(conv: nn.Module, norm: nn.Module) -> bool:
    return (
        type(conv) is nn.Conv2d
        and type(norm) is nn.BatchNorm2d
        and not norm.training
        and norm.track_running_stats
        and norm.running_mean is not None
        and norm.running_var is not None
        and norm.num_features == conv.out_channels
    )


def _folded_conv(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> nn.Conv2d:
    """Return ``conv`` with ``norm`` (eval mode) folded in: weights and bias in float64, rounded once."""
    dtype = conv.weight.dtype
    w = conv.weight.detach().double()
    b = _bias_of(conv, w[:, 0, 0, 0]).double()
    mean, var = norm.running_mean.double(), norm.running_var.double()
    gamma = norm.weight.detach().double() if norm.weight is not None else torch.ones_like(mean)
    beta = norm.bias.detach().double() if norm.bias is not None else torch.zeros_like(mean)
    scale = gamma / torch.sqrt(var + norm.eps)
    out = copy.deepcopy(conv)
    out.weight = _frozen((w * scale.view(-1, 1, 1, 1)).to(dtype))
    out.bias = _frozen(((b - mean) * scale + beta).to(dtype))
    return out


def fold_network(network: nn.Module) -> nn.Module:
    """Return a folded copy of ``network`` for inference (see the module docstring).

    The network is not changed. Modules that cannot be folded are deep-copied as they are.

    Parameters
    ----------
    network : torch.nn.Module

    Returns
    -------
    torch.nn.Module
        A new module computing the same function up to float rounding, with no gradients.

    Examples
    --------
    >>> import torch
    >>> from napari_im2im_uq.models import build_network
    >>> net = build_network("quantile", depth=2, base_channels=4).eval()
    >>> folded = fold_network(net)
    >>> x = torch.rand(1, 1, 16, 16)
    >>> with torch.no_grad():
    ...     bool(torch.allclose(folded(x), net(x), atol=1e-5))
    True
    >>> sum(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    0
    """
    if not isinstance(network, nn.Module):
        raise TypeError(f"network must be a torch.nn.Module; got {type(network).__name__}")
    out = copy.deepcopy(network)
    for module in list(out.modules()):  # batch norm first: a 1 x 1 conv may carry one
        if isinstance(module, nn.Sequential):
            names = list(module._modules)
            for a, b in zip(names, names[1:], strict=False):
                conv, norm = module._modules[a], module._modules[b]
                if _foldable(conv, norm):
                    module._modules[a] = _folded_conv(conv, norm)
                    module._modules[b] = nn.Identity()
    for module in list(out.modules()):
        for name, child in list(module.named_children()):
            if _shuffle_up_fits(child):
                setattr(module, name, _ShuffleUp(child))
            elif _pool_fits(child):
                setattr(module, name, _MaxPool2())
            elif _pointwise_fits(child):
                setattr(module, name, _Pointwise(child))
    for p in out.parameters():
        p.requires_grad_(False)
    return out


def _state_key(network: nn.Module) -> tuple:
    """Return what the folded copy is made from: modules, training flags, tensors, versions."""
    modules = tuple((id(m), m.training) for m in network.modules())
    tensors = tuple(
        (id(t), t._version, t.data_ptr(), t.dtype, t.device)
        for t in (*network.parameters(), *network.buffers())
    )
    return modules, tensors


def inference_network(network: nn.Module) -> nn.Module:
    """Return the folded copy of ``network`` that inference runs (made once, kept while valid).

    The copy is remade whenever ``network`` changed since it was made (see the module
    docstring). Returned as it is, unfolded: a network with a module that updates its
    buffers when run (batch norm in training mode), or whose tensors carry no version counter
    (made under ``torch.inference_mode``).

    Parameters
    ----------
    network : torch.nn.Module

    Returns
    -------
    torch.nn.Module
        Do not train or change it: it belongs to the cache.

    Examples
    --------
    >>> import torch
    >>> from napari_im2im_uq.models import build_network
    >>> net = build_network("quantile", depth=1, base_channels=2).eval()
    >>> first = inference_network(net)
    >>> inference_network(net) is first
    True
    >>> with torch.no_grad():
    ...     _ = net.head.weight.mul_(2.0)  # changed in place: made again
    >>> inference_network(net) is first
    False
    """
    if any(m.training and next(m.buffers(recurse=False), None) is not None
           for m in network.modules()):
        return network  # a module that updates its buffers (batch norm training) runs as is
    try:
        key = _state_key(network)
    except RuntimeError:  # inference tensors have no version counter: nothing to key on
        return network
    with _LOCK:
        entry = _CACHE.get(network)
        if entry is not None and entry[0] == key:
            return entry[2]
        folded = fold_network(network)
        # The tensors themselves are held so that their ids cannot be reused while kept.
        # (Not the network itself: the cache holds it weakly.)
        kept = (*list(network.modules())[1:], *network.parameters(), *network.buffers())
        _CACHE[network] = (key, kept, folded)
        return folded
