"""Reading checkpoints safely and loading them only where they fit.

* :func:`read_checkpoint` loads a file weights-only and turns every way it can fail (missing, empty,
  truncated, not a PyTorch file at all, or pickling something the weights-only loader refuses)
  into one :class:`CheckpointError` line naming the file, instead of a traceback that ends in
  miniz or pickle internals.
* :func:`check_state_dict` compares a checkpoint's weights with a model's and refuses missing,
  unexpected and mis-shaped keys, naming the first of each. mmengine loads non-strictly by default
  (a wrong checkpoint evaluates as a random model behind one warning); the suite's tools and the
  backbone's ``Pretrained`` loading go through this check instead.
"""
import contextlib
import os.path as osp
import re
import zipfile
from typing import Iterable, Mapping, Optional

import torch

# A legacy (pre-zip) torch file is a pickle: protocol 2 starts with this opcode.
_PICKLE_PROTO = b'\x80'
_ZIP_MAGIC = b'PK\x03\x04'


class CheckpointError(ValueError):
    """A checkpoint cannot be read, or does not fit the model it is loaded into."""


class CheckpointRefusedError(CheckpointError):
    """The file pickles an object that weights-only loading refuses to construct.

    Attributes:
        global_name (str): The refused global, e.g. ``argparse.Namespace``.
    """

    def __init__(self, message: str, global_name: str):
        super().__init__(message)
        self.global_name = global_name


def _check_container(path: str) -> None:
    """Cheap structural checks: catch empty, truncated and foreign files before unpickling."""
    if not osp.isfile(path):
        raise CheckpointError(f'checkpoint not found: {path}')
    if osp.getsize(path) == 0:
        raise CheckpointError(f'checkpoint {path} is empty (0 bytes)')
    with open(path, 'rb') as f:
        head = f.read(4)
    if head == _ZIP_MAGIC:
        if not zipfile.is_zipfile(path):
            raise CheckpointError(f'checkpoint {path} is truncated (its zip directory is missing; '
                                  f'was its writing interrupted?)')
        try:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError) as err:
            raise CheckpointError(f'checkpoint {path} is corrupt: {err}') from None
        if bad is not None:
            raise CheckpointError(f'checkpoint {path} is corrupt: record "{bad}" fails its CRC')
    elif not head.startswith(_PICKLE_PROTO):
        raise CheckpointError(f'{path} is not a PyTorch checkpoint (neither a zip archive nor a '
                              f'pickle)')


def _first_line(err: Exception) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    # torch prefixes every weights-only failure with advice to turn the protection off; the
    # unpickler's own reason is on a later line.
    for line in lines:
        if line.startswith('WeightsUnpickler error:'):
            return line[len('WeightsUnpickler error:'):].strip()
    return lines[0] if lines else type(err).__name__


def read_checkpoint(path: str, map_location='cpu', training_state: bool = False,
                    trust: bool = False):
    """Load a local checkpoint file weights-only, with one-line errors.

    Args:
        path (str): Checkpoint file.
        map_location: Passed to ``torch.load``. Default: ``'cpu'``.
        training_state (bool): Also admit the few data types mmengine pickles into its training
            checkpoints (message hub statistics, numpy values; see
            :func:`mux_backbones.compat.mmengine_checkpoint_types`). Default: False.
        trust (bool): Full unpickling (runs code a crafted file contains): only for files from a
            trusted source. Default: False.

    Raises:
        CheckpointError: The file is missing, empty, truncated, corrupt or not a checkpoint.
        CheckpointRefusedError: It pickles something weights-only loading refuses.
    """
    _check_container(path)
    if training_state and not trust:
        from ..compat import mmengine_checkpoint_types
        context = mmengine_checkpoint_types()
    else:
        context = contextlib.nullcontext()
    try:
        with context:
            return torch.load(path, map_location=map_location, weights_only=not trust)
    except Exception as err:  # torch raises many types for bad files
        reason = _first_line(err)
        refused = re.search(r'Unsupported global: GLOBAL ([\w.]+)', str(err))
        if refused:
            raise CheckpointRefusedError(
                f'checkpoint {path} pickles {refused.group(1)}, which weights-only loading '
                f'refuses', refused.group(1)) from None
        raise CheckpointError(f'cannot read checkpoint {path}: {reason}') from None


