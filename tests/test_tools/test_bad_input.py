"""Broken inputs to the tools end in one line naming the file, key or argument: checkpoints of
another model, corrupt checkpoints, impossible numbers, images too small to draw on."""
import os
import os.path as osp
import re
import subprocess

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.runner import EpochBasedTrainLoop

from mux_backbones import MUXNet
from mux_backbones.cli import ToolError, build_model_from_config
from mux_backbones.cli.config import (check_backbone_arguments, check_launcher,
                                      check_schedule_length, finished_schedule_note)
from .helpers import (REPO, load_tool, run_tool, save_model_of, tool_env, write_det_config,
                      write_seg_config)


def _one_line_error(proc, *expected, status=1):
    assert proc.returncode == status, (proc.returncode, proc.stderr[-3000:])
    assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert 'error:' in last, last
    for text in expected:
        assert text in last, last
    return last


@pytest.fixture(scope='module')
def det_cfg(tmp_path_factory, toy_voc):
    return write_det_config(tmp_path_factory.mktemp('det'), toy_voc, max_iters=1)


def test_test_tool_refuses_a_segmentation_checkpoint_on_a_detector(tmp_path, det_cfg, toy_ade):
    seg = save_model_of(write_seg_config(tmp_path, toy_ade), tmp_path / 'seg.pth')
    proc = run_tool('tools/test.py', det_cfg, seg, '--work-dir', str(tmp_path / 'w'),
                    check=False)
    _one_line_error(proc, f'checkpoint {seg} does not fit the model', 'first: "')


def test_test_tool_refuses_m_weights_on_tiny(tmp_path, det_cfg):
    m = save_model_of(det_cfg, tmp_path / 'm.pth', **{
        'model.backbone.arch': 'm', 'model.neck.in_channels': (112, 1280),
        'model.neck.out_channels': (112, 1280, 64, 32, 32, 16),
        'model.bbox_head.in_channels': (112, 1280, 64, 32, 32, 16)})
    proc = run_tool('tools/test.py', det_cfg, m, '--work-dir', str(tmp_path / 'w'), check=False)
    last = _one_line_error(proc, f'checkpoint {m} does not fit the model')
    assert 'differ in shape' in last or 'have no place' in last


