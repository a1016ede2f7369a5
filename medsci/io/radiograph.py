"""Reading and writing 2D radiographs (PNG, single-frame DICOM, NIfTI) for ``medsci rotate``.

Every radiograph is held the same way whatever its format: a float32 (H, W) array in [0, 1] with the
MONOCHROME2 convention (higher = brighter = more attenuation), row 0 at the top. What writing back needs
(the DICOM dataset, the NIfTI header and affine, the original value range) is kept in ``meta`` so a
synthetic result is written in the input's own format, marked as synthetic.

Conventions per format:

* PNG: 8- or 16-bit greyscale or RGB (RGB is turned grey with the ITU-R 601 luma weights); values are
  divided by the bit depth's maximum (255 or 65535). Images with an alpha channel are refused. Written
  back with the same bit depth, greyscale (RGB with equal channels if the input was RGB), the note in a
  ``Description`` text chunk.
* DICOM: one frame of 2D pixel data (CR, DX, RG or any modality). The Modality LUT (or Rescale
  Slope/Intercept) is applied, MONOCHROME1 is inverted, and the result is min-max normalised; the
  stored range is recorded so writing maps [0, 1] back onto it. Written as a new derived instance in a
  new series of the same study, uncompressed, with the input's Bits Allocated/Stored and polarity
  (MONOCHROME1 stays MONOCHROME1 with its window and VOI LUT; colour becomes MONOCHROME2).
* NIfTI: a 2D image, or 3D with exactly one singleton axis; min-max normalised. The array index (i, j)
  is (column, row) as in ITK and :mod:`medsci.io.volume`, so ``pixels = data.T``. Written back as
  float32 in the original value range with the same affine and the singleton axis restored.

Plausibility (issue 27; cheap checks on what was read, documented in docs/bad-input.md):

* DICOM Modality: CR, DX, DR, RG (or none) are radiographs; a tomographic modality (CT, MR, PT, NM, US, ...)
  is refused; any other (OT, SC, XA, MG, ...) is read with a warning kept in ``Radiograph.warnings``, which
  ``medsci rotate`` records in the output's note and JSON.
* Grey levels: fewer than ``MIN_GREY_LEVELS`` (16) distinct values is a binary or label image (a 1-bit PNG, a
  mask), refused.
* Hounsfield units: DICOM values with RescaleType HU, or DICOM (other than CR/DX/DR/RG) and NIfTI values of
  which at least ``HU_AIR_FRACTION`` (5 %) lie at or below ``HU_AIR`` (-900, air in HU) while some reach 0 (water)
  are an axial CT slice, refused. An X-ray's values are non-negative intensities or counts.

Reading normalises by the image's own minimum and maximum (DICOM, NIfTI), so a written image that does
not span [0, 1] reads back stretched; the file's values themselves are exactly what was written.
"""

from __future__ import annotations

import copy
import hashlib
import os
import struct
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medsci.errors import InputError
from medsci.io.atomic import atomic_path, refuse_non_finite, write_bytes_atomic
from medsci.io.dicom import _ds, _has_magic, _sop_ref, _str
from medsci.io.paths import regular_file, resolved
from medsci.io.voxels import check_declared_size, one_line

__all__ = ["Radiograph", "read_radiograph", "write_radiograph", "write_png", "RADIOGRAPH_SUFFIXES"]

