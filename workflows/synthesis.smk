# MRI modality synthesis: demo data -> preprocess (one job per case) -> summary -> train -> sample held-out
# cases (one job per case) -> SSIM-vs-steps curve -> evaluation beside the baselines.

SYN = CFG.synthesis
SYN_DIR = RESULTS / "synthesis"
SYN_RAW = Path(SYN.data.raw_dir) if SYN.data.raw_dir else SYN_DIR / "demo_data"
SYN_PREP = SYN_DIR / "preprocessed"
SYN_MODEL = SYN_DIR / "model"
SYN_SAMPLES = SYN_DIR / "samples"
SYN_CURVES = SYN_DIR / "steps_curve"
SYN_EVAL = SYN_DIR / "evaluation"
MODS = ("t1n", "t1c", "t2w", "t2f")


def synthesis_case_ids():
    if SYN.data.raw_dir:
        return sorted(p.name for p in SYN_RAW.iterdir() if p.is_dir() and not p.name.startswith("."))
    return [f"BraTS-DEMO-{i:05d}-000" for i in range(SYN.data.demo.cases)]


SYN_CASES = synthesis_case_ids() if SYN.enabled else []
SYN_HELDOUT = SYN_CASES[len(SYN_CASES) - SYN.data.heldout :] if SYN.data.heldout else []
SYN_TRAIN = [c for c in SYN_CASES if c not in SYN_HELDOUT]
SYN_CURVE_CASES = SYN_HELDOUT[: SYN.evaluation.curve_cases]


def synthesis_outputs():
    if not SYN.enabled:
        return []
    return [str(SYN_PREP / "summary.json"), str(SYN_EVAL / "summary.json")]


def synthesis_raw_inputs(wildcards):
    folder = SYN_RAW / wildcards.case
    if SYN.data.raw_dir:
        return [str(p) for p in sorted(folder.glob("*.nii*"))]
    return [str(folder / f"{wildcards.case}-{m}.nii.gz") for m in (*MODS, "seg")]


if not SYN.data.raw_dir:

    rule synthesis_demo_data:
        """Deterministic synthetic BraTS-layout cases (brain, tumour, four contrasts, labels)."""
        output:
            expand(str(SYN_RAW / "{case}" / "{case}-{mod}.nii.gz"), case=SYN_CASES, mod=(*MODS, "seg")),
            dataset=str(SYN_RAW / "dataset.json"),
        params:
            shape=" ".join(str(s) for s in SYN.data.demo.shape),
        log:
            log_path("synthesis", "demo_data.log"),
        threads: 1
        resources:
            mem_mb=2000,
            runtime=20,
        shell:
            "medsci demo-data synthesis {SYN_RAW} --cases {SYN.data.demo.cases} --seed {SYN.data.demo.seed} "
            "--shape {params.shape} > {log} 2>&1"


rule synthesis_preprocess:
    """Reorient, mask, scale inside the brain, crop/pad; writes tensors + a sidecar to map results back."""
    input:
        synthesis_raw_inputs,
        cfg=RESOLVED_CONFIG,
    output:
        npz=str(SYN_PREP / "{case}.npz"),
        sidecar=str(SYN_PREP / "{case}.json"),
    params:
        folder=lambda wc: str(SYN_RAW / wc.case),
        layout=SYN.data.layout,
    log:
        log_path("synthesis", "preprocess", "{case}.log"),
    threads: 1
    resources:
        mem_mb=4000,
        runtime=15,
    shell:
        "medsci preprocess --case-dir {params.folder} --layout {params.layout} --out {SYN_PREP} "
        "--config {input.cfg} > {log} 2>&1"


