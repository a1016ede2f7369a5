"""Fitting a radiograph of any size and pixel spacing onto the model's detector grid, and back.

The model works on a fixed detector (``rows x cols`` pixels of ``spacing`` mm, centred on the beam). A real
radiograph is larger, finer and not square: it is resampled to the model's pixel size (each axis by its own
physical spacing, so the anatomy keeps its proportions), then centred on the model's detector, padded with 0
(air, as in the training DRRs) where it is smaller and cropped where it is larger. Nothing is squashed.

On the way back only the model's *change* is resampled: the rotated image at the input's resolution is the
projective warp of the input itself (which keeps its full detail) plus the model's correction over its own first
guess, upsampled. Outside the model's field of view (a cropped margin) the correction is 0: the warp alone.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from medsci.tasks.rotation.drr import DetectorGeometry


@dataclass(frozen=True)
class DetectorFit:
    input_pixels: tuple[int, int]  # (H, W) of the radiograph
    input_spacing: tuple[float, float]  # mm per pixel (row, col) used for the radiograph
    spacing_source: str  # the DICOM/NIfTI tag it came from, "--pixel-spacing", or "assumed: ..."
    model_pixels: tuple[int, int]
    model_spacing: tuple[float, float]
    scaled: tuple[int, int]  # the radiograph's size at the model's pixel size
    offset: tuple[int, int]  # where the scaled radiograph's row/col 0 falls on the model grid (< 0: cropped)

    @classmethod
    def plan(cls, input_pixels, spacing, spacing_source: str, geometry: DetectorGeometry) -> "DetectorFit":
        h, w = (int(v) for v in input_pixels)
        rows, cols = (int(v) for v in geometry.pixels)
        gy, gx = (float(v) for v in geometry.spacing)
        if spacing is None:
            # No spacing in the file: square pixels, the whole image inside the model's field of view.
            size = min(rows * gy / h, cols * gx / w)
            spacing, spacing_source = (size, size), "assumed: square pixels, the image fitted to the model's field of view"
        sy, sx = (float(v) for v in spacing)
        scaled = (max(1, int(round(h * sy / gy))), max(1, int(round(w * sx / gx))))
        offset = ((rows - scaled[0]) // 2, (cols - scaled[1]) // 2)
        return cls((h, w), (sy, sx), spacing_source, (rows, cols), (gy, gx), scaled, offset)

    # -- geometry ------------------------------------------------------------------------------------
    def input_geometry(self, geometry: DetectorGeometry) -> DetectorGeometry:
        """The model's detector at the input's resolution (the spacing rounded as the resampling rounds it)."""
        (h, w), (sh, sw) = self.input_pixels, self.scaled
        spacing = (self.model_spacing[0] * sh / h, self.model_spacing[1] * sw / w)
        return replace(geometry, pixels=(h, w), spacing=spacing)

    def _windows(self):
        """(model slice, scaled slice) per axis: the overlap of the scaled radiograph and the model grid."""
        out = []
        for off, n, m in zip(self.offset, self.scaled, self.model_pixels):
            lo, hi = max(off, 0), min(off + n, m)
            out.append((slice(lo, hi), slice(lo - off, hi - off)))
        return out

    # -- resampling ----------------------------------------------------------------------------------
    def to_model(self, image: np.ndarray) -> np.ndarray:
        """The (H, W) radiograph on the model's (rows, cols) grid: resampled, centred, padded with 0 / cropped."""
        scaled = resize(image, self.scaled)
        out = np.zeros(self.model_pixels, dtype=np.float32)
        (mr, sr), (mc, sc) = self._windows()
        out[mr, mc] = scaled[sr, sc]
        return out

    def to_input(self, image: np.ndarray) -> np.ndarray:
        """A (rows, cols) model-grid map (a correction) back on the input's (H, W) grid; 0 outside the model's
        field of view."""
        scaled = np.zeros(self.scaled, dtype=np.float32)
        (mr, sr), (mc, sc) = self._windows()
        scaled[sr, sc] = np.asarray(image, dtype=np.float32)[mr, mc]
        return resize(scaled, self.input_pixels)

    def displacement_to_input(self, u: np.ndarray) -> np.ndarray:
        """A (2, rows, cols) displacement in model pixels -> (2, H, W) in input pixels; 0 outside the field of view."""
        return np.stack([self.to_input(u[k]) * (self.input_pixels[k] / self.scaled[k]) for k in range(2)])

    def span_fraction(self) -> float:
        """The image's longer physical side as a fraction of the model's field of view along that axis."""
        return max(n * s / (m * g) for n, s, m, g in
                   zip(self.input_pixels, self.input_spacing, self.model_pixels, self.model_spacing))

    def extent_mm(self) -> str:
        return f"{self.input_pixels[0] * self.input_spacing[0]:.0f}x{self.input_pixels[1] * self.input_spacing[1]:.0f}"

    def field_mm(self) -> str:
        return (f"{self.model_pixels[0] * self.model_spacing[0]:.0f}x"
                f"{self.model_pixels[1] * self.model_spacing[1]:.0f}")

    def covered_fraction(self) -> float:
        """Fraction of the radiograph's area inside the model's field of view."""
        (mr, _), (mc, _) = self._windows()
        return float((mr.stop - mr.start) * (mc.stop - mc.start) / (self.scaled[0] * self.scaled[1]))

    def to_dict(self) -> dict:
        (h, w), (sh, sw) = self.input_pixels, self.scaled
        (rows, cols), (gy, gx) = self.model_pixels, self.model_spacing
        pad = [max(self.offset[0], 0), max(rows - self.offset[0] - sh, 0),
               max(self.offset[1], 0), max(cols - self.offset[1] - sw, 0)]
        crop = [max(-self.offset[0], 0), max(self.offset[0] + sh - rows, 0),
                max(-self.offset[1], 0), max(self.offset[1] + sw - cols, 0)]
        return {
            "input_pixels": [h, w], "input_spacing_mm": [round(v, 6) for v in self.input_spacing],
            "spacing_source": self.spacing_source,
            "model_pixels": [rows, cols], "model_spacing_mm": [gy, gx],
            "scale": [round(sh / h, 6), round(sw / w, 6)],  # model pixels per input pixel, per axis
            "scaled_pixels": [sh, sw],
            "padded_model_pixels": dict(zip(("top", "bottom", "left", "right"), pad)),
            "cropped_model_pixels": dict(zip(("top", "bottom", "left", "right"), crop)),
            "field_of_view_fraction": round(self.covered_fraction(), 4),
        }

    def summary(self) -> str:
        d = self.to_dict()
        crop = sum(d["cropped_model_pixels"].values())
        text = (f"resampled {d['input_pixels'][0]}x{d['input_pixels'][1]} px at {d['input_spacing_mm'][0]:g}x"
                f"{d['input_spacing_mm'][1]:g} mm ({d['spacing_source']}) to {d['scaled_pixels'][0]}x"
                f"{d['scaled_pixels'][1]} px at the model's {d['model_spacing_mm'][0]:g}x{d['model_spacing_mm'][1]:g} mm, "
                f"centred on its {d['model_pixels'][0]}x{d['model_pixels'][1]} detector")
        if crop:
            text += f"; {100 * (1 - d['field_of_view_fraction']):.0f} % of the image lies outside it (warp only there)"
        return text


def resize(image, shape) -> np.ndarray:
    """Bilinear resize of an (H, W) image, antialiased when shrinking."""
    import torch

    t = torch.as_tensor(np.asarray(image, dtype=np.float32))[None, None]
    if tuple(t.shape[-2:]) == tuple(shape):
        return np.asarray(image, dtype=np.float32)
    antialias = t.shape[-1] > shape[1] or t.shape[-2] > shape[0]
    return torch.nn.functional.interpolate(t, size=tuple(shape), mode="bilinear", align_corners=False,
                                           antialias=antialias)[0, 0].numpy()