@pytest.mark.parametrize('content, message', [
    (b'', 'is empty (0 bytes)'),
    (b'\x13' * 3000, 'is not a PyTorch checkpoint'),
    ('half', 'is truncated'),
], ids=['empty', 'foreign-bytes', 'truncated'])
def test_corrupt_checkpoints_for_test_and_resume(tmp_path, det_cfg, content, message):
    path = tmp_path / 'iter_1.pth'
    if content == 'half':
        good = save_model_of(det_cfg, tmp_path / 'good.pth')
        data = open(good, 'rb').read()
        content = data[:len(data) // 2]
    path.write_bytes(content)
    proc = run_tool('tools/test.py', det_cfg, str(path), '--work-dir', str(tmp_path / 'w'),
                    check=False)
    _one_line_error(proc, str(path), message)
    proc = run_tool('tools/train.py', det_cfg, '--resume', str(path), '--work-dir',
                    str(tmp_path / 'w'), check=False)
    _one_line_error(proc, str(path), message)


def test_converter_on_corrupt_files(tmp_path):
    for content, message in ((b'', 'is empty'), (b'\x13' * 3000, 'not a PyTorch checkpoint')):
        src = tmp_path / 'official.pth'
        src.write_bytes(content)
        proc = run_tool('tools/model_converters/muxnet_official_to_mmengine.py', str(src),
                        str(tmp_path / 'out.pth'), '--arch', 'm', check=False)
        last = _one_line_error(proc, message)
        assert 'trust' not in last, 'a corrupt file is no matter of trust'
        assert not osp.exists(tmp_path / 'out.pth')


@pytest.mark.parametrize('tool, args, expected', [
    ('tools/analysis_tools/get_flops.py', ('--arch', 'tiny', '--shape', '0'),
     'argument --shape: 0 is below the minimum 1'),
    ('tools/analysis_tools/benchmark.py', ('--batch', '0'),
     'argument --batch: 0 is below the minimum 1'),
    ('tools/analysis_tools/benchmark.py', ('--runs', '1'),
     'argument --runs: 1 is below the minimum 2'),
    ('tools/analysis_tools/benchmark.py', ('--runs', 'many'),
     "argument --runs: 'many' is not an integer"),
    ('tools/analysis_tools/benchmark.py', ('--compile-cases', 'fp16'),
     'argument --compile-cases: expected PREC:BATCH such as fp16:32, got "fp16"'),
    ('tools/analysis_tools/benchmark.py', ('--profile', 'fp8:1'),
     'argument --profile: expected PREC:BATCH'),
    ('tools/analysis_tools/benchmark.py', ('--train-batch', 'yolo:8'),
     'argument --train-batch: unknown task "yolo"'),
    ('tools/analysis_tools/benchmark.py', ('--train-batch', 'pspnet:0'),
     'argument --train-batch: 0 is below the minimum 1'),
    ('tools/analysis_tools/benchmark.py', ('--profile-top', '-1'),
     'argument --profile-top: -1 is below the minimum 1'),
    ('tools/analysis_tools/benchmark.py', ('--profile-train', ),
     '--profile-train needs --train-step'),
    ('tools/analysis_tools/browse_dataset.py', ('cfg.py', '--num', '0'),
     'argument --num: 0 is below the minimum 1'),
    ('tools/dataset_converters/make_toy_data.py', ('--seed', '-1'),
     'argument --seed: -1 is below the minimum 0'),
    ('tools/dataset_converters/make_toy_data.py', ('--seed', str(2**32)),
     'argument --seed: 4294967296 is above the maximum 4294967295'),
    ('tools/demo.py', ('img.png', 'cfg.py', 'ckpt.pth', '--opacity', '1.5'),
     'argument --opacity: 1.5 is not a number in [0, 1]'),
    ('tools/demo.py', ('img.png', 'cfg.py', 'ckpt.pth', '--score-thr', 'nan'),
     'argument --score-thr: nan is not a number in [0, 1]'),
    ('tools/test.py', ('cfg.py', 'ckpt.pth', '--wait-time', '-2'),
     'argument --wait-time: -2 is not a number >= 0'),
    ('tools/deployment/pytorch2onnx.py', ('--arch', 'tiny', '--out', 'x.onnx', '--atol', '-1'),
     'argument --atol: -1 is not a number >= 0'),
    ('tools/deployment/pytorch2onnx.py', ('--arch', 'tiny', '--out', 'x.onnx', '--opset', '3'),
     'argument --opset: 3 is below the minimum 7'),
    ('tools/train.py', ('cfg.py', '--cfg-options', 'model.backbone.arch'),
     "argument --cfg-options: 'model.backbone.arch' is not KEY=VALUE"),
    ('tools/analysis_tools/get_flops.py', ('cfg.py', '--cfg-options', 'a=1', 'b'),
     "argument --cfg-options: 'b' is not KEY=VALUE"),
])
def test_impossible_numbers_are_usage_errors(tool, args, expected):
    _one_line_error(run_tool(tool, *args, check=False), expected, status=2)


def test_demo_refuses_an_image_too_small_to_draw(tmp_path, toy_ade):
    import numpy as np
    from PIL import Image
    cfg = write_seg_config(tmp_path, toy_ade)
    img = tmp_path / 'dot.png'
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(img)
    ckpt = save_model_of(cfg, tmp_path / 'seg.pth')
    proc = run_tool('tools/demo.py', str(img), cfg, ckpt, '--out-file',
                    str(tmp_path / 'out.png'), check=False)
    _one_line_error(proc, f'image {img} is 1x1', 'at least 8 pixels')
    assert not osp.exists(tmp_path / 'out.png')


def test_demo_refuses_an_output_it_cannot_or_must_not_write(tmp_path, toy_ade):
    """A folder, the input image itself, or a name without an image format: refused before the
    model runs, the input left as it was."""
    import numpy as np
    from PIL import Image
    cfg = write_seg_config(tmp_path, toy_ade)
    img = tmp_path / 'photo.png'
    Image.fromarray(np.full((16, 16, 3), 7, np.uint8)).save(img)
    ckpt = save_model_of(cfg, tmp_path / 'seg.pth')
    before = img.read_bytes()
    for out, message in ((tmp_path, 'is a folder'), (img, 'is the input image'),
                         (tmp_path / 'drawing', 'no image format for its extension')):
        proc = run_tool('tools/demo.py', str(img), cfg, ckpt, '--out-file', str(out),
                        check=False)
        _one_line_error(proc, f'--out-file {out}', message)
    proc = run_tool('tools/demo.py', str(img), cfg, ckpt, '--out-file',
                    str(tmp_path / 'drawing.png'), '--device', 'gpu', check=False)
    _one_line_error(proc, 'device "gpu" is not usable')
    assert img.read_bytes() == before and not osp.exists(tmp_path / 'drawing')


def test_demo_refuses_a_folder_it_cannot_draw(tmp_path, toy_ade):
    """Before the model is built: both outputs given, --out-file for a folder, drawings that
    would land on their images, a folder with no image or none that decodes."""
    import numpy as np
    from PIL import Image
    cfg = write_seg_config(tmp_path, toy_ade)
    ckpt = str(tmp_path / 'never_read.pth')
    photos, empty = tmp_path / 'photos', tmp_path / 'empty'
    photos.mkdir()
    empty.mkdir()
    Image.fromarray(np.full((16, 16, 3), 7, np.uint8)).save(photos / 'a.png')
    open(ckpt, 'wb').close()
    before = (photos / 'a.png').read_bytes()
    for args, message in (
            ((str(photos), '--out-file', 'x.png', '--out-dir', 'y'), 'not both'),
            ((str(photos), '--out-file', 'x.png'), 'is a folder: give --out-dir'),
            ((str(photos), '--out-dir', str(photos)), 'is the images\' folder'),
            ((str(photos / 'a.png'), '--out-dir', str(photos)), 'is the images\' folder'),
            ((str(photos), '--out-dir', str(photos / 'a.png')), 'is a file: give a folder'),
            ((str(empty),), 'no image (.jpg'),
            ((str(tmp_path / 'nowhere'),), 'image file or folder not found')):
        _one_line_error(run_tool('tools/demo.py', args[0], cfg, ckpt, *args[1:], check=False),
                        message)
    (empty / 'bad.jpg').write_bytes(b'garbage')
    proc = run_tool('tools/demo.py', str(empty), cfg, ckpt, check=False)
    _one_line_error(proc, f'none of the 1 images in {empty} can be drawn')
    assert 'warning: skipped image' in proc.stderr
    assert (photos / 'a.png').read_bytes() == before and os.listdir(photos) == ['a.png']


def test_summarize_run_plots_the_curves_of_several_runs(tmp_path):
    """Evaluations sit at the iteration trained before them, also in an epoch-based run (whose
    validation ``step`` is the epoch); every run's curves share the axes of one image."""
    from PIL import Image
    tool = load_tool('tools/analysis_tools/summarize_run.py')

    def train(step):  # as mmengine logs them, in both kinds of loop
        return dict(lr=0.1 / step, loss=3.0 / step, loss_cls=2.0 / step, iter=step, step=step)

    by_iter = _scalars(tmp_path / 'muxnet', {'mIoU': 1.0, 'step': 0}, train(1), train(2),
                       {'mIoU': 20.0, 'mAcc': 30.0, 'aAcc': 60.0, 'step': 2})
    by_epoch = _scalars(tmp_path / 'ssd', *map(train, (1, 2, 3, 4)),
                        {'pascal_voc/mAP': 0.2, 'step': 1},  # (the step of epoch 1)
                        *map(train, (5, 6, 7, 8)), {'pascal_voc/mAP': 0.4, 'step': 2})
    runs = [tool.read_run(by_iter), tool.read_run(by_epoch)]
    placed = [(e.iteration, e.before_training) for e in runs[0].evaluations]
    assert placed == [(0, True), (2, False)]
    assert [e.iteration for e in runs[1].evaluations] == [4, 8]
    assert [r['iter'] for r in runs[1].training] == list(range(1, 9))
    out = tmp_path / 'plots' / 'curves.png'
    proc = run_tool('tools/analysis_tools/summarize_run.py', by_iter, by_epoch, '--plot', str(out))
    assert proc.stdout.splitlines()[-1] == f'saved {out}'
    with Image.open(out) as image:
        width, height = image.size
        colours = len(set(image.convert('RGB').getdata()))
    assert width > 4 * height  # loss, lr, mIoU and mAP side by side
    assert colours > 50  # drawn curves, not a blank canvas
    run_tool('tools/analysis_tools/summarize_run.py', by_iter, by_epoch, '--plot', str(out),
             '--keys', 'loss_cls')
    with Image.open(out) as image:
        assert 3 * image.size[1] < image.size[0] < 4 * image.size[1]  # loss_cls, mIoU, mAP


def test_summarize_run_joins_a_resumed_run_and_not_a_new_one(tmp_path):
    """A resumed run's log continues its killed one's (cut last line and all) from the
    checkpoint on; a run started again from the beginning in the same work_dir stands alone."""
    tool = load_tool('tools/analysis_tools/summarize_run.py')

    def train(*steps):
        return [dict(lr=0.1, loss=1.0 / step, step=step) for step in steps]

    work = tmp_path / 'resumed'
    _scalars(work, {'mIoU': 1.0, 'step': 0}, *train(1, 2, 3, 4, 5), stamp='20261206_010000',
             tail='{"lr": 0.1, "lo')
    _scalars(work, *train(4, 5, 6), {'mIoU': 50.0, 'step': 6}, stamp='20261206_020000')
    run = tool.read_run(str(work))
    assert [r['iter'] for r in run.training] == [1, 2, 3, 4, 5, 6]
    assert [(e.iteration, e.metrics['mIoU']) for e in run.evaluations] == [(0, 1.0), (6, 50.0)]
    assert tool.summary_line(run) == 'resumed: before training mIoU=1 -> after training mIoU=50'
    _scalars(work, {'mIoU': 2.0, 'step': 0}, *train(1, 2), stamp='20261206_030000')
    run = tool.read_run(str(work))
    assert [r['iter'] for r in run.training] == [1, 2]
    assert tool.summary_line(run) == 'resumed: untrained mIoU=2'


def test_summarize_run_plot_refuses_what_it_cannot_write(tmp_path):
    run = _scalars(tmp_path / 'run', dict(lr=0.1, loss=2.0, step=1), {'mIoU': 5.0, 'step': 1})
    for out, message in ((tmp_path, 'is a folder'),
                         (tmp_path / 'curves.docx', 'no image format for its extension')):
        proc = run_tool('tools/analysis_tools/summarize_run.py', run, '--plot', str(out),
                        check=False)
        _one_line_error(proc, f'--plot {out}', message)
    proc = run_tool('tools/analysis_tools/summarize_run.py', run, '--plot',
                    str(tmp_path / 'curves.png'), '--keys', 'loss', 'loss_ce', check=False)
    _one_line_error(proc, "--keys loss_ce: not in any run's training records; they have loss, lr")
    assert not osp.exists(tmp_path / 'curves.png')


def test_test_tool_refuses_a_results_file_that_is_a_folder(tmp_path, det_cfg):
    folder = tmp_path / 'results.pkl'
    folder.mkdir()
    proc = run_tool('tools/test.py', det_cfg, str(tmp_path / 'never_read.pth'), '--out',
                    str(folder), '--work-dir', str(tmp_path / 'w'), check=False)
    _one_line_error(proc, f'--out {folder} is a folder')
    proc = run_tool('tools/test.py', det_cfg, str(tmp_path / 'never_read.pth'), '--out',
                    str(tmp_path / 'maps'), '--work-dir', str(tmp_path / 'w'), check=False)
    _one_line_error(proc, '--out must be a .pkl or .pickle file')


def test_test_tool_label_maps_need_a_folder_and_an_iou_metric(tmp_path, toy_ade):
    cfg = write_seg_config(tmp_path, toy_ade)
    taken = tmp_path / 'maps'
    taken.write_text('')
    proc = run_tool('tools/test.py', cfg, str(tmp_path / 'never_read.pth'), '--out', str(taken),
                    '--work-dir', str(tmp_path / 'w'), check=False)
    _one_line_error(proc, f'--out {taken} is a file: give a folder for the label maps')
    proc = run_tool('tools/test.py', cfg, str(tmp_path / 'never_read.pth'), '--out',
                    str(tmp_path / 'new'), '--work-dir', str(tmp_path / 'w'), '--cfg-options',
                    'test_evaluator.type=CityscapesMetric', check=False)
    _one_line_error(proc, 'the test evaluator has no IoUMetric to save the label maps')


def test_distributed_launch_without_a_gpu_is_one_line(tmp_path, det_cfg):
    """tools/dist_train.sh on a machine without GPUs: each process names the cause in one line
    before mmengine's init_dist (torchrun's own failure report follows it)."""
    assert subprocess.run(['bash', 'tools/dist_train.sh'], cwd=REPO, capture_output=True,
                          text=True).returncode == 2  # usage
    if torch.cuda.is_available():
        pytest.skip('a GPU machine launches for real')
    import socket
    with socket.socket() as sock:  # a free port for torchrun's rendezvous
        sock.bind(('127.0.0.1', 0))
        port = str(sock.getsockname()[1])
    proc = subprocess.run(['bash', osp.join(REPO, 'tools/dist_train.sh'), det_cfg, '1',
                           '--work-dir', str(tmp_path / 'w')], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600, env=tool_env(extra_env=dict(PORT=port)))
    assert proc.returncode != 0
    assert 'error: --launcher pytorch needs one GPU per process and torch sees none' in \
        proc.stderr, proc.stderr[-3000:]
    assert 'set_device' not in proc.stderr


def test_test_tool_show_without_a_display_or_into_a_file_is_one_line(tmp_path, det_cfg):
    proc = run_tool('tools/test.py', det_cfg, str(tmp_path / 'never_read.pth'), '--show',
                    '--work-dir', str(tmp_path / 'w'), check=False,
                    extra_env=dict(DISPLAY='', WAYLAND_DISPLAY=''))
    _one_line_error(proc, '--show needs a display', '--show-dir')
    afile = tmp_path / 'drawings'
    afile.write_text('')
    proc = run_tool('tools/test.py', det_cfg, str(tmp_path / 'never_read.pth'), '--show-dir',
                    str(afile), '--work-dir', str(tmp_path / 'w'), check=False)
    _one_line_error(proc, f'--show-dir {afile} is a file')


def test_runner_tools_name_a_work_dir_that_cannot_be_made(tmp_path, det_cfg):
    afile = tmp_path / 'taken'
    afile.write_text('')
    for tool, args in (('tools/train.py', ()), ('tools/test.py', (str(tmp_path / 'n.pth'), ))):
        proc = run_tool(tool, det_cfg, *args, '--work-dir', str(afile / 'w'), check=False)
        _one_line_error(proc, f'work_dir {afile / "w"} cannot be made: {afile} is a file')


def test_train_tool_amp_without_a_gpu_is_one_line(tmp_path, det_cfg):
    if torch.cuda.is_available():
        pytest.skip('AMP trains on a GPU machine')
    proc = run_tool('tools/train.py', det_cfg, '--amp', '--work-dir', str(tmp_path / 'w'),
                    check=False)
    _one_line_error(proc, 'AmpOptimWrapper (--amp) trains on a GPU only')


@pytest.mark.parametrize('option, message', [
    ('train_dataloader.batch_size=0', 'train_dataloader.batch_size must be a positive integer'),
    ('val_dataloader.batch_size=2.5', 'val_dataloader.batch_size must be a positive integer'),
    ('test_dataloader.num_workers=-1', 'test_dataloader.num_workers must be an integer >= 0'),
])
def test_runner_tools_name_a_dataloader_size_torch_refuses(tmp_path, det_cfg, option, message):
    proc = run_tool('tools/test.py', det_cfg, str(tmp_path / 'n.pth'), '--cfg-options', option,
                    check=False)
    _one_line_error(proc, message)


@pytest.mark.parametrize('train_cfg, meta, note', [
    (dict(type='IterBasedTrainLoop', max_iters=300), dict(epoch=0, iter=300),
     'saved at iter 300 and train_cfg.max_iters is 300'),
    (dict(by_epoch=False, max_iters=300), dict(epoch=0, iter=120), None),
    (dict(type='EpochBasedTrainLoop', max_epochs=24), dict(epoch=24, iter=9000),
     'saved at epoch 24 and train_cfg.max_epochs is 24'),
    (dict(by_epoch=True, max_epochs=24), dict(epoch=12, iter=9000), None),
    (dict(max_epochs=12), dict(epoch=13, iter=9000), 'saved at epoch 13'),
    (dict(max_iters=10), dict(), None),  # a checkpoint without the runner's meta
    # the loop as a class, not its registry name (as lazy-import configs give it)
    (dict(type=EpochBasedTrainLoop, max_epochs=2), dict(epoch=2, iter=90), 'at epoch 2'),
])
def test_resuming_a_finished_schedule_is_noted(train_cfg, meta, note):
    found = finished_schedule_note(Config(dict(train_cfg=train_cfg)), dict(meta=meta))
    assert found == note if note is None else note in found and 'nothing left to train' in found


@pytest.mark.parametrize('train_cfg, message', [
    (dict(type='IterBasedTrainLoop', max_iters=0), 'train_cfg.max_iters must be a positive'),
    (dict(by_epoch=True, max_epochs=-1), 'train_cfg.max_epochs must be a positive'),
    (dict(max_epochs=2.5), 'train_cfg.max_epochs must be a positive integer, got 2.5'),
])
def test_a_schedule_of_nothing_is_refused(train_cfg, message):
    with pytest.raises(ToolError, match=re.escape(message)):
        check_schedule_length(Config(dict(train_cfg=train_cfg)))
    check_schedule_length(Config(dict(train_cfg=dict(train_cfg, max_iters=1, max_epochs=1))))


def test_no_workers_turns_persistent_workers_off(tmp_path, det_cfg):
    """``num_workers=0`` in a config that keeps its workers alive (every mmdet/mmseg one) trains,
    where torch's DataLoader would refuse the pair."""
    proc = run_tool('tools/train.py', det_cfg, '--work-dir', str(tmp_path / 'w'),
                    '--cfg-options', 'train_dataloader.persistent_workers=True',
                    'train_dataloader.num_workers=0', 'val_dataloader.persistent_workers=True')
    assert 'note: train_dataloader.num_workers is 0, so its persistent_workers is turned off' \
        in proc.stdout
    assert 'note: val_dataloader.num_workers is 0' in proc.stdout
    assert osp.isfile(tmp_path / 'w' / 'iter_1.pth')


@pytest.mark.parametrize('device, count, env, message', [
    ('cuda', 2, dict(LOCAL_RANK='0'), 'RANK and WORLD_SIZE are not set'),
    ('cuda', 2, dict(LOCAL_RANK='2', RANK='2', WORLD_SIZE='4'),
     'local rank 2 has no GPU (this node has 2)'),
    ('cuda', 2, dict(LOCAL_RANK='1', RANK='1', WORLD_SIZE='2'), None),
    ('mps', 0, dict(LOCAL_RANK='0', RANK='0', WORLD_SIZE='1'), 'torch sees none (mps only)'),
])
def test_launcher_needs(monkeypatch, device, count, env, message):
    import mmengine.device
    monkeypatch.setattr(mmengine.device, 'get_device', lambda: device)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: count)
    for name in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK'):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    check_launcher('none')
    if message is None:
        check_launcher('pytorch')
    else:
        with pytest.raises(ToolError, match=re.escape(message)):
            check_launcher('pytorch')


