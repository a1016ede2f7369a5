"""Which MRI contrast (:data:`~medsci.mri.cases.MODALITIES`) each DICOM series of a dropped folder holds: the
default mapping of series descriptions to contrasts, a user's mapping file, and the choice of one series each."""

from __future__ import annotations

import os
import re
from pathlib import Path

from medsci.errors import InputError, MedsciError
from medsci.io.dicom import DicomSeries
from medsci.io.paths import regular_file
from medsci.io.voxels import one_line
from medsci.mri.cases import MODALITIES

# --- default modality mapping -------------------------------------------------------------------
# Matched (case-insensitively, re.search) on "SeriesDescription | ProtocolName | SequenceName", empty
# fields left out, so a user's "^flair$" works on a series with a description only. Word edges are
# spelled out as (?<![a-z]) / (?![a-z]) because '_' counts as a word character for \b and vendors
# separate words with '_' ("t1_mprage_sag_p2_iso").
_AUX = (r"(?!.*(?:localizer|scout|survey|(?<![a-z])(?:loc|dwi|adc|trace|diff\w*|dti|swi|perf\w*|dce"
        r"|dsc|dyn\w*|asl|sub|subtraction|maps?)(?![a-z])))")  # never a structural contrast
_T1 = r"(?:(?<![a-z0-9])t1(?![0-9])|mp-?rage|spgr|bravo)"
_T2 = r"(?<![a-z0-9])t2(?:w|wi)?(?![a-z0-9*])(?![-_ ]?star)"
_FLAIR = r"(?:flair|dark[-_ ]?fluid)"
_PRE = r"(?<![a-z])(?:pre|non|nativ|native|plain|without|w/o)(?:[-_ ]?(?:contrast|gd|gad|c))?(?![a-z])"
_POST = (r"(?:(?<![a-z])(?:post(?![-_ ]?op)|gd(?![a-z])|gad|contrast|ce(?![a-z]))"
         r"|\+\s*c(?![a-z])|(?<![a-z])c\s*\+)")
DEFAULT_MAPPING: dict[str, list[str]] = {
    "t2f": [rf"^{_AUX}(?!.*(?<![a-z0-9])t1(?![0-9])).*{_FLAIR}"],  # "T1 FLAIR" is T1-weighted
    "t1c": [rf"^{_AUX}(?!.*{_PRE})(?=.*{_T1}).*{_POST}"],
    "t2w": [rf"^{_AUX}(?!.*{_FLAIR})(?!.*(?<![a-z])gre(?![a-z])).*{_T2}"],  # T2 GRE is T2*-weighted
    "t1n": [rf"^{_AUX}.*{_T1}"],
}
# Evaluation order: the specific pattern before the general one that would also match it.
_PRECEDENCE = ("t2f", "t1c", "t2w", "t1n")
_NO_AGENT = {"", "none", "no", "n/a", "na", "-"}

# --- bounds on a user's patterns (--dicom-mapping): a regex is matched on every series, and Python's `re`
# cannot be interrupted, so the work it may do is bounded before it runs. Exponential backtracking needs a
# repeated group that itself repeats or branches ("(a+)+", "(a|aa)*"): refused. Sequential repeats cost a
# power of the text length: at most MAX_PATTERN_REPEATS repeats of more than one per pattern, on a text of
# tag values cut to MAX_TAG_CHARS each (the DICOM limit of SeriesDescription / ProtocolName, VR LO): about
# 0.3 s per series in the worst case.
MAX_PATTERN_CHARS = 200
MAX_PATTERN_REPEATS = 3
MAX_TAG_CHARS = 64


def _pattern_cost(parsed) -> tuple[int, bool]:
    """(repeats of more than one, whether any of them or any branch lies inside a repeated group) of a parsed regex."""
    from re import _constants as c

    repeats, nested = 0, False
    for op, av in parsed:
        if op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT):
            inner, inner_nested = _pattern_cost(av[2])
            branches = any(o == c.BRANCH for o, _ in av[2]) or any(
                o == c.SUBPATTERN and any(oo == c.BRANCH for oo, _ in a[3]) for o, a in av[2])
            repeats += inner + (av[1] > 1)
            nested |= inner_nested or (av[1] > 1 and (inner > 0 or branches))
            continue
        subs = {c.SUBPATTERN: lambda a: [a[3]], c.BRANCH: lambda a: a[1], c.ASSERT: lambda a: [a[1]],
                c.ASSERT_NOT: lambda a: [a[1]], c.ATOMIC_GROUP: lambda a: [a],
                c.GROUPREF_EXISTS: lambda a: [x for x in a[1:] if x is not None]}.get(op)
        for sub in subs(av) if subs else ():
            n, inner_nested = _pattern_cost(sub)
            repeats, nested = repeats + n, nested or inner_nested
    return repeats, nested


