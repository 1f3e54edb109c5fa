"""Replay buffers: the sum tree against plain NumPy, prioritized sampling frequencies (chi-square on
100k draws), importance weights against the formula, priority updates touch exactly the sampled
leaves, ring order, and the state round trip."""
import numpy as np
import pytest

from unirl.replay import PrioritizedReplayBuffer, ReplayBuffer, SumTree


def fresh_tree_sums(leaves: np.ndarray, size: int) -> np.ndarray:
    """A plain reference: the full tree built bottom-up from scratch, level by level, in a loop."""
    tree = np.zeros(2 * size)
    tree[size:size + len(leaves)] = leaves
    for k in range(size - 1, 0, -1):
        tree[k] = tree[2 * k] + tree[2 * k + 1]
    return tree


@pytest.mark.parametrize("capacity", [1, 5, 64, 1000, 4096])
def test_sum_tree_updates_equal_a_fresh_build(capacity):
    """Batched updates (repeated indices included, and the contiguous, wrapping runs of slots that an
    add writes, which take the dense slice path) leave exactly the sums a fresh build gives, bit for bit."""
    rng = np.random.default_rng(capacity)
    tree = SumTree(capacity)
    leaves = np.zeros(capacity)
    seen = np.zeros(0, np.int64)  # leaves set so far: the min tree's minimum is over these
    ring = 0
    for step in range(50):
        if step % 2:  # an add's run of ring slots, wrapping past the end
            n = int(rng.integers(1, 300))
            idx = (ring + np.arange(n)) % capacity
            ring = (ring + n) % capacity
        else:
            idx = rng.integers(0, capacity, size=rng.integers(1, 40))
        vals = rng.random(len(idx)) * 10
        tree.update(idx, vals)
        for i, v in zip(idx, vals):  # the last write to a repeated index wins
            leaves[i] = v
        assert np.array_equal(tree.tree, fresh_tree_sums(leaves, tree.size))
        assert tree.min == leaves[np.unique(np.concatenate([seen, idx]))].min()
        seen = np.unique(np.concatenate([seen, idx]))
    assert np.array_equal(tree.leaves, leaves)


def test_sum_tree_find_equals_searchsorted_on_exact_sums():
    """With integer priorities every sum is exact, so the descent must equal searchsorted on the cumsum."""
    rng = np.random.default_rng(1)
    capacity = 777
    tree = SumTree(capacity)
    leaves = rng.integers(0, 5, size=capacity).astype(np.float64)  # zeros included: never found
    tree.update(np.arange(capacity), leaves)
    total = leaves.sum()
    assert tree.total == total
    mass = np.concatenate([np.arange(int(total)) + 0.0, np.arange(int(total)) + 0.5, rng.random(5000) * total])
    expected = np.searchsorted(np.cumsum(leaves), mass, side="right")
    assert np.array_equal(tree.find(mass), expected)
    assert np.all(leaves[tree.find(mass)] > 0)


def make_buffer(n=20, alpha=0.6, capacity=32, seed=0):
    buf = PrioritizedReplayBuffer(capacity, alpha=alpha, eps=1e-6)
    buf.add({"x": np.arange(n, dtype=np.float32), "a": np.arange(n) % 3})
    prios = np.random.default_rng(seed).random(n) * 5 + 0.01
    buf.update_priorities(np.arange(n), prios)
    return buf, prios