rule synthesis_summary:
    input:
        expand(str(SYN_PREP / "{case}.npz"), case=SYN_CASES),
    output:
        report(str(SYN_PREP / "summary.json"), category="MRI synthesis", subcategory="data"),
    log:
        log_path("synthesis", "summary.log"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "medsci summarize {SYN_PREP} --out {output} > {log} 2>&1"


rule synthesis_train:
    """One wavelet-domain conditional diffusion model for any single missing contrast."""
    input:
        expand(str(SYN_PREP / "{case}.npz"), case=SYN_TRAIN),
        cfg=RESOLVED_CONFIG,
    output:
        config=str(SYN_MODEL / "config.json"),
        ema=str(SYN_MODEL / "ema.safetensors"),
        loss=str(SYN_MODEL / "loss.csv"),
    params:
        cases=" ".join(SYN_TRAIN),
    log:
        log_path("synthesis", "train.log"),
    threads: 2
    resources:
        mem_mb=8000,
        runtime=24 * 60,
        gpu=1 if CFG.device.startswith("cuda") else 0,
    shell:
        "medsci train synthesis --config {input.cfg} --data {SYN_PREP} --cases {params.cases} "
        "--out {SYN_MODEL} --threads {threads} 2> {log}"


rule synthesis_sample:
    """Synthesise every target contrast of one held-out case from the other three."""
    input:
        model=rules.synthesis_train.output.ema,
        case=str(SYN_PREP / "{case}.npz"),
        cfg=RESOLVED_CONFIG,
    output:
        timing=str(SYN_SAMPLES / "{case}" / "{case}-timing.json"),
        npz=expand(str(SYN_SAMPLES / "{{case}}" / "{{case}}-{mod}.npz"), mod=SYN.evaluation.targets),
        nifti=expand(str(SYN_SAMPLES / "{{case}}" / "{{case}}-{mod}.nii.gz"), mod=SYN.evaluation.targets),
    params:
        targets=" ".join(SYN.evaluation.targets),
    log:
        log_path("synthesis", "sample", "{case}.log"),
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=1 if CFG.device.startswith("cuda") else 0,
    shell:
        "medsci sample synthesis --config {input.cfg} --checkpoint {SYN_MODEL} --data {SYN_PREP} "
        "--case {wildcards.case} --targets {params.targets} --out {SYN_SAMPLES} --threads {threads} "
        "--no-progress > {log} 2>&1"


rule synthesis_steps_curve:
    """Held-out SSIM against the number of sampling steps (1000 = the DDPM reference sampler)."""
    input:
        model=rules.synthesis_train.output.ema,
        case=str(SYN_PREP / "{case}.npz"),
        cfg=RESOLVED_CONFIG,
    output:
        str(SYN_CURVES / "{case}-curve.json"),
    params:
        steps=" ".join(str(s) for s in SYN.evaluation.steps_curve),
        targets=" ".join(SYN.evaluation.curve_targets),
    log:
        log_path("synthesis", "steps_curve", "{case}.log"),
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=1 if CFG.device.startswith("cuda") else 0,
    shell:
        "medsci sample synthesis --config {input.cfg} --checkpoint {SYN_MODEL} --data {SYN_PREP} "
        "--case {wildcards.case} --targets {params.targets} --steps-curve {params.steps} --out {SYN_CURVES} "
        "--threads {threads} --no-progress > {log} 2>&1"


rule synthesis_evaluate:
    """Model, voxelwise linear regression and mean-of-inputs, side by side, on held-out cases."""
    input:
        samples=expand(str(SYN_SAMPLES / "{case}" / "{case}-timing.json"), case=SYN_HELDOUT),
        curves=expand(str(SYN_CURVES / "{case}-curve.json"), case=SYN_CURVE_CASES),
    output:
        summary=report(str(SYN_EVAL / "summary.json"), category="MRI synthesis", subcategory="evaluation"),
        table=report(str(SYN_EVAL / "metrics.csv"), category="MRI synthesis", subcategory="evaluation"),
        markdown=str(SYN_EVAL / "summary.md"),
        montages=report(
            directory(str(SYN_EVAL / "montages")),
            patterns=["{name}.png"],
            category="MRI synthesis",
            subcategory="montages",
        ),
    params:
        train=" ".join(SYN_TRAIN),
        heldout=" ".join(SYN_HELDOUT),
        targets=" ".join(SYN.evaluation.targets),
    log:
        log_path("synthesis", "evaluate.log"),
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "medsci evaluate synthesis --data {SYN_PREP} --train-cases {params.train} --cases {params.heldout} "
        "--samples {SYN_SAMPLES} --targets {params.targets} --curves {input.curves} --out {SYN_EVAL} "
        "> {log} 2>&1"
