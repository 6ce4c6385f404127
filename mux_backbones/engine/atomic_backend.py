"""``atomic_local``: an mmengine file backend that never leaves a half-written checkpoint.

mmengine's ``LocalBackend.put`` writes in place, so a run killed while saving leaves a truncated
``iter_N.pth`` under its final name for ``--resume`` to choke on. This backend writes to a hidden
``.<name>.<host>.<pid>.partial`` file next to the target and renames it into place, so a file
under its final name is always complete. Partial files of writers that died (same host, process
gone) are removed at the next write into that folder. Files get the usual ``0666 & ~umask`` mode.

It is opt-in and named, not a patch: ``tools/train.py`` selects it for the checkpoint hook
(``default_hooks.checkpoint.backend_args=dict(backend='atomic_local')``) unless the config chose a
backend itself, and any config can select it the same way.
"""
import glob
import os
import os.path as osp
import socket
from pathlib import Path
from typing import Union

from mmengine.fileio import LocalBackend, register_backend

BACKEND_NAME = 'atomic_local'
_SUFFIX = '.partial'


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_partials(directory: str) -> int:
    """Delete the partial files of dead writers on this host in ``directory``; returns how many."""
    host = socket.gethostname()
    removed = 0
    for path in glob.glob(osp.join(glob.escape(directory), f'.*{_SUFFIX}')):
        parts = osp.basename(path)[:-len(_SUFFIX)].rsplit('.', 2)
        if len(parts) != 3 or parts[1] != host or not parts[2].isdigit():
            continue
        if not _pid_alive(int(parts[2])):
            try:
                os.remove(path)
                removed += 1
            except FileNotFoundError:
                pass
    return removed


def atomic_write(data: bytes, filepath: Union[str, Path]) -> None:
    """Write ``data`` to ``filepath`` through a temporary file and a rename."""
    filepath = osp.abspath(str(filepath))
    directory = osp.dirname(filepath)
    os.makedirs(directory, exist_ok=True)
    remove_stale_partials(directory)
    tmp = osp.join(directory, f'.{osp.basename(filepath)}.{socket.gethostname()}.{os.getpid()}'
                   f'{_SUFFIX}')
    # os.open's mode goes through the umask, as open() does: 0644 under the usual 022.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, filepath)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise


@register_backend(BACKEND_NAME)
class AtomicLocalBackend(LocalBackend):
    """Local file backend whose writes are atomic (see module docstring)."""

    def put(self, obj: bytes, filepath: Union[str, Path]) -> None:
        atomic_write(obj, filepath)

    def put_text(self, obj: str, filepath: Union[str, Path], encoding: str = 'utf-8') -> None:
        atomic_write(obj.encode(encoding), filepath)