def test_prioritized_frequencies_chi_square():
    """100k draws: the counts per row fit P(i) = p_i^alpha / sum p^alpha (chi-square, df 19, p = 0.001)."""
    buf, prios = make_buffer(20, alpha=0.7)
    p = (np.abs(prios) + 1e-6) ** 0.7
    p /= p.sum()
    rng = np.random.default_rng(123)
    n = 100_000
    idx = np.concatenate([buf.sample(1000, rng, beta=0.5)[1] for _ in range(n // 1000)])
    counts = np.bincount(idx, minlength=20)
    expected = n * p
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    from scipy.stats import chi2 as chi2_dist

    assert chi2 < chi2_dist.ppf(0.999, df=19), (chi2, counts, expected)
    # A wrong distribution (uniform) must fail the same test: the test has teeth.
    uniform = np.full(20, n / 20)
    assert float(((counts - uniform) ** 2 / uniform).sum()) > chi2_dist.ppf(0.999, df=19)


def test_importance_weights_formula():
    buf, prios = make_buffer(20, alpha=0.6)
    rows, idx, w = buf.sample(256, np.random.default_rng(5), beta=0.4)
    p = (np.abs(prios) + 1e-6) ** 0.6
    P = p / p.sum()
    expected = (20 * P[idx]) ** -0.4 / ((20 * P.min()) ** -0.4)
    np.testing.assert_allclose(w, expected.astype(np.float32), rtol=1e-6)
    assert w.dtype == np.float32 and w.max() <= 1.0
    assert np.array_equal(rows["x"], idx.astype(np.float32))


def test_priority_update_changes_exactly_the_sampled_leaves():
    buf, _ = make_buffer(20)
    before = buf.tree.leaves.copy()
    _, idx, _ = buf.sample(8, np.random.default_rng(9), beta=0.4)
    td = np.random.default_rng(10).standard_normal(len(idx))
    buf.update_priorities(idx, td)
    after = buf.tree.leaves
    changed = np.flatnonzero(after != before)
    assert set(changed) <= set(idx.tolist())
    last = {}
    for i, t in zip(idx, td):
        last[int(i)] = t
    for i, t in last.items():
        assert after[i] == (abs(t) + 1e-6) ** 0.6
    assert np.array_equal(np.delete(after, idx), np.delete(before, idx))


def test_new_rows_get_the_max_priority():
    buf, prios = make_buffer(10)
    buf.add({"x": np.array([100.0], np.float32), "a": np.array([0])})
    assert buf.tree.leaves[10] == (prios.max() + 1e-6) ** 0.6
    # explicit initial priorities (Ape-X actors) are used as given and raise the max
    buf.add({"x": np.array([101.0], np.float32), "a": np.array([1])}, priorities=np.array([50.0]))
    assert buf.tree.leaves[11] == 50.0 ** 0.6 and buf.max_priority == 50.0


def test_ring_overwrites_oldest_first_and_uniform_sampling():
    buf = ReplayBuffer(5)
    for start in range(0, 12, 3):
        buf.add({"x": np.arange(start, start + 3)})
    assert len(buf) == 5 and buf.rows_added == 12
    assert sorted(buf.columns["x"].tolist()) == [7, 8, 9, 10, 11]
    rows, idx, w = buf.sample(1000, np.random.default_rng(0))
    assert set(rows["x"].tolist()) == {7, 8, 9, 10, 11} and np.all(w == 1)
    big = ReplayBuffer(4)
    big.add({"x": np.arange(10)})
    assert sorted(big.columns["x"].tolist()) == [6, 7, 8, 9] and big.next_index == 2


@pytest.mark.parametrize("prioritized", [False, True])
def test_state_round_trip(prioritized, tmp_path):
    from unirl.checkpoint import load_checkpoint, save_checkpoint

    def filled():
        buf = PrioritizedReplayBuffer(16) if prioritized else ReplayBuffer(16)
        for k in range(5):
            buf.add({"obs": np.random.default_rng(k).random((5, 3)).astype(np.float32), "a": np.arange(5) + k})
        if prioritized:
            buf.update_priorities(np.arange(0, 16, 3), np.arange(6) * 0.5)
        return buf

    buf = filled()
    arrays, meta = buf.get_state()
    save_checkpoint(str(tmp_path), arrays, {"replay": meta})
    arrays2, state2 = load_checkpoint(str(tmp_path))
    other = PrioritizedReplayBuffer(16) if prioritized else ReplayBuffer(16)
    other.set_state(arrays2, state2["replay"])
    assert other.next_index == buf.next_index and len(other) == len(buf)
    for k in buf.columns:
        assert np.array_equal(other.columns[k], buf.columns[k])
    if prioritized:
        assert np.array_equal(other.tree.tree, buf.tree.tree) and other.max_priority == buf.max_priority
    r1 = buf.sample(50, np.random.default_rng(3), beta=0.5)
    r2 = other.sample(50, np.random.default_rng(3), beta=0.5)
    assert np.array_equal(r1[1], r2[1]) and np.array_equal(r1[2], r2[2])
