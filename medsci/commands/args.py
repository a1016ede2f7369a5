"""Argparse helpers shared by every generator's commands (no generator is imported here)."""

from __future__ import annotations


def add_common_args(parser, config_required: bool = True) -> None:
    parser.add_argument("--config", required=config_required, help="medsci config YAML")
    parser.add_argument("--device", default=None, help="auto | cpu | cuda (default: the config's device)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_sampler_args(parser) -> None:
    """Overrides of the config's (or checkpoint's) sampler, the same flags for every generator."""
    parser.add_argument("--sampler", choices=["ddim", "ddpm"], help="default: the config's")
    parser.add_argument("--steps", type=int, help="DDIM steps (default: the config's)")
    parser.add_argument("--n-samples", type=int, help="samples averaged; > 1 also gives a voxelwise std")
    parser.add_argument("--guidance-scale", type=float, help="classifier-free guidance scale (1 = off)")
    parser.add_argument("--seed", type=int)


def sampler_overrides(args) -> dict:
    """The sampler settings given on the command line (flags left out are not in the dict)."""
    names = {"sampler": "sampler", "steps": "steps", "n_samples": "n_samples", "guidance_scale": "guidance_scale",
             "seed": "seed"}
    return {key: getattr(args, attr) for attr, key in names.items() if getattr(args, attr, None) is not None}


def setup_torch(args, config=None):
    import torch

    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    return getattr(args, "device", None) or (config.device if config is not None else "auto")
