"""The search loop: evaluate, keep the archive, measure progress, save state, resume.

Each generation the algorithm proposes architectures (``ask``); with a surrogate, several
candidates per slot are drawn and the most promising one kept (:mod:`.surrogate`); the ones not in
the cache are evaluated through an executor (local processes, or a Ray cluster); the algorithm is
told the normalised objectives (``tell``). After every evaluation the cache is written, and after
every generation the state (algorithm, archive, random state, progress); both atomically, so a
``kill -9`` loses at most the evaluations in flight, and ``--resume`` repeats none of those done.

Objectives are minimised internally: ``1 - acc`` (scores from ``train``) or ``-acc`` (other
evaluators), params, MAdds, latency, each normalised by fixed bounds (``SearchSettings.bounds``) to
[0, 1] for the algorithms and the hypervolume.
"""
import csv
import functools
import json
import logging
import math
import os
import os.path as osp
import pickle
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..engine.atomic_backend import atomic_write
from ..utils.arguments import is_int, is_real, is_sequence
from .algorithms import ALGORITHMS, build_algorithm, mutate, nondominated_rank
from .objectives import arch_hash, build_evaluator, check_objectives, complexity, measure_latency
from .space import MUXNetSpace
from .surrogate import RidgeSurrogate, kendall_tau

STATE_VERSION = 1
HV_REF = 1.1  # the hypervolume reference point in normalised space, per objective
# Generations in a row that propose only evaluated architectures before the search stops:
# the budget counts evaluations, so a converged population would otherwise never spend it.
MAX_STALE_GENERATIONS = 5
_KEYS = dict(acc='score', params='params', madds='madds', latency='latency_ms')


class SearchError(ValueError):
    """A search cannot start or resume as asked (the message names the setting or file)."""


@dataclass
class SearchSettings:
    """What defines a search; a resumed search must have the same (see ``fingerprint``).

    Attributes:
        objectives: Names from ``OBJECTIVES``.
        evaluator: ``dict(type=<EVALUATORS name>, **kwargs)``.
        algorithm: One of ``ALGORITHMS``.
        pop_size: Population size (evaluations per generation).
        budget: Evaluations in all (the initial population included).
        seed: Seed of everything random.
        bounds: Per objective ``(best, worst)`` in raw units, mapped to 0 and 1.
        ref_point: Preferred raw point per objective (MOEA/D, NSGA-III), or None.
        roi_width: Width of the region of interest around ``ref_point``.
        limits: Hard budgets per objective in raw units (e.g. ``dict(params=1.8,
            madds=66)``): an architecture beyond one is penalised in every normalised objective
            by 10x its relative excess, so all algorithms are driven into the budget, and it
            stays off the Pareto front.
        surrogate_candidates: Candidates per slot pre-screened by the surrogate (1: off).
        latency: ``dict(device, batch_sizes, shape)`` of the latency objective.
        algorithm_args: Extra arguments of the algorithm (``n_neighbors``, ``sample_size``, ...).
    """
    objectives: Sequence[str] = ('acc', 'params', 'madds')
    evaluator: dict = field(default_factory=lambda: dict(type='synflow'))
    algorithm: str = 'moead'
    pop_size: int = 12
    budget: int = 48
    seed: int = 0
    bounds: Dict[str, Sequence[float]] = field(default_factory=dict)
    ref_point: Optional[Dict[str, float]] = None
    roi_width: float = 1.0
    limits: Optional[Dict[str, float]] = None
    surrogate_candidates: int = 1
    latency: dict = field(default_factory=lambda: dict(device='cpu', batch_sizes=(1, ),
                                                       shape=224))
    algorithm_args: dict = field(default_factory=dict)

    def __post_init__(self):
        """Each setting's type and range, named in a :class:`SearchError` before a search
        starts (the objectives, evaluator and algorithm are checked by :class:`Search`)."""
        for name, minimum in (('pop_size', 2), ('budget', 1), ('surrogate_candidates', 1),
                              ('seed', 0)):
            value = getattr(self, name)
            if not (is_int(value) and value >= minimum):
                raise SearchError(f'{name} must be an integer >= {minimum}, got {value!r}')
        if not (is_real(self.roi_width) and 0 < self.roi_width <= 1):
            raise SearchError(f'roi_width must lie in (0, 1], got {self.roi_width!r}')
        for name in ('evaluator', 'bounds', 'latency', 'algorithm_args'):
            if not isinstance(getattr(self, name), dict):
                raise SearchError(f'{name} must be a dict, got {getattr(self, name)!r}')
        for name, pair in self.bounds.items():
            if not is_sequence(pair) or len(pair) != 2 or \
                    not all(is_real(v) and math.isfinite(v) for v in pair):
                raise SearchError(f'bounds.{name} must be (best, worst), two finite numbers, '
                                  f'got {pair!r}')

    def fingerprint(self) -> dict:
        """The settings as plain data (lists for tuples), for the resume check."""
        return json.loads(json.dumps(asdict(self), default=list))


