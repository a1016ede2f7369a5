"""One contract for a generator's stages, and the engine's one path from a checkpoint to a loaded model.

A generator (``medsci/tasks/<name>/``) subclasses :class:`Generator` with its science; the core runs the stages
in one order for every generator:

============  ==========================================================  =====================================
stage         hook                                                        run by
============  ==========================================================  =====================================
prepare       ``prepare``: raw data -> the model's inputs                 ``medsci preprocess <name>``
train inputs  ``inputs(args)`` given to :func:`add_train`: files read     :func:`run_train` (never written)
train         ``train(section, args, device, progress)`` -> checkpoint     :func:`run_train`
load          ``parse(checkpoint config)`` -> its :class:`LoadedModel`    :meth:`Generator.load` (the engine's
              fields                                                      :func:`load_model`)
predict       ``sample(section, loaded, args)`` -> held-out predictions   :func:`run_sample`
score         ``score``: one table row per case and method                ``medsci evaluate <name>``
report        ``report``: summary.md, tables and figures                  ``medsci evaluate <name>``
============  ==========================================================  =====================================

``train``, ``load`` and ``sample`` go through the generic handlers below. ``prepare``, ``score`` and ``report``
take what the generator's data is (a subject folder, a CT, a SEG-Y cube), so their signatures are the
generator's and its own command handlers call them. This module imports no generator and nothing heavy (torch
only when a model loads), so a generator's ``commands.py`` may import it while ``medsci --help`` runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar


@dataclass
class LoadedModel:
    """A trained network ready to sample; a generator subclasses it (a dataclass) for its own fields."""

    model: Any  # torch.nn.Module, in eval mode, on `device`
    config: dict  # the checkpoint's config.json
    schedule: Any  # medsci.diffusion.config.ScheduleConfig
    device: Any  # torch.device


def load_model(loaded: type[LoadedModel], checkpoint: str | Path, task: str, parse: Callable[[dict], dict],
               device: str | None = "auto", use_ema: bool = True) -> LoadedModel:
    """``checkpoint`` -> ``loaded(...)``: the engine reads config.json (refusing another ``task``'s checkpoint),
    rebuilds the network, parses the schedule, and ``parse(config)`` gives the generator's own fields by name
    (a missing or mangled entry is one ConfigError naming it); then the weights load onto ``device``."""
    from medsci.diffusion.checkpoint import load_for_inference
    from medsci.diffusion.config import ScheduleConfig
    from medsci.diffusion.networks import build_network

    def parse_all(config: dict) -> tuple:
        return ScheduleConfig.from_dict(config["schedule"], "schedule"), parse(config)

    model, config, (schedule, fields), dev = load_for_inference(checkpoint, task, build_network, parse_all, device,
                                                                use_ema)
    return loaded(model=model, config=config, schedule=schedule, device=dev, **fields)


class Generator:
    """The stages of one generator (see the module docstring): a subclass names itself in its class statement,
    ``class Seismic(Generator, name="seismic", checkpoint_task=TASK, loaded_model=LoadedModel)``, and overrides
    the hooks it offers; a hook left out raises NotImplementedError naming it."""

    name: ClassVar[str] = ""  # the registry's Task name: config section and CLI name
    checkpoint_task: ClassVar[str] = ""  # the "task" entry its checkpoints' config.json carry
    loaded_model: ClassVar[type[LoadedModel]] = LoadedModel

    def __init_subclass__(cls, name: str | None = None, checkpoint_task: str | None = None,
                          loaded_model: type[LoadedModel] | None = None, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.name = name or cls.name
        cls.checkpoint_task = checkpoint_task or cls.checkpoint_task
        cls.loaded_model = loaded_model or cls.loaded_model

    # -- load
    def parse(self, config: dict) -> dict:
        """The generator's own :class:`LoadedModel` fields, from a checkpoint's config.json."""
        return {}

    def load(self, checkpoint: str | Path, device: str | None = "auto", use_ema: bool = True) -> LoadedModel:
        return load_model(self.loaded_model, checkpoint, self.checkpoint_task, self.parse, device, use_ema)

    # -- the stages the generic handlers run (their inputs' flags and files are given where the command is
    # registered: see add_train and add_sample)
    def train(self, section, args, device, progress: bool = True) -> Path:
        """Train on the inputs ``args`` names; write the checkpoint into ``args.out``; return that folder."""
        return self._missing("train")

    def sample(self, section, loaded: LoadedModel, args) -> int:
        """Predict every held-out input ``args`` names into ``args.out`` (made already); the exit status."""
        return self._missing("sample")

    # -- the stages its own handlers run (signatures are the generator's; None: not offered)
    prepare: Callable | None = None
    score: Callable | None = None
    report: Callable | None = None

    def _missing(self, hook: str):
        raise NotImplementedError(f"generator {self.name!r} does not implement the {hook} stage")


def stages(where: str) -> Generator:
    """The :class:`Generator` at ``"package.module:attribute"`` (imported now, not at ``--help``)."""
    from medsci.registry import resolve

    return resolve(where)


# ---------------------------------------------------------------------------------------------- generic handlers
def add_train(tasks, name: str, where: str, help: str, inputs: Callable[[Any], list]):
    """``medsci train <name>``: the common options (config, device, threads, progress, --out); the caller adds
    its inputs' flags to the returned parser. ``where``: its :class:`Generator`, as ``"module:attribute"``,
    imported only once the arguments are known good. ``inputs(args)``: the train-inputs stage, the files and
    folders the training reads (an output inside one is refused before any work); it must import nothing heavy."""
    from medsci.commands.args import add_common_args

    p = tasks.add_parser(name, help=help)
    add_common_args(p)
    p.add_argument("--out", required=True, help="checkpoint folder (resumed if it holds a checkpoint)")
    p.set_defaults(handler=lambda args: run_train(where, inputs, args))
    return p


def run_train(where: str, inputs, args) -> int:
    from medsci.commands.args import check_outputs, setup_torch
    from medsci.config import load_config

    check_outputs(args.out, [*inputs(args), args.config])
    config = load_config(args.config)
    generator = stages(where)  # torch and MONAI: only once the arguments are known good
    device = setup_torch(args, config)
    out = generator.train(config.section(generator.name), args, device, progress=not args.no_progress)
    print(f"checkpoint: {out}")
    return 0


def add_sample(tasks, name: str, where: str, help: str, inputs: Callable[[Any], list], out_help: str | None = None):
    """``medsci sample <name>``: the common options and --checkpoint, --out; the caller adds its inputs' flags.
    ``inputs(args)``: the held-out files read; outputs are named after them, so none may lie in --out."""
    from medsci.commands.args import add_common_args

    p = tasks.add_parser(name, help=help)
    add_common_args(p)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True, type=Path, help=out_help)
    p.set_defaults(handler=lambda args: run_sample(where, inputs, args))
    return p


def run_sample(where: str, inputs, args) -> int:
    from medsci.commands.args import check_outputs, setup_torch
    from medsci.config import load_config

    read = inputs(args)
    check_outputs(args.out, [*read, args.checkpoint, args.config], named_after=read)
    config = load_config(args.config)
    generator = stages(where)
    section = config.section(generator.name)
    device = setup_torch(args, config)
    loaded = generator.load(args.checkpoint, device, use_ema=section.sample.use_ema)
    args.out.mkdir(parents=True, exist_ok=True)
    return generator.sample(section, loaded, args)


def add_evaluate(tasks, name: str, handler, help: str):
    """``medsci evaluate <name>``: the common options, --predictions (the folder ``sample`` wrote) and --out; the
    caller adds its inputs' flags. ``handler(args)`` runs the generator's score and report stages."""
    from medsci.commands.args import add_common_args

    p = tasks.add_parser(name, help=help)
    add_common_args(p)
    p.add_argument("--predictions", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.set_defaults(handler=handler)
    return p
