"""Small building blocks shared by the model parts."""

from __future__ import annotations

import threading
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from sam2kit.kernels import tuning
from sam2kit.kernels.linear import _activation, _fast_path, linear_act


def linear(x: torch.Tensor, layer: nn.Module, act: str | None = None) -> torch.Tensor:
    """``act(layer(x))`` for an nn.Linear ``layer`` and ``act`` None, "relu" or "gelu", with
    the kernel this machine measured fastest (``linear_weights``); any other module (int8
    quantised) runs as itself."""
    if type(layer) is not nn.Linear:
        return _activation(layer(x), act)
    return linear_weights(x, layer.weight, layer.bias, act)


def linear_weights(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                   act: str | None = None) -> torch.Tensor:
    """``linear_act`` with the kernel of the choice "linear" (``sam2kit.kernels.tuning``) for fp32 CPU
    inference, torch's default kernel otherwise."""
    kernel = "aten"
    if _fast_path(x):
        kernel = tuning.choose("linear")
    return linear_act(x, weight, bias, act, kernel)


_ACTS = {nn.ReLU: "relu", nn.GELU: "gelu"}


class MLP(nn.Module):
    """``num_layers`` linear layers with an activation between them (none after the last)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int,
                 activation: type[nn.Module] = nn.ReLU, sigmoid_output: bool = False):
        super().__init__()
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims_in, dims_out))
        self.act = activation()
        self.sigmoid_output = sigmoid_output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        act = _ACTS.get(type(self.act)) if getattr(self.act, "approximate", "none") == "none" else None
        for i, layer in enumerate(self.layers):
            if i < last and act is not None:
                x = linear(x, layer, act)  # activation fused where the kernel can
            else:
                x = linear(x, layer)
                if i < last:
                    x = self.act(x)
        return torch.sigmoid(x) if self.sigmoid_output else x


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of a [B, C, H, W] tensor."""

    def __init__(self, num_channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps
        self.normalized_shape = (num_channels,)  # a constant, also when traced (ONNX export)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # torch's fused layer norm over the channels (a channels-last view): two passes over
        # the data instead of the seven of the textbook formula; the result stays channels-last
        y = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


def weights_key(*tensors: torch.Tensor) -> tuple:
    """A cache key for values derived from weights: it changes when a tensor is replaced
    (new storage), moved, cast, reshaped, or edited in place (where torch keeps a version
    counter; tensors made under inference mode keep none). A cache must also hold the tensors
    themselves, so that their memory cannot be reused by other tensors while the key lives."""
    key = []
    for t in tensors:
        try:
            version = t._version
        except RuntimeError:  # an inference tensor
            version = -1
        key.append((str(t.device), t.dtype, t.data_ptr(), tuple(t.shape), t.stride(), version))
    return tuple(key)


class WeightCache:
    """Values derived from a module's weights (and sizes) alone, computed once and shared by
    every caller of the model, from any thread.

    ``get(name, tensors, make)`` returns ``make()``, kept under ``name`` and the identity of
    ``tensors`` (``weights_key``; the entry holds the tensors so their memory cannot be reused
    while it lives). At most ``max_entries`` entries, the least recently used dropped first; a
    lock makes check-compute-insert atomic (re-entrant: ``make`` may use the cache). Nothing is
    cached while gradients are on (training keeps the graph) or inside a compiled graph.
    Per-caller state (a video's memories) never goes here: it belongs to its session.
    """

    def __init__(self, max_entries: int = 16):
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple, tuple] = OrderedDict()
        self._lock = threading.RLock()

    def get(self, name: tuple, tensors: tuple[torch.Tensor, ...], make):
        if torch.is_grad_enabled() or torch.compiler.is_compiling():
            return make()
        key = (name, weights_key(*tensors))
        with self._lock:
            hit = self._entries.get(key)
            if hit is None:
                hit = self._entries[key] = (tensors, make())
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
            else:
                self._entries.move_to_end(key)
            return hit[1]

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def nbytes(self) -> int:
        """Bytes of the tensors the entries computed (not of the weights they hold)."""
        with self._lock:
            values = [v for _, v in self._entries.values()]
        return sum(t.numel() * t.element_size() for t in _tensors_in(values))


def _tensors_in(x):
    if isinstance(x, torch.Tensor):
        yield x
    elif isinstance(x, (tuple, list)):
        for v in x:
            yield from _tensors_in(v)
