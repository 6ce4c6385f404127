"""The command-line tools run end to end on tiny models: train, test (--out, --show-dir, --tta),
demo (an image, a folder), get_flops, browse_dataset, print_config, the checkpoint converter and
publish_model."""
import hashlib
import os
import os.path as osp
import pickle
import re
import shutil

import mmcv
import pytest
import torch

from .helpers import run_tool, save_model_of, write_det_config, write_seg_config


def test_det_train_test_demo(tmp_path, toy_voc):
    cfg = write_det_config(tmp_path, toy_voc, max_iters=2, ckpt_interval=2, val_interval=2)
    work = str(tmp_path / 'work')
    # (mmengine's own publishing of the last checkpoint after training, which reads it back)
    out = run_tool('tools/train.py', cfg, '--work-dir', work, '--cfg-options',
                   'default_hooks.checkpoint.published_keys=[meta,state_dict]')
    log = out.stdout + out.stderr
    assert 'pascal_voc/mAP' in log and 'Iter(train) [2/2]' in log
    assert '| car ' in log  # per-class AP table
    ckpt = osp.join(work, 'iter_2.pth')
    by_mmengine = re.search(r'is published to (\S+)\.$', log, re.M).group(1)
    assert set(torch.load(by_mmengine, weights_only=True)) == {'meta', 'state_dict'}
    vis, pkl = str(tmp_path / 'vis'), str(tmp_path / 'res.pkl')
    out = run_tool('tools/test.py', cfg, ckpt, '--work-dir', work, '--out', pkl, '--show-dir', vis)
    assert 'pascal_voc/mAP' in out.stdout + out.stderr
    trained_map = _voc_map(out)
    with open(pkl, 'rb') as f:
        results = pickle.load(f)
    assert len(results) == 8 and 'pred_instances' in results[0]
    drawn = [f for _, _, fs in os.walk(vis) for f in fs if f.endswith('.jpg')]
    assert len(drawn) == 8, 'one drawn image per test image expected'
    out = run_tool('tools/test.py', cfg, ckpt, '--work-dir', work, '--out', pkl, '--tta')
    assert 'pascal_voc/mAP' in out.stdout + out.stderr
    with open(pkl, 'rb') as f:
        results = pickle.load(f)  # (merged into the first, unflipped view)
    assert len(results) == 8 and results[0]['flip'] is False
    img = osp.join(toy_voc, 'VOC2007/JPEGImages/000000.jpg')
    out_img = str(tmp_path / 'demo.jpg')
    run_tool('tools/demo.py', img, cfg, ckpt, '--out-file', out_img, '--score-thr', '0.0')
    assert osp.getsize(out_img) > 0
    photos = tmp_path / 'photos'
    photos.mkdir()
    for name in ('000000.jpg', '000001.jpg'):
        shutil.copy(osp.join(toy_voc, 'VOC2007/JPEGImages', name), photos / name)
    out = run_tool('tools/demo.py', str(photos), cfg, ckpt, '--out-dir', str(tmp_path / 'drawn'),
                   '--score-thr', '0.0')
    assert out.stdout.count('objects above score 0.0') == 2
    assert sorted(os.listdir(tmp_path / 'drawn')) == ['000000.jpg', '000001.jpg']

    out = run_tool('tools/model_converters/publish_model.py', ckpt,
                   str(tmp_path / 'published' / 'ssdlite.pth'), '--config', cfg)
    published = re.search(r'published (\S+):', out.stdout).group(1)
    assert re.fullmatch(r'.*/published/ssdlite-[0-9a-f]{8}\.pth', published), published
    data = open(published, 'rb').read()
    assert published.endswith(f'-{hashlib.sha256(data).hexdigest()[:8]}.pth')
    assert 'optimizer' in out.stdout.partition('left out: ')[2]  # (and the message hub)
    loaded = torch.load(published, weights_only=True)  # no allow-list needed
    assert set(loaded) == {'meta', 'state_dict'} and loaded['meta']['dataset_meta']['classes']
    assert all(v.is_contiguous() for v in loaded['state_dict'].values())
    trained = torch.load(ckpt, weights_only=False)['state_dict']
    assert all(torch.equal(trained[k], v) for k, v in loaded['state_dict'].items())
    assert loaded['state_dict'].keys() == torch.load(by_mmengine)['state_dict'].keys()
    out = run_tool('tools/test.py', cfg, published, '--work-dir', work)
    assert _voc_map(out) == trained_map


def _voc_map(proc):
    return re.findall(r'pascal_voc/mAP: ([0-9.]+)', proc.stdout + proc.stderr)[-1]


