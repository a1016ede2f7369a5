# Radiograph rotation: demo chest CTs -> DRR pairs (random rotations for training CTs, the evaluation angles for
# held-out CTs) -> train (2D conditional diffusion, classifier-free guidance over the rotation) -> rotate the
# held-out views with the model and the baselines -> evaluation (tables by axis and magnitude, remapped
# histograms, guidance, figures).


import medsci.tasks.rotation.workflow as rot_workflow

ROT = CFG.rotation
ROT_DIR = task_dir("rotation")
ROT_RAW = Path(ROT.data.raw_dir) if ROT.data.raw_dir else ROT_DIR / "demo_data"
ROT_FILES = rot_workflow.ct_files(ROT, ROT_RAW)
ROT_TRAIN, ROT_HELDOUT = heldout_split(
    list(ROT_FILES), ROT.data.heldout, "rotation.data.heldout", "CTs"
)
ROT_PAIRS = ROT_DIR / "pairs"
ROT_MODEL = ROT_DIR / "model"
ROT_PRED = ROT_DIR / "predictions"
ROT_EVAL = ROT_DIR / "evaluation"
ROT_CATEGORY = "Radiograph rotation"  # of the report


TARGETS["rotation"] = [str(ROT_EVAL / "summary.json")]


if not ROT.data.raw_dir:

    demo_data_rule(
        "rotation",
        "Deterministic synthetic chest CTs in HU (body, lungs, heart, liver, spine, ribs), NIfTI.",
        {"cts": list(ROT_FILES.values())},
        folder=lambda wc, output: os.path.dirname(output.cts[0]),
        options=("cts", "seed", "shape", "spacing", "variety"),
    )

rule rotation_pairs:
    """DRRs of one CT: random rotations for a training CT, the evaluation angles for a held-out one."""
    input:
        ct=lambda wc: ROT_FILES[wc.ct],
        cfg=RESOLVED_CONFIG,
    output:
        str(ROT_PAIRS / "{split}" / "{ct}.npz"),
    wildcard_constraints:
        split="train|heldout",
    params:
        out=lambda wc, output: os.path.dirname(output[0]),
        evaluation=lambda wc: "--evaluation" if wc.split == "heldout" else "",
        index=lambda wc: list(ROT_FILES).index(wc.ct),
    log:
        log_path("rotation", "pairs", "{split}-{ct}.log"),
    threads: 1
    priority: 40  # data preparation before any training
    resources:
        mem_mb=3000,
        runtime=30,
    conda:
        ENV
    shell:
        "medsci preprocess rotation --config {input.cfg} --cts {input.ct} --out {params.out} --index {params.index} "
        "{params.evaluation} --record-refusals --threads 1 > {log} 2>&1"

train_rule(
    "rotation",
    "2D conditional diffusion: source view as channels, rotation as a vector with a learned null (CFG).",
    ROT_MODEL,
    ROT_CATEGORY,
    inputs={"pairs": expand(str(ROT_PAIRS / "train" / "{ct}.npz"), ct=ROT_TRAIN)},
    args="--pairs {input.pairs}",
    priority=22,
)

sample_rules(
    "rotation",
    "sample",
    ROT_HELDOUT,
    "Held-out CTs' views rotated by the model (guidance variants, remapped inputs) and the baselines.",
    inputs=lambda cts: {"pairs": expand(str(ROT_PAIRS / "heldout" / "{ct}.npz"), ct=cts)},
    outputs=lambda cts: expand(str(ROT_PRED / "{ct}.npz"), ct=cts),
    params=lambda cts: {"out": lambda wc, output: os.path.dirname(output[0])},
    command="medsci sample rotation --config {input.cfg} --checkpoint {params.model} --pairs {input.pairs} "
    "--out {params.out} --threads {threads} > {log} 2>&1",
)

evaluate_rule(
    "rotation",
    "SSIM / PSNR / MAE by axis and magnitude beside identity and warp; remaps; guidance; figures.",
    ROT_EVAL,
    ROT_CATEGORY,
    "figures",
    inputs={
        "pairs": expand(str(ROT_PAIRS / "heldout" / "{ct}.npz"), ct=ROT_HELDOUT),
        "predictions": expand(str(ROT_PRED / "{ct}.npz"), ct=ROT_HELDOUT),
        "cfg": RESOLVED_CONFIG,
    },
    params={"predictions": lambda wc, input: os.path.dirname(input.predictions[0])},
    command="medsci evaluate rotation --config {input.cfg} --pairs {input.pairs} "
    "--predictions {params.predictions} --out {params.out} > {log} 2>&1",
)
