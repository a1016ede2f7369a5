# Makers for the rules every generator repeats: demo data, training, per-part sampling, evaluation. A generator's
# .smk calls these makers with what differs (its files, its command line); names, logs, threads, resources
# and the conda environment are set here once. The rules are defined inside functions (`rule:` with a computed
# `name:`, as in a loop): local `use rule ... as` needs a real base rule and a literal new name.


def _describe(name, doc):
    """The rule's docstring (what --list-rules shows); a docstring inside a rule block must be a literal."""
    workflow.get_rule(name).docstring = doc


def _cli_value(value):
    """A setting as a command-line value: a list becomes space-separated words, a list of lists comma-joined
    words ([[4, 4, 4], [3, 3, 3]] -> 4,4,4 3,3,3)."""
    if isinstance(value, (list, tuple)):
        return " ".join(",".join(str(w) for w in v) if isinstance(v, (list, tuple)) else str(v) for v in value)
    return value


class Files:
    """A maker's input or output files, positional and named as in a rule's `input:` or `output:`."""

    def __init__(self, *positional, **named):
        self.positional, self.named = positional, named

    @classmethod
    def of(cls, files):
        """Files as given: a dict names them, a Files is kept, anything else is one positional entry."""
        if isinstance(files, cls):
            return files
        return cls(**files) if isinstance(files, dict) else cls(files)


def demo_data_rule(task, doc, outputs, folder, options, mem_mb=2000, runtime=10):
    """<task>_demo_data: `medsci demo-data <task> <folder> --<option> <value> ...`, one option per named field
    of the task's data.demo settings. outputs: see Files; folder: a params function."""
    files = Files.of(outputs)
    demo = CFG.section(task).data.demo
    values = {key: _cli_value(getattr(demo, key)) for key in options}
    flags = "".join(f"--{key} {{params.{key}}} " for key in options)

    rule:
        name:
            f"{task}_demo_data"
        output:
            *files.positional,
            **files.named,
        params:
            folder=folder,
            **values,
        log:
            log_path(task, "demo_data.log"),
        threads: 1
        priority: 40  # data preparation before any training
        resources:
            mem_mb=mem_mb,
            runtime=runtime,
        conda:
            ENV
        shell:
            f"medsci demo-data {task} {{params.folder}} {flags}> {{log}} 2>&1"

    _describe(f"{task}_demo_data", doc)


def train_rule(task, doc, folder, category, inputs, args, params=None, mem_mb=4000, log_to="2> {log}", priority=10):
    """<task>_train: the model folder (config.json, ema.safetensors, loss.csv) from `medsci train <task>
    --config <cfg> <args> --out <folder>`, on train.threads threads and train_gpus GPUs (torchrun above one).
    inputs: the training data (named); input.cfg, params.model and the log are added here. log_to: where the
    command's output goes (stderr alone, or also stdout). priority: after data preparation (priority 40), the
    trainings go before the jobs beside them, the longest first, so that on a small machine the short jobs fill
    in around them instead of delaying them."""

    rule:
        name:
            f"{task}_train"
        input:
            **inputs,
            cfg=RESOLVED_CONFIG,
        output:
            config=str(folder / "config.json"),
            ema=str(folder / "ema.safetensors"),
            loss=report(str(folder / "loss.csv"), category=category, subcategory="training"),
        params:
            **(params or {}),
            model=parent("config"),
        log:
            log_path(task, "train.log"),
        threads: train_threads(task)
        priority: priority
        resources:
            mem_mb=mem_mb,
            runtime=24 * 60,
            gpu=train_gpus(),
        conda:
            ENV
        shell:
            train_launcher() + f" train {task} --config {{input.cfg}} {args} "
            f"--out {{params.model}} --threads {{threads}} --no-progress {log_to}"

    _describe(f"{task}_train", doc)


def sample_rules(task, step, ids, doc, inputs, outputs, params, command, mem_mb=3000):
    """<task>_<step>_1, _2, ...: one rule per part of the held-out ids (sample_parts). inputs, outputs and
    params are functions of a part's ids (outputs: see Files); each rule also gets input.model (the trained
    model's config), params.model (its folder) and input.cfg, one thread, an hour per item, the GPU on CUDA,
    and the log <task>/<step>/<part>.log."""
    model = getattr(rules, f"{task}_train").output.config
    for index, (part, part_ids) in enumerate(sample_parts(ids)):
        files = Files.of(outputs(part_ids))
        rule_name = part_rule_name(f"{task}_{step}", index)

        rule:
            name:
                rule_name
            input:
                model=model,
                **inputs(part_ids),
                cfg=RESOLVED_CONFIG,
            output:
                *files.positional,
                **files.named,
            params:
                **params(part_ids),
                model=lambda wc, input: os.path.dirname(input.model),
            log:
                log_path(task, step, f"{part}.log"),
            threads: 1
            resources:
                mem_mb=mem_mb,
                runtime=60 * len(part_ids),
                gpu=uses_gpu(),
            conda:
                ENV
            shell:
                command

        _describe(rule_name, doc)


def evaluate_rule(task, doc, folder, category, figures, inputs, params, command, extra_outputs=None, **resources):
    """<task>_evaluate: summary.json, metrics.csv, summary.md and a folder of figures (named `figures`, its PNGs
    in the report) in `folder`, plus extra_outputs; params.out is the folder. resources: 3000 MB and 30 minutes
    unless given, and whatever else is given (gpu)."""

    rule:
        name:
            f"{task}_evaluate"
        input:
            **inputs,
        output:
            summary=report(str(folder / "summary.json"), category=category, subcategory="evaluation"),
            table=report(str(folder / "metrics.csv"), category=category, subcategory="evaluation"),
            markdown=str(folder / "summary.md"),
            **{
                figures: report(
                    directory(str(folder / figures)), patterns=["{name}.png"], category=category, subcategory=figures
                )
            },
            **(extra_outputs or {}),
        params:
            **params,
            out=parent("summary"),
        log:
            log_path(task, "evaluate.log"),
        threads: 1
        resources:
            **{"mem_mb": 3000, "runtime": 30, **resources},
        conda:
            ENV
        shell:
            command

    _describe(f"{task}_evaluate", doc)