def test_ssdlite_predicts_under_bf16_autocast(det_cfg):
    from mmdet.structures import DetDataSample
    model = build_model_from_config(Config.fromfile(det_cfg)).eval()
    sample = DetDataSample(metainfo=dict(img_shape=(96, 96), ori_shape=(96, 96),
                                         scale_factor=(1., 1.), batch_input_shape=(96, 96)))
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        low = model.predict(x, [sample])[0].pred_instances
    with torch.no_grad():
        full = model.predict(x, [sample.clone()])[0].pred_instances
    assert low.bboxes.shape[1] == 4 and len(low.scores) == len(low.labels) > 0
    assert len(full.scores) > 0


def test_summarize_run_without_a_run(tmp_path):
    proc = run_tool('tools/analysis_tools/summarize_run.py', str(tmp_path), check=False)
    _one_line_error(proc, f'no scalars.json under {tmp_path}')


def _scalars(work_dir, *records, tail='', stamp='20261205_000000'):
    import json
    folder = work_dir / stamp / 'vis_data'
    folder.mkdir(parents=True)
    (folder / 'scalars.json').write_text(''.join(json.dumps(r) + '\n' for r in records) + tail)
    return str(work_dir)


def test_summarize_run_reads_what_a_run_logged(tmp_path):
    """Before/after only where an evaluation preceded training; any evaluator's metrics."""
    train = dict(lr=0.1, loss=2.0, time=1.0, iter=10, step=10)

    def voc(value):
        return {'pascal_voc/mAP': value, 'pascal_voc/AP50': value, 'time': 0.2, 'step': 0}

    runs = {
        'hooked': (_scalars(tmp_path / 'hooked', voc(0.01), train, voc(0.75)),
                   'hooked: before training pascal_voc/mAP=0.01 -> after training '
                   'pascal_voc/mAP=0.75'),
        'periodic': (_scalars(tmp_path / 'periodic', train, voc(0.5), train, voc(0.75)),
                     'periodic: last evaluation pascal_voc/mAP=0.75'),
        'coco': (_scalars(tmp_path / 'coco', train, {'coco/bbox_mAP': 0.3, 'coco/bbox_mAP_50':
                                                     0.5, 'data_time': 0.1, 'step': 2}),
                 'coco: last evaluation coco/bbox_mAP=0.3, coco/bbox_mAP_50=0.5'),
        'untrained': (_scalars(tmp_path / 'untrained', voc(0.02)),
                      'untrained: untrained pascal_voc/mAP=0.02'),
    }
    out = run_tool('tools/analysis_tools/summarize_run.py',
                   *(path for path, _ in runs.values())).stdout.splitlines()
    assert out == [line for _, line in runs.values()]
    cut = _scalars(tmp_path / 'cut', voc(0.01), train, tail='{"lr": 0.1, "lo')
    proc = run_tool('tools/analysis_tools/summarize_run.py', cut, check=False)
    _one_line_error(proc, 'line 3: not a JSON record (a run stopped while writing it?)')
    proc = run_tool('tools/analysis_tools/summarize_run.py',
                    _scalars(tmp_path / 'no_eval', train), check=False)
    _one_line_error(proc, 'no evaluation recorded in')