def settings_from_config(path: str, **overrides) -> SearchSettings:
    """The ``search = dict(...)`` of a config file, with the non-None ``overrides`` applied."""
    from mmengine.config import Config
    if not osp.isfile(path):
        raise SearchError(f'config file not found: {path}')
    values = Config.fromfile(path).get('search', {})
    if not isinstance(values, dict):
        raise SearchError(f'{path}: "search" must be a dict of search settings, got {values!r}')
    values = dict(values)
    unknown = set(values) - set(SearchSettings.__dataclass_fields__)
    if unknown:
        raise SearchError(f'{path}: unknown search setting "{sorted(unknown)[0]}"')
    values.update({k: v for k, v in overrides.items() if v is not None})
    return SearchSettings(**values)


def evaluate_arch(arch: str, evaluator_cfg: dict, objectives: Sequence[str],
                  latency_cfg: dict) -> dict:
    """All objectives of one arch (what an executor runs): a row of the history."""
    params, madds = complexity(arch)
    row = dict(arch=arch, params=params, madds=madds)
    if 'acc' in objectives:
        row['score'] = build_evaluator(evaluator_cfg)(arch)
    if 'latency' in objectives:
        batches = latency_cfg.get('batch_sizes', (1, ))
        times = measure_latency(arch, latency_cfg.get('device', 'cpu'), batches,
                                latency_cfg.get('shape', 224))
        row['latency_ms'] = times[batches[0]]
        for batch, ms in times.items():
            row[f'latency_b{batch}_ms'] = ms
    return row


class LocalExecutor:
    """Evaluations in this process (``workers=1``) or a pool of processes."""

    def __init__(self, workers: int = 1):
        self.workers = workers
        self.pool = None
        if workers > 1:
            from concurrent.futures import ProcessPoolExecutor
            self.pool = ProcessPoolExecutor(max_workers=workers)

    def map(self, fn, items, callback):
        if self.pool is None:
            for item in items:
                callback(fn(item))
            return
        from concurrent.futures import as_completed
        futures = [self.pool.submit(fn, item) for item in items]
        for future in as_completed(futures):
            callback(future.result())

    def close(self):
        if self.pool is not None:
            self.pool.shutdown()


class RayExecutor:
    """Evaluations as Ray tasks on a cluster (``--ray-address``); Ray is optional."""

    def __init__(self, address: str, num_gpus: float = 0):
        try:
            import ray
        except ImportError:
            raise SearchError('--ray-address needs Ray: pip install "ray[default]"') from None
        self.ray = ray
        ray.init(address=address, ignore_reinit_error=True)
        self.num_gpus = num_gpus

    def map(self, fn, items, callback):
        remote = self.ray.remote(num_gpus=self.num_gpus)(fn)
        pending = [remote.remote(item) for item in items]
        while pending:
            done, pending = self.ray.wait(pending, num_returns=1)
            callback(self.ray.get(done[0]))

    def close(self):
        pass


