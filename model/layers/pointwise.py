"""1×1 convolutions run as ``nn.Linear`` over channels-last tokens, stored in the conv's parameter layout.

The release writes its FFN's inverted/point convs and its patch embedders as 1×1(×1) convs (weights
(out, in, 1, 1[, 1])). A 1×1 conv is a linear map over channels, and computing it as one on (…, C) tokens
skips two NCHW permutes per call and makes it an ``nn.Linear`` — which is what ModelOpt quantizes to NVFP4
(its conv path needs a CUDA kernel; NVIDIA's own streaming app "linearizes" the FFN for the same reason).
State-dict hooks keep the checkpoint layout, so released weights load unchanged and ours save as the
release's.
"""

from __future__ import annotations

from torch import nn


class ConvShapedLinear(nn.Linear):
    """``nn.Linear(in, out)`` whose ``weight`` is saved/loaded as (out, in, 1 × ``conv_dims``)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, conv_dims: int = 2) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.conv_dims = conv_dims
        self._register_state_dict_hook(ConvShapedLinear._to_conv_layout)
        self._register_load_state_dict_pre_hook(ConvShapedLinear._from_conv_layout, with_module=True)

    @staticmethod
    def _to_conv_layout(module, state_dict, prefix, local_metadata):
        key = prefix + "weight"
        if key in state_dict and state_dict[key].dim() == 2:
            state_dict[key] = state_dict[key].reshape(*state_dict[key].shape, *([1] * module.conv_dims))
        return state_dict

    @staticmethod
    def _from_conv_layout(module, state_dict, prefix, local_metadata, strict, missing, unexpected, errors):
        key = prefix + "weight"
        w = state_dict.get(key)
        if w is not None and w.dim() == 2 + module.conv_dims and all(s == 1 for s in w.shape[2:]):
            state_dict[key] = w.reshape(w.shape[0], w.shape[1])
