"""Search algorithms behind one ask/tell interface: MOEA/D with PBI decomposition (the paper's,
from pymoo), NSGA-II and NSGA-III (pymoo), and regularized evolution (Real et al., AAAI 2019),
the paper's baseline, which pymoo does not have.

Objectives are minimised and normalised to [0, 1] by the search (see :mod:`.engine`), so PBI's
penalty and the reference directions see comparable scales. A user's preference enters MOEA/D
and NSGA-III as reference directions concentrated around the direction of a reference point
(:func:`preference_ref_dirs`), the paper's region of interest on the Pareto surface.
"""
from typing import Optional, Sequence

import numpy as np

from .space import MUXNetSpace

ALGORITHMS = ('moead', 'nsga2', 'nsga3', 're')


def preference_ref_dirs(n_obj: int, n_points: int, ref_point: Optional[np.ndarray] = None,
                        roi_width: float = 1.0, seed: int = 0) -> np.ndarray:
    """``n_points`` reference directions, spread around ``ref_point``'s direction.

    Args:
        n_obj (int): Number of objectives.
        n_points (int): Number of directions (the population size of MOEA/D).
        ref_point (np.ndarray, optional): The preferred point in normalised objective space
            (each in [0, 1]); None spreads the directions over the whole simplex.
        roi_width (float): Width of the region of interest, in (0, 1]: each direction ``w``
            becomes ``(1 - roi_width) * w0 + roi_width * w`` with ``w0`` the reference
            point's direction. 1 keeps the whole simplex.
        seed (int): Seed of the Riesz-energy construction of the directions.
    """
    from pymoo.util.ref_dirs import get_reference_directions
    if n_points < n_obj:
        # Fewer directions than objectives leave an objective without its own; pymoo 0.6.2's
        # Riesz-energy factory also fails there (its reduction step starts its farthest-point
        # selection from no point and no random state: AttributeError on None.integers).
        raise ValueError(f'{n_points} reference directions for {n_obj} objectives: MOEA/D and '
                         f'NSGA-III need a population of at least one per objective')
    dirs = get_reference_directions('energy', n_obj, n_points, seed=seed)
    if ref_point is None or roi_width >= 1:
        return dirs
    w0 = np.clip(np.asarray(ref_point, dtype=float), 1e-6, None)
    w0 = w0 / w0.sum()
    return (1 - roi_width) * w0[None] + roi_width * dirs


def nondominated_rank(F: np.ndarray) -> np.ndarray:
    """Non-dominated sorting rank of each row of ``F`` (0: the first front)."""
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting
    rank = np.empty(len(F), dtype=int)
    for r, front in enumerate(NonDominatedSorting().do(F)):
        rank[front] = r
    return rank


