"""mux_backbones.utils.timing: interleaved timing, and an error of one candidate named."""
import pytest
import torch

from mux_backbones.utils.timing import time_interleaved


def test_time_interleaved_times_each_candidate():
    calls = []
    fns = [lambda x: calls.append(('a', x)), lambda x: calls.append(('b', x))]
    timings = time_interleaved(fns, [1, 2], torch.device('cpu'), warmup=2, runs=4)
    assert len(timings) == 2 and all(t.median_ms >= 0 for t in timings)
    assert calls.count(('a', 1)) == calls.count(('b', 2)) == 6  # 2 warm-up + 4 timed each


def test_time_interleaved_names_the_candidate_that_failed():
    """A CUDA fault surfaces at the next synchronisation: the warm-up of each candidate ends in
    one, so the error names the case whose work raised it."""

    def faulty(x):
        raise RuntimeError('an illegal memory access was encountered')

    fns = [lambda x: x, faulty]
    with pytest.raises(RuntimeError, match=r'^muxnet-m \[graph\] failed in its warm-up .*illegal'):
        time_interleaved(fns, [0, 0], torch.device('cpu'), 1, 2,
                         labels=['mobilenetv2 [graph]', 'muxnet-m [graph]'])
    with pytest.raises(RuntimeError, match=r'^an illegal memory access'):  # no labels: as raised
        time_interleaved(fns, [0, 0], torch.device('cpu'), 1, 2)