def test_seg_train_test_demo(tmp_path, toy_ade):
    cfg = write_seg_config(tmp_path, toy_ade, max_iters=2)
    work = str(tmp_path / 'work')
    out = run_tool('tools/train.py', cfg, '--work-dir', work)
    log = out.stdout + out.stderr
    assert 'mIoU' in log and 'aAcc' in log
    assert re.search(r'\|\s+wall\s+\|', log)  # per-class IoU table
    ckpt = osp.join(work, 'iter_2.pth')
    vis, maps = str(tmp_path / 'vis'), tmp_path / 'maps'
    out = run_tool('tools/test.py', cfg, ckpt, '--work-dir', work, '--show-dir', vis,
                   '--out', str(maps))
    assert 'mIoU' in out.stdout + out.stderr
    drawn = [f for _, _, fs in os.walk(vis) for f in fs if f.endswith('.png')]
    assert len(drawn) == 4
    # --out FOLDER: each predicted label map as a PNG named after its image, in ADE20K's own
    # numbering (1-150 for the classes; the toy set reduces the zero label)
    images = sorted(os.listdir(osp.join(toy_ade, 'images/validation')))[:4]
    assert sorted(os.listdir(maps)) == [osp.splitext(name)[0] + '.png' for name in images]
    label_map = mmcv.imread(str(maps / os.listdir(maps)[0]), flag='unchanged')
    image = mmcv.imread(osp.join(toy_ade, 'images/validation', images[0]))
    assert label_map.shape == image.shape[:2] and 1 <= label_map.min() <= label_map.max() <= 150
    out = run_tool('tools/test.py', cfg, ckpt, '--work-dir', work, '--tta')
    log = out.stdout + out.stderr
    assert "type='SegTTAModel'" in log and 'mIoU' in log
    img = osp.join(toy_ade, 'images/validation/ADE_valid_00000000.jpg')
    out_img = str(tmp_path / 'demo.png')
    out = run_tool('tools/demo.py', img, cfg, ckpt, '--out-file', out_img)
    assert 'classes found' in out.stdout and osp.getsize(out_img) > 0


def test_demo_draws_every_image_of_a_folder(tmp_path, toy_ade):
    """The model is built once; each image gets a drawing of its own name in FOLDER_pred, a
    file that is not an image is ignored, an image that cannot be drawn is skipped with a
    warning."""
    import numpy as np
    from PIL import Image
    cfg = write_seg_config(tmp_path, toy_ade)
    ckpt = save_model_of(cfg, tmp_path / 'seg.pth')
    photos = tmp_path / 'photos'
    photos.mkdir()
    rng = np.random.default_rng(0)
    for name, side in (('a.jpg', 40), ('b.png', 24), ('dot.png', 1)):
        Image.fromarray(rng.integers(0, 255, (side, side, 3), np.uint8)).save(photos / name)
    (photos / 'broken.jpg').write_bytes(b'\xff\xd8 not really a jpeg')
    (photos / 'notes.txt').write_text('not an image')
    proc = run_tool('tools/demo.py', str(photos), cfg, ckpt)
    assert sorted(os.listdir(tmp_path / 'photos_pred')) == ['a.jpg', 'b.png']
    assert 'saved 2 drawings in' in proc.stdout
    assert proc.stdout.count('classes found') == 2
    warnings = [line for line in proc.stderr.splitlines() if line.startswith('warning: skipped')]
    assert len(warnings) == 2 and 'broken.jpg' in warnings[0] and 'dot.png is 1x1' in warnings[1]
    drawn = np.asarray(Image.open(tmp_path / 'photos_pred' / 'b.png'))
    assert drawn.shape[0] >= 24 and drawn.shape[1] > 24  # the image and its legend
    # one image into a folder of drawings
    out_dir = tmp_path / 'drawings'
    run_tool('tools/demo.py', str(photos / 'a.jpg'), cfg, ckpt, '--out-dir', str(out_dir))
    assert os.listdir(out_dir) == ['a.jpg']


@pytest.mark.parametrize('task', ['det', 'seg'])
def test_browse_dataset_draws_the_training_pipeline(tmp_path, toy_voc, toy_ade, task):
    cfg = (write_det_config(tmp_path, toy_voc) if task == 'det'
           else write_seg_config(tmp_path, toy_ade))
    out_dir = tmp_path / 'browse'
    out = run_tool('tools/analysis_tools/browse_dataset.py', cfg, '--num', '2', '--out-dir',
                   str(out_dir))
    drawn = sorted(os.listdir(out_dir))
    assert len(drawn) == 2 and drawn[0].startswith('0000_') and drawn[1].startswith('0001_')
    assert f'saved 2 drawings of the train pipeline in {out_dir}' in out.stdout
    lines = out.stdout.splitlines()[:2]
    if task == 'det':
        assert all(re.search(r'\.jpg: [1-9]\d* boxes \(\w', line) for line in lines), lines
    else:
        assert all(re.search(r'\.jpg: classes: \w', line) for line in lines), lines
    # The drawing is the pipeline's output size: SSDLite's 320x320; at most the 192x192 crop for
    # segmentation (a random resize can leave less), with a 180-pixel legend beside it.
    for name in drawn:
        height, width = mmcv.imread(str(out_dir / name)).shape[:2]
        if task == 'det':
            assert (height, width) == (320, 320)
        else:
            assert 0 < height <= 192 and 180 < width <= 192 + 180


