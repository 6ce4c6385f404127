"""Shared fixtures: small generated datasets and the repository root."""
import os
import os.path as osp
import sys

# The Triton kernels of mux_backbones.ops run on CPU tensors in Triton's interpreter; it is chosen
# when the kernels are defined (at import), so before anything imports them. A GPU machine can
# set TRITON_INTERPRET=0 to test the compiled kernels instead.
os.environ.setdefault('TRITON_INTERPRET', '1')

import pytest  # noqa: E402
import torch  # noqa: E402

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from tests.helpers import TEST_THREADS, torch_threads  # noqa: E402

torch.set_num_threads(TEST_THREADS)

if os.environ['TRITON_INTERPRET'] == '1':
    # Every kernel test also checks what the interpreter cannot see of a GPU run: the kernels'
    # vectorisation hints, programs of one launch storing to the same address, and accesses
    # outside the tensors a launch was given.
    from tests.interpreter_checks import install as _install_interpreter_checks  # noqa: E402
    _install_interpreter_checks()
    # And it runs them without two of its costs that serve no test (tests/interpreter_speed.py).
    from tests.interpreter_speed import install as _install_interpreter_speed  # noqa: E402
    _install_interpreter_speed()


@pytest.fixture(autouse=True)
def _interpreter_checks_pass():
    """Fail the test during which a kernel broke a hint, raced on a store or accessed memory
    outside its tensors, even where the error was caught (see tests/interpreter_checks.py)."""
    from tests import interpreter_checks
    interpreter_checks.violations.clear()
    yield
    if interpreter_checks.violations:
        found = list(interpreter_checks.violations)
        interpreter_checks.violations.clear()
        pytest.fail(f'{len(found)} interpreter check(s) failed, the first: {found[0]}')


@pytest.fixture
def outside_interpreter(monkeypatch):
    """The ops as a CPU user runs them: no Triton interpreter, the C++ kernels built (a model or
    config with ``fused_ops=True`` then trains and infers on them, as in the main job)."""
    from mux_backbones.ops import _cpu_kernels, _triton
    from tests.helpers import set_op_switches
    set_op_switches(monkeypatch, interpret=False, cpu_kernels='unset')
    monkeypatch.setattr(_triton, '_warned', set())
    assert _cpu_kernels.cpu_kernels() is not None, 'the CPU kernels did not build'


@pytest.fixture
def two_threads():
    """Two torch threads for one test, whatever the worker's share: the C++ kernels' split of
    their work between threads, as a user's 2-core machine runs them."""
    with torch_threads(2):
        yield


@pytest.fixture(scope='session')
def repo_root():
    return REPO


@pytest.fixture(scope='session')
def toy_voc(tmp_path_factory):
    """A small toy VOC set (24 trainval / 8 test images): returns the VOCdevkit folder."""
    from mux_backbones.datasets import make_toy_voc
    root = tmp_path_factory.mktemp('voc') / 'VOCdevkit'
    make_toy_voc(str(root), num_trainval=24, num_test=8, seed=1)
    return str(root)


@pytest.fixture(scope='session')
def toy_ade(tmp_path_factory):
    """A small toy ADE20K set (8 train / 4 val images): returns ADEChallengeData2016."""
    from mux_backbones.datasets import make_toy_ade20k
    root = tmp_path_factory.mktemp('ade') / 'ADEChallengeData2016'
    make_toy_ade20k(str(root), num_train=8, num_val=4, seed=1)
    return str(root)
