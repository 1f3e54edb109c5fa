"""Running mean/std: exact statistics, merges equal to one pass, fixed-order merges bit-stable, the filter's state round trip."""
import numpy as np

from unirl.filters import MeanStdFilter, RunningMeanStd, normalize


def data(n=1000, d=3, seed=0):
    return np.random.default_rng(seed).normal(2.0, 3.0, size=(n, d))


def test_from_batch_matches_numpy():
    x = data()
    rs = RunningMeanStd.from_batch(x)
    assert rs.count == len(x)
    np.testing.assert_allclose(rs.mean, x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(rs.var, x.var(axis=0), rtol=1e-12)
    np.testing.assert_allclose(rs.std, x.std(axis=0), rtol=1e-12)


def test_merge_of_parts_equals_whole():
    x = data()
    rs = RunningMeanStd((3,))
    for part in np.array_split(x, [10, 11, 400, 999]):
        rs.update(part)
    whole = RunningMeanStd.from_batch(x)
    assert rs.count == whole.count
    np.testing.assert_allclose(rs.mean, whole.mean, rtol=1e-12)
    np.testing.assert_allclose(rs.m2, whole.m2, rtol=1e-10)


def test_combine_equals_sequential_merge_and_is_order_stable():
    x = data()
    parts = [RunningMeanStd.from_batch(p) for p in np.array_split(x, 7)]
    combined = RunningMeanStd.combine([p.count for p in parts], [p.mean for p in parts], [p.m2 for p in parts])
    seq = RunningMeanStd((3,))
    for p in parts:
        seq.merge(p)
    np.testing.assert_allclose(combined.mean, seq.mean, rtol=1e-12)
    np.testing.assert_allclose(combined.m2, seq.m2, rtol=1e-10)
    again = RunningMeanStd.combine([p.count for p in parts], [p.mean for p in parts], [p.m2 for p in parts])
    assert combined.mean.tobytes() == again.mean.tobytes() and combined.m2.tobytes() == again.m2.tobytes()
    # An empty summary changes nothing.
    empty = RunningMeanStd((3,))
    before = seq.get_state()
    seq.merge(empty)
    assert all(np.array_equal(before[k], v) for k, v in seq.get_state().items())


def test_filter_identity_before_data_then_normalises_and_clips():
    f = MeanStdFilter((3,), clip=2.0)
    x = data(10)
    np.testing.assert_array_equal(f(x), np.clip(x, -2, 2).astype(np.float32))
    f.update(data())
    y = f(data(5000, seed=1))
    assert y.dtype == np.float32 and np.abs(y).max() <= 2.0
    np.testing.assert_allclose(y.mean(axis=0), 0.0, atol=0.1)


def test_min_std_floor_and_state_round_trip():
    f = MeanStdFilter((2,), min_std=0.5)
    f.update(np.array([[1.0, 0.0], [1.0, 10.0]]))
    mean, std = f.snapshot()
    np.testing.assert_array_equal(std, [0.5, 5.0])
    g = MeanStdFilter((2,), min_std=0.5)
    g.set_state(f.get_state())
    assert all(np.array_equal(a, b) for a, b in zip(f.snapshot(), g.snapshot()))
    np.testing.assert_array_equal(normalize([[2.0, 5.0]], mean, std), [[2.0, 0.0]])
