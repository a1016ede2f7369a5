"""Device choice shared by every generator."""

from __future__ import annotations

import torch

from medsci.errors import InputError


def check_cuda(requested: str, where: str = "--device") -> None:
    """Refuse ``cuda``/``cuda:N`` on a machine without CUDA (or without device N), with a one-line fix."""
    if not torch.cuda.is_available():
        raise InputError(f"device {requested!r} asked for, but this machine has no usable CUDA GPU (torch "
                         f"{torch.__version__}); use --device cpu or auto", where)
    index = requested.partition(":")[2]
    if index and int(index) >= torch.cuda.device_count():
        raise InputError(f"device {requested!r} asked for, but this machine has {torch.cuda.device_count()} CUDA "
                         "device(s)", where)


def default_device(requested: str | torch.device | None = "auto") -> torch.device:
    """``auto``/None -> CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if requested is None or str(requested) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except (RuntimeError, TypeError):
        raise InputError(f"{str(requested)!r} is not a device: use auto, cpu, cuda or cuda:N", "device") from None
    if device.type == "cuda":
        check_cuda(str(device))
    return device
