"""Batch synthesis for a clinical folder: one sub-folder per case (NIfTI files or DICOM series), the missing
contrast of each written on the case's own grid, with a QC figure, a summary table and an HTML page.

Promises to the user: nothing is written inside the input folder; a refused case never stops the others
and says why; a rerun skips cases already done with the same inputs, model and sampler (by checksum) and
redoes changed ones; every output says it is synthetic (file name, NIfTI description, DICOM tags).
"""

from __future__ import annotations

import csv
import hashlib
import html
import io
import json
import re
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from medsci.errors import InputError, MedsciError
from medsci.io.atomic import safe_join, write_json_atomic, write_text_atomic
from medsci.mri.cases import MODALITIES, Case
from medsci.io.paths import inside, refuse_links_outside, resolved

SYNTHETIC = "SYNTHETIC"
RECORD_VERSION = 2  # 2: contrasts co-registered and checked, mask from the reference
_VOLUME_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")
# File-name tokens that name a contrast; checked in this order, so "t1_post" is t1c before t1n and
# "t2_flair" is t2f before t2w.
_NAME_TOKENS: dict[str, tuple[set[str], set[str]]] = {
    # modality: (tokens naming it alone, tokens naming it together with a t1/t2 token)
    "t2f": ({"t2f", "flair", "t2flair"}, set()),
    "t1c": ({"t1c", "t1ce", "t1gd", "t1post", "t1contrast", "t1wce"}, {"gd", "gad", "post", "contrast", "ce", "c"}),
    "t2w": ({"t2w", "t2"}, set()),
    "t1n": ({"t1n", "t1", "t1w", "t1pre", "t1native"}, set()),
}


@dataclass
class CaseInputs:
    """What was found in one case folder (nothing read yet beyond DICOM headers)."""

    case_id: str
    folder: Path
    kind: str  # "nifti" | "dicom"
    files: dict[str, Path] = field(default_factory=dict)  # modality -> NIfTI/ITK file (nifti cases)
    series: dict = field(default_factory=dict)  # modality -> medsci.io.dicom.DicomSeries (dicom cases)
    notes: list[str] = field(default_factory=list)

    def sources(self) -> dict[str, str]:
        """Which file or series became which contrast, for the record."""
        if self.kind == "dicom":
            return {m: f"series {s.description or s.tags.get('ProtocolName', '')!r} (#{s.tags.get('SeriesNumber', '')}, "
                       f"{s.series_uid})" for m, s in self.series.items()}
        return {m: p.name for m, p in self.files.items()}

    def input_files(self) -> list[Path]:
        if self.kind == "dicom":
            return sorted(f for s in self.series.values() for f in s.files)
        return sorted(self.files.values())


@dataclass
class CaseRecord:
    """One row of the batch summary; also stored as ``<case>.json`` beside the case's outputs."""

    case_id: str
    status: str  # done | skipped | refused
    target: str | None = None
    reason: str | None = None
    warnings: list[str] = field(default_factory=list)
    seconds: float | None = None
    outputs: list[str] = field(default_factory=list)  # relative to the output folder
    inputs: list[str] = field(default_factory=list)
    input_kind: str | None = None
    key: str | None = None  # checksum of inputs + model + sampler: a rerun with the same key is skipped
    uncertainty_mean: float | None = None  # mean / 95th percentile of the voxelwise std over samples, in the
    uncertainty_p95: float | None = None  # brain, on the synthesis' [0, 1] intensity scale
    network_evaluations: int | None = None
    uncertainty: str | None = None  # where the std map came from: variance (the network's head) | samples
    contrasts: dict = field(default_factory=dict)  # modality -> the file or DICOM series it was read from
    ignored: list[str] = field(default_factory=list)  # files and series left out, and why
    registration: dict | None = None  # reference, registered?, per contrast: NMI before/after, rotation, shift


# ------------------------------------------------------------------------------------------ discovery
def check_locations(input_dir: Path, out_dir: Path) -> None:
    """Refuse an output folder inside the input folder (or the other way round): inputs are never written to."""
    src, dst = resolved(input_dir), resolved(out_dir)
    if not src.is_dir():
        raise InputError("input folder not found", input_dir)
    if inside(dst, src):
        raise InputError("the output folder lies inside the input folder; choose a folder outside it", out_dir)
    if inside(src, dst):
        raise InputError("the input folder lies inside the output folder; choose another output folder", out_dir)
    if dst.exists() and not dst.is_dir():
        raise InputError("output path exists and is not a folder", out_dir)