def state_dict_of(checkpoint, source: str = 'checkpoint') -> Mapping[str, torch.Tensor]:
    """The weights of a checkpoint: its ``state_dict`` entry, or the dict itself."""
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get('state_dict'), dict):
        checkpoint = checkpoint['state_dict']
    if not isinstance(checkpoint, dict) or not checkpoint or not all(
            isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise CheckpointError(f'{source} holds no state dict of tensors')
    return {k[7:] if k.startswith('module.') else k: v for k, v in checkpoint.items()}


def check_state_dict(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor],
                     source: str, ignore_prefixes: Iterable[str] = ()) -> None:
    """Refuse a checkpoint whose weights do not fill the model exactly.

    Args:
        expected: The model's state dict.
        found: The checkpoint's weights (already stripped of any prefix).
        source (str): What to name in the error (the file).
        ignore_prefixes: Checkpoint keys under these prefixes are allowed to have no place in the
            model (e.g. the stages of a truncated backbone).

    Raises:
        CheckpointError: Naming how many keys are missing, unexpected or mis-shaped, and the first
            of each.
    """
    ignore = tuple(ignore_prefixes)
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected and not (ignore and k.startswith(ignore))]
    shapes = [k for k in expected if k in found and found[k].shape != expected[k].shape]
    problems = []
    if missing:
        problems.append(f'{len(missing)} of the model\'s {len(expected)} weights are missing '
                        f'(first: "{missing[0]}")')
    if unexpected:
        problems.append(f'{len(unexpected)} keys have no place in the model '
                        f'(first: "{unexpected[0]}")')
    if shapes:
        k = shapes[0]
        problems.append(f'{len(shapes)} weights differ in shape (first: "{k}", checkpoint '
                        f'{tuple(found[k].shape)} vs model {tuple(expected[k].shape)})')
    if problems:
        raise CheckpointError(f'{source} does not fit the model: {"; ".join(problems)}')


def load_weights(module: torch.nn.Module, checkpoint: str, prefix: Optional[str] = None,
                 map_location='cpu', strict: bool = True,
                 ignore_prefixes: Iterable[str] = ()) -> int:
    """Load (part of) a checkpoint into ``module``, exactly unless ``strict=False``.

    Args:
        module (nn.Module): Model to fill.
        checkpoint (str): Local file, or any URI mmengine's ``CheckpointLoader`` reads.
        prefix (str, optional): Take only the keys under this prefix (e.g. ``'backbone.'``) and
            strip it. None: ``'backbone.'`` when the checkpoint has such keys (a classifier or a
            detector), else none.
        map_location: Passed to the loader. Default: ``'cpu'``.
        strict (bool): Refuse missing, unexpected and mis-shaped keys. False loads what fits and
            leaves the rest as initialised. Default: True.
        ignore_prefixes: Keys that may have no place in ``module`` even when strict.

    Returns:
        int: Number of tensors loaded.
    """
    if osp.isfile(checkpoint) or '://' not in checkpoint:
        raw = read_checkpoint(checkpoint, map_location, training_state=True)
    else:
        from mmengine.runner.checkpoint import CheckpointLoader
        raw = CheckpointLoader.load_checkpoint(checkpoint, map_location=map_location)
    state = state_dict_of(raw, f'checkpoint {checkpoint}')
    if prefix is None:
        prefix = 'backbone.' if any(k.startswith('backbone.') for k in state) else ''
    if prefix:
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if not state:
            raise CheckpointError(f'checkpoint {checkpoint} has no keys under prefix "{prefix}"')
    own = module.state_dict()
    if strict:
        check_state_dict(own, state, f'checkpoint {checkpoint}', ignore_prefixes)
        state = {k: v for k, v in state.items() if k in own}  # less the ignored keys
    else:
        state = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
    module.load_state_dict(state, strict=False)
    return len(state)
