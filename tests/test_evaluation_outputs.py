"""The evaluation writer (metrics.csv, summary.json, summary.md) and the PNG figure helper every generator uses."""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pytest
from PIL import Image

from medsci.evaluation.figures import Panel, image_grid, new_figure, png_bytes, save_image_grid, save_png
from medsci.evaluation.tables import write_tables

ROWS = [{"case": "c1", "method": "model", "ssim": 0.91234567890123, "psnr": 27.5, "note": "a,b \"q\""},
        {"case": "c2", "method": "mean", "ssim": math.nan, "psnr": -1e-7, "note": ""}]


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_written_tables_read_back_to_the_rows_summary_and_sections(tmp_path):
    summary = {"cases": ["c1", "c2"], "metrics": {"model": {"ssim": {"mean": np.float64(0.5), "n": np.int64(1)}}}}
    sections = ["# Title\n\n| method | SSIM |\n|---|---|\n| model | 0.9123 |\n", "\n## More\n\ntext\n"]
    write_tables(tmp_path / "eval", ROWS, summary, sections)

    with open(tmp_path / "eval" / "metrics.csv", encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        back = list(reader)
    assert reader.fieldnames == ["case", "method", "ssim", "psnr", "note"]  # the first row's column order
    assert [r["case"] for r in back] == ["c1", "c2"] and back[0]["note"] == 'a,b "q"'
    assert float(back[0]["ssim"]) == ROWS[0]["ssim"] and back[0]["ssim"] == repr(ROWS[0]["ssim"])  # no rounding
    assert back[1]["ssim"] == "nan" and float(back[1]["psnr"]) == -1e-7
    text = (tmp_path / "eval" / "summary.json").read_text(encoding="utf-8")
    assert json.loads(text) == {"cases": ["c1", "c2"], "metrics": {"model": {"ssim": {"mean": 0.5, "n": 1}}}}
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"
    md = (tmp_path / "eval" / "summary.md").read_text(encoding="utf-8")
    assert md == "".join(sections) and "| model | 0.9123 |" in md
    assert _leftovers(tmp_path / "eval") == []


def test_markdown_may_be_one_string_and_rows_may_be_empty(tmp_path):
    write_tables(tmp_path, [], {}, "# only\n")
    assert (tmp_path / "metrics.csv").read_bytes() == b""
    assert (tmp_path / "summary.md").read_text(encoding="utf-8") == "# only\n"
    assert json.loads((tmp_path / "summary.json").read_text(encoding="utf-8")) == {}


def test_a_summary_that_cannot_be_written_leaves_no_partial_file(tmp_path):
    (tmp_path / "summary.json").write_text('{"old": 1}\n', encoding="utf-8")
    with pytest.raises(TypeError, match="not JSON serialisable"):
        write_tables(tmp_path, ROWS, {"bad": object()}, "# md\n")
    assert (tmp_path / "summary.json").read_text(encoding="utf-8") == '{"old": 1}\n'  # earlier version intact
    assert not (tmp_path / "summary.md").exists()  # markdown is written last
    assert _leftovers(tmp_path) == []


def _decoded(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"))


def test_png_has_the_figure_size_no_metadata_and_the_same_bytes_every_time(tmp_path):
    def draw():
        fig, ax = new_figure(figsize=(3.0, 2.0), dpi=50)
        ax.plot([0, 1, 2], [1, 0, 1], "o-", label="a")
        ax.set_title("title")
        ax.legend()
        return fig

    save_png(draw(), tmp_path / "a.png")
    save_png(draw(), tmp_path / "b.png")
    data = (tmp_path / "a.png").read_bytes()
    assert _decoded(data).shape == (100, 150, 3)  # 3 x 2 inches at 50 dpi
    assert data == (tmp_path / "b.png").read_bytes()
    assert b"Software" not in data and b"matplotlib" not in data.lower()
    assert _decoded(png_bytes(draw(), dpi=100)).shape == (200, 300, 3)  # dpi of the PNG, not of the figure
    assert _decoded(png_bytes(draw(), tight=True)).shape[1] < 150  # cropped to the drawn content


def test_figures_stay_off_pyplot():
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    fig, axes = new_figure(2, 3, figsize=(3, 2), squeeze=False)
    assert axes.shape == (2, 3) and plt.get_fignums() == before
    assert type(fig.canvas).__name__ == "FigureCanvasAgg"


def test_image_grid_draws_each_panel_with_its_title_label_and_scale():
    black, white = np.zeros((8, 8)), np.ones((8, 8))
    rows = [[Panel(black, "zero", vmin=0, vmax=1, ylabel="row 0"), Panel(white, "one", cmap="magma", vmin=0, vmax=1,
                                                                          title_color="red")],
            [Panel(white, vmin=0, vmax=2), Panel(None, "empty")]]
    fig = image_grid(rows, figsize=(4, 4), dpi=20, fontsize=7, frame=True, suptitle="grid", interpolation="nearest")
    axes = fig.axes
    assert [a.get_title() for a in axes] == ["zero", "one", "", "empty"]
    assert axes[0].get_ylabel() == "row 0" and axes[0].title.get_fontsize() == 7
    assert axes[1].title.get_color() == "red"
    assert [len(a.images) for a in axes] == [1, 1, 1, 0]
    assert axes[1].images[0].get_cmap().name == "magma" and axes[2].images[0].get_clim() == (0, 2)
    assert axes[0].images[0].get_interpolation() == "nearest"
    assert all(a.axison and not a.get_xticks().size for a in axes)  # frame kept, ticks removed
    assert fig.get_suptitle() == "grid"
    hidden = image_grid([[Panel(black)]], figsize=(1, 1))
    assert not hidden.axes[0].axison


def test_image_grid_png_shows_the_pixels(tmp_path):
    # One panel filling the figure: a black left half and a white right half on the gray colormap.
    img = np.zeros((10, 10))
    img[:, 5:] = 1.0
    fig = image_grid([[Panel(img, vmin=0, vmax=1)]], figsize=(1, 1), dpi=40, interpolation="nearest")
    fig.subplots_adjust(0, 0, 1, 1)
    save_png(fig, tmp_path / "g.png")
    px = _decoded((tmp_path / "g.png").read_bytes())
    assert px.shape == (40, 40, 3)
    assert (px[:, :18] == 0).all() and (px[:, 22:] == 255).all()


def test_save_image_grid_is_deterministic(tmp_path):
    img = np.random.default_rng(0).random((12, 16))
    rows = [[Panel(img, "a"), Panel(img.T, "b", cmap="magma")]]
    for name in ("a.png", "b.png"):
        save_image_grid(tmp_path / name, rows, figsize=(4, 2), dpi=50, tight_layout=True, suptitle="s")
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    assert _decoded((tmp_path / "a.png").read_bytes()).shape == (100, 200, 3)


def test_a_figure_that_fails_to_render_leaves_the_earlier_png(tmp_path):
    save_png(new_figure(figsize=(1, 1), dpi=10)[0], tmp_path / "f.png")
    before = (tmp_path / "f.png").read_bytes()
    fig, ax = new_figure(figsize=(1, 1), dpi=10)
    ax.set_title(r"$\frac{$")  # bad mathtext: fails only when drawn
    with pytest.raises(ValueError):
        save_png(fig, tmp_path / "f.png")
    with pytest.raises(ValueError):
        save_image_grid(tmp_path / "new.png", [[Panel(np.zeros((2, 2)), r"$\frac{$")]], figsize=(1, 1))
    assert (tmp_path / "f.png").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.png"]