def test_train_tool_names_a_missing_load_from(tmp_path, det_cfg):
    missing = str(tmp_path / 'nowhere.pth')
    proc = run_tool('tools/train.py', det_cfg, '--work-dir', str(tmp_path / 'w'),
                    '--cfg-options', f'load_from={missing}', check=False)
    _one_line_error(proc, f'checkpoint not found: {missing}')


@pytest.mark.parametrize('tool, option, expected', [
    ('tools/train.py', 'model.backbone.arch=zz', 'model.backbone: unknown MUXNet arch "zz"'),
    ('tools/train.py', 'model.backbone=3', 'model.backbone must be a dict such as'),
    ('tools/test.py', 'model.backbone.archh=m',
     "model.backbone: got an unexpected keyword argument 'archh'"),
])
def test_runner_tools_name_a_bad_backbone_argument(tmp_path, det_cfg, tool, option, expected):
    """The runner would build the model deep inside mmengine and end in a traceback."""
    ckpt = () if tool == 'tools/train.py' else (str(tmp_path / 'never_read.pth'), )
    proc = run_tool(tool, det_cfg, *ckpt, '--work-dir', str(tmp_path / 'w'), '--cfg-options',
                    option, check=False)
    _one_line_error(proc, expected)


def test_backbone_arguments_checked_for_muxnet_alone(det_cfg):
    cfg = Config.fromfile(det_cfg)
    for kind in ('MUXNet', 'mmdet.MUXNet', MUXNet):
        cfg.model.backbone.type = kind
        cfg.model.backbone.fused_ops = 'maybe'
        with pytest.raises(ToolError, match=r'^model.backbone: fused_ops must be True or False'):
            check_backbone_arguments(cfg)
    # another backbone's arguments are its own builder's business
    cfg.model.backbone = dict(type='MobileNetV2', widen_factor='wide')
    check_backbone_arguments(cfg)
    cfg.model.backbone = dict(type='MUXNet', arch='tiny', out_indices=(4, 7), frozen_stages=2)
    check_backbone_arguments(cfg)
    cfg.model.backbone.out_indices = (9, )  # the analysis tools' builder checks the same
    with pytest.raises(ToolError, match='model.backbone: out_indices entry 9 is out of range'):
        build_model_from_config(cfg)