def test_print_config_merges_bases_and_names_the_backbone_outputs(tmp_path):
    from mmengine.config import Config
    saved = str(tmp_path / 'merged' / 'retinanet.py')
    out = run_tool('tools/misc/print_config.py', 'configs/swap/retinanet_muxnet-m_fpn_1x_coco.py',
                   '--cfg-options', 'train_dataloader.batch_size=4', '--save-path', saved)
    lines = out.stdout.strip().splitlines()
    assert lines[-2] == ('# backbone MUXNet-m gives 40 ch at stride 8, 112 ch at stride 16, '
                         '200 ch at stride 32 (out_indices (2, 4, 6))')
    assert "type='RetinaHead'" in out.stdout  # from the mmdet:: base
    merged = Config.fromfile(saved)  # reads on its own, without the upstream bases
    assert merged.train_dataloader.batch_size == 4 and merged.model.neck.in_channels == [
        40, 112, 200]
    bad = run_tool('tools/misc/print_config.py', 'configs/swap/retinanet_muxnet-m_fpn_1x_coco.py',
                   '--cfg-options', 'model.backbone.arch=l', check=False)
    assert bad.returncode == 1 and bad.stderr.strip().splitlines()[-1].startswith(
        'error: model.neck.in_channels (40, 112, 200): the backbone gives (40, 120, 200)')
    bad = run_tool('tools/misc/print_config.py', 'configs/swap/retinanet_muxnet-m_fpn_1x_coco.py',
                   '--save-path', str(tmp_path / 'merged.txt'), check=False)
    assert bad.returncode == 1 and '.py, .json, .yaml, .yml file' in bad.stderr


def test_get_flops_arch_and_config(repo_root):
    out = run_tool('tools/analysis_tools/get_flops.py', '--arch', 'm').stdout
    assert '3.354M params' in out and '216.8M MAdds' in out and 'paper' in out
    out = run_tool('tools/analysis_tools/get_flops.py',
                   'configs/ssd/ssdlite_muxnet-m_8xb24-600e_voc0712.py').stdout
    assert 'ssdlite_muxnet-m' in out and 'MAdds' in out and 'paper: 3.2M' in out
    bad = run_tool('tools/analysis_tools/get_flops.py', '--arch', 'zz', check=False)
    assert bad.returncode != 0 and 'unknown MUXNet arch "zz"' in bad.stderr
    # options of a config's model given without a config: refused, not ignored
    bad = run_tool('tools/analysis_tools/get_flops.py', '--arch', 'm', '--cfg-options',
                   'model.backbone.widen_factor=0.5', check=False)
    assert bad.returncode != 0 and '--cfg-options goes with a config' in bad.stderr


def test_converter_cli(tmp_path):
    from mux_backbones import MUXNetClassifier
    from tests.test_models.test_official_weights import to_official
    src, dst = str(tmp_path / 'official.pth'), str(tmp_path / 'converted.pth')
    torch.save({'state_dict_ema': to_official(MUXNetClassifier('m').state_dict())}, src)
    out = run_tool('tools/model_converters/muxnet_official_to_mmengine.py', src, dst, '--arch', 'm')
    assert 'converted 413 tensors' in out.stdout
    assert len(torch.load(dst)['state_dict']) == 413
    bad = run_tool('tools/model_converters/muxnet_official_to_mmengine.py', src, dst, '--arch',
                   'l', check=False)
    assert bad.returncode != 0 and bad.stderr.strip().startswith('error:')
    # an output that is a folder, or the official file itself: refused before anything is read
    before = osp.getmtime(src)
    for out, message in ((str(tmp_path), 'is a folder'), (src, 'the official checkpoint itself')):
        bad = run_tool('tools/model_converters/muxnet_official_to_mmengine.py', src, out,
                       '--arch', 'm', check=False)
        assert bad.returncode == 1 and 'Traceback' not in bad.stderr, bad.stderr
        assert bad.stderr.strip().startswith('error:') and message in bad.stderr
    assert osp.getmtime(src) == before and 'state_dict_ema' in torch.load(src)
