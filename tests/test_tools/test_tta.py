"""``tools/test.py --tta`` (mux_backbones/cli/config.py): the config's test-time augmentation
wraps the model and replaces the test pipeline; a detection config without one gets a flip whose
first view is the unflipped image (DetTTAModel keeps the first view's ground truth, which VOC's
metric reads); a segmentation config without one is refused in one line."""
import pytest
from mmengine.config import Config

from mux_backbones.cli import ToolError, use_test_time_augmentation
from mux_backbones.cli.config import flip_views
from .helpers import write_det_config, write_seg_config


def _types(steps):
    return [[view['type'] for view in step] for step in steps]


def _without_tta(cfg):
    for key in ('tta_model', 'tta_pipeline'):
        cfg._cfg_dict.pop(key)
    return cfg


def test_a_config_s_own_augmentation_wraps_the_model(tmp_path, toy_voc):
    cfg = Config.fromfile(write_det_config(tmp_path, toy_voc))
    model, pipeline = cfg.model.copy(), cfg.tta_pipeline
    use_test_time_augmentation(cfg)
    assert cfg.model.type == 'DetTTAModel' and cfg.model.module == model
    assert cfg.test_dataloader.dataset.pipeline == pipeline
    tta = pipeline[-1]['transforms']
    flips = tta[_types(tta).index(['RandomFlip', 'RandomFlip'])]
    assert [view['prob'] for view in flips] == [0., 1.]  # (the unflipped view first)
    assert _types(tta).index(['RandomFlip', 'RandomFlip']) < _types(tta).index(['LoadAnnotations'])


def test_a_detection_config_without_one_gets_a_flip(tmp_path, toy_voc):
    cfg = _without_tta(Config.fromfile(write_det_config(tmp_path, toy_voc)))
    test_pipeline = cfg.test_dataloader.dataset.pipeline
    use_test_time_augmentation(cfg)
    assert cfg.model.type == 'DetTTAModel' and cfg.model.tta_cfg.nms.iou_threshold == 0.5
    pipeline = cfg.test_dataloader.dataset.pipeline
    assert [t['type'] for t in pipeline] == ['LoadImageFromFile', 'Resize', 'TestTimeAug']
    tta = pipeline[-1]['transforms']
    assert _types(tta) == [['RandomFlip', 'RandomFlip'], ['LoadAnnotations'], ['PackDetInputs']]
    assert [view['prob'] for view in tta[0]] == [0., 1.]
    meta_keys = tta[-1][0]['meta_keys']
    assert meta_keys[:len(test_pipeline[-1]['meta_keys'])] == test_pipeline[-1]['meta_keys']
    assert {'flip', 'flip_direction'} <= set(meta_keys)


def test_flip_views_of_pipelines_with_and_without_annotations():
    pipeline = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=(8, 8)),
                dict(type='PackDetInputs')]
    views = flip_views(pipeline)
    assert _types(views[-1]['transforms']) == [['RandomFlip', 'RandomFlip'], ['PackDetInputs']]
    assert 'meta_keys' not in views[-1]['transforms'][-1][0]  # (the default keys hold the flip)
    assert pipeline[-1] == dict(type='PackDetInputs')  # (the test pipeline is left as it was)
    with pytest.raises(ToolError, match='does not end in PackDetInputs'):
        flip_views(pipeline[:-1])


def test_the_inner_datasets_of_wrappers_get_the_augmentation(tmp_path, toy_voc):
    cfg = Config.fromfile(write_det_config(tmp_path, toy_voc))
    inner = cfg.test_dataloader.dataset
    cfg.test_dataloader.dataset = dict(type='RepeatDataset', times=2, dataset=dict(
        type='ConcatDataset', datasets=[inner, inner.copy()]))
    use_test_time_augmentation(cfg)
    wrapper = cfg.test_dataloader.dataset
    assert 'pipeline' not in wrapper and 'pipeline' not in wrapper.dataset
    for dataset in wrapper.dataset.datasets:
        assert dataset.pipeline == cfg.tta_pipeline


def test_a_segmentation_config_without_one_is_refused(tmp_path, toy_ade):
    cfg = Config.fromfile(write_seg_config(tmp_path, toy_ade))
    use_test_time_augmentation(cfg)  # (mmseg's bases define it)
    assert cfg.model.type == 'SegTTAModel' and cfg.model.module.type == 'EncoderDecoder'
    cfg = _without_tta(Config.fromfile(write_seg_config(tmp_path, toy_ade)))
    with pytest.raises(ToolError, match='--tta needs tta_model and tta_pipeline in the config'):
        use_test_time_augmentation(cfg)
