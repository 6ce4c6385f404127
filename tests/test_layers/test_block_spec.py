import pytest

from mux_backbones.backbones import decode_block_string, decode_stage


def test_official_row_decodes():
    spec, repeats = decode_block_string('sp_r1_k5_s1_e6_c80_se0.75_sr0.5_sg2_dwg2')
    assert repeats == 1
    assert (spec.block_type, spec.kernel_sizes, spec.expand_ratio, spec.out_channels) == \
        ('sp', (5, ), 6.0, 80)
    assert (spec.se_ratio, spec.split_ratio, spec.shuffle_groups, spec.channels_per_group) == \
        (0.75, 0.5, 2, 2)


def test_negative_scales_keep_their_sign():
    spec, _ = decode_block_string('sp_r1_k3_e4_c24_sr0.5_sc-1.0.1_nre')
    assert spec.scales == (-1, 0, 1)
    assert spec.act_cfg == dict(type='ReLU')


def test_mixconv_kernels_and_repeats():
    blocks = decode_stage(['ir_r1_k3.5.7_s2_e4_c40', 'sp_r2_k3_e6_c40_sr0.5'])
    assert [b.stride for b in blocks] == [2, 1, 1]
    assert blocks[0].kernel_sizes == (3, 5, 7)


@pytest.mark.parametrize('text, match', [
    ('xx_r1_k3_c8', 'unknown block type'),
    ('ir_r1_k3', 'lacks "c"'),
    ('ir_r1_k3_c8_zz4', 'cannot parse'),
    ('sp_r1_k3_c8', 'split ratio'),
    ('sp_r1_k3.5.7_c8_sr0.5_sc-1.1', 'kernels for'),
])
def test_bad_block_strings(text, match):
    with pytest.raises(ValueError, match=match):
        decode_block_string(text)
