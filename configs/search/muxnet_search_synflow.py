# Tri-objective MUXNet search on a zero-cost proxy: SynFlow score (higher is better), params and
# MAdds (the paper's three objectives), MOEA/D with PBI decomposition, 10 generations of 12.
# About 2-3 minutes on 2 CPU cores; the proxy ranks architectures without training them, so it
# mostly rewards capacity (see docs/search.md for what it can and cannot show).
#   python tools/search/search_muxnet.py configs/search/muxnet_search_synflow.py --work-dir DIR
search = dict(
    objectives=('acc', 'params', 'madds'),
    evaluator=dict(type='synflow', shape=64),
    algorithm='moead',
    pop_size=12,
    budget=120,
    # (best, worst) per objective, mapped to 0 and 1: the span of the search space
    # (SynFlow of its smallest and largest points; their params and MAdds at 224x224).
    bounds=dict(acc=(130.0, 40.0), params=(1.0, 5.5), madds=(25.0, 650.0)),
    surrogate_candidates=1)
