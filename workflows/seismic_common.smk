# Seismic interpolation: settings, result folders, cube lists and target lists, known at parse time.
# The rules are in seismic.smk (which includes this file).

SEIS = CFG.seismic
SEIS_ENABLED = SEIS is not None and SEIS.enabled
SEIS_DIR = RESULTS / "seismic"
SEIS_RAW = Path(SEIS.data.raw_dir) if SEIS_ENABLED and SEIS.data.raw_dir else SEIS_DIR / "demo_data"
SEIS_MASKS = SEIS_DIR / "masks"
SEIS_MODEL = SEIS_DIR / "model"
SEIS_RECON = SEIS_DIR / "reconstructions"
SEIS_BENCH = SEIS_DIR / "benchmark"
SEIS_EVAL = SEIS_DIR / "evaluation"


def seismic_cube_files():
    """{cube id: file}, known at parse time: the demo's cube_000.. or the stems of the raw_dir files."""
    if not SEIS_ENABLED:
        return {}
    if SEIS.data.raw_dir:
        from medsci.tasks.seismic.data import cube_files

        return {cube: str(path) for cube, path in cube_files(SEIS_RAW).items()}
    return {f"cube_{i:03d}": str(SEIS_RAW / f"cube_{i:03d}.segy") for i in range(SEIS.data.demo.cubes)}


SEIS_FILES = seismic_cube_files()
SEIS_CUBES = list(SEIS_FILES)
SEIS_HELDOUT = SEIS_CUBES[len(SEIS_CUBES) - SEIS.data.heldout :] if SEIS_ENABLED and SEIS.data.heldout else []
SEIS_TRAIN = [c for c in SEIS_CUBES if c not in SEIS_HELDOUT]
SEIS_PATTERNS = list(SEIS.evaluation.patterns) if SEIS_ENABLED else []
SEIS_METHODS = ["model", "model_unguided"] if SEIS_ENABLED and SEIS.evaluation.unguided else ["model"]
SEIS_BENCH_CUBES = (
    SEIS_HELDOUT[: SEIS.evaluation.benchmark_cubes] if SEIS_ENABLED and SEIS.evaluation.benchmark else []
)


def seismic_outputs():
    if not SEIS_ENABLED:
        return []
    return [str(SEIS_EVAL / "summary.json")]


def seismic_evaluation_outputs():
    outputs = {
        "summary": report(str(SEIS_EVAL / "summary.json"), category="Seismic interpolation", subcategory="evaluation"),
        "table": report(str(SEIS_EVAL / "metrics.csv"), category="Seismic interpolation", subcategory="evaluation"),
        "markdown": str(SEIS_EVAL / "summary.md"),
        "sections": report(
            directory(str(SEIS_EVAL / "sections")),
            patterns=["{name}.png"],
            category="Seismic interpolation",
            subcategory="sections",
        ),
    }
    if SEIS_BENCH_CUBES:
        outputs["benchmark"] = report(
            str(SEIS_EVAL / "benchmark.png"), category="Seismic interpolation", subcategory="benchmark"
        )
    return outputs
