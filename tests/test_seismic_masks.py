"""Missing-trace masks (medsci.tasks.seismic.masks): True = observed, False = missing."""

from __future__ import annotations

import numpy as np
import pytest

from medsci.errors import ConfigError, InputError
from medsci.tasks.seismic.masks import (apply_mask, block_traces, check_mask, dead_traces, make_mask,
                                        random_traces, regular_decimation)


def _runs(missing_lines: np.ndarray) -> list[tuple[int, int]]:
    """(start, length) of each run of True in a 1-D bool array."""
    padded = np.concatenate([[False], missing_lines, [False]]).astype(int)
    starts = np.flatnonzero(np.diff(padded) == 1)
    ends = np.flatnonzero(np.diff(padded) == -1)
    return list(zip(starts.tolist(), (ends - starts).tolist()))


@pytest.mark.parametrize("ratio", [0.0, 0.1, 0.5, 0.37, 0.9])
def test_random_exact_count(ratio):
    mask = random_traces((13, 11, 40), ratio, np.random.default_rng(0))
    assert mask.shape == (13, 11) and mask.dtype == bool
    assert (~mask).sum() == round(ratio * 143)


def test_random_is_seeded_and_spread():
    a = random_traces((20, 20), 0.5, np.random.default_rng(7))
    b = random_traces((20, 20), 0.5, np.random.default_rng(7))
    c = random_traces((20, 20), 0.5, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # Scattered, not whole lines: every inline keeps some traces and loses some.
    assert (a.any(axis=1) & (~a).any(axis=1)).mean() > 0.9


def test_block_single_contiguous_block():
    for seed in range(20):
        mask = block_traces((16, 9), 4, 0, np.random.default_rng(seed))
        lines_missing = ~mask[:, 0]
        assert (mask == mask[:, :1]).all()  # whole inlines
        assert _runs(lines_missing)[0][1] == 4 and len(_runs(lines_missing)) == 1
    mask = block_traces((9, 16), 5, 1, np.random.default_rng(0))
    assert (mask == mask[:1, :]).all() and len(_runs(~mask[0])) == 1 and (~mask[0]).sum() == 5


def test_block_ratio_gives_exact_count_of_separated_blocks():
    seen_starts = set()
    for seed in range(30):
        mask = block_traces((40, 6), 4, 0, np.random.default_rng(seed), ratio_missing=0.5)
        missing = ~mask[:, 0]
        assert missing.sum() == 20
        runs = _runs(missing)
        assert [length for _, length in runs] == [4] * 5  # blocks never merge
        seen_starts.add(runs[0][0])
    assert len(seen_starts) > 3  # positions are random
    # 10 lines missing in blocks of 4: 4 + 4 + 2.
    missing = ~block_traces((30, 3), 4, 0, np.random.default_rng(1), ratio_missing=1 / 3)[:, 0]
    assert sorted(length for _, length in _runs(missing)) == [2, 4, 4]


def test_decimation_pattern():
    mask = regular_decimation((7, 5, 12), 3, axis=0, offset=1)
    expected_lines = np.array([False, True, False, False, True, False, False])
    np.testing.assert_array_equal(mask, np.repeat(expected_lines[:, None], 5, axis=1))
    mask = regular_decimation((4, 6), 2, axis=1)
    np.testing.assert_array_equal(mask[2], [True, False, True, False, True, False])


def test_dead_traces():
    cube = np.ones((3, 4, 5), dtype=np.float32)
    cube[1, 2] = 0.0
    cube[0, 3] = 1e-7
    cube[2, 0, 4] = 0.0  # one zero sample is not a dead trace
    mask = dead_traces(cube)
    assert (~mask).sum() == 1 and not mask[1, 2]
    mask = dead_traces(cube, tol=1e-6)
    assert set(zip(*np.nonzero(~mask))) == {(1, 2), (0, 3)}


def test_make_mask_defaults_and_params():
    rng = np.random.default_rng(0)
    assert (~make_mask("random", (10, 10, 8), rng)).sum() == 50
    block = make_mask("block", (12, 10, 8), rng)
    assert (~block[:, 0]).sum() == 3 and (block == block[:, :1]).all()
    block = make_mask("block", (12, 10), rng, axis=1, width=2)
    assert (~block[0]).sum() == 2 and (block == block[:1]).all()
    dec = make_mask("decimate", (6, 4), rng)
    np.testing.assert_array_equal(dec[:, 0], [True, False] * 3)
    dec = make_mask("decimate", (6, 4), rng, factor=2, axis=1, offset=1)
    np.testing.assert_array_equal(dec[0], [False, True] * 2)
    with pytest.raises(ConfigError, match="unknown mask pattern"):
        make_mask("checkerboard", (4, 4), rng)
    with pytest.raises(ConfigError, match="random"):
        make_mask("random", (4, 4), rng, ratio=0.5)  # misspelt parameter
    with pytest.raises(ConfigError):
        make_mask("random", (4, 4), rng, ratio_missing=1.0)
    with pytest.raises(ConfigError):
        make_mask("block", (4, 4), rng, width=4)
    with pytest.raises(ConfigError):
        make_mask("decimate", (4, 4), rng, factor=1)


def test_check_and_apply_mask():
    cube = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4) + 1
    mask = np.array([[1, 0, 1], [0, 1, 1]], dtype=np.uint8)
    out = apply_mask(cube, mask)
    assert out.dtype == cube.dtype
    np.testing.assert_array_equal(out[0, 1], 0)
    np.testing.assert_array_equal(out[1, 0], 0)
    np.testing.assert_array_equal(out[0, 0], cube[0, 0])
    assert (out != 0).sum() == 4 * 4
    assert check_mask(mask, cube.shape).dtype == bool
    with pytest.raises(InputError, match="mask.npy.*shape"):
        check_mask(mask.T, cube.shape, path="mask.npy")
    with pytest.raises(InputError, match="all-missing"):
        check_mask(np.zeros((2, 3), bool), cube.shape, path="m.npy")
    with pytest.raises(InputError, match="0 .missing. or 1"):
        check_mask(np.full((2, 3), 0.5), cube.shape)