@pytest.mark.parametrize('option, match', [
    # the neck's in_channels were computed when the config was read
    ({'model.backbone.widen_factor': 2.0},
     r'model.neck.in_channels \(32, 64\): the backbone gives \(64, 128\) at out_indices'),
    ({'model.backbone.out_indices': (7, )}, r'the backbone gives \(64,\) at out_indices \(7,\)'),
])
def test_channels_the_neck_reads_checked_against_the_backbone(det_cfg, option, match):
    cfg = Config.fromfile(det_cfg)
    cfg.merge_from_dict(option)
    with pytest.raises(ToolError, match=match):
        check_backbone_arguments(cfg)


def test_channels_the_decode_heads_read_checked_against_the_backbone(tmp_path, toy_ade):
    cfg = Config.fromfile(write_seg_config(tmp_path, toy_ade))
    check_backbone_arguments(cfg)
    cfg.model.backbone.out_indices = (6, )
    with pytest.raises(ToolError, match=r'model.decode_head.in_index 1 reads outside the 1 '
                                        r'backbone outputs'):
        check_backbone_arguments(cfg)
    cfg.model.backbone.out_indices = (5, 6)
    cfg.model.auxiliary_head.in_channels += 1
    with pytest.raises(ToolError, match=r'model.auxiliary_head.in_channels \d+ at in_index 0'):
        check_backbone_arguments(cfg)


