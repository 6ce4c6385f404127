"""The algorithms are wired right: on pymoo's DTLZ2 (a known front) MOEA/D-PBI, NSGA-II and
regularized evolution, driven through the same ask/tell interface the search uses, get close."""
import numpy as np
import pytest

from mux_backbones.search.algorithms import build_algorithm, preference_ref_dirs


class GridSpace:
    """A continuous box as integer genes 0..steps (the interface the algorithms need)."""

    def __init__(self, n_var: int, steps: int = 1000):
        self.n_var, self.steps = n_var, steps
        self.xl = np.zeros(n_var, dtype=int)
        self.xu = np.full(n_var, steps)

    def canonical(self, x):
        return np.clip(np.rint(np.asarray(x, dtype=float)), self.xl, self.xu).astype(int)

    def sample(self, rng, n):
        return rng.integers(self.xl, self.xu + 1, size=(n, self.n_var))


def _run(name, generations, pop_size=24, seed=0, **kwargs):
    from pymoo.indicators.igd import IGD
    from pymoo.problems import get_problem
    problem = get_problem('dtlz2', n_var=6, n_obj=2)
    space = GridSpace(problem.n_var)
    algorithm = build_algorithm(name, space, 2, pop_size, seed, **kwargs)
    archive = []
    for _ in range(generations):
        X = algorithm.ask()
        F = problem.evaluate(X / space.steps)
        algorithm.tell(X, F)
        archive.append(F)
    F = np.concatenate(archive)
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting
    front = F[NonDominatedSorting().do(F, only_non_dominated_front=True)]
    return IGD(problem.pareto_front())(front)


@pytest.mark.parametrize('name, generations, threshold', [
    ('moead', 60, 0.03),
    ('nsga2', 60, 0.01),
    ('re', 120, 0.05),
])
def test_algorithms_approach_the_dtlz2_front(name, generations, threshold):
    assert _run(name, generations) < threshold


def test_preference_concentrates_the_directions():
    dirs = preference_ref_dirs(3, 20, np.array([0.1, 0.1, 0.8]), roi_width=0.2)
    assert np.allclose(dirs.sum(1), 1) and (dirs >= 0).all()
    w0 = np.array([0.1, 0.1, 0.8])
    assert np.abs(dirs - w0).max() <= 0.2 + 1e-9
    assert preference_ref_dirs(3, 20).std(0).min() > 0.1  # no preference: the whole simplex


def test_same_seed_same_proposals():
    a = build_algorithm('moead', GridSpace(4), 2, 8, seed=5)
    b = build_algorithm('moead', GridSpace(4), 2, 8, seed=5)
    assert (a.ask() == b.ask()).all()