# Recognised names. A file whose suffix is none of these (or missing, or numeric as in UID-named
# files "1.2.840.1234") is read as DICOM when it has the DICM marker at byte 128.
RADIOGRAPH_SUFFIXES = (".png", ".dcm", ".dicom", ".nii", ".nii.gz")
_DICOM_SUFFIXES = (".dcm", ".dicom")
_NIFTI_SUFFIXES = (".nii.gz", ".nii")  # longest first
MIN_SIDE, MAX_SIDE = 16, 8192
MIN_GREY_LEVELS = 16  # fewer distinct values: a binary or label image, not a radiograph
HU_AIR, HU_AIR_FRACTION = -900.0, 0.05  # a CT slice: this share of pixels at or below air in HU
RADIOGRAPH_MODALITIES = ("CR", "DX", "DR", "RG")
# Cross-sectional / non-X-ray-projection modalities: never a radiograph.
TOMOGRAPHIC_MODALITIES = ("CT", "MR", "PT", "NM", "US", "OCT", "OPT", "SEG", "RTDOSE", "RTIMAGE", "RTSTRUCT")
_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601
_PNG_SIG = b"\x89PNG\r\n\x1a\n"
# DICOM attributes that describe the input's pixels (or its encoding) and would be wrong for the output.
_DROP = ("SmallestImagePixelValue", "LargestImagePixelValue", "SmallestPixelValueInSeries",
         "LargestPixelValueInSeries", "PixelPaddingValue", "PixelPaddingRangeLimit", "PlanarConfiguration",
         "NumberOfFrames", "FrameIncrementPointer", "IconImageSequence", "ICCProfile", "ColorSpace",
         "RedPaletteColorLookupTableDescriptor", "GreenPaletteColorLookupTableDescriptor",
         "BluePaletteColorLookupTableDescriptor", "RedPaletteColorLookupTableData",
         "GreenPaletteColorLookupTableData", "BluePaletteColorLookupTableData",
         "SegmentedRedPaletteColorLookupTableData", "SegmentedGreenPaletteColorLookupTableData",
         "SegmentedBluePaletteColorLookupTableData", "PaletteColorLookupTableUID", "ModalityLUTSequence",
         "PixelDataProviderURL", "ExtendedOffsetTable", "ExtendedOffsetTableLengths",
         "DigitalSignaturesSequence", "MACParametersSequence", "EncryptedAttributesSequence",
         "FloatPixelData", "DoubleFloatPixelData", "PixelData")


@dataclass
class Radiograph:
    """A 2D radiograph: pixels in [0, 1] (MONOCHROME2) and what writing it back in its format needs."""

    pixels: np.ndarray  # float32 (H, W) in [0, 1]; higher = brighter = more attenuation
    format: str  # "png" | "dicom" | "nifti"
    bit_depth: int  # 8 or 16 for PNG; BitsStored for DICOM; bits of the stored data type for NIfTI
    rgb: bool  # the input was colour (converted with the ITU-R 601 luma weights)
    spacing: tuple[float, float] | None  # mm per pixel (row, col) where the file says
    source: Path
    meta: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # implausible but read (an unusual DICOM modality)


# --- helpers ---------------------------------------------------------------------------------------

def _format_of(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(_NIFTI_SUFFIXES):
        return "nifti"
    suffix = path.suffix.lower()
    if suffix == ".png":
        return "png"
    if suffix in _DICOM_SUFFIXES:
        return "dicom"
    if _has_magic(path):
        return "dicom"
    return None


def _check_size(h: int, w: int, path: Path) -> None:
    if h < 1 or w < 1:
        raise InputError(f"image is empty ({h}x{w} pixels)", path)
    if min(h, w) < MIN_SIDE:
        raise InputError(f"image is too small ({h}x{w} pixels; at least {MIN_SIDE} per side)", path)
    if max(h, w) > MAX_SIDE:
        raise InputError(f"image is too large ({h}x{w} pixels; at most {MAX_SIDE} per side)", path)


def _normalise(values: np.ndarray, path: Path) -> tuple[np.ndarray, float, float]:
    """(values - min) / (max - min) as float32, refusing NaN/Inf and constant images."""
    if not np.isfinite(values).all():
        n_bad = int(values.size - np.count_nonzero(np.isfinite(values)))
        raise InputError(f"image contains {n_bad} NaN/Inf pixels", path)
    lo, hi = float(values.min()), float(values.max())
    if not hi > lo:
        raise InputError("image is constant: nothing to rotate", path)
    out = (values.astype(np.float64) - lo) / (hi - lo)
    return np.clip(out, 0.0, 1.0).astype(np.float32), lo, hi


def _check_grey_levels(pixels: np.ndarray, path: Path) -> None:
    """Refuse a binary or label image: fewer than MIN_GREY_LEVELS distinct values."""
    step = max(1, int(np.sqrt(pixels.size / 1e6)))  # a subsample first: np.unique of 8192^2 pixels is slow
    if len(np.unique(pixels[::step, ::step])) >= MIN_GREY_LEVELS:
        return
    levels = len(np.unique(pixels))
    if levels < MIN_GREY_LEVELS:
        raise InputError(f"only {levels} distinct grey levels (a binary or label image?); a radiograph has at "
                         f"least {MIN_GREY_LEVELS}", path)


def _check_not_hu(values: np.ndarray, path: Path, rescale_type: str = "") -> None:
    """Refuse an axial CT slice: values in Hounsfield units (air around the body at about -1000 HU)."""
    air = float(np.mean(values <= HU_AIR))
    if rescale_type.upper() == "HU" or (air >= HU_AIR_FRACTION and values.max() >= 0):
        raise InputError(f"values look like CT Hounsfield units ({values.min():.0f} to {values.max():.0f}, "
                         f"{air:.0%} of pixels at or below {HU_AIR:.0f}: air around a body): an axial CT slice, "
                         "not a radiograph; render radiographs of a CT with medsci drr", path)


def _luma(rgb: np.ndarray) -> np.ndarray:
    """Grey from (H, W, 3) as float64 in the input's units; exact when the channels are equal."""
    if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 0] == rgb[..., 2]).all():
        return rgb[..., 0].astype(np.float64)
    r, g, b = (rgb[..., k].astype(np.float64) for k in range(3))
    return _LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b


