"""Argparse helpers shared by every generator's commands (no generator is imported here).

One validation layer for every verb: argparse ``type=`` functions (positive and bounded integers, finite floats,
device names, volume shapes with a size limit) refuse a bad value while the command line is parsed, before any
work starts, with argparse's one-line ``argument --x: ...`` message and exit status 2; :func:`check_outputs`
refuses output paths that lie inside an input or under an existing file, also before any work.
"""

from __future__ import annotations

import argparse
import inspect
import math
import re
from pathlib import Path

from medsci.errors import InputError, check_plain_text
from medsci.io.paths import inside, resolved

MAX_THREADS = 1024
MAX_COUNT = 100_000  # cases, samples, cubes... per command
MAX_SIDE = 4096  # voxels or pixels along one axis
MAX_VOXELS = 512 ** 3  # per volume: 0.5 GiB of float32; BraTS is 240 x 240 x 155 = 8.9 million
MAX_SPACING_MM = 1000.0


def add_command(subparsers, name: str, handler, common: bool = False, **kwargs) -> argparse.ArgumentParser:
    """Sub-command ``name`` that runs ``handler``. Its ``--help`` comes from the handler's docstring: the first
    paragraph is the one-line help in the command list, the rest the description (argparse reflows both).
    ``common``: with the options of every config-driven command (:func:`add_common_args`)."""
    paragraphs = inspect.cleandoc(handler.__doc__ or "").split("\n\n", 1)
    kwargs.setdefault("help", " ".join(paragraphs[0].split()) or None)
    kwargs.setdefault("description", " ".join(paragraphs[1].split()) if len(paragraphs) > 1 else None)
    parser = subparsers.add_parser(name, **kwargs)
    parser.set_defaults(handler=handler)
    if common:
        add_common_args(parser)
    return parser


def bounded_int(low: int, high: int, what: str = "an integer"):
    """argparse type: an integer in [low, high]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is out of range: must be {what} in [{low}, {high}]")
        return value

    parse.__name__ = what  # argparse names the type in its own messages
    return parse


positive_int = bounded_int(1, MAX_COUNT, "a positive integer")


def count_of(what: str):
    """argparse type: how many ``what`` (cases, cubes...), at least 1."""
    return bounded_int(1, MAX_COUNT, f"a number of {what}")


non_negative_int = bounded_int(0, 2 ** 63 - 1, "a non-negative integer")
thread_count = bounded_int(1, MAX_THREADS, "a thread count")
side_length = bounded_int(1, MAX_SIDE, "a side length")


def bounded_float(low: float, high: float, what: str = "a number", low_open: bool = False,
                  high_open: bool = False):
    """argparse type: a finite float in [low, high] (an open end excludes the bound)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        below = value <= low if low_open else value < low
        above = value >= high if high_open else value > high
        if not math.isfinite(value) or below or above:
            interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
            raise argparse.ArgumentTypeError(f"{text} is out of range: must be {what} in {interval}")
        return value

    parse.__name__ = what
    return parse


finite_float = bounded_float(-1e12, 1e12, "a finite number")
non_negative_float = bounded_float(0.0, 1e12, "a non-negative number")
spacing_mm = bounded_float(0.0, MAX_SPACING_MM, "a voxel size in mm", low_open=True)
fraction = bounded_float(0.0, 1.0, "a fraction", low_open=True, high_open=True)


def plain_text(what: str):
    """argparse type: a name or free text for a model card, manifest or DICOM tag (:func:`check_plain_text`)."""

    def parse(text: str) -> str:
        try:
            return check_plain_text(text, what)
        except InputError as err:
            raise argparse.ArgumentTypeError(err.reason) from None

    parse.__name__ = what
    return parse


