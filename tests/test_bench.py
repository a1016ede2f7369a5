"""`medsci bench` items: the synthesis item times what the preset trains and samples."""

import pytest

from medsci import bench


def test_synthesis_item_follows_the_preset_patch_batch_window_and_sampler(monkeypatch):
    from medsci.diffusion import model as model_module

    windows = []

    class RecordingWindows(model_module.WindowedNetwork):
        def __init__(self, model, roi_size, **kw):
            windows.append(tuple(roi_size))
            super().__init__(model, roi_size, **kw)

    monkeypatch.setattr(model_module, "WindowedNetwork", RecordingWindows)
    # grid, channels, res blocks, groups, training patch, batch, window, DDIM steps, samples averaged
    monkeypatch.setitem(bench.SYNTHESIS_PRESETS, "tiny", ((16, 16, 16), (8, 16), 1, 8, (8, 8, 8), 3, (12, 12, 12),
                                                          2, 3))
    out = bench.bench_synthesis_item("tiny", device="cpu", steps=1)
    assert out["train_batch"] == 3 and out["train_patch"] == [8, 8, 8] and out["haar_grid"] == [8, 8, 8]
    assert out["network_evaluations_per_volume"] == 2 * 3  # steps x samples
    assert out["inference_window"] == [12, 12, 12] and out["train_step_s"] > 0 and out["sample_s_per_volume"] > 0
    assert windows == [(6, 6, 6)]  # sampled through windows of the Haar grid, as the pipeline does
    one = bench.bench_synthesis_item("tiny", device="cpu", steps=1, sample_steps=4)
    assert one["network_evaluations_per_volume"] == 4 and one["samples_averaged"] == 1


def test_unknown_preset_is_a_key_error():
    with pytest.raises(KeyError):
        bench.bench_synthesis_item("nope", device="cpu")
