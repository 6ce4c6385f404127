"""Command-line pieces every tool shares: argument types, runner arguments, one exit style.

Every tool ends a bad input the same way: ``error: <one line naming the file, key or argument>``
on stderr and exit status 1 (argparse's own usage errors keep its status 2).
"""
import argparse
import functools
import math
import os
import sys
from typing import Optional, Sequence, Tuple

import torch

# The precisions the tools' ``--amp`` options name.
PRECISIONS = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}


class ToolError(ValueError):
    """A user input a tool cannot work with; the message names the file, key or argument."""


def int_at_least(minimum: int, maximum: Optional[int] = None):
    """An argparse ``type``: an integer ``>= minimum`` (and ``<= maximum`` when given), else a
    usage error naming the value."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'{text!r} is not an integer') from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f'{value} is below the minimum {minimum}')
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f'{value} is above the maximum {maximum}')
        return value

    parse.__name__ = f'integer >= {minimum}'
    return parse


def float_at_least(minimum: float, maximum: Optional[float] = None):
    """An argparse ``type``: a finite number ``>= minimum`` (and ``<= maximum`` when given), else
    a usage error naming the value."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'{text!r} is not a number') from None
        upper = math.inf if maximum is None else maximum
        if not minimum <= value <= upper:  # NaN fails too
            within = f'>= {minimum}' if maximum is None else f'in [{minimum}, {maximum}]'
            raise argparse.ArgumentTypeError(f'{text} is not a number {within}')
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f'{text} is not a finite number')
        return value

    parse.__name__ = f'number >= {minimum}'
    return parse


positive_int = int_at_least(1)


def usable_device(text: str) -> torch.device:
    """``text`` as a device this machine can put a tensor on, else a :class:`ToolError` naming
    why (an unknown device type, CUDA absent, an index beyond the GPUs)."""
    try:
        device = torch.device(text)
        if device.type == 'cuda' and not torch.cuda.is_available():
            raise RuntimeError('CUDA is not available on this machine')
        torch.empty(1, device=device)
    except RuntimeError as err:
        raise ToolError(f'device "{text}" is not usable: {str(err).splitlines()[0]}') from None
    return device


def check_output_file(path: str, option: str, inputs: Sequence[Tuple[str, str]] = ()) -> None:
    """Refuse, before any work, an output file that is a folder or one of the tool's inputs.

    Args:
        path (str): The file the tool will write.
        option (str): How the user gave it (e.g. ``'--out'``), for the message.
        inputs: ``(path, description)`` of the files it must not overwrite.
    """
    if os.path.isdir(path):
        raise ToolError(f'{option} {path} is a folder: give the file to write')
    for source, description in inputs:
        if source and os.path.exists(path) and os.path.exists(source) and \
                os.path.samefile(path, source):
            raise ToolError(f'{option} {path} is {description}: it would be overwritten')


def cfg_options_action():
    """mmengine's ``DictAction`` (``--cfg-options key=value ...``), with an item that has no
    ``=`` a usage error naming it (mmengine's own ends in an unpacking ValueError traceback)."""
    from mmengine.config import DictAction

    class CfgOptions(DictAction):

        def __call__(self, parser, namespace, values, option_string=None):
            for item in values:
                if '=' not in item:
                    parser.error(f'argument {option_string}: {item!r} is not KEY=VALUE')
            super().__call__(parser, namespace, values, option_string)

    return CfgOptions


def add_runner_args(parser: argparse.ArgumentParser) -> None:
    """Arguments ``tools/train.py`` and ``tools/test.py`` share (as mmdet's/mmseg's tools)."""
    parser.add_argument('--work-dir', help='the dir to save logs, models and metrics')
    parser.add_argument('--cfg-options', nargs='+', action=cfg_options_action(),
                        help='override settings of the config, as key=value pairs')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def user_errors():
    """The exception types that mean "bad input", reported as one line by :func:`exits_cleanly`."""
    from ..datasets.checks import DatasetError
    from ..engine.checkpoint import CheckpointError
    return ToolError, DatasetError, CheckpointError


def error_line(err: BaseException) -> str:
    """The message of a bad-input error. One raised in a DataLoader worker arrives re-raised
    by torch with "Caught ... in DataLoader worker process N" and the worker's traceback as its
    message: its own message is then that traceback's last line, after the type's name."""
    text = str(err)
    if '\nOriginal Traceback' in text:
        last = text.rstrip().splitlines()[-1]
        text = last.partition(': ')[2] or last
    return text


def exits_cleanly(main):
    """Decorate a tool's ``main``: a bad-input error becomes ``error: ...`` and exit status 1."""

    @functools.wraps(main)
    def run(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except user_errors() as err:
            sys.exit(f'error: {error_line(err)}')

    return run