def device_name(text: str) -> str:
    """argparse type: auto | cpu | cuda | cuda:N, and CUDA only where this machine has it."""
    if not re.fullmatch(r"auto|cpu|cuda(:[0-9]+)?", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device: use auto, cpu, cuda or cuda:N")
    if text.startswith("cuda"):
        from medsci.diffusion.device import check_cuda

        try:
            check_cuda(text)
        except InputError as err:
            raise argparse.ArgumentTypeError(err.reason) from None
    return text


class VolumeShape(argparse.Action):
    """``nargs=3`` (or 2 for images) side lengths whose product stays under MAX_VOXELS."""

    def __call__(self, parser, namespace, values, option_string=None):
        voxels = math.prod(values)
        if voxels > MAX_VOXELS:
            parser.error(f"argument {option_string or self.dest}: {' x '.join(map(str, values))} = {voxels:,} "
                         f"voxels is more than the limit of {MAX_VOXELS:,} per volume")
        setattr(namespace, self.dest, list(values))


def add_shape_arg(parser, flag: str, nargs: int = 3, min_side: int = 1, **kwargs) -> None:
    side = side_length if min_side == 1 else bounded_int(min_side, MAX_SIDE, "a side length")
    parser.add_argument(flag, type=side, nargs=nargs, action=VolumeShape, **kwargs)


def add_force_arg(parser) -> None:
    parser.add_argument("--force", action="store_true",
                        help="write into OUT even when it holds files demo-data did not write, replacing those of the "
                             "same names")


def add_demo_data(tasks, name: str, handler, count: tuple[str, str, int], shape: list[int] | None = None,
                  **shape_kw):
    """``medsci demo-data <name>`` with the options every generator's demo data has: OUT, how many (``count``:
    its flag, what it counts, the default), --seed, --shape (``shape``: the default; None: no --shape) and
    --force."""
    flag, what, default = count
    p = add_command(tasks, name, handler)
    p.add_argument("out", type=Path, metavar="OUT", help="output folder")
    p.add_argument(flag, type=count_of(what), default=default, help=f"number of {what} (default {default})")
    p.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default 0)")
    if shape is not None:
        add_shape_arg(p, "--shape", default=shape, **shape_kw)
    add_force_arg(p)
    return p


def write_demo(args, own: tuple[str, ...], what: str, write) -> int:
    """The demo-data handler's frame: check OUT (``own``: see :func:`check_demo_output`), ``write()`` the files
    (into ``args.out``) and say how many ``what`` it wrote.

    ``write()`` runs in a hidden staging folder inside OUT; its files are then moved into OUT. A file already
    in OUT with other bytes is never replaced without --force, even where its name is one demo-data writes (a
    user's case folder named like a demo case): a rerun with the same options gives the same bytes.
    """
    import os
    import tempfile

    out = Path(args.out)
    check_demo_output(out, args.force, own=own)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".medsci-demo-", dir=out) as staging:
        args.out = Path(staging)
        try:
            written = write()
        finally:
            args.out = out
        moves = [(p, out / p.relative_to(staging)) for p in sorted(Path(staging).rglob("*")) if p.is_file()]
        changed = [dest for src, dest in moves if dest.exists() and not _same_bytes(src, dest)]
        if changed and not args.force:
            more = f" and {len(changed) - 1} more" if len(changed) > 1 else ""
            raise InputError(f"OUT already holds {changed[0].relative_to(out).as_posix()}{more} with other contents; "
                             "demo-data does not overwrite a file: choose an empty or new folder, or pass --force "
                             "to replace them", out)
        for src, dest in moves:
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dest)
    print(f"wrote {len(written)} {what} to {out}")
    return 0


def _same_bytes(a: Path, b: Path) -> bool:
    import filecmp

    return b.is_file() and filecmp.cmp(a, b, shallow=False)


def check_demo_output(out: str | Path, force: bool, own: tuple[str, ...]) -> None:
    """Refuse an OUT holding anything but a previous demo-data output of this generator (``own``: glob patterns of
    the names it writes at the top of OUT), unless ``force``: a user's files are never silently overwritten."""
    out = Path(out)
    check_outputs(out)
    if force or not out.is_dir():
        return
    own = (*own, ".snakemake_timestamp")  # Snakemake's mark in a directory() output
    foreign = sorted(p.name for p in out.iterdir() if not any(p.match(pattern) for pattern in own))
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise InputError(f"OUT is not empty and holds files demo-data did not write ({shown}); choose an empty or "
                         "new folder, or pass --force to write into it", out)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:  # one of them does not exist (yet)
        return False


def check_outputs(outputs, inputs=(), *, folder: bool = True, named_after=()) -> None:
    """Refuse, before any work, output paths that would write into an input or cannot be created.

    ``outputs``: paths (or one path) to be written; ``folder``: they are folders (else files). ``inputs``: files
    and folders that are read (None entries are skipped); an output equal to or inside one is refused.
    ``named_after``: input files whose names the outputs take (``OUT/<input name>``): refused if they lie in OUT.
    """
    outputs = [outputs] if isinstance(outputs, (str, Path)) else list(outputs)
    for out in (Path(o) for o in outputs if o is not None):
        target = resolved(out)
        for given in named_after:
            if resolved(given).parent == target:
                raise InputError(f"the input {given} lies in the output folder, and its output of the same name "
                                 "would overwrite it: choose another output folder", out)
        for given in (Path(i) for i in inputs if i is not None):
            source = resolved(given)
            if target == source or _same_file(target, source):  # a hard link is the same file by another name
                raise InputError(f"the output is the input {given}; refusing to overwrite an input: choose another "
                                 "output", out)
            if inside(target, source) and source.is_dir():
                raise InputError(f"the output lies inside the input {given}; inputs are never written to: choose "
                                 "an output outside it", out)
        for parent in [target, *target.parents]:
            if parent.exists():
                if parent == target and parent.is_dir() and not folder:
                    raise InputError("output file path is an existing folder", out)
                if parent == target and not parent.is_dir() and folder:
                    raise InputError("output path exists and is not a folder", out)
                if parent != target and not parent.is_dir():
                    raise InputError(f"cannot create the output: {parent} is a file, not a folder", out)
                break


