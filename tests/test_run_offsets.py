"""Run offsets: runs measured at different times put on one scale through the configs they share."""
import math

import numpy as np
import pytest

from npower.profile.run_offsets import ALL_KINDS, MIN_SHARED, _fit, offset_for, run_offsets


def _runs(rng, slower_log2: float, noise: float = 0.1):
    """Runs A and B measure configs 0-99, run C configs 50-149 `slower_log2` slower; per-measurement noise."""
    truth = {str(i): float(rng.uniform(-5, 5)) for i in range(150)}
    def run(keys, shift):
        return {k: truth[k] + shift + float(rng.normal(0, noise)) for k in keys}
    keys_ab, keys_c = [str(i) for i in range(100)], [str(i) for i in range(50, 150)]
    return truth, [run(keys_ab, 0.0), run(keys_ab, 0.0), run(keys_c, slower_log2)]


def test_a_later_run_that_shares_configs_is_put_on_the_earlier_runs_scale():
    """Run C is 30 % slower; its offset against A and B is found from the 50 configs they share, and the
    configs only C measured, corrected, land on A's and B's scale (uncorrected they would be 30 % off)."""
    truth, runs = _runs(np.random.default_rng(0), math.log2(1.3))
    offsets = run_offsets(runs, {key: "conv" for key in truth})
    relative = offset_for(offsets[2], "conv") - offset_for(offsets[0], "conv")
    assert 2 ** relative == pytest.approx(1.3, rel=0.04)
    assert offset_for(offsets[0], "conv") == pytest.approx(offset_for(offsets[1], "conv"), abs=0.03)
    # centred: the runs' mean state, weighted by the configs each shares (50 of A, B; 50 of C)
    weights = [100, 100, 50]
    assert sum(w * offset_for(o, "conv") for w, o in zip(weights, offsets)) == pytest.approx(0.0, abs=1e-9)
    only_c = [str(i) for i in range(100, 150)]
    corrected = np.array([runs[2][k] - offset_for(offsets[2], "conv") for k in only_c])
    on_a_scale = np.array([truth[k] - offset_for(offsets[0], "conv") for k in only_c])
    assert np.mean(corrected - on_a_scale) == pytest.approx(0.0, abs=0.06)


def test_runs_that_share_nothing_keep_offset_zero():
    runs = [{"a": 1.0, "b": 2.0}, {"c": 5.0, "d": 9.0}]
    assert run_offsets(runs, {"a": "x", "b": "x", "c": "x", "d": "x"}) == [{ALL_KINDS: 0.0}, {ALL_KINDS: 0.0}]


def test_a_kind_with_enough_shared_configs_gets_its_own_offset():
    """Run B is 2x slower on conv and as fast on relu: conv has MIN_SHARED shared configs and its own offset,
    the few relu configs take the run's offset over all kinds."""
    conv = {f"c{i}": float(i % 7) for i in range(MIN_SHARED)}
    relu = {f"r{i}": float(i) for i in range(3)}
    kinds = {**dict.fromkeys(conv, "conv"), **dict.fromkeys(relu, "relu")}
    first = {**conv, **relu}
    second = {**{k: v + 1.0 for k, v in conv.items()}, **relu}
    offsets = run_offsets([first, second], kinds)
    assert offset_for(offsets[1], "conv") - offset_for(offsets[0], "conv") == pytest.approx(1.0)
    assert "relu" not in offsets[1]
    assert offset_for(offsets[1], "relu") == offsets[1][ALL_KINDS]


def test_groups_of_runs_that_share_nothing_are_centred_apart_with_their_own_precision():
    """Two pairs of runs (a plan profiled twice, then a draw profiled twice): each pair's offsets sum to zero,
    and each run's precision is that of the 100 configs linking it to its partner (2 x 100 for a pair)."""
    rng = np.random.default_rng(1)
    first = {f"a{i}": float(rng.uniform(-5, 5)) for i in range(100)}
    second = {f"b{i}": float(rng.uniform(-5, 5)) for i in range(100)}
    runs = [first, {k: v + 0.4 for k, v in first.items()}, second, {k: v - 0.2 for k, v in second.items()}]
    offsets = run_offsets(runs, {key: "x" for key in [*first, *second]})
    assert [offset[ALL_KINDS] for offset in offsets] == pytest.approx([-0.2, 0.2, 0.1, -0.1])
    assert _fit(runs, set(first) | set(second))[1] == pytest.approx([200.0] * 4)
    assert list(_fit([first, second], set())[1]) == [0.0, 0.0]  # nothing shared: no precision, offset 0


def test_a_run_that_falls_back_to_its_offset_over_all_kinds_stays_on_the_scale_of_a_kinds_own_offsets():
    """Four old runs share 100 conv and 100 relu configs; two new runs, 0.5 slower, share 60 of the relu configs
    and only 3 of the conv ones with them (too few for a conv offset of their own), plus 100 new conv configs.
    The new conv configs, corrected with the new runs' offset over all kinds, land on the old runs' conv scale."""
    rng = np.random.default_rng(2)
    conv = {f"c{i}": float(rng.uniform(-5, 5)) for i in range(100)}
    relu = {f"r{i}": float(rng.uniform(-5, 5)) for i in range(100)}
    new = {f"n{i}": float(rng.uniform(-5, 5)) for i in range(100)}
    kinds = {**dict.fromkeys([*conv, *new], "conv"), **dict.fromkeys(relu, "relu")}
    noisy = lambda table, shift: {k: v + shift + float(rng.normal(0, 0.02)) for k, v in table.items()}
    old = [{**noisy(conv, 0.0), **noisy(relu, 0.0)} for _ in range(4)]
    anchors = {**{k: conv[k] for k in list(conv)[:3]}, **{k: relu[k] for k in list(relu)[:60]}}
    later = [{**noisy(anchors, 0.5), **noisy(new, 0.5)} for _ in range(2)]
    offsets = run_offsets(old + later, kinds)
    assert "conv" in offsets[0] and "conv" not in offsets[4]
    assert offset_for(offsets[4], "conv") - offset_for(offsets[0], "conv") == pytest.approx(0.5, abs=0.02)
