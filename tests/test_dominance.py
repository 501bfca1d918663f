"""The one non-dominated sort (dominance.py) against the brute-force definition on random points."""
import random

import pytest

from hovit_nas.dominance import MAXIMIZE, MINIMIZE, dominates, fronts, non_dominated


def _brute_dominates(a, b, senses):
    """Deb's definition, literally: no worse on every objective, strictly better on one."""
    no_worse = all((x >= y) if s == MAXIMIZE else (x <= y) for x, y, s in zip(a, b, senses))
    better = any((x > y) if s == MAXIMIZE else (x < y) for x, y, s in zip(a, b, senses))
    return no_worse and better


def _brute_rank(points, senses):
    """Front index of each point by peeling: rank k = dominated only by points of rank < k."""
    rank, left, k = {}, set(range(len(points))), 0
    while left:
        layer = {i for i in left if not any(_brute_dominates(points[j], points[i], senses) for j in left)}
        for i in layer:
            rank[i] = k
        left -= layer
        k += 1
    return rank


@pytest.mark.parametrize("seed", range(30))
def test_fronts_match_the_brute_force_definition_on_random_points(seed):
    rng = random.Random(seed)
    senses = [(MAXIMIZE, MINIMIZE), (MINIMIZE, MINIMIZE), (MAXIMIZE, MINIMIZE, MAXIMIZE)][seed % 3]
    n = rng.randint(0, 40)
    grid = rng.choice([None, 4])  # coarse values make ties and duplicates likely
    points = [tuple(rng.randint(0, grid) if grid else rng.random() for _ in senses) for _ in range(n)]
    for a in points[:10]:
        for b in points[:10]:
            assert dominates(a, b, senses) == _brute_dominates(a, b, senses)
    got = fronts(list(range(n)), key=lambda i: points[i], senses=senses)
    assert sorted(i for f in got for i in f) == list(range(n))  # every point in exactly one front
    rank = _brute_rank(points, senses)
    for k, front in enumerate(got):
        assert front == sorted(front)  # input order kept
        assert all(rank[i] == k for i in front)
    assert non_dominated(list(range(n)), key=lambda i: points[i], senses=senses) == (got[0] if got else [])


def test_default_objectives_are_accuracy_up_latency_down():
    assert dominates((0.9, 2.0), (0.8, 3.0)) and dominates((0.9, 2.0), (0.9, 3.0))
    assert not dominates((0.9, 2.0), (0.9, 2.0))  # equal points do not dominate each other
    assert not dominates((0.95, 5.0), (0.9, 2.0)) and not dominates((0.9, 2.0), (0.95, 5.0))
    assert non_dominated([(0.8, 5.0), (0.85, 4.0), (0.7, 2.0), (0.6, 6.0)]) == [(0.85, 4.0), (0.7, 2.0)]
    with pytest.raises(ValueError, match="2 objective values each"):
        dominates((0.9,), (0.8, 1.0))