def add_common_args(parser, config_required: bool = True) -> None:
    parser.add_argument("--config", required=config_required, help="medsci config YAML")
    parser.add_argument("--device", type=device_name, default=None,
                        help="auto | cpu | cuda (default: the config's device)")
    parser.add_argument("--threads", type=thread_count, default=None, help="CPU threads for torch")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_sampler_args(parser) -> None:
    """Overrides of the config's (or checkpoint's) sampler, the same flags for every generator."""
    parser.add_argument("--sampler", choices=["ddim", "ddpm", "euler"],
                        help="default: the config's (euler for rflow-trained models, ddim/ddpm for ddpm-trained)")
    parser.add_argument("--steps", type=positive_int, help="sampling steps (default: the config's)")
    parser.add_argument("--n-samples", type=positive_int, help="samples averaged; > 1 also gives a voxelwise std")
    parser.add_argument("--guidance-scale", type=finite_float, help="classifier-free guidance scale (1 = off)")
    parser.add_argument("--seed", type=non_negative_int)
    parser.add_argument("--uncertainty", choices=["auto", "variance", "samples", "none"],
                        help="where the _std map comes from: the model's variance head, the spread of --n-samples "
                             "samples, or none (default: auto, the head when the model has one)")


def check_steps_fit(checkpoint, steps: int | list[int] | None, args=None, flag: str = "--steps") -> None:
    """``--steps`` (or ``flag``: several counts, such as --steps-curve), ``--sampler`` and ``--uncertainty``
    against the checkpoint's training, from its config.json alone: before the weights load."""
    steps = max(steps) if isinstance(steps, (list, tuple)) else steps
    given = {k: v for k, v in (sampler_overrides(args) if args is not None else {}).items()
             if k in ("sampler", "uncertainty")}
    if steps is None and not given:
        return
    from medsci.diffusion.checkpoint import read_checkpoint_config
    from medsci.diffusion.config import SamplerConfig, ScheduleConfig, UNetConfig, resolve_sampler
    from medsci.errors import ConfigError

    config = read_checkpoint_config(checkpoint)
    schedule = config.get("schedule")
    total = schedule.get("num_train_timesteps") if isinstance(schedule, dict) else None
    if isinstance(total, int) and steps is not None and steps > total:
        raise InputError(f"{steps} sampling steps exceed the {total} timesteps the model in {checkpoint} was trained "
                         "with; give at most that many", flag)
    if not isinstance(schedule, dict) or not given:
        return
    try:
        sched = ScheduleConfig.from_dict(schedule, "schedule")
        unet = (config.get("model") or {}).get("unet") or {}
        head = bool(UNetConfig.from_dict(unet, "unet").variance_head) if isinstance(unet, dict) else False
        stored = config.get("sample") if isinstance(config.get("sample"), dict) else {}
        resolve_sampler(SamplerConfig.from_dict({**stored, **sampler_overrides(args)}, "sample"), sched, head)
    except ConfigError as err:
        raise InputError(f"{err.reason} (model in {checkpoint})", "--sampler/--uncertainty") from None


def sampler_overrides(args) -> dict:
    """The sampler settings given on the command line (flags left out are not in the dict)."""
    names = {"sampler": "sampler", "steps": "steps", "n_samples": "n_samples", "guidance_scale": "guidance_scale",
             "seed": "seed", "uncertainty": "uncertainty"}
    return {key: getattr(args, attr) for attr, key in names.items() if getattr(args, attr, None) is not None}


def setup_torch(args, config=None):
    import torch

    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    device = getattr(args, "device", None) or (config.device if config is not None else "auto")
    if str(device).startswith("cuda"):  # a config's `device: cuda` on a machine without CUDA
        from medsci.diffusion.device import check_cuda

        check_cuda(str(device), "--device" if getattr(args, "device", None) else getattr(args, "config", "config"))
    return device
