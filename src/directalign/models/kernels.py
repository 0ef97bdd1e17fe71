"""Which attention kernels can express which batch layouts' masks (see directalign.models.logprobs).

Imports no torch: config validation calls it before any model is loaded.
"""

from __future__ import annotations

from directalign.errors import ConfigError

MASK_4D = ("sdpa", "eager", "flex_attention")  # implementations that take the shared and packed layouts' masks


def check_attention(impl: str | None, layout: str) -> None:
    """Refuse an attention implementation that cannot express the layout's mask."""
    impl = impl or "sdpa"
    if layout == "padded" or impl in MASK_4D:
        return
    raise ConfigError(
        f"attn_implementation {impl} cannot take the {layout} layout's mask (sibling responses share their prompt "
        f"but must not see each other): use layout padded with {impl}, or attn_implementation sdpa, eager or "
        "flex_attention"
    )


def check_device(impl: str | None, cuda: bool) -> None:
    """FlexAttention trains on CUDA only (no CPU backward)."""
    if impl == "flex_attention" and not cuda:
        raise ConfigError("attn_implementation flex_attention needs a CUDA device (FlexAttention has no CPU "
                          "backward); use sdpa on a CPU")