# --- reading ---------------------------------------------------------------------------------------

def read_radiograph(path: str | Path) -> Radiograph:
    """Read a 2D radiograph from a PNG, DICOM or NIfTI file.

    Raises InputError naming the file and the reason for anything that is not a readable, finite,
    non-constant 2D image of 16 to 8192 pixels per side.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("file not found", path)
    if path.is_dir():
        raise InputError("is a folder; expected a radiograph file", path)
    regular_file(path)  # a FIFO or device would block or never end
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except OSError as err:
        raise InputError(f"cannot read file ({err.strerror or err})", path) from None
    if path.stat().st_size == 0:
        raise InputError("file is empty", path)
    fmt = _format_of(path)
    reader = {"png": _read_png, "dicom": _read_dicom, "nifti": _read_nifti}.get(fmt)
    if reader is not None:
        radiograph = reader(path)
        _check_grey_levels(radiograph.pixels, path)
        return radiograph
    suffix = "".join(path.suffixes[-2:]) if path.name.lower().endswith(".gz") else path.suffix
    raise InputError(f"unsupported radiograph format {suffix or '(no extension)'!r}; expected .png, .dcm, "
                     ".dicom, .nii or .nii.gz (or a DICOM file with the DICM marker)", path)


def _png_chunks(path: Path) -> tuple[dict, set[bytes]]:
    """IHDR fields and the chunk types of a PNG, walking the chunk headers only (no decoding).

    Detects a wrong signature, a malformed header and truncation (a chunk running past the end of
    the file or no IEND) without relying on the decoder.
    """
    size = path.stat().st_size
    types: set[bytes] = set()
    with open(path, "rb") as fh:
        if fh.read(8) != _PNG_SIG:
            raise InputError("not a PNG file (bad signature)", path)
        head = fh.read(25)
        if len(head) < 25 or head[:8] != b"\x00\x00\x00\x0dIHDR":
            raise InputError("PNG file is truncated or has no IHDR header", path)
        w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", head[8:21])
        if zlib.crc32(head[4:21]) != struct.unpack(">I", head[21:25])[0]:
            raise InputError("PNG header is corrupt (CRC mismatch)", path)
        pos = 33
        while True:
            hdr = fh.read(8)
            if len(hdr) < 8:
                raise InputError("PNG file is truncated (no IEND chunk)", path)
            length, ctype_ = struct.unpack(">I4s", hdr)
            types.add(ctype_)
            pos += 12 + length
            if pos > size:
                raise InputError(f"PNG file is truncated (chunk {ctype_!r} runs past the end)", path)
            if ctype_ == b"IEND":
                break
            fh.seek(pos)
    return {"width": w, "height": h, "depth": depth, "colour_type": ctype, "interlace": interlace}, types


def _read_png(path: Path) -> Radiograph:
    ihdr, types = _png_chunks(path)
    h, w, depth, ctype = ihdr["height"], ihdr["width"], ihdr["depth"], ihdr["colour_type"]
    if ctype in (4, 6):
        raise InputError("has an alpha channel; save it without transparency (greyscale or RGB)", path)
    if b"tRNS" in types:
        raise InputError("has an alpha channel (a tRNS transparency chunk); save it without transparency",
                         path)
    if b"acTL" in types:
        raise InputError("is an animated PNG: not a single 2D image", path)
    if ctype not in (0, 2, 3) or b"IDAT" not in types:
        raise InputError(f"malformed PNG (colour type {ctype}, bit depth {depth})", path)
    _check_size(h, w, path)
    if ctype == 2 and depth == 16:
        arr = _read_png_rgb16(path)  # Pillow would reduce 16-bit RGB to 8 bits
    else:
        from PIL import Image

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with Image.open(path) as im:
                    im.load()
                    if im.mode == "P":  # palette: its colours
                        im = im.convert("RGB")
                    elif im.mode == "1":
                        im = im.convert("L")
                    arr = np.asarray(im)
        except Exception as err:  # noqa: BLE001 - Pillow raises OSError, SyntaxError, ValueError, zlib.error
            raise InputError(f"cannot read PNG file ({one_line(err)})", path) from None
    bit_depth = 16 if depth == 16 else 8
    maxval = float(2 ** bit_depth - 1)
    rgb = arr.ndim == 3
    if rgb and arr.shape[2] != 3 or arr.shape[:2] != (h, w):
        raise InputError(f"unexpected PNG pixel layout {arr.shape}", path)
    grey = _luma(arr) if rgb else arr.astype(np.float64)
    pixels = np.clip(grey / maxval, 0.0, 1.0).astype(np.float32)
    if not pixels.max() > pixels.min():
        raise InputError("image is constant: nothing to rotate", path)
    meta = {"colour_type": ctype, "png_bit_depth": depth, "max_value": int(maxval)}
    return Radiograph(pixels, "png", bit_depth, rgb, None, path, meta)


def _read_png_rgb16(path: Path) -> np.ndarray:
    import SimpleITK as sitk

    warn = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        reader = sitk.ImageFileReader()
        reader.SetImageIO("PNGImageIO")
        reader.SetFileName(str(path))
        arr = sitk.GetArrayFromImage(reader.Execute())
    except RuntimeError as err:
        raise InputError(f"cannot read PNG file ({one_line(err)})", path) from None
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(warn)
    return arr


def _read_dicom(path: Path) -> Radiograph:
    import pydicom
    from pydicom.errors import InvalidDicomError

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about every oddity; we report one line
        try:
            ds = pydicom.dcmread(path, force=False)
        except InvalidDicomError:
            raise InputError("not a DICOM file (no DICM marker at byte 128)", path) from None
        except Exception as err:  # noqa: BLE001 - pydicom raises many types on garbage
            raise InputError(f"cannot read DICOM file ({one_line(err)})", path) from None
        try:
            return _dicom_image(ds, path)
        except InputError:
            raise
        except Exception as err:  # noqa: BLE001 - malformed values surface lazily, as many types
            raise InputError(f"cannot read DICOM image ({one_line(err)})", path) from None


def _dicom_image(ds, path: Path) -> Radiograph:
    if "PixelData" not in ds:
        if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
            raise InputError("DICOM float pixel data is not supported", path)
        raise InputError("DICOM has no pixel data", path)
    frames = int(ds.get("NumberOfFrames") or 1)
    if frames != 1:
        raise InputError(f"is not a single 2D image ({frames} frames)", path)
    rows, cols = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    _check_size(rows, cols, path)
    spp = int(ds.get("SamplesPerPixel") or 1)
    photometric = _str(ds, "PhotometricInterpretation").upper() or "MONOCHROME2"
    bits_alloc = int(ds.get("BitsAllocated") or 0)
    bits_stored = int(ds.get("BitsStored") or bits_alloc)
    modality = _str(ds, "Modality").upper()
    if modality in TOMOGRAPHIC_MODALITIES:
        raise InputError(f"DICOM modality {modality!r} is not a radiograph (expected one of "
                         f"{', '.join(RADIOGRAPH_MODALITIES)}): a slice is not a projection; render radiographs of "
                         "a CT with medsci drr", path)
    warned = [] if modality in ("", *RADIOGRAPH_MODALITIES) else [
        f"DICOM modality {modality!r} is not a plain radiograph ({', '.join(RADIOGRAPH_MODALITIES)}): "
        "rotated as one, unverified"]
    if bits_alloc not in (8, 16, 32) or not 1 <= bits_stored <= bits_alloc:
        raise InputError(f"unsupported DICOM pixel format (BitsAllocated {bits_alloc}, BitsStored "
                         f"{bits_stored})", path)
    colour = spp == 3 or photometric == "PALETTE COLOR"
    if not colour and (spp != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2")):
        raise InputError(f"unsupported DICOM photometric interpretation {photometric!r} with "
                         f"{spp} sample(s) per pixel", path)
    try:
        stored = ds.pixel_array  # YBR is converted to RGB
        if photometric == "PALETTE COLOR":
            from pydicom.pixels import apply_color_lut

            stored = apply_color_lut(stored, ds)
    except Exception as err:  # noqa: BLE001 - missing decoder plugins, short pixel data, ...
        raise InputError(f"cannot decode DICOM pixel data ({one_line(err)})", path) from None
    if stored.shape[:2] != (rows, cols) or stored.ndim != (3 if colour else 2):
        raise InputError(f"is not a single 2D image (pixel data shape {stored.shape})", path)

    mono1 = photometric == "MONOCHROME1"
    slope, inter, linear = 1.0, 0.0, True
    if colour:
        values = _luma(stored)
    elif "ModalityLUTSequence" in ds:
        from pydicom.pixels import apply_modality_lut

        values = np.asarray(apply_modality_lut(stored, ds), dtype=np.float64)
        linear = False
    else:
        if ds.get("RescaleSlope") is not None:
            slope = float(ds.RescaleSlope)
        if ds.get("RescaleIntercept") is not None:
            inter = float(ds.RescaleIntercept)
        if slope == 0.0 or not np.isfinite([slope, inter]).all():
            raise InputError(f"invalid RescaleSlope/Intercept ({slope}, {inter})", path)
        values = stored.astype(np.float64) * slope + inter
    if not colour and modality not in RADIOGRAPH_MODALITIES:
        _check_not_hu(values, path, _str(ds, "RescaleType"))
    pixels, lo, hi = _normalise(values, path)
    if mono1:
        pixels = (1.0 - pixels).astype(np.float32)

    spacing, spacing_tag = None, None
    for kw in ("ImagerPixelSpacing", "PixelSpacing"):
        val = ds.get(kw)
        try:
            sp = tuple(float(v) for v in val) if val is not None else ()
        except (TypeError, ValueError):
            sp = ()
        if len(sp) == 2 and all(np.isfinite(sp)) and min(sp) > 0:
            spacing, spacing_tag = sp, kw
            break

    s_int = stored if not colour else None
    meta = {
        "dataset": ds, "photometric": photometric, "monochrome1": mono1, "colour": colour,
        "linear": linear and not colour, "slope": slope, "intercept": inter,
        "value_min": lo, "value_max": hi,  # after the Modality LUT / rescale
        "stored_min": None if s_int is None else int(s_int.min()),
        "stored_max": None if s_int is None else int(s_int.max()),
        "bits_allocated": bits_alloc, "bits_stored": bits_stored,
        "pixel_representation": int(ds.get("PixelRepresentation") or 0),
        "had_rescale": "RescaleSlope" in ds or "RescaleIntercept" in ds,
        "spacing_tag": spacing_tag,
    }
    # The decoded pixels live in ``pixels``; the dataset is kept for writing, without its pixel data.
    del ds.PixelData
    return Radiograph(pixels, "dicom", bits_stored, colour, spacing, path, meta, warned)


def _read_nifti(path: Path) -> Radiograph:
    import nibabel as nib

    try:
        # mmap=False + asanyarray read the whole payload now, so a truncated file fails here.
        img = nib.load(str(path), mmap=False)
        shape, itemsize = img.header.get_data_shape(), img.header.get_data_dtype().itemsize
        # Checked before allocating: a header may declare any size.
        check_declared_size(shape, itemsize, path, path.stat().st_size, compressed=True)
        data = np.asanyarray(img.dataobj)
    except InputError:
        raise
    except Exception as err:  # noqa: BLE001 - ImageFileError, EOFError, OSError, zlib.error, ...
        raise InputError(f"cannot read NIfTI file ({one_line(err)})", path) from None
    if data.dtype.fields is not None or not (np.issubdtype(data.dtype, np.integer)
                                             or np.issubdtype(data.dtype, np.floating)
                                             or data.dtype == np.bool_):
        raise InputError(f"NIfTI data type {data.dtype} is not a scalar image", path)
    shape = tuple(int(s) for s in data.shape)
    if data.size == 0:
        raise InputError(f"image is empty (shape {shape})", path)
    first3 = shape[:3]
    kept = [ax for ax, n in enumerate(first3) if n != 1]
    two_d = (len(shape) == 2 and len(kept) == 2) or (
        len(shape) >= 3 and len(kept) == 2 and all(n == 1 for n in shape[3:]))
    if not two_d:
        raise InputError(f"is not a single 2D image (shape {shape}; expected 2D, or 3D with one axis "
                         "of size 1)", path)
    plane = data.reshape([shape[ax] for ax in kept])  # (i, j): column index first
    _check_size(plane.shape[1], plane.shape[0], path)
    values = plane.T.astype(np.float64)
    if np.isfinite(values).all():  # NaN/Inf: refused by _normalise with its own message
        _check_not_hu(values, path)
    pixels, lo, hi = _normalise(values, path)
    affine = np.asarray(img.affine, dtype=np.float64)
    spacing = None
    if np.isfinite(affine).all():
        vs = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
        if vs[kept[0]] > 0 and vs[kept[1]] > 0:
            spacing = (float(vs[kept[1]]), float(vs[kept[0]]))  # (row = j, col = i)
    meta = {"affine": affine, "header": img.header, "image_class": type(img), "shape": shape,
            "axes": tuple(kept), "value_min": lo, "value_max": hi,
            "dtype": str(img.header.get_data_dtype())}
    bit_depth = int(img.header.get_data_dtype().itemsize * 8)
    return Radiograph(np.ascontiguousarray(pixels), "nifti", bit_depth, False, spacing, path, meta)


# --- writing ---------------------------------------------------------------------------------------

def write_radiograph(path: str | Path, like: Radiograph, pixels: np.ndarray, note: str) -> Path:
    """Write ``pixels`` ((H, W) in [0, 1], clipped) in the format of ``like``, marked with ``note``.

    Atomic: the file appears whole or not at all. Raises InputError when ``path`` is the input file or
    its suffix does not fit the input's format; MedsciError when ``pixels`` holds NaN/Inf; ValueError when it is not a
    2D array.
    """
    path = Path(path)
    if like.format not in ("png", "dicom", "nifti"):
        raise ValueError(f"unknown radiograph format {like.format!r}")
    _check_output(path, like)
    arr = np.asarray(pixels, dtype=np.float64)
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"expected a 2D array of pixels, got shape {arr.shape}")
    refuse_non_finite(arr, path)
    arr = np.clip(arr, 0.0, 1.0)
    note = str(note)
    if like.format == "png":
        _write_png(path, like, arr, note)
    elif like.format == "dicom":
        _write_dicom(path, like, arr, note)
    else:
        _write_nifti(path, like, arr, note)
    return path


def _check_output(path: Path, like: Radiograph) -> None:
    src = Path(like.source)
    same = resolved(path) == resolved(src)
    if not same and path.exists() and src.exists():
        try:
            same = os.path.samefile(path, src)
        except OSError:
            pass
    if same:
        raise InputError("output path is the input file; refusing to overwrite the input", path)
    if path.is_dir():
        raise InputError("output path is a folder; expected a file name", path)
    name, suffix = path.name.lower(), path.suffix.lower()
    ok = {"png": suffix == ".png",
          "nifti": name.endswith(_NIFTI_SUFFIXES),
          "dicom": (suffix in _DICOM_SUFFIXES or suffix == "" or suffix[1:].isdigit())
          and not name.endswith(_NIFTI_SUFFIXES)}[like.format]
    if not ok:
        want = {"png": ".png", "nifti": ".nii or .nii.gz", "dicom": ".dcm, .dicom or no suffix"}[like.format]
        raise InputError(f"output suffix {suffix or '(none)'!r} does not match the input's format "
                         f"({like.format}); use {want}", path)


def write_png(path: str | Path, image: np.ndarray, bit_depth: int = 16, note: str | None = None,
              rgb: bool = False) -> None:
    """(H, W) values in [0, 1] as an 8- or 16-bit PNG (grey, or RGB with equal channels), atomically, with
    ``note`` in a ``Description`` text chunk."""
    maxval = 2 ** bit_depth - 1
    q = np.rint(np.clip(image, 0.0, 1.0) * maxval).astype(np.uint16 if bit_depth == 16 else np.uint8)
    if rgb:
        q = np.repeat(q[:, :, None], 3, axis=2)
    texts = {"Software": "medsci", **({"Description": note} if note is not None else {})}
    write_bytes_atomic(path, _png_bytes(q, bit_depth, texts))


def _write_png(path: Path, like: Radiograph, arr: np.ndarray, note: str) -> None:
    write_png(path, arr, 16 if like.bit_depth == 16 else 8, note, like.rgb)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_text(key: str, value: str) -> bytes:
    value = value.replace("\x00", " ")
    try:
        return _png_chunk(b"tEXt", key.encode("latin-1") + b"\x00" + value.encode("latin-1"))
    except UnicodeEncodeError:  # tEXt is Latin-1 only; iTXt holds UTF-8
        return _png_chunk(b"iTXt", key.encode("latin-1") + b"\x00\x00\x00\x00\x00" + value.encode("utf-8"))


def _png_bytes(q: np.ndarray, bit_depth: int, texts: dict[str, str]) -> bytes:
    """Encode (H, W) or (H, W, 3) unsigned ints as a PNG with the Paeth filter on every row."""
    h, w = q.shape[:2]
    channels = 1 if q.ndim == 2 else q.shape[2]
    colour_type = 0 if channels == 1 else 2
    raw = np.ascontiguousarray(q.astype(">u2" if bit_depth == 16 else np.uint8)).view(np.uint8)
    raw = raw.reshape(h, -1)
    bpp = channels * bit_depth // 8
    comp = zlib.compressobj(6)
    parts = []
    prev = np.zeros(raw.shape[1], dtype=np.int16)
    block = 256  # rows at a time: bounded memory for 8192 x 8192 x 3 x 16 bits
    for r0 in range(0, h, block):
        x = raw[r0:r0 + block].astype(np.int16)
        b = np.vstack([prev[None, :], x[:-1]])  # the row above (raw bytes)
        a = np.zeros_like(x)
        a[:, bpp:] = x[:, :-bpp]
        c = np.zeros_like(x)
        c[:, bpp:] = b[:, :-bpp]
        p = a + b - c
        pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
        pred = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
        filt = ((x - pred) & 0xFF).astype(np.uint8)
        rows = np.hstack([np.full((x.shape[0], 1), 4, dtype=np.uint8), filt])
        parts.append(comp.compress(rows.tobytes()))
        prev = x[-1]
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, colour_type, 0, 0, 0)
    out = [_PNG_SIG, _png_chunk(b"IHDR", ihdr)]
    out += [_png_text(k, v) for k, v in texts.items()]
    out += [_png_chunk(b"IDAT", b"".join(parts)), _png_chunk(b"IEND", b"")]
    return b"".join(out)


def _write_dicom(path: Path, like: Radiograph, arr: np.ndarray, note: str) -> None:
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    m = like.meta
    src = m.get("dataset")
    if src is None:
        raise ValueError("like.meta has no DICOM dataset; read it with read_radiograph")
    mono1 = bool(m["monochrome1"])
    if mono1:
        arr = 1.0 - arr  # written back as MONOCHROME1, the input's own polarity and stored values
    bits_alloc, bits_stored = int(m["bits_allocated"]), int(m["bits_stored"])
    top = 2 ** bits_stored - 1
    lo, hi = float(m["value_min"]), float(m["value_max"])
    slope, inter = float(m["slope"]), float(m["intercept"])
    rescale: tuple[str, str] | None = None  # (slope, intercept) DS strings, None to drop the tags
    if m["linear"]:
        # Back onto the input's stored range with the input's rescale: value = slope * stored + inter.
        smin, smax = float(m["stored_min"]), float(m["stored_max"])
        s = smin + arr * (smax - smin) if slope > 0 else smax - arr * (smax - smin)
        shift = min(int(m["stored_min"]), 0)  # signed input: shift up to unsigned, intercept follows
        stored = np.rint(s - shift)
        if m["had_rescale"] or shift:
            rescale = (_ds(slope), _ds(inter + slope * shift))
    elif m["colour"]:
        stored = np.rint(arr * top)  # a grey picture over the full stored range, no rescale
    else:
        # A non-linear Modality LUT is replaced by a linear rescale onto the same value range, computed
        # with the slope/intercept as written so readers invert what was quantised.
        slope_s, inter_s = _ds((hi - lo) / top), _ds(lo)
        stored = np.rint((lo + arr * (hi - lo) - float(inter_s)) / float(slope_s))
        rescale = (slope_s, inter_s)
    dtype = {8: "<u1", 16: "<u2", 32: "<u4"}[bits_alloc]
    stored = np.clip(stored, 0, top).astype(dtype)

    ds = copy.deepcopy(src)
    for kw in _DROP:
        if kw in ds:
            delattr(ds, kw)
    ds.remove_private_tags()  # vendor processing data does not describe the derived image
    for tag in list(ds.keys()):
        if (0x6000 <= tag.group <= 0x60FF and tag.group % 2 == 0) or tag.element == 0:
            del ds[tag]  # overlays drawn for the input image; group lengths
    if m["colour"]:
        if "VOILUTSequence" in ds:
            del ds.VOILUTSequence  # a table for the input's colours
        for kw in ("WindowCenter", "WindowWidth", "WindowCenterWidthExplanation", "VOILUTFunction"):
            if kw in ds:
                delattr(ds, kw)
    # The input's polarity is kept, so its window and VOI LUT still apply; DX ties the presentation LUT to it.
    if "PresentationLUTShape" in ds or _str(src, "Modality") == "DX":
        ds.PresentationLUTShape = "INVERSE" if mono1 else "IDENTITY"
    if rescale is None:
        for kw in ("RescaleSlope", "RescaleIntercept", "RescaleType"):
            if kw in ds:
                delattr(ds, kw)
    else:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
        if "RescaleType" not in ds and _str(src, "Modality") not in ("CR", "DX", "RG", "MG", "IO", "PX"):
            ds.RescaleType = "US"

    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if mono1 else "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits_alloc, bits_stored, bits_stored - 1
    ds.PixelRepresentation = 0
    data = stored.tobytes()
    if len(data) % 2:
        data += b"\x00"
    ds.add_new(0x7FE00010, "OB" if bits_alloc == 8 else "OW", data)

    src_sop = _str(src, "SOPInstanceUID")
    seed = [src_sop, note, hashlib.sha256(data).hexdigest()]
    if not _str(ds, "StudyInstanceUID"):
        ds.StudyInstanceUID = generate_uid(entropy_srcs=seed + ["study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=seed + ["series"])
    ds.SOPInstanceUID = generate_uid(entropy_srcs=seed + ["sop"])
    if not _str(ds, "SOPClassUID"):
        ds.SOPClassUID = SecondaryCaptureImageStorage
    if src_sop and _str(src, "SOPClassUID"):
        ds.SourceImageSequence = [_sop_ref((_str(src, "SOPClassUID"), src_sop))]
    ds.ImageType = ["DERIVED", "SECONDARY"]
    desc = _str(src, "SeriesDescription")
    if not desc.upper().startswith("SYNTHETIC"):
        desc = f"SYNTHETIC {desc}".strip()
    ds.SeriesDescription = desc[:64]
    if not note.isascii() and _str(ds, "SpecificCharacterSet").upper() != "ISO_IR 192":
        ds.decode()  # every text value to str under the old character set, re-encoded as UTF-8 below
        ds.SpecificCharacterSet = "ISO_IR 192"
    ds.DerivationDescription = note[:1024]
    ds.ImageComments = note[:10240]
    # A rotated image still shows whatever was burned into the input; only an input that says so
    # (or says nothing) becomes "NO".
    if _str(src, "BurnedInAnnotation").upper() != "YES":
        ds.BurnedInAnnotation = "NO"

    ds.file_meta = meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with atomic_path(path) as tmp:
            pydicom.dcmwrite(tmp, ds, enforce_file_format=True)


def _write_nifti(path: Path, like: Radiograph, arr: np.ndarray, note: str) -> None:
    m = like.meta
    lo, hi = float(m["value_min"]), float(m["value_max"])
    values = (lo + arr * (hi - lo)).astype(np.float32)  # (H, W) = (j, i)
    shape = list(m["shape"])
    ax_i, ax_j = m["axes"]
    shape[ax_i], shape[ax_j] = values.shape[1], values.shape[0]
    data = np.ascontiguousarray(values.T).reshape(shape)  # singleton axes back in place
    affine = np.asarray(m["affine"], dtype=np.float64)
    klass = m["image_class"]
    hdr = m["header"].copy()
    sform_code, qform_code = int(hdr["sform_code"]), int(hdr["qform_code"])
    if sform_code == 0 and qform_code == 0:
        sform_code = qform_code = 1  # an uncoded affine would be ignored by readers
    descrip = note.encode("utf-8")[:79].decode("utf-8", "ignore").encode("utf-8")
    hdr["descrip"] = descrip
    hdr.set_data_dtype(np.float32)
    hdr.set_data_shape(data.shape)
    hdr.set_slope_inter(1.0, 0.0)  # float32 data: stored exactly, no scaling
    hdr.set_sform(affine, code=sform_code)
    hdr.set_qform(affine, code=qform_code)
    img = klass(data, affine, header=hdr)
    img.header.set_sform(affine, code=sform_code)
    img.header.set_qform(affine, code=qform_code)
    import nibabel as nib

    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