class _Evaluate:
    """Picklable ``arch -> row`` for executors."""

    def __init__(self, settings: SearchSettings):
        self.evaluator = dict(settings.evaluator)
        self.objectives = tuple(settings.objectives)
        self.latency = dict(settings.latency)

    def __call__(self, arch: str) -> dict:
        return evaluate_arch(arch, self.evaluator, self.objectives, self.latency)


class Search:
    """One search in a work dir: run it, resume it, read its results.

    Args:
        settings (SearchSettings): What to search.
        work_dir (str): Where state, cache, CSVs, plot and log go.
        resume (bool): Continue the search saved in ``work_dir``.
        executor: ``map(fn, items, callback)``/``close()``; default: this process.
    """

    def __init__(self, settings: SearchSettings, work_dir: str, resume: bool = False,
                 executor=None):
        self.settings = settings
        self.work_dir = work_dir
        self.space = MUXNetSpace()
        try:
            self.objectives = check_objectives(settings.objectives)
            # names an unknown evaluator, or an argument it lacks, now, not mid-search
            build_evaluator(settings.evaluator)
        except (TypeError, ValueError) as err:
            raise SearchError(str(err)) from None
        if settings.algorithm not in ALGORITHMS:
            raise SearchError(f'unknown algorithm "{settings.algorithm}"; choose one of '
                              f'{ALGORITHMS}')
        for name, limit in (settings.limits or {}).items():
            if name not in ('params', 'madds', 'latency') or not limit > 0:
                raise SearchError(f'limit {name}={limit!r}: limits are positive budgets of '
                                  f'params, madds or latency')
            self._check_reachable('limit', name, limit)
        if settings.budget < settings.pop_size:
            raise SearchError(f'budget {settings.budget} is below one generation (pop_size '
                              f'{settings.pop_size} evaluations)')
        self.bounds = self._bounds()
        self.executor = executor or LocalExecutor()
        self.log = _logger(work_dir)
        self.state_file = osp.join(work_dir, 'state.pkl')
        self.cache_file = osp.join(work_dir, 'cache.json')
        if resume:
            self._load()
        else:
            if osp.exists(self.state_file):
                raise SearchError(f'{self.state_file} exists: pass --resume to continue that '
                                  f'search, or choose another --work-dir')
            ref = self._normalise_ref_point()
            try:
                self.algorithm = build_algorithm(
                    settings.algorithm, self.space, len(self.objectives), settings.pop_size,
                    settings.seed, ref_point=ref, roi_width=settings.roi_width,
                    **settings.algorithm_args)
            except TypeError as err:  # an algorithm_args key the algorithm does not take
                raise SearchError(f'algorithm_args: {err}') from None
            except ValueError as err:  # a population the algorithm cannot work with
                raise SearchError(str(err)) from None
            self.rng = np.random.default_rng(settings.seed + 1)
            self.cache: Dict[str, dict] = {}
            self.history: List[dict] = []
            self.progress: List[dict] = []
            self.generation = 0

    # -- objectives --------------------------------------------------------------------------
    def _bounds(self) -> Dict[str, np.ndarray]:
        bounds = {}
        for name in self.objectives:
            if name in self.settings.bounds:
                bounds[name] = np.asarray(self.settings.bounds[name], dtype=float)
            elif name == 'acc' and self.settings.evaluator.get('type') == 'train':
                bounds[name] = np.array([1.0, 0.0])
            else:
                raise SearchError(f'no bounds for objective "{name}": give '
                                  f'bounds.{name} = (best, worst) in the search config')
            if bounds[name][0] == bounds[name][1]:
                raise SearchError(f'bounds of "{name}" are empty: {tuple(bounds[name])}')
        return bounds

    def normalise(self, rows: Sequence[dict]) -> np.ndarray:
        """Rows of the history as normalised, minimised objectives (one column each)."""
        F = np.array([[row[_KEYS[name]] for name in self.objectives] for row in rows],
                     dtype=float)
        best = np.array([self.bounds[n][0] for n in self.objectives])
        worst = np.array([self.bounds[n][1] for n in self.objectives])
        F = (F - best) / (worst - best)
        F = np.where(np.isfinite(F), F, 10.0)  # a failed score ranks last
        return F + 10 * self.excess(rows)[:, None]

    def excess(self, rows: Sequence[dict]) -> np.ndarray:
        """Summed relative excess of each row over ``limits`` (0 within the budgets)."""
        total = np.zeros(len(rows))
        for name, limit in (self.settings.limits or {}).items():
            values = np.array([row.get(_KEYS[name], np.inf) for row in rows], dtype=float)
            total += np.clip(values / limit - 1, 0, None)
        return total

    @functools.cached_property
    def _smallest(self) -> Dict[str, float]:
        """Params and MAdds (M) of the space's smallest architecture."""
        return dict(zip(('params', 'madds'), smallest_complexity(self.space)))

    def _check_reachable(self, what: str, name: str, value: float) -> None:
        """No architecture of the space lies below its smallest one's params or MAdds."""
        if name in self._smallest and value < self._smallest[name]:
            raise SearchError(f'{what} {name}={value:g}M is unreachable: the smallest '
                              f'architecture of the space has {self._smallest[name]:.3g}M')

    def _normalise_ref_point(self) -> Optional[np.ndarray]:
        ref = self.settings.ref_point
        if not ref:
            return None
        unknown = set(ref) - set(self.objectives)
        if unknown:
            raise SearchError(f'reference point names "{sorted(unknown)[0]}", which is not an '
                              f'objective of this search {self.objectives}')
        for name, value in ref.items():
            if not (is_real(value) and math.isfinite(value)):
                raise SearchError(f'reference point {name}={value!r}: expected a finite number')
            self._check_reachable('reference point', name, value)
            best, worst = self.bounds[name]
            if name == 'acc' and (value - best) * (best - worst) > 0:
                raise SearchError(f'reference point acc={value:g} is unreachable: scores of '
                                  f'this search lie between {worst:g} and {best:g}')
        # An objective the point leaves out gets its worst bound: the ray from the ideal point
        # through the point then meets the front where the named objectives are met (a point
        # of params and MAdds alone lands among the architectures of that size).
        row = {_KEYS[n]: ref.get(n, self.bounds[n][1]) for n in self.objectives}
        return np.clip(self.normalise([row])[0], 0, 1)

    # -- persistence -------------------------------------------------------------------------
    def _save(self) -> None:
        state = dict(version=STATE_VERSION, settings=self.settings.fingerprint(),
                     algorithm=self.algorithm, rng=self.rng, history=self.history,
                     progress=self.progress, generation=self.generation)
        atomic_write(pickle.dumps(state), self.state_file)

    def _save_cache(self) -> None:
        atomic_write(json.dumps(self.cache).encode(), self.cache_file)

    def _load(self) -> None:
        if not osp.isfile(self.state_file):
            raise SearchError(f'nothing to resume: {self.state_file} not found')
        try:
            with open(self.state_file, 'rb') as f:
                state = pickle.load(f)  # our own file, written by _save
            with open(self.cache_file) as f:
                self.cache = json.load(f)
        except (OSError, EOFError, pickle.UnpicklingError, json.JSONDecodeError, ValueError,
                AttributeError, ImportError) as err:
            raise SearchError(f'resume state in {self.work_dir} is corrupt: '
                              f'{type(err).__name__}: {err}') from None
        if not isinstance(state, dict) or state.get('version') != STATE_VERSION:
            raise SearchError(f'{self.state_file} is not a search state of this version')
        saved, now = state['settings'], self.settings.fingerprint()
        for key in now:
            if saved.get(key) != now[key]:
                raise SearchError(f'cannot resume: {key} was {saved.get(key)!r} in the saved '
                                  f'search and is {now[key]!r} now')
        self.algorithm, self.rng = state['algorithm'], state['rng']
        self.history, self.progress = state['history'], state['progress']
        self.generation = state['generation']
        self.log.info(f'resumed at generation {self.generation}, {len(self.history)} '
                      f'evaluations, {len(self.cache)} cached')

    # -- one generation ----------------------------------------------------------------------
    def _prescreen(self, X: np.ndarray) -> tuple:
        """Draw candidates per slot and keep the best predicted; returns (X, predictions)."""
        m = self.settings.surrogate_candidates
        if m <= 1 or 'acc' not in self.objectives:
            return X, None
        surrogate = RidgeSurrogate(self.space.xu)
        done = [r for r in self.history if np.isfinite(r.get('score', np.nan))]
        surrogate.fit(np.stack([self.space.encode_string(r['arch']) for r in done])
                      if done else np.zeros((0, self.space.n_var)), [r['score'] for r in done])
        if not surrogate.fitted:
            return X, None
        weights = getattr(self.algorithm, 'slot_weights', lambda: None)()
        chosen, predicted = [], []
        for i, x in enumerate(X):
            cands = [x] + [mutate(self.space, x, self.rng, genes=2) for _ in range(m - 1)]
            scores = surrogate.predict(np.stack(cands))
            rows = []
            for c, score in zip(cands, scores):
                params, madds = complexity(self.space.arch_string(c))
                # Latency is not predicted: every candidate gets the best bound, so it does
                # not decide between them.
                rows.append(dict(score=score, params=params, madds=madds,
                                 latency_ms=self.bounds.get('latency', (0, 1))[0]))
            F = self.normalise(rows)
            if weights is not None:
                from pymoo.decomposition.pbi import PBI
                value = PBI().do(F, weights=weights[i][None], ideal_point=np.zeros(F.shape[1]))
                best = int(np.argmin(value))
            else:
                rank = nondominated_rank(F)
                best = int(np.argmin(rank * 1e3 + F[:, 0]))
            chosen.append(cands[best])
            predicted.append(float(scores[best]))
        return np.stack(chosen), predicted

    def step(self, progress_bar: bool = False) -> None:
        """Run one generation (ask, pre-screen, evaluate the new archs, tell, save)."""
        X = self.algorithm.ask()
        X, predicted = self._prescreen(X)
        archs = [self.space.arch_string(x) for x in X]
        todo = [a for a in dict.fromkeys(archs) if a not in self.cache]
        bar = None
        if progress_bar:
            from tqdm import tqdm
            bar = tqdm(total=len(todo), desc=f'generation {self.generation}', unit='arch',
                       leave=False)

        def done(row):
            self.cache[row['arch']] = row
            self._save_cache()
            if bar is not None:
                bar.update()

        self.executor.map(_Evaluate(self.settings), todo, done)
        if bar is not None:
            bar.close()
        rows, known = [], {r['arch'] for r in self.history}
        for arch in archs:
            row = dict(self.cache[arch], generation=self.generation, hash=arch_hash(arch))
            if arch not in known:  # evaluated now, or before a kill in this generation
                self.history.append(row)
                known.add(arch)
            rows.append(row)
        self.algorithm.tell(X, self.normalise(rows))
        tau = kendall_tau(predicted, [r.get('score') for r in rows]) if predicted else None
        record = dict(generation=self.generation, evaluations=len(self.history),
                      hypervolume=self.hypervolume(), kendall_tau=tau)
        self.progress.append(record)
        self.generation += 1
        self._save()
        self.log.info(f'generation {record["generation"]}: {record["evaluations"]} '
                      f'evaluations, hypervolume {record["hypervolume"]:.4f}'
                      + (f', surrogate Kendall tau {tau:.3f}' if tau is not None else ''))

    def run(self, progress_bar: bool = False) -> None:
        """Generations until the budget of evaluations is spent (the last one is completed,
        so a budget that is not a multiple of the population size is rounded up)."""
        try:
            while len(self.history) < self.settings.budget:
                self.step(progress_bar)
                recent = [p['evaluations'] for p in self.progress[-MAX_STALE_GENERATIONS - 1:]]
                if len(recent) > MAX_STALE_GENERATIONS and recent[0] == recent[-1]:
                    self.log.info(f'stopped: {MAX_STALE_GENERATIONS} generations proposed no '
                                  f'architecture not evaluated before')
                    break
        finally:
            self.executor.close()
        self.write_results()

    # -- results -----------------------------------------------------------------------------
    def hypervolume(self) -> float:
        """Hypervolume of the archive in normalised space (reference point 1.1 per objective)."""
        from pymoo.indicators.hv import HV
        if not self.history:
            return 0.0
        F = self.normalise(self.history)
        return float(HV(ref_point=np.full(F.shape[1], HV_REF))(F))

    def pareto_rows(self) -> List[dict]:
        """The non-dominated evaluated architectures, best score first."""
        from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting
        if not self.history:
            return []
        feasible = [r for r, e in zip(self.history, self.excess(self.history)) if e == 0]
        if not feasible:
            return []
        front = NonDominatedSorting().do(self.normalise(feasible), only_non_dominated_front=True)
        rows = [feasible[i] for i in front]
        return sorted(rows, key=lambda r: (-r.get('score', 0), r['madds']))

    def write_results(self) -> None:
        """``pareto.csv``, ``history.csv`` and ``pareto.png`` in the work dir."""
        columns = ['arch', 'params', 'madds'] + (['score'] if 'acc' in self.objectives else []) \
            + (['latency_ms'] if 'latency' in self.objectives else [])
        _write_csv(osp.join(self.work_dir, 'pareto.csv'), self.pareto_rows(), columns)
        _write_csv(osp.join(self.work_dir, 'history.csv'), self.history,
                   ['generation', 'hash'] + columns)
        if 'acc' in self.objectives:
            from .plot import plot_front
            plot_front(self, osp.join(self.work_dir, 'pareto.png'), self.released_rows())

    def released_rows(self) -> Dict[str, dict]:
        """The released MUXNets' params and MAdds, and their score where it is known or cheap
        (an evaluator with ``cheap = True``): reference points for the plot."""
        from ..backbones import arch_settings
        from ..backbones.stage_plan import arch_to_string
        evaluator = build_evaluator(self.settings.evaluator)
        rows = {}
        for name in ('xs', 's', 'm', 'l'):
            arch = arch_to_string(arch_settings[name])
            params, madds = complexity(arch)
            row = dict(self.cache.get(arch) or dict(params=params, madds=madds))
            if 'score' not in row and getattr(evaluator, 'cheap', False):
                row['score'] = evaluator(arch)
            rows[name] = row
        return rows


def smallest_complexity(space: MUXNetSpace):
    """(params, MAdds) in millions of the space's smallest point (all genes at their first)."""
    return complexity(space.arch_string(space.canonical(space.xl)))


def _write_csv(path: str, rows: List[dict], columns: List[str]) -> None:
    import io
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction='ignore')
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f'{v:.6g}' if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write(buffer.getvalue().encode(), path)


def _logger(work_dir: str) -> logging.Logger:
    try:
        os.makedirs(work_dir, exist_ok=True)
    except OSError as err:
        raise SearchError(f'work_dir {work_dir} cannot be made: {err.strerror}') from None
    log = logging.getLogger(f'mux_backbones.search.{osp.abspath(work_dir)}')
    if not log.handlers:
        log.setLevel(logging.INFO)
        fmt = logging.Formatter('%(asctime)s %(message)s', '%H:%M:%S')
        for handler in (logging.StreamHandler(), logging.FileHandler(
                osp.join(work_dir, 'search.log'))):
            handler.setFormatter(fmt)
            log.addHandler(handler)
        log.propagate = False
    return log