def _safe_id(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "case"


def find_case_folders(root: Path) -> list[tuple[str, Path, str | None]]:
    """(case id, folder, refusal reason) per case; the root itself is one case when it holds volumes."""
    root = Path(root)
    subs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subs or any(_is_volume(p) for p in root.iterdir() if p.is_file()):
        subs = [root]
    ids = [_safe_id(p.name) for p in subs]
    folded = [i.lower() for i in ids]  # case-insensitive file systems would merge their outputs
    out = []
    for cid, folder in zip(ids, subs):
        dup = folded.count(cid.lower()) > 1
        out.append((cid, folder, f"duplicate case id {cid!r} (another folder maps to the same name)" if dup else None))
    return out


def _is_volume(path: Path) -> bool:
    return path.name.lower().endswith(_VOLUME_SUFFIXES) and not path.name.startswith(".")


def modality_from_name(name: str) -> str | None:
    """Contrast named by a file name (``BraTS-GLI-00001-000-t1c.nii.gz``, ``sub-01_T1w.nii``, ``flair.nii``)."""
    stem = name.lower()
    for suffix in _VOLUME_SUFFIXES:
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    tokens = set(re.split(r"[-_. +]+", stem))
    for modality, (alone, with_t1) in _NAME_TOKENS.items():
        if tokens & alone and not (modality == "t1n" and tokens & _NAME_TOKENS["t1c"][1]):
            return modality
        if with_t1 and tokens & {"t1", "t1w"} and tokens & with_t1:
            return modality
    return None


def scan_case(case_id: str, folder: Path, patterns: dict[str, str] | None = None,
              dicom_mapping: dict | None = None) -> CaseInputs:
    """Files of one case: NIfTI (file-name patterns or contrast tokens) or DICOM series (descriptions)."""
    from medsci.io.dicom import find_series, is_dicom_folder
    from medsci.mri.contrasts import classify_series

    files = sorted(p for p in folder.rglob("*") if p.is_file() and _is_volume(p)
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    if files:
        found: dict[str, Path] = {}
        notes = []
        for path in files:
            if patterns:
                mods = [m for m, pat in patterns.items() if path.match(pat.replace("{case}", folder.name))]
            else:
                mods = [m] if (m := modality_from_name(path.name)) else []
            if len(mods) > 1:
                raise InputError(f"{path.name} matches the patterns of {', '.join(mods)}", path)
            if not mods:
                notes.append(f"ignored {path.name} (no contrast in its name)")
                continue
            if mods[0] in found:
                raise InputError(f"two files for {mods[0]}: {found[mods[0]].name} and {path.name}; keep one", folder)
            found[mods[0]] = path
        return CaseInputs(case_id, folder, "nifti", files=found, notes=notes)
    if is_dicom_folder(folder):
        series, notes = classify_series(find_series(folder), dicom_mapping)
        return CaseInputs(case_id, folder, "dicom", series=series, notes=list(notes))
    raise InputError("no NIfTI/MHA/NRRD volume and no DICOM file in the case folder", folder)


# ------------------------------------------------------------------------------------------ checksums
def sha256_files(paths: Sequence[Path]) -> str:
    """One checksum over several files: each file's name and streamed sha256."""
    from medsci.provenance import sha256_file

    return hashlib.sha256("".join(f"{p.name}\0{sha256_file(p)}\n" for p in paths).encode()).hexdigest()


def model_fingerprint(checkpoint: Path) -> str:
    """Checksum of what inference reads from a checkpoint: its config and weights."""
    from medsci.diffusion.checkpoint import CONFIG_FILE, EMA_FILE, MODEL_FILE

    return sha256_files([p for p in (checkpoint / CONFIG_FILE, checkpoint / EMA_FILE, checkpoint / MODEL_FILE)
                         if p.is_file()])


# ------------------------------------------------------------------------------------------ one case
@dataclass
class BatchSettings:
    out_dir: Path
    layout: str = "folders"  # folders: <case>/<case>_<target>_SYNTHETIC.*; flat: <case>-<target>.nii.gz (BraSyn)
    dicom: bool = True  # a derived DICOM series for DICOM inputs (folders layout)
    qc: bool = True
    uncertainty: bool = True  # the std map as NIfTI (folders layout)
    skip_done: bool = True
    register: bool | None = None  # rigid co-registration of the contrasts; None: for DICOM input only


def _registers(settings: BatchSettings, inputs: CaseInputs) -> bool:
    # DICOM series are separate acquisitions (the patient moves between them); NIfTI cases are usually
    # exported already co-registered (BraTS), and are still checked for alignment.
    return inputs.kind == "dicom" if settings.register is None else settings.register


def _record_path(settings: BatchSettings, case_id: str) -> Path | None:
    if settings.layout == "flat":  # a challenge folder holds the syntheses and nothing else
        return None
    return safe_join(settings.out_dir, f"{case_id}/{case_id}.json")


def _done_before(settings: BatchSettings, case_id: str, key: str) -> CaseRecord | None:
    path = _record_path(settings, case_id)
    if path is None:
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        record = CaseRecord(**{k: v for k, v in data.items() if k in CaseRecord.__dataclass_fields__})
    except (OSError, ValueError, TypeError):
        return None
    if record.status not in ("done", "skipped") or record.key != key:
        return None
    # Outputs are files, and a folder for the derived DICOM series.
    if not all((settings.out_dir / name).is_file() or _full_folder(settings.out_dir / name)
               for name in record.outputs):
        return None
    record.status = "skipped"
    return record


def _full_folder(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


def synthesize_case(loaded, sampler, inputs: CaseInputs, settings: BatchSettings, model_key: str) -> CaseRecord:
    """Synthesise the one missing contrast of a case; returns its record (refusals raise MedsciError)."""
    from medsci.io.volume import read_volume
    from medsci.mri.preprocessing.stage import preprocess_case, to_native, save_native
    from medsci.tasks.synthesis.data import load_case
    from medsci.tasks.synthesis.domain import domain_warnings
    from medsci.tasks.synthesis.pipeline import synthesize

    available = [m for m in MODALITIES if m in (inputs.series if inputs.kind == "dicom" else inputs.files)]
    missing = [m for m in MODALITIES if m not in available]
    if not missing:
        raise InputError("all four contrasts are present: nothing to synthesise", inputs.folder)
    if len(missing) > 1:
        raise InputError(f"{' and '.join(missing)} are missing: one missing contrast at a time "
                         f"(found {', '.join(available) or 'none'})", inputs.folder)
    target = missing[0]
    if target not in loaded.config["targets"]:
        raise InputError(f"the model synthesises {', '.join(loaded.config['targets'])}, not {target}", inputs.folder)
    if loaded.preprocess.spacing is None:
        raise InputError("the checkpoint does not record the voxel spacing it was trained at (made before "
                         "medsci recorded it); retrain it to use it on new cases", inputs.folder)
    key = hashlib.sha256(json.dumps({"inputs": sha256_files(inputs.input_files()), "model": model_key,
                                     "sampler": sampler.to_dict(), "layout": settings.layout,
                                     "register": _registers(settings, inputs),
                                     "record": RECORD_VERSION}, sort_keys=True).encode()).hexdigest()
    if settings.skip_done and (earlier := _done_before(settings, inputs.case_id, key)) is not None:
        return earlier

    started = time.perf_counter()
    if inputs.kind == "dicom":
        from medsci.io.dicom import read_series

        volumes = {m: read_series(s) for m, s in inputs.series.items()}
        files = {m: Path(s.folder) for m, s in inputs.series.items()}
    else:
        volumes = {m: read_volume(p) for m, p in inputs.files.items()}
        files = dict(inputs.files)
    case = Case(inputs.case_id, inputs.folder, files=files)
    with tempfile.TemporaryDirectory(prefix="medsci-case-") as work:
        sidecar = preprocess_case(case, loaded.preprocess, work, volumes=volumes, align=True,
                                  register=_registers(settings, inputs))
        prepared = load_case(work, case.case_id)
    result = synthesize(loaded, prepared, target, sampler)

    cid, out = inputs.case_id, settings.out_dir
    description = f"{SYNTHETIC} {target} by medsci diffusion model - not an acquired image"
    outputs: list[str] = []
    if settings.layout == "flat":
        name = f"{cid}-{target}.nii.gz"
        save_native(result.mean, sidecar, safe_join(out, name), description=description)
        outputs.append(name)
    else:
        stem = f"{cid}/{cid}_{target}_{SYNTHETIC}"
        save_native(result.mean, sidecar, safe_join(out, f"{stem}.nii.gz"), description=description)
        outputs.append(f"{stem}.nii.gz")
        if result.std is not None and settings.uncertainty:
            save_native(result.std, sidecar, safe_join(out, f"{stem}_std.nii.gz"),
                        description=f"{SYNTHETIC} {target} uncertainty ({_STD_SOURCES.get(result.uncertainty, 'std')})"
                                    " by medsci")
            outputs.append(f"{stem}_std.nii.gz")
        if inputs.kind == "dicom" and settings.dicom:
            from medsci.io.dicom import write_derived_series

            native = to_native(result.mean, sidecar)
            write_derived_series(native.array, native.affine, inputs.series[available[0]],
                                 safe_join(out, f"{stem}_DICOM"), modality=target,
                                 series_description=f"{SYNTHETIC} {target} (medsci)", uid_seed=key)
            outputs.append(f"{stem}_DICOM")
        if settings.qc:
            qc_figure(prepared.image, result.mean, result.std, prepared.mask, available, target,
                      safe_join(out, f"{cid}/{cid}_qc.png"), cid)
            outputs.append(f"{cid}/{cid}_qc.png")
    # A case far from the training cases (intensities, contrast relations, brain size): a warning, not a refusal.
    warnings = list(sidecar.get("warnings", [])) + domain_warnings(
        loaded.config.get("training_data"), prepared.image, prepared.mask, prepared.available, prepared.sidecar)
    record = CaseRecord(cid, "done", target=target, warnings=warnings,
                        seconds=round(time.perf_counter() - started, 2), outputs=outputs,
                        inputs=[str(p) for p in inputs.input_files()], input_kind=inputs.kind, key=key,
                        network_evaluations=result.network_evaluations,
                        uncertainty=result.uncertainty if result.std is not None else None,
                        contrasts=inputs.sources(), ignored=list(inputs.notes),
                        registration=sidecar.get("alignment"))
    if result.std is not None and prepared.mask.any():
        inside = result.std[prepared.mask]
        record.uncertainty_mean = round(float(inside.mean()), 5)
        record.uncertainty_p95 = round(float(np.percentile(inside, 95)), 5)
    return record


# ------------------------------------------------------------------------------------------ batch
def run_batch(loaded, sampler, checkpoint: Path, input_dir: Path, settings: BatchSettings, *,
              patterns: dict[str, str] | None = None, dicom_mapping: dict | None = None,
              cases: Sequence[str] | None = None, progress: bool = True,
              on_record: Callable[[CaseRecord], None] | None = None) -> list[CaseRecord]:
    """Every case of ``input_dir`` (or only ``cases``); records written as each case ends."""
    from tqdm import tqdm

    check_locations(input_dir, settings.out_dir)
    model_key = model_fingerprint(Path(checkpoint))
    found = find_case_folders(Path(input_dir))
    if cases is not None:
        unknown = sorted(set(cases) - {cid for cid, _, _ in found})
        if unknown:
            raise InputError(f"no case folder for {', '.join(unknown)}", input_dir)
        found = [f for f in found if f[0] in set(cases)]
    records = []
    bar = tqdm(found, desc="cases", unit="case", disable=not progress, file=sys.stderr)
    for case_id, folder, refusal in bar:
        bar.set_postfix_str(case_id)
        inputs = None  # before anything can refuse: a refused case must not report the previous case's inputs
        try:
            if refusal:
                raise InputError(refusal, folder)
            refuse_links_outside([folder], input_dir)
            inputs = scan_case(case_id, folder, patterns, dicom_mapping)
            refuse_links_outside(inputs.input_files(), input_dir)
            record = synthesize_case(loaded, sampler, inputs, settings, model_key)
        except MedsciError as err:
            record = CaseRecord(case_id, "refused", reason=str(err))
            if inputs is not None:
                record.contrasts, record.ignored = inputs.sources(), list(inputs.notes)
        if record.status != "skipped" and (path := _record_path(settings, case_id)) is not None:
            try:
                write_json_atomic(path, asdict(record))
            except MedsciError as err:  # e.g. a case folder we may not write to: the other cases go on
                if record.status != "refused":  # a refusal keeps its first reason
                    record = CaseRecord(case_id, "refused", reason=str(err))
        records.append(record)
        if on_record is not None:
            on_record(record)
    return records


def load_records(out_dir: Path) -> list[CaseRecord]:
    """Records of every case an output folder holds (the workflow's per-case jobs each write one)."""
    records = []
    for path in sorted(Path(out_dir).glob("*/*.json")):
        if path.stem != path.parent.name:
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            records.append(CaseRecord(**{k: v for k, v in data.items() if k in CaseRecord.__dataclass_fields__}))
        except (OSError, ValueError, TypeError) as err:
            raise InputError(f"unreadable case record ({err})", path) from None
    return records


# ------------------------------------------------------------------------------------------ reports
# The std map's origin in words, for the NIfTI description and the report.
_STD_SOURCES = {"variance": "std from the network's variance head", "samples": "std over samples"}


def _sources_sentence(records: Sequence[CaseRecord]) -> str:
    """Where the report's std maps came from (a batch may mix records of earlier runs)."""
    found = sorted({r.uncertainty for r in records if r.uncertainty_mean is not None and r.uncertainty})
    if not found:
        return "no case has an uncertainty map." if not any(r.uncertainty_mean is not None for r in records) \
            else "std maps of an earlier medsci that did not record their source (spread over samples)."
    return "; ".join(_STD_SOURCES.get(m, m) for m in found) + " (brain mean / 95th percentile, [0, 1] scale)."


SUMMARY_COLUMNS = ("case_id", "status", "target", "seconds", "uncertainty_mean", "uncertainty_p95",
                   "network_evaluations", "warnings", "reason", "outputs", "uncertainty", "contrasts", "ignored",
                   "registration")


def _contrasts_text(r: CaseRecord) -> str:
    return "; ".join(f"{m} = {src}" for m, src in r.contrasts.items())


def _registration_text(r: CaseRecord) -> str:
    """What co-registration did, per contrast: "t2w: moved 3.1 deg / 2.4 mm, NMI 1.14 -> 1.25"."""
    if not r.registration:
        return ""
    parts = []
    for m, e in r.registration.get("contrasts", {}).items():
        moved = (f"moved {e['rotation_deg']:.1f} deg / {float(np.linalg.norm(e['shift_mm'])):.1f} mm"
                 if e.get("applied") else "kept in scanner coordinates")
        parts.append(f"{m}: {moved}, NMI {e['nmi_before']:.3f} -> {e['nmi_after']:.3f}")
    how = "rigidly registered" if r.registration.get("registered") else "not registered"
    return f"onto {r.registration.get('reference')} ({how}): " + "; ".join(parts)


def write_summary(out_dir: Path, records: Sequence[CaseRecord], title: str = "medsci synthesis batch") -> None:
    """``summary.csv`` and a self-contained ``report.html`` (QC figures embedded) for the whole batch."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in records:
        row = {k: getattr(r, k) for k in SUMMARY_COLUMNS}
        row["warnings"] = " | ".join(r.warnings)
        row["outputs"] = " ".join(r.outputs)
        row["contrasts"], row["ignored"] = _contrasts_text(r), " | ".join(r.ignored)
        row["registration"] = _registration_text(r)
        writer.writerow(row)
    write_text_atomic(Path(out_dir) / "summary.csv", buf.getvalue())
    write_text_atomic(Path(out_dir) / "report.html", _html(out_dir, records, title))


def _html(out_dir: Path, records: Sequence[CaseRecord], title: str) -> str:
    import base64

    counts = {s: sum(r.status == s for r in records) for s in ("done", "skipped", "refused")}
    rows = []
    for r in records:
        qc = next((o for o in r.outputs if o.endswith("_qc.png")), None)
        img = ""
        if qc and (Path(out_dir) / qc).is_file():
            data = base64.b64encode((Path(out_dir) / qc).read_bytes()).decode()
            img = f'<img src="data:image/png;base64,{data}" width="420" alt="QC {html.escape(r.case_id)}">'
        notes = r.reason if r.status == "refused" else "<br>".join(map(html.escape, r.warnings)) or "-"
        if r.status == "refused":
            notes = html.escape(notes)
        unc = "-" if r.uncertainty_mean is None else f"{r.uncertainty_mean:.4f} / {r.uncertainty_p95:.4f}"
        if r.uncertainty_mean is not None and r.uncertainty:
            unc += f"<br><small>{html.escape(_STD_SOURCES.get(r.uncertainty, r.uncertainty))}</small>"
        rows.append(f"<tr class='{r.status}'><td>{html.escape(r.case_id)}</td><td>{r.status}</td>"
                    f"<td>{r.target or '-'}</td><td>{'-' if r.seconds is None else f'{r.seconds:.1f}'}</td>"
                    f"<td>{unc}</td><td>{notes}</td><td>{_inputs_html(r)}</td><td>{img}</td></tr>")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;vertical-align:top}} tr.refused{{background:#fde8e8}}
.warn{{background:#fff4ce;padding:8px;border:1px solid #e0c060}}</style></head><body>
<h1>{html.escape(title)}</h1>
<p class="warn"><b>{SYNTHETIC} images.</b> Every contrast below was generated by a diffusion model from the other
contrasts of the case. It is not an acquired image and must not be used for diagnosis.</p>
<p>Uncertainty: {_sources_sentence(records)}</p>
<p>{len(records)} cases: {counts['done']} synthesised, {counts['skipped']} already done (same inputs, model and
sampler), {counts['refused']} refused.</p>
<table><tr><th>case</th><th>status</th><th>contrast made</th><th>seconds</th>
<th>uncertainty in brain (mean / p95 std)</th><th>warnings or reason</th><th>inputs and registration</th>
<th>QC (inputs, synthesis, std)</th></tr>
{chr(10).join(rows)}
</table></body></html>
"""


def _inputs_html(r: CaseRecord) -> str:
    lines = [html.escape(_contrasts_text(r))] + [f"<i>{html.escape(x)}</i>" for x in r.ignored]
    lines.append(html.escape(_registration_text(r)))
    return "<br>".join(x for x in lines if x) or "-"


def qc_figure(image: np.ndarray, mean: np.ndarray, std: np.ndarray | None, mask: np.ndarray,
              available: Sequence[str], target: str, path: Path, case_id: str) -> None:
    """Mid-brain axial, coronal and sagittal slices of the inputs, the synthesis and its uncertainty."""
    from medsci.evaluation.figures import Panel, save_image_grid

    idx = np.argwhere(mask)
    centre = idx.mean(axis=0).round().astype(int) if len(idx) else np.array(mask.shape) // 2
    panels = [(m, image[MODALITIES.index(m)], "gray") for m in available]
    panels.append((f"{target} {SYNTHETIC}", mean, "gray"))
    if std is not None:
        panels.append((f"{target} std", std, "magma"))
    cuts = [lambda v: v[:, :, centre[2]], lambda v: v[:, centre[1], :], lambda v: v[centre[0], :, :]]
    rows: list[list[Panel]] = [[] for _ in cuts]
    for label, vol, cmap in panels:
        vmax = float(np.percentile(vol[mask], 99.5)) if mask.any() else float(vol.max())
        for row, cut in zip(rows, cuts):
            row.append(Panel(np.rot90(cut(vol)), cmap=cmap, vmin=0, vmax=vmax or 1.0))
        rows[0][-1].title = label  # the column's label, above its axial slice
        rows[0][-1].title_color = "red" if SYNTHETIC in label else "black"
    save_image_grid(path, rows, figsize=(1.9 * len(panels), 5.6), png_dpi=80, tight_layout=True,
                    suptitle=f"{case_id}: {target} is {SYNTHETIC} (not acquired)")
