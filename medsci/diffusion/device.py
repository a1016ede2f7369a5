"""Device choice shared by every generator."""

from __future__ import annotations

import torch


def default_device(requested: str | torch.device | None = "auto") -> torch.device:
    """``auto``/None -> CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if requested is None or str(requested) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)
