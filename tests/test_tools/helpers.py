"""Small configs for running the real tools as processes on CPU within seconds."""
import importlib.util
import os
import os.path as osp

from ..helpers import TEST_THREADS
from ..tool_server import ToolServer

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def write_det_config(tmp_path, voc_root, max_iters=200, ckpt_interval=3, val_interval=1000):
    """SSDLite + MUXNet-tiny on the toy VOC set, batch 2, no workers."""
    path = osp.join(str(tmp_path), 'ssdlite_muxnet-tiny_toyvoc.py')
    with open(path, 'w') as f:
        f.write(f'''
_base_ = {osp.join(REPO, 'configs/ssd/ssdlite_muxnet-m_1xb8-300it_toyvoc.py')!r}
from mux_backbones import muxnet_out_channels  # noqa: E402
ch = muxnet_out_channels('tiny', (4, 7)) + (64, 32, 32, 16)
model = dict(backbone=dict(arch='tiny'), neck=dict(in_channels=ch[:2], out_channels=ch),
             bbox_head=dict(in_channels=ch))
loader = dict(batch_size=2, num_workers=0, persistent_workers=False)
train_dataloader = dict(**loader, dataset=dict(data_root={voc_root!r}))
val_dataloader = dict(**loader, dataset=dict(data_root={voc_root!r}))
test_dataloader = val_dataloader
train_cfg = dict(max_iters={max_iters}, val_interval={val_interval})
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval={ckpt_interval}))
custom_hooks = [dict(type='ChannelsLastHook')]  # train, test and resume in NHWC as the toy config
''')
    return path


def write_seg_config(tmp_path, ade_root, max_iters=2):
    """PPM + MUXNet-tiny (d8) on the toy ADE20K set, batch 2, no workers."""
    path = osp.join(str(tmp_path), 'pspnet_muxnet-tiny_toyade.py')
    with open(path, 'w') as f:
        f.write(f'''
_base_ = {osp.join(REPO, 'configs/pspnet/pspnet_muxnet-m-d8_1xb4-220it_toyade-192x192.py')!r}
from mux_backbones import muxnet_out_channels  # noqa: E402
aux, last = muxnet_out_channels('tiny', (5, 6))
model = dict(backbone=dict(arch='tiny'), decode_head=dict(in_channels=last, channels=32),
             auxiliary_head=dict(in_channels=aux, channels=16))
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root={ade_root!r}))
val_dataloader = dict(num_workers=0, persistent_workers=False,
                      dataset=dict(data_root={ade_root!r}))
test_dataloader = val_dataloader
train_cfg = dict(max_iters={max_iters}, val_interval={max_iters})
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval={max_iters}))
custom_hooks = []
''')
    return path


def tool_env(extra_path=None, extra_env=None):
    """The environment of a tool run as a user runs it on a CPU: the repository importable, no
    Triton interpreter (the ops' C++ kernels where a config asks for ``fused_ops``) unless
    ``extra_env`` sets ``TRITON_INTERPRET=1``."""
    path = os.pathsep.join(p for p in (REPO, extra_path, os.environ.get('PYTHONPATH', '')) if p)
    return dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS=str(TEST_THREADS),
                **{'TRITON_INTERPRET': '0', **(extra_env or {})})


# Tools run as forks of a process that imported their libraries once (tests/tool_server.py).
_TOOL_SERVER = ToolServer()


def run_tool(*args, timeout=600, check=True, extra_path=None, extra_env=None):
    """``python args...`` from the repository in :func:`tool_env`; the finished process, its
    output captured as text (``subprocess.run``'s), the run's failure raised when ``check``."""
    proc = _TOOL_SERVER.run(args, tool_env(extra_path, extra_env), REPO, timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f'{args} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n'
                             f'{proc.stderr[-3000:]}')
    return proc


def save_model_of(cfg_path, path, **cfg_options):
    """Save the untrained model of a config (with ``cfg_options`` merged) as a checkpoint."""
    import torch
    from mmengine.config import Config

    from mux_backbones.cli import build_model_from_config
    cfg = Config.fromfile(cfg_path)
    cfg.merge_from_dict(cfg_options)
    torch.save(dict(state_dict=build_model_from_config(cfg).state_dict(), meta={}), path)
    return str(path)


def load_tool(path):
    """The tool at ``path`` (relative to the repository) as a module, to call in this process:
    it then shares the suite's Triton interpreter set-up (tests/conftest.py) and its imports."""
    name = osp.splitext(osp.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, osp.join(REPO, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