class RegularizedEvolution:
    """Aging evolution (Real et al., AAAI 2019) for several objectives, in batches.

    A queue of ``pop_size`` architectures; each child comes from a tournament of
    ``sample_size`` members drawn at random (the winner: best non-dominated rank within the
    sample, ties broken at random), mutated in one gene; the oldest members leave as children
    join. Started from ``pop_size`` random points.

    Args:
        space (MUXNetSpace): The encoding.
        pop_size (int): Size of the aging population (and of each batch of children).
        sample_size (int): Tournament size. Default: ``max(2, pop_size // 4)``.
        seed (int): Seed of its random generator.
    """

    def __init__(self, space: MUXNetSpace, pop_size: int, sample_size: Optional[int] = None,
                 seed: int = 0):
        self.space = space
        self.pop_size = pop_size
        self.sample_size = sample_size or max(2, pop_size // 4)
        self.rng = np.random.default_rng(seed)
        self.X = np.zeros((0, space.n_var), dtype=int)
        self.F = np.zeros((0, 0))

    def ask(self) -> np.ndarray:
        if len(self.X) < self.pop_size:
            return self.space.sample(self.rng, self.pop_size - len(self.X))
        children = []
        for _ in range(self.pop_size):
            sample = self.rng.choice(len(self.X), self.sample_size, replace=False)
            rank = nondominated_rank(self.F[sample])
            best = sample[self.rng.choice(np.flatnonzero(rank == rank.min()))]
            children.append(mutate(self.space, self.X[best], self.rng, genes=1))
        return np.stack(children)

    def tell(self, X: np.ndarray, F: np.ndarray) -> None:
        self.X = np.concatenate([self.X, X])[-self.pop_size:]
        self.F = (np.concatenate([self.F, F]) if len(self.F) else F)[-self.pop_size:]


def mutate(space: MUXNetSpace, x: np.ndarray, rng: np.random.Generator, genes: int = 1):
    """``x`` with ``genes`` random genes set to another of their choices (canonical form)."""
    x = np.array(x, dtype=int)
    free = np.flatnonzero(space.xu > 0)
    for i in rng.choice(free, size=min(genes, len(free)), replace=False):
        others = [v for v in range(space.xu[i] + 1) if v != x[i]]
        x[i] = rng.choice(others)
    return space.canonical(x)


def _pymoo_operator(base: str):
    """A pymoo operator class bound to a space (module level, so the state pickles)."""
    from pymoo.core.repair import Repair
    from pymoo.core.sampling import Sampling
    return dict(repair=Repair, sampling=Sampling)[base]


class _CanonicalRepair(_pymoo_operator('repair')):
    """Rounded offspring in the space's canonical form (unused genes 0, valid scale splits)."""

    def __init__(self, space: MUXNetSpace):
        super().__init__()
        self.space = space

    def _do(self, problem, X, **kwargs):
        return np.stack([self.space.canonical(x) for x in X])


class _SpaceSampling(_pymoo_operator('sampling')):
    """The initial population: uniform canonical points of the space."""

    def __init__(self, space: MUXNetSpace):
        super().__init__()
        self.space = space

    def _do(self, problem, n_samples, random_state=None, **kwargs):
        return self.space.sample(random_state, n_samples)


class PymooAlgorithm:
    """A pymoo algorithm driven by ask/tell on integer genes, in the same interface as
    :class:`RegularizedEvolution` (``ask() -> X``, ``tell(X, F)``).

    Args:
        name (str): ``'moead'`` (pymoo's MOEA/D with PBI decomposition, evaluating a batch of
            one offspring per subproblem per generation), ``'nsga2'`` or ``'nsga3'``.
        space (MUXNetSpace): The encoding.
        n_obj (int): Number of objectives.
        pop_size (int): Population size (the number of reference directions for MOEA/D and
            NSGA-III).
        seed (int): Seed.
        ref_point (np.ndarray, optional): Preferred point in normalised objective space.
        roi_width (float): Region-of-interest width around ``ref_point`` (see
            :func:`preference_ref_dirs`).
        n_neighbors (int, optional): MOEA/D neighbourhood size. Default: half the population.
        prob_neighbor_mating (float): MOEA/D's probability of mating within the neighbourhood.
        pbi_theta (float): PBI's penalty. Default: 5 (pymoo's).
    """

    def __init__(self, name: str, space: MUXNetSpace, n_obj: int, pop_size: int, seed: int = 0,
                 ref_point: Optional[Sequence[float]] = None, roi_width: float = 1.0,
                 n_neighbors: Optional[int] = None, prob_neighbor_mating: float = 0.9,
                 pbi_theta: float = 5.0):
        from pymoo.core.problem import Problem
        from pymoo.operators.crossover.sbx import SBX
        from pymoo.operators.mutation.pm import PM
        from pymoo.operators.repair.rounding import RoundingRepair

        operators = dict(sampling=_SpaceSampling(space),
                         # Small eta: wide steps, or rounding hands the parents back.
                         crossover=SBX(prob=0.9, eta=3, vtype=float, repair=RoundingRepair()),
                         mutation=PM(eta=3, vtype=float, repair=RoundingRepair()),
                         repair=_CanonicalRepair(space))
        if name == 'moead':
            from pymoo.algorithms.moo.moead import ParallelMOEAD
            from pymoo.decomposition.pbi import PBI
            dirs = preference_ref_dirs(n_obj, pop_size, ref_point, roi_width, seed)
            self.algorithm = ParallelMOEAD(
                dirs, n_neighbors=n_neighbors or max(2, pop_size // 2),
                decomposition=PBI(theta=pbi_theta), prob_neighbor_mating=prob_neighbor_mating,
                **operators)
        elif name == 'nsga2':
            from pymoo.algorithms.moo.nsga2 import NSGA2
            self.algorithm = NSGA2(pop_size=pop_size, eliminate_duplicates=True, **operators)
        elif name == 'nsga3':
            from pymoo.algorithms.moo.nsga3 import NSGA3
            dirs = preference_ref_dirs(n_obj, pop_size, ref_point, roi_width, seed)
            self.algorithm = NSGA3(dirs, pop_size=pop_size, eliminate_duplicates=True,
                                   **operators)
        else:
            raise ValueError(f'unknown algorithm "{name}"; choose one of {ALGORITHMS}')
        problem = Problem(n_var=space.n_var, n_obj=n_obj, xl=space.xl, xu=space.xu, vtype=int)
        self.algorithm.setup(problem, seed=seed)
        self._pending = None

    def ask(self) -> np.ndarray:
        self._pending = self.algorithm.ask()
        return np.rint(self._pending.get('X')).astype(int)

    def tell(self, X: np.ndarray, F: np.ndarray) -> None:
        self._pending.set('X', X)
        self._pending.set('F', F)
        self.algorithm.tell(infills=self._pending)
        self._pending = None

    def slot_weights(self) -> Optional[np.ndarray]:
        """MOEA/D: the weight vector of each asked slot's subproblem (None for the others)."""
        indices = getattr(self.algorithm, 'indices', None)
        if indices is None or not hasattr(self.algorithm, 'ref_dirs'):
            return None
        return self.algorithm.ref_dirs[indices]


def build_algorithm(name: str, space: MUXNetSpace, n_obj: int, pop_size: int, seed: int = 0,
                    **kwargs):
    """An ask/tell search algorithm by name (``ALGORITHMS``)."""
    if name == 're':
        kwargs = {k: v for k, v in kwargs.items() if k == 'sample_size'}
        return RegularizedEvolution(space, pop_size, seed=seed, **kwargs)
    kwargs.pop('sample_size', None)
    return PymooAlgorithm(name, space, n_obj, pop_size, seed, **kwargs)
