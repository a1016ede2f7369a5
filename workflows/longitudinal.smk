# Longitudinal sequences: demo subjects -> register every session to the subject's first (one job per subject)
# -> train (sequence-aware transformer context + 3D diffusion UNet) -> predict each held-out subject's last
# session (model, copy-last, linear and deformation extrapolation; autoregressive forecasts) -> evaluation.


import shlex

import medsci.tasks.longitudinal.workflow as lon_workflow

LON = CFG.longitudinal
LON_DIR = task_dir("longitudinal")
LON_RAW = Path(LON.data.raw_dir) if LON.data.raw_dir else LON_DIR / "demo_data"
LON_FOLDERS = lon_workflow.subject_folders(LON, LON_RAW)
LON_TRAIN, LON_HELDOUT = heldout_split(
    list(LON_FOLDERS), LON.data.heldout, "longitudinal.data.heldout", "subjects"
)
LON_PREP = LON_DIR / "preprocessed"
LON_MODEL = LON_DIR / "model"
LON_PRED = LON_DIR / "predictions"
LON_EVAL = LON_DIR / "evaluation"
LON_CATEGORY = "Longitudinal"  # of the report


TARGETS["longitudinal"] = [str(LON_EVAL / "summary.json")]


if not LON.data.raw_dir:

    demo_data_rule(
        "longitudinal",
        "Synthetic subjects: ventricles enlarge, cortex thins, a lesion grows or shrinks; irregular times.",
        {"tables": [str(Path(f) / "sessions.tsv") for f in LON_FOLDERS.values()]},
        folder=lambda wc, output: os.path.dirname(os.path.dirname(output.tables[0])),
        options=("subjects", "seed", "shape", "spacing") + (("spacings",) if LON.data.demo.spacings else ()),
    )

rule longitudinal_preprocess:
    """Every session of one subject registered (SimpleITK) onto its first session's model-grid image."""
    input:
        table=lambda wc: str(Path(LON_FOLDERS[wc.subject]) / "sessions.tsv"),
        cfg=RESOLVED_CONFIG,
    output:
        str(LON_PREP / "{subject}.npz"),
        str(LON_PREP / "{subject}.json"),
    params:
        folder=lambda wc: LON_FOLDERS[wc.subject],
        out=lambda wc, output: os.path.dirname(output[0]),
    log:
        log_path("longitudinal", "preprocess", "{subject}.log"),
    threads: 1
    priority: 40  # data preparation before any training: the trainings wait on it
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        ENV
    shell:
        "medsci preprocess longitudinal --config {input.cfg} --subjects {params.folder} --out {params.out} "
        "--threads 1 > {log} 2>&1"

train_rule(
    "longitudinal",
    "Sequence-aware transformer over earlier frames (cross-attention context) + 3D diffusion UNet.",
    LON_MODEL,
    LON_CATEGORY,
    inputs={"subjects": expand(str(LON_PREP / "{subject}.npz"), subject=LON_TRAIN)},
    args="--subjects {input.subjects}",
    priority=30,  # the longest training of the default run
)

sample_rules(
    "longitudinal",
    "sample",
    LON_HELDOUT,
    "Held-out subjects' last sessions: model (mean and std of samples), baselines, forecasts.",
    inputs=lambda subjects: {"subjects": expand(str(LON_PREP / "{subject}.npz"), subject=subjects)},
    outputs=lambda subjects: expand(str(LON_PRED / "{subject}.{ext}"), subject=subjects, ext=("npz", "json")),
    params=lambda subjects: {"out": lambda wc, output: os.path.dirname(output[0])},
    command="medsci sample longitudinal --config {input.cfg} --checkpoint {params.model} "
    "--subjects {input.subjects} --out {params.out} --threads {threads} > {log} 2>&1",
)

evaluate_rule(
    "longitudinal",
    "SSIM / PSNR / MAE over the brain and in the changed region, by horizon; forecast uncertainty; figures.",
    LON_EVAL,
    LON_CATEGORY,
    "figures",
    inputs={
        "subjects": expand(str(LON_PREP / "{subject}.npz"), subject=LON_HELDOUT),
        "predictions": expand(str(LON_PRED / "{subject}.npz"), subject=LON_HELDOUT),
        "cfg": RESOLVED_CONFIG,
    },
    # --data: the subjects refused under raw_dir (left out of the run) are named in the report
    params={"predictions": lambda wc, input: os.path.dirname(input.predictions[0]),
            "data": f"--data {shlex.quote(str(LON_RAW))}" if LON.data.raw_dir else ""},
    command="medsci evaluate longitudinal --config {input.cfg} --subjects {input.subjects} "
    "--predictions {params.predictions} --out {params.out} {params.data} > {log} 2>&1",
)
