"""tests/tool_server.py: a tool forked from the server runs as ``python script args...`` would."""
import json
import os
import subprocess

import pytest

from tests.test_tools.helpers import REPO, run_tool, tool_env
from tests.tool_server import ToolServer, served_env

SCRIPT = '''
import atexit, json, os, random, sys
import numpy as np
import torch
atexit.register(lambda: open(sys.argv[1] + '.atexit', 'w').close())
print(json.dumps(dict(
    pid=os.getpid(), ppid=os.getppid(), argv=sys.argv, cwd=os.getcwd(), path0=sys.path[0],
    interpret=os.environ.get('TRITON_INTERPRET'), name=__name__,
    stdin=sys.stdin.read(), rand=random.random(), np_rand=float(np.random.rand()),
    torch_seed=torch.initial_seed(), triton_loaded='triton' in sys.modules,
    mux_loaded='mux_backbones' in sys.modules)))
print('to stderr', file=sys.stderr)
mode = sys.argv[2]
if mode == 'exit':
    sys.exit(3)
if mode == 'raise':
    raise ValueError('broken on purpose')
if mode == 'sleep':
    import time
    time.sleep(60)
'''


@pytest.fixture
def script(tmp_path):
    path = tmp_path / 'probe.py'
    path.write_text(SCRIPT)
    return str(path)


def _report(proc):
    return json.loads(proc.stdout.splitlines()[0])


def test_a_forked_tool_is_its_own_process(script, tmp_path):
    marker = str(tmp_path / 'm')
    first = run_tool(script, marker, 'ok', extra_env={'TRITON_INTERPRET': '1'})
    second = run_tool(script, marker, 'ok')
    a, b = _report(first), _report(second)
    assert a['argv'] == [script, marker, 'ok'] and a['cwd'] == REPO
    assert a['path0'] == str(tmp_path) and a['name'] == '__main__'
    assert (a['interpret'], b['interpret']) == ('1', '0')
    assert a['stdin'] == '' and first.stderr.strip().endswith('to stderr')
    assert os.path.exists(marker + '.atexit')  # an ordinary interpreter exit
    assert a['pid'] != b['pid'] and os.getpid() not in (a['pid'], b['pid'])
    assert a['ppid'] != os.getpid()  # forked from the server
    # Fresh random states, as two processes have.
    assert a['rand'] != b['rand'] and a['np_rand'] != b['np_rand']
    assert a['torch_seed'] != b['torch_seed']
    # What reads its environment at import is imported by the tool, under the tool's.
    assert not a['triton_loaded'] and not a['mux_loaded']


def test_exit_status_and_uncaught_exceptions(script, tmp_path):
    marker = str(tmp_path / 'm')
    assert run_tool(script, marker, 'exit', check=False).returncode == 3
    raised = run_tool(script, marker, 'raise', check=False)
    assert raised.returncode == 1
    assert 'Traceback' in raised.stderr and 'ValueError: broken on purpose' in raised.stderr


def test_timeout_ends_the_tool(script, tmp_path):
    with pytest.raises(subprocess.TimeoutExpired) as info:
        run_tool(script, str(tmp_path / 'm'), 'sleep', timeout=5)
    assert b'to stderr' in info.value.stderr  # (bytes, as subprocess.run's)
    # The server is still there for the next tool.
    assert run_tool(script, str(tmp_path / 'm'), 'ok').returncode == 0


def test_environments_the_server_cannot_serve():
    base = dict(OMP_NUM_THREADS='1', PATH='/bin')
    assert served_env(base, dict(base, TRITON_INTERPRET='1', PYTHONPATH='/x',
                                 MUX_BACKBONES_DIRECT_LAUNCH='0'))
    assert served_env(base, dict(base, TOKENIZERS_PARALLELISM='false'),
                      set_by_imports=('TOKENIZERS_PARALLELISM', ))
    # Read when torch is imported: such a run is a plain subprocess.
    assert not served_env(base, dict(base, OMP_NUM_THREADS='2'))
    assert not served_env(base, {'PATH': '/bin'})


def test_a_run_the_server_cannot_serve_gets_a_server_of_its_own(script, tmp_path):
    server = ToolServer()
    try:
        env = tool_env()
        first = _report(server.run([script, str(tmp_path / 'm'), 'ok'], env, REPO, 120))
        threads = '2' if env['OMP_NUM_THREADS'] == '1' else '1'
        other = dict(env, OMP_NUM_THREADS=threads)  # read when torch is imported
        proc = server.run([script, str(tmp_path / 'm'), 'exit'], other, REPO, 120)
        assert proc.returncode == 3 and server.env['OMP_NUM_THREADS'] == threads
        assert _report(proc)['ppid'] not in (first['ppid'], os.getpid())  # a new server
    finally:
        server.close()
