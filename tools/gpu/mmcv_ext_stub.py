"""Stand-in for mmcv's compiled ``_ext`` on a GPU machine that only times backbones and training
steps, which call none of mmcv's kernels: importing mmdet/mmseg needs the module to exist, and
building it costs ~4 of a lease's minutes. Every function raises, so a check that does call an
mmcv op fails loudly instead of timing something else. ``gpu_check.sh`` (SPEED_ONLY=1) copies it
to ``mmcv/_ext.py`` of the unpacked mmcv sources; the full check builds the real extension.
"""

# What every op's error says; rehearse_device_stack.sh recognises a test failed by the stub by it.
NOT_BUILT = "mmcv's extension was not built on this machine"


def __getattr__(name):
    if name.startswith('__'):
        raise AttributeError(name)

    def missing(*args, **kwargs):
        raise RuntimeError(f'mmcv op "{name}" called, but {NOT_BUILT} (gpu_check.sh SPEED_ONLY=1 '
                           f'uses a stub)')

    return missing
