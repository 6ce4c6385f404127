"""kill -9 during training, then tools/train.py --resume continues where it stopped, and
summarize_run reads the two logs as one run."""
import os
import os.path as osp
import signal
import socket
import subprocess
import sys
import time

import torch

from mux_backbones.compat import mmengine_checkpoint_types
from .helpers import REPO, load_tool, run_tool, tool_env, write_det_config


def _last_checkpoint(work_dir):
    marker = osp.join(work_dir, 'last_checkpoint')
    if not osp.exists(marker):
        return None
    with open(marker) as f:
        return f.read().strip() or None


def _load(path):
    with mmengine_checkpoint_types():
        return torch.load(path, map_location='cpu')


def _adam_steps(ckpt):
    return {float(s['step']) for s in ckpt['optimizer']['state'].values()}


def test_resume_after_kill(tmp_path, toy_voc):
    cfg = write_det_config(tmp_path, toy_voc, max_iters=400, ckpt_interval=3)
    work_dir = str(tmp_path / 'work')
    proc = subprocess.Popen([sys.executable, 'tools/train.py', cfg, '--work-dir', work_dir],
                            cwd=REPO, env=tool_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            last = _last_checkpoint(work_dir)
            if last and int(osp.basename(last)[5:-4]) >= 6:
                break
            assert proc.poll() is None, 'training ended before it could be killed'
            time.sleep(0.5)
        else:
            raise AssertionError('no checkpoint written in time')
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    last = _last_checkpoint(work_dir)
    # A write the kill interrupted leaves a hidden partial file of the dead process; the next
    # save into the folder removes it.
    partial = osp.join(work_dir, f'.iter_999.pth.{socket.gethostname()}.{proc.pid}.partial')
    with open(partial, 'wb') as f:
        f.write(b'\0' * 1024)
    resumed_from = _load(last)
    n = resumed_from['meta']['iter']
    assert _adam_steps(resumed_from) == {float(n)}
    # No half-written file sits under a checkpoint's final name.
    for name in os.listdir(work_dir):
        if name.endswith('.pth'):
            _load(osp.join(work_dir, name))

    out = run_tool('tools/train.py', cfg, '--work-dir', work_dir, '--resume',
                   '--cfg-options', f'train_cfg.max_iters={n + 3}')
    log = out.stdout + out.stderr
    assert f'resumed epoch: 0, iter: {n}' in log
    final_path = osp.join(work_dir, f'iter_{n + 3}.pth')
    final = _load(final_path)
    assert final['meta']['iter'] == n + 3
    assert not osp.exists(partial)
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(final_path).st_mode & 0o777 == 0o666 & ~umask
    # The optimizer continued from its saved state (AdamW step counts carry over).
    assert _adam_steps(final) == {float(n + 3)}
    # The killed run's log up to the checkpoint, then the resumed one's: every iteration once.
    run = load_tool('tools/analysis_tools/summarize_run.py').read_run(work_dir)
    assert [r['iter'] for r in run.training] == list(range(1, n + 4))
    assert [e.iteration for e in run.evaluations] == [n + 3]
    assert 'nothing left to train' not in log
    # Resuming the finished run trains nothing (mmengine's loop ends at once) and says so.
    out = run_tool('tools/train.py', cfg, '--work-dir', work_dir, '--resume',
                   '--cfg-options', f'train_cfg.max_iters={n + 3}')
    assert (f'note: the checkpoint resumed from was saved at iter {n + 3} and '
            f'train_cfg.max_iters is {n + 3}: there is nothing left to train') in out.stdout
    assert _load(final_path)['meta']['iter'] == n + 3