def _check_user_pattern(mod: str, pattern: str, where: Path) -> None:
    from re import _parser

    if len(pattern) > MAX_PATTERN_CHARS:
        raise InputError(f"regular expression for {mod} is {len(pattern)} characters long; at most "
                         f"{MAX_PATTERN_CHARS}", where)
    repeats, nested = _pattern_cost(_parser.parse(pattern, re.IGNORECASE))
    if nested:
        raise InputError(f"regular expression {pattern!r} for {mod} repeats a group that itself repeats or "
                         "branches (catastrophic backtracking); write it without nested quantifiers", where)
    if repeats > MAX_PATTERN_REPEATS:
        raise InputError(f"regular expression {pattern!r} for {mod} has {repeats} repeats (*, +, {{m,n}}); "
                         f"at most {MAX_PATTERN_REPEATS}", where)


def _compile(mapping: dict[str, list[str]], where: Path | None) -> dict[str, list[re.Pattern]]:
    out = {}
    for mod, pats in mapping.items():
        if mod not in MODALITIES:
            raise InputError(f"unknown modality {mod!r} in the mapping; expected "
                             f"{', '.join(MODALITIES)}", where)
        try:
            out[mod] = [re.compile(p, re.IGNORECASE) for p in pats]
        except re.error as err:
            raise InputError(f"bad regular expression for {mod} in the mapping ({err})", where) from None
    return out


def load_mapping(path: Path) -> dict[str, list[str]]:
    """A modality mapping ``{t1n: [regex, ...], ...}`` from a UTF-8 YAML file."""
    import yaml

    from medsci.config import YAML_VALUE_ERRORS, check_yaml_structure

    path = regular_file(path)
    try:
        text = path.read_text(encoding="utf-8")
        check_yaml_structure(text, path)  # nesting and alias limits first
        data = yaml.safe_load(text)
    except OSError as err:
        raise InputError(f"cannot read modality mapping ({err.strerror or err})", path) from None
    except MedsciError:  # the nesting and alias limits
        raise
    except (UnicodeDecodeError, yaml.YAMLError, *YAML_VALUE_ERRORS) as err:  # e.g. !!float 'x'
        raise InputError(f"modality mapping is not valid UTF-8 YAML ({one_line(err)})", path) from None
    if not isinstance(data, dict) or not data:
        raise InputError("modality mapping must be a YAML mapping {modality: [regex, ...]}", path)
    out = {}
    for mod, pats in data.items():
        pats = [pats] if isinstance(pats, str) else pats
        if not isinstance(pats, list) or not pats or not all(isinstance(p, str) for p in pats):
            raise InputError(f"mapping entry {mod!r} must be a regex or a list of regexes", path)
        out[str(mod)] = list(pats)
    _compile(out, path)  # syntax errors first, then the cost of each valid pattern
    for mod, pats in out.items():
        for pattern in pats:
            _check_user_pattern(mod, pattern, path)
    return out


def classify_series(series: list[DicomSeries], mapping: dict[str, list[str]] | None = None
                    ) -> tuple[dict[str, DicomSeries], list[str]]:
    """Map series to modalities; returns (modality -> series, notes on the series left out)."""
    folders = [str(s.folder) for s in series if s.folder is not None]
    try:
        where = Path(os.path.commonpath(folders)) if folders else None
    except ValueError:  # relative and absolute paths mixed
        where = None
    rules = _compile(DEFAULT_MAPPING if mapping is None else mapping, where)
    order = [m for m in _PRECEDENCE if m in rules]
    hits: dict[str, list[DicomSeries]] = {}
    notes: list[str] = []
    for s in series:
        label = repr(s.description or s.tags.get("ProtocolName") or s.series_uid)
        if "SYNTHETIC" in s.tags.get("ImageType", "").upper().split("\\"):
            notes.append(f"ignored series {label}: synthetic, not an acquisition")  # e.g. our own output
            continue
        if s.tags.get("Modality", "") not in ("", "MR"):
            notes.append(f"ignored series {label}: modality {s.tags['Modality']}, not MR")
            continue
        text = " | ".join(filter(None, (s.tags.get(k, "")[:MAX_TAG_CHARS]  # bounds the regex work
                                        for k in ("SeriesDescription", "ProtocolName", "SequenceName"))))
        mod = next((m for m in order if any(r.search(text) for r in rules[m])), None)
        if mod == "t1n" and s.tags.get("ContrastBolusAgent", "").strip().lower() not in _NO_AGENT:
            mod = "t1c"  # a contrast agent was recorded: post-contrast whatever the description says
        if mod is None:
            notes.append(f"ignored series {label}: matches no modality")
        else:
            hits.setdefault(mod, []).append(s)
    chosen: dict[str, DicomSeries] = {}
    for mod in MODALITIES:
        cands = hits.get(mod, [])
        if len(cands) > 1:
            # Scanner reformats (ImageType DERIVED, e.g. "T1 POST MPR COR") beside their original are
            # common in PACS exports; prefer the single ORIGINAL one, otherwise the user must choose.
            orig = [s for s in cands if not s.tags.get("ImageType", "").upper().startswith("DERIVED")]
            if len(orig) != 1:
                names = ", ".join(repr(s.description or s.series_uid) for s in cands)
                raise InputError(f"a DICOM folder mixing series: {mod} matched by {names}; remove all but "
                                 "one of them or adjust the modality mapping", where)
            notes += [f"ignored series {s.description!r}: derived duplicate of {mod}" for s in cands
                      if s is not orig[0]]
            cands = orig
        if cands:
            chosen[mod] = cands[0]
    return chosen, notes
