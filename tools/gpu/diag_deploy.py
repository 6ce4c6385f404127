"""Step-by-step run of fused deploy MUXNet-m at a given batch (run with CUDA_LAUNCH_BLOCKING=1):
names the layer whose kernel faults, if one does."""
import sys

import torch

from mux_backbones import MUXNet
from mux_backbones.layers import FusedGroupConv

batch = int(sys.argv[1]) if len(sys.argv) > 1 else 32
model = MUXNet('m').cuda().eval().switch_to_deploy(channels_last=True).half()
names = {m: n for n, m in model.named_modules()}


def hook(module, inputs, output):
    torch.cuda.synchronize()
    print('ok', names[module], tuple(inputs[0].shape), inputs[0].stride(), flush=True)


for m in model.modules():
    if isinstance(m, FusedGroupConv):
        m.register_forward_hook(hook)
x = torch.randn(batch, 3, 224, 224, device='cuda').half().contiguous(
    memory_format=torch.channels_last)
with torch.no_grad():
    model(x)
torch.cuda.synchronize()
print('forward ok at batch', batch, flush=True)
