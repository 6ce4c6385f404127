"""An independent, functional re-implementation of the official MUXNet forward pass.

It reads a timm-style (official layout) state dict directly, following the official release's
semantics: symmetric padding, MixConv splits with the remainder on the first group, split-then-
shuffle for ``sp`` rows, SE reduced from the row's input channels, swish except ``nre`` rows.
Used only to check that converted weights give the official model's outputs.
"""
import torch
import torch.nn.functional as F

# The official MUXNet-m rows (one block each), as released.
OFFICIAL_M_ROWS = [
    'ds_r1_k3_s1_e1_c24_se0.25_nre',
    'ir_r1_k3_s2_e4_c24_se0.75_nre', 'sp_r1_k3_s1_e4_c24_se0.75_sr0.5_sg2_dwg2_nre',
    'sp_r1_k3_s1_e4_c24_se0.75_sr0.5_sg2_dwg2_nre',
    'ir_r1_k3.5.7_s2_e4_c40_se0.75', 'sp_r1_k3_s1_e6_c40_se0.75_sr0.5_sg2_dwg2',
    'sp_r1_k3_s1_e6_c40_se0.75_sr0.5_sg2_dwg2',
    'ir_r1_k3.5.7.9_s2_e4_c80_se0.75', 'sp_r1_k5_s1_e6_c80_se0.75_sr0.5_sg2_dwg2',
    'sp_r1_k5_s1_e6_c80_se0.75_sr0.5_sg2_dwg2',
    'ir_r1_k5_s1_e6_c112_se0.75', 'sp_r1_k5_s1_e6_c112_se0.75_sr0.5_sg2_dwg2',
    'sp_r1_k5_s1_e6_c112_se0.75_sr0.5_sg2_dwg2',
    'ir_r1_k3.5.7.9.11_s2_e4_c160_se0.75', 'sp_r1_k5_s1_e6_c160_se0.75_sr0.5_sg2_dwg2',
    'sp_r1_k5_s1_e6_c160_se0.75_sr0.5_sg2_dwg2', 'sp_r1_k5_s1_e6_c160_se0.75_sr0.5_sg2_dwg2',
    'ir_r1_k3_s1_e6_c200_se0.75',
]


def _bn(x, sd, p):
    return F.batch_norm(x, sd[f'{p}.running_mean'], sd[f'{p}.running_var'], sd[f'{p}.weight'],
                        sd[f'{p}.bias'], False, 0.0, 1e-5)


def _conv(x, w, stride=1, bias=None):
    k = w.shape[-1]
    return F.conv2d(x, w, bias, stride, ((stride - 1) + (k - 1)) // 2, 1, x.shape[1] // w.shape[1])


def _dw(x, sd, p, stride):
    if f'{p}.weight' in sd:
        return _conv(x, sd[f'{p}.weight'], stride)
    weights = []
    while f'{p}.{len(weights)}.weight' in sd:
        weights.append(sd[f'{p}.{len(weights)}.weight'])
    parts = torch.split(x, [w.shape[0] for w in weights], 1)
    return torch.cat([_conv(xi, w, stride) for xi, w in zip(parts, weights)], 1)


def _se(x, sd, p, act):
    s = x.mean((2, 3), keepdim=True)
    s = act(F.conv2d(s, sd[f'{p}.conv_reduce.weight'], sd[f'{p}.conv_reduce.bias']))
    s = F.conv2d(s, sd[f'{p}.conv_expand.weight'], sd[f'{p}.conv_expand.bias'])
    return x * torch.sigmoid(s)


def _inverted_residual(x, sd, p, stride, act):
    shortcut = x
    x = act(_bn(F.conv2d(x, sd[f'{p}.conv_pw.weight']), sd, f'{p}.bn1'))
    x = act(_bn(_dw(x, sd, f'{p}.conv_dw', stride), sd, f'{p}.bn2'))
    x = _se(x, sd, f'{p}.se', act)
    x = _bn(F.conv2d(x, sd[f'{p}.conv_pwl.weight']), sd, f'{p}.bn3')
    return x + shortcut if stride == 1 and x.shape == shortcut.shape else x


def official_forward(sd, x, rows=OFFICIAL_M_ROWS):
    swish = F.silu
    x = swish(_bn(_conv(x, sd['conv_stem.weight'], 2), sd, 'bn1'))
    for i, row in enumerate(rows):
        p = f'blocks.{i}.0'
        kind, stride = row.split('_')[0], 2 if '_s2_' in row else 1
        act = F.relu if row.endswith('_nre') else swish
        if kind == 'ds':
            y = act(_bn(_dw(x, sd, f'{p}.conv_dw', stride), sd, f'{p}.bn1'))
            y = _bn(F.conv2d(_se(y, sd, f'{p}.se', act), sd[f'{p}.conv_pw.weight']), sd, f'{p}.bn2')
            x = x + y if stride == 1 and y.shape == x.shape else y
        elif kind == 'ir':
            x = _inverted_residual(x, sd, p, stride, act)
        else:  # sp: process half, copy half, shuffle with 2 groups
            c = x.shape[1] // 2
            y = torch.cat([_inverted_residual(x[:, :c], sd, p, 1, act), x[:, c:]], 1)
            n, ch, h, w = y.shape
            x = y.view(n, 2, ch // 2, h, w).transpose(1, 2).reshape(n, ch, h, w)
    x = swish(_bn(F.conv2d(x, sd['conv_head.weight']), sd, 'bn2'))
    return F.linear(x.mean((2, 3)), sd['classifier.weight'], sd['classifier.bias'])