def test_toy_data_under_a_file_is_one_line(tmp_path):
    afile = tmp_path / 'a_file'
    afile.write_text('')
    proc = run_tool('tools/dataset_converters/make_toy_data.py', '--out', str(afile), '--task',
                    'det', check=False)
    _one_line_error(proc, f'cannot write {afile}/toy_voc/VOCdevkit: Not a directory')


class _BadLabels(torch.utils.data.Dataset):
    def __len__(self):
        return 1

    def __getitem__(self, index):
        from mux_backbones.datasets.checks import DatasetError
        raise DatasetError('label map x.png has value 21, above the 5 allowed')


def test_a_bad_input_found_in_a_dataloader_worker_is_still_one_line():
    """torch re-raises a worker's error with the worker's whole traceback as its message."""
    from mux_backbones.cli import exits_cleanly
    from mux_backbones.cli.args import error_line
    from mux_backbones.datasets.checks import DatasetError

    @exits_cleanly
    def main():
        next(iter(torch.utils.data.DataLoader(_BadLabels(), num_workers=1)))

    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 'error: label map x.png has value 21, above the 5 allowed'
    assert error_line(DatasetError('a: b')) == 'a: b'  # raised in this process: as it is


def test_publish_model_refuses_what_it_cannot_publish(tmp_path, det_cfg, toy_ade):
    tool = 'tools/model_converters/publish_model.py'
    ckpt = save_model_of(det_cfg, tmp_path / 'det.pth')
    out = str(tmp_path / 'pub' / 'det.pth')
    _one_line_error(run_tool(tool, ckpt, out, '--save-keys', 'optimizer', check=False),
                    '--save-keys optimizer:', 'has no such key (it has meta, state_dict)')
    seg_cfg = write_seg_config(tmp_path, toy_ade)
    _one_line_error(run_tool(tool, ckpt, out, '--config', seg_cfg, check=False),
                    f'checkpoint {ckpt} does not fit the model', 'first: "')
    _one_line_error(run_tool(tool, ckpt, str(tmp_path), check=False), 'is a folder')
    (tmp_path / 'file').write_text('')
    _one_line_error(run_tool(tool, ckpt, str(tmp_path / 'file' / 'det.pth'), check=False),
                    'the folder of out_file', 'is a file')
    numpy_meta = str(tmp_path / 'numpy_meta.pth')  # readable as a training checkpoint is
    torch.save(dict(torch.load(ckpt), meta=dict(best=np.float64(0.5))), numpy_meta)
    _one_line_error(run_tool(tool, numpy_meta, out, check=False),
                    'its "meta" would not load weights-only', 'numpy', '--save-keys')
    assert not osp.exists(tmp_path / 'pub'), 'nothing is written for a refused checkpoint'
    proc = run_tool(tool, numpy_meta, out, '--save-keys', 'state_dict')
    assert 'left out: meta' in proc.stdout


def test_browse_dataset_names_what_it_cannot_browse(tmp_path, det_cfg):
    tool = 'tools/analysis_tools/browse_dataset.py'
    _one_line_error(run_tool(tool, str(tmp_path / 'none.py'), check=False),
                    'config file not found')
    missing = str(tmp_path / 'no_voc')
    proc = run_tool(tool, det_cfg, '--out-dir', str(tmp_path / 'b'), '--cfg-options',
                    f'train_dataloader.dataset.data_root={missing}', check=False)
    _one_line_error(proc, missing)
    (tmp_path / 'file').write_text('')
    _one_line_error(run_tool(tool, det_cfg, '--out-dir', str(tmp_path / 'file'), check=False),
                    f'--out-dir {tmp_path / "file"} cannot be made')
    assert not osp.exists(tmp_path / 'b')
