"""Triton's on-disk cache for an H100/H200, built on a machine without a GPU.

A lease of the GPU machine is 15 minutes of device time for everything, machine start included,
and each of its processes compiles the fused kernels it launches for the first time (1-15 s each
on an sm_90, dozens per case; session 40's kernel check spent its whole 110 s phase compiling).
This tool compiles those kernels here instead, with Triton's own compiler, into a cache folder
that travels with the device run (``carry``) and is unpacked there at the same absolute path
(Triton's cache entries name their files by absolute path), where each process finds its
kernels under the key it computes itself.

What it compiles: every kernel launch of the lease's cases (``CASES``: MUXNet-m's fused deploy
forward at the batches and precisions of the kernel check and the graph rows, the committed
launch-config table loaded as the lease loads it; the epilogue GEMMs' tuning candidates at
batch 32; the SSDLite and PSPNet-d8 backbones' ``fused_ops`` training step under fp16
autocast): the compile jobs :func:`mux_backbones.tuning.precompile_kernels` (and
``tune_kernels``) would hand their workers, then a real forward (and backward) of the model to
catch the launches outside those jobs (the squeeze-excites'). The model runs on CPU tensors as
on the GPU: the ops take their kernel path with the GPU's launch plans and the GPU's name for
the table, and each launch is *compiled* for the target instead of run -- Triton's binder
specialises it on its real arguments exactly as on the device (dtypes, 16-byte alignment of
each pointer, integers equal to 1 or divisible by 16), then ``triton.compile`` writes it to the
cache. The stock operators (BN, stem, 1x1 convs in training) compute on the CPU, so a case costs
seconds to a minute; the kernels' outputs are left unwritten (nothing downstream depends on
their values).

The key Triton files a kernel under covers its own files (version and the libtriton build, so
the same wheel: the device's Python 3.12 and Triton 3.6.0), the kernel's source, the ptxas that
ships with it, the options and the specialisation. Run it with the device's Python and Triton
(``tools/gpu/prebuild_triton_cache.sh`` sets that up here and runs it)::

    TRITON_CACHE_DIR=/tmp/mux_triton_cache python tools/gpu/prebuild_triton_cache.py \\
        [--cases deploy train tune_gemms] [--out .triton_cache.tar.gz]

Keeps only what a cache hit reads (each kernel's cubin and metadata; the IR stages go) and packs
the folder into ``--out``, with a manifest (``mux_prebuild.json``: the kernel sources' digest,
the commit, the versions). ``tools/gpu/gpu_check.sh`` unpacks a carried ``.triton_cache.tar.gz``
to the same path, says whether it was built from the kernel sources it runs, and counts the
entries its phases add (kernels the cache did not have).
Needs Triton's CUDA backend, not a GPU; refuses ``TRITON_INTERPRET=1`` (the interpreter's
kernels cannot be compiled).
"""
import argparse
import glob
import importlib
import json
import os
import shutil
import sys
import tarfile
import tempfile
import time
import warnings

if os.environ.get('TRITON_INTERPRET') == '1':
    sys.exit('prebuild_triton_cache.py compiles the kernels: run it without TRITON_INTERPRET=1')

import torch  # noqa: E402

try:
    import triton  # noqa: E402
    from triton import knobs  # noqa: E402
    from triton.backends.compiler import GPUTarget  # noqa: E402
    from triton.compiler import ASTSource, make_backend  # noqa: E402
    from triton.runtime.jit import JITFunction, create_function_from_signature  # noqa: E402
except ImportError as err:  # pragma: no cover - depends on the machine
    sys.exit(f'prebuild_triton_cache.py needs Triton 3.6-3.9 with its CUDA backend ({err})')

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, 'tools', 'analysis_tools'))

from mux_backbones.layers import block_launches  # noqa: E402
from mux_backbones.ops import _launch, _triton, launch_config  # noqa: E402
from mux_backbones.ops._triton import PLANNING_MODULES  # noqa: E402

CACHE_DIR = '/tmp/mux_triton_cache'  # gpu_check.sh unpacks the cache here on the device
DEVICE_NAME = 'NVIDIA H200'  # what the committed launch-config table was tuned on
TABLE = 'tools/gpu/tuned/h200_muxnet-m_fp16_b32.json'  # what next_lease.sh loads
MANIFEST = 'mux_prebuild.json'

# The lease's cases (tools/gpu/next_lease.sh): (kind, precision, batch, extra).
#   deploy: the fused deploy forward, 224x224 (check_kernels --deploy-only at batch 4 in each
#           precision; the graph rows at 1/32/128 in fp16 and bf16; graph_probe's batch 1 with
#           the SE gate outside the GEMMs, extra '0': block_launches.GATE_IN_GEMM)
#   tune_gemms: every GEMM candidate of the fused deploy forward (bench_tune_gemms)
#   train: a training task's backbone with fused_ops, forward + backward (bench_train)
# Every case runs with TABLE loaded, the phases that load none (check_kernels, bench_train,
# graph_probe) included: its entries are keyed by shape, all batch-32 fp16, so at their
# shapes the planner's launches are the ones compiled either way.
CASES = {
    'deploy': [('deploy', amp, batch, None) for amp in ('fp32', 'fp16', 'bf16')
               for batch in (4, )] +
              [('deploy', amp, batch, None) for amp in ('fp16', 'bf16') for batch in (1, 32, 128)] +
              [('deploy', 'fp16', 1, '0')],
    'tune_gemms': [('tune_gemms', 'fp16', 32, None)],
    'train': [('train', 'fp16', None, 'ssdlite'), ('train', 'fp16', None, 'pspnet')],
}
MODEL, IMAGE = 'muxnet-m', 224  # the deploy cases' net and input side (tests shrink them)
DTYPES = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}


class CompileForTarget:
    """Every ``@triton.jit`` launch in this process compiled for ``target`` and not run: what
    Triton's ``JITFunction.run`` does before its launch (Triton 3.6-3.9: options, binding,
    specialisation, ``_pack_args``, ``ASTSource``, ``triton.compile`` into the on-disk cache).
    Counts compiles, cache hits (a kernel already there) and failures."""

    def __init__(self, target):
        self.target, self.backend = target, make_backend(target)
        self.binders, self.seen, self.launchers = {}, set(), set()
        self.compiled = self.failed = self.repeated = 0
        self.seconds = 0.0

    def install(self):
        tool = self

        def run(jit, *args, grid, warmup, **kwargs):
            tool.compile(jit, args, kwargs)
            return None  # (no compiled kernel: the ops' direct launches stay unset)

        JITFunction.run = run

    def compile(self, jit, args, kwargs):
        kwargs['debug'] = kwargs.get('debug', jit.debug) or knobs.runtime.debug
        for name in ('instrumentation_mode', 'fpsan_homomorphic_casts'):  # (by Triton version)
            if hasattr(knobs.compilation, name):
                kwargs[name] = getattr(knobs.compilation, name)
        binder = self.binders.get(jit)
        if binder is None:
            binder = self.binders[jit] = create_function_from_signature(
                jit.signature, jit.params, self.backend)
        bound, specialization, options = binder(*args, **kwargs)
        key = (jit.fn.__qualname__, str(specialization), str(options))
        if key in self.seen:
            self.repeated += 1
            return
        self.seen.add(key)
        options, signature, constexprs, attrs = jit._pack_args(
            self.backend, kwargs, bound, specialization, options)
        start = time.perf_counter()
        try:
            kernel = triton.compile(ASTSource(jit, signature, constexprs, attrs),
                                    target=self.target, options=options.__dict__)
            self.compiled += 1
        except Exception as err:  # e.g. a tuning candidate out of shared memory: the device
            self.failed += 1      # compiles it (and fails) as it would have anyway
            warnings.warn(f'{jit.fn.__name__}: {type(err).__name__}: {str(err)[:200]}',
                          RuntimeWarning)
        else:
            self.build_launcher(kernel)
        self.seconds += time.perf_counter() - start

    def build_launcher(self, kernel) -> None:
        """The kernel's C launcher (Triton builds one per signature with the host's C compiler
        at a kernel's first launch, ~1 s each, and caches it beside the kernels): built here
        against a stand-in ``libcuda.so.1`` (:func:`stand_in_libcuda`; the device's driver is
        what it loads there). Loading it here fails, after it is in the cache. Triton 3.9
        launches every kernel through the driver module's one function instead
        (:func:`build_driver_utils`): nothing to build per kernel."""
        from triton.backends.nvidia import driver
        if not hasattr(driver, 'make_launcher'):  # Triton 3.9+
            return
        src = kernel.src
        # (what CudaLauncher generates, Triton 3.6-3.8: one build per distinct source)
        constants = {(src.fn.arg_names.index(k), ) if isinstance(k, str) else k: v
                     for k, v in getattr(src, 'constants', {}).items()}
        code = driver.make_launcher(constants, dict(src.signature),
                                    getattr(kernel.metadata, 'tensordesc_meta', None))
        if code in self.launchers:
            return
        self.launchers.add(code)
        try:
            driver.CudaLauncher(src, kernel.metadata)
        except ImportError:  # (no driver here to bind its calls to)
            pass


_GENUINE_RUN = JITFunction.run


class _StandInDriver:
    """Triton's active driver where its JIT asks it (the target, device, stream), no GPU."""

    def __init__(self, target):
        self.target = target

    def get_current_target(self):
        return self.target

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0


def cache_entries(cache_dir: str) -> set:
    return set(os.listdir(cache_dir)) if os.path.isdir(cache_dir) else set()


def verify(target, cases, cache_dir: str) -> set:
    """The cases again through Triton's own ``JITFunction.run`` (as ``warmup``: compile or find
    in the cache, launch nothing), with a stand-in driver naming ``target``: the cache entries
    that adds -- the launches the device would not find. Empty when the keys this tool filed its
    kernels under are Triton's."""
    from triton.runtime import driver
    driver.set_active(_StandInDriver(target))

    def run(jit, *args, grid, warmup, **kwargs):
        return _GENUINE_RUN(jit, *args, grid=grid, warmup=True, **kwargs)

    JITFunction.run = run
    before = cache_entries(cache_dir)
    for case in cases:
        run_case(*case)
    return cache_entries(cache_dir) - before


def stand_in_libcuda(folder: str) -> None:
    """An empty ``libcuda.so.1`` in ``folder``, for Triton to link its launchers against (it
    names the library in each; the device's driver provides its functions at load time)."""
    import subprocess
    subprocess.run(['gcc', '-shared', '-fPIC', '-Wl,-soname,libcuda.so.1', '-x', 'c', '/dev/null',
                    '-o', os.path.join(folder, 'libcuda.so.1')], check=True)
    os.environ['TRITON_LIBCUDA_PATH'] = folder


def build_driver_utils() -> None:
    """Triton's CUDA driver module (``cuda_utils``: built per process where the cache lacks it),
    into the cache."""
    from triton.backends.nvidia.driver import CudaUtils
    try:
        CudaUtils()
    except ImportError:
        pass


def plan_as_on_the_gpu() -> None:
    """CPU tensors take the kernels' path as CUDA tensors do, with the GPU's launch plans and
    tuned-table lookups under the GPU's name; every launch through ``kernel[grid]``."""
    cuda_dtypes = _triton._CUDA_DTYPES
    _triton.interpreting = lambda: True  # (what lets CPU tensors reach the kernels)
    _triton.unsupported_reason = lambda x: None if x.dtype in cuda_dtypes else 'dtype'
    for name in ('mux_backbones.ops.gated_map', ):  # (its own copy of the check)
        importlib.import_module(name).interpreting = lambda: True
    for name in PLANNING_MODULES:  # planned as on a GPU
        importlib.import_module(name).interpreting = lambda: False
    _launch.DIRECT = False
    launch_config.device_kind = lambda device: DEVICE_NAME


def run_jobs(jobs) -> int:
    for job in jobs:
        job[0](*job[1:])
    return len(jobs)


def deploy_model(amp: str, batch: int):
    from benchmark import build_backbone  # (tools/analysis_tools: the lease's own builder)

    from mux_backbones.deploy import switch_to_deploy
    model = build_backbone(MODEL)
    x = torch.randn(batch, 3, IMAGE, IMAGE).to(DTYPES[amp]).contiguous(
        memory_format=torch.channels_last)
    switch_to_deploy(model, channels_last=True, fused_ops=True)
    return model.to(DTYPES[amp]), x


def run_case(kind: str, amp: str, batch, extra) -> str:
    from mux_backbones.tuning import compile_jobs_of
    if kind in ('deploy', 'tune_gemms'):
        model, x = deploy_model(amp, batch)
        policy = block_launches.GATE_IN_GEMM
        block_launches.GATE_IN_GEMM = extra or policy
        try:
            jobs = compile_jobs_of(model, x, kernels='gemms' if kind == 'tune_gemms' else 'all',
                                   current_only=kind == 'deploy')
            run_jobs(jobs)
            if kind == 'deploy':
                with torch.no_grad():
                    model(x)
        finally:
            block_launches.GATE_IN_GEMM = policy
        return f'{kind} {amp} batch {batch}' + (f' GATE_IN_GEMM={extra}' if extra else '')
    from benchmark import _TRAIN_CASES
    from mmengine.config import Config

    from mux_backbones.cli import build_model_from_config
    size, cfgs = _TRAIN_CASES[extra]
    batch = 24 if extra == 'ssdlite' else 8  # (benchmark.py's training batches)
    cfg = Config.fromfile(os.path.join(REPO, 'configs', cfgs['muxnet-m']))
    cfg.model.backbone.fused_ops = True
    backbone = build_model_from_config(cfg).train().backbone
    backbone.to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, *size).contiguous(memory_format=torch.channels_last)
    with torch.autocast('cpu', dtype=DTYPES[amp]):
        run_jobs(compile_jobs_of(backbone, x, backward=True))
        out = backbone(x)
    sum(o.float().sum() for o in out).backward()
    return f'train {extra} {amp} batch {batch} {size[0]}x{size[1]}'


def prune(cache_dir: str) -> int:
    """Keep what a cache hit reads: each kernel's metadata (JSON) and binary (cubin), the group
    files listing them (rewritten to those two). Returns the entries kept."""
    kept = 0
    for group in glob.glob(os.path.join(cache_dir, '*', '__grp__*.json')):
        with open(group) as f:
            data = json.load(f)
        children = data.get('child_paths', {})
        keep = {name: path for name, path in children.items()
                if name.endswith(('.json', '.cubin'))}
        for name, path in children.items():
            if name not in keep and os.path.exists(path):
                os.remove(path)
        data['child_paths'] = keep
        with open(group, 'w') as f:
            json.dump(data, f)
        kept += 1
    return kept


def kernel_sources_digest() -> str:
    """SHA-256 of the kernels' sources (``mux_backbones/ops/*.py``, concatenated in name order):
    what ``gpu_check.sh`` computes the same way (``sha256sum``) to tell whether the carried
    cache was built from the tree it runs. A different digest only costs compiles (Triton's
    keys keep a stale kernel from being used), but says why the lease built them."""
    import hashlib
    digest = hashlib.sha256()
    for path in sorted(glob.glob(os.path.join(REPO, 'mux_backbones', 'ops', '*.py'))):
        with open(path, 'rb') as f:
            digest.update(f.read())
    return digest.hexdigest()


def write_manifest(cache_dir: str, args, tool) -> None:
    """``MANIFEST`` (beside the cache's entries, which Triton never lists) for the lease's
    stamps: the kernel sources' digest and what the cache was built with."""
    import subprocess
    commit = subprocess.run(['git', '-C', REPO, 'rev-parse', '--short', 'HEAD'],
                            capture_output=True, text=True).stdout.strip() or 'unknown'
    with open(os.path.join(cache_dir, MANIFEST), 'w') as f:
        json.dump({'kernel_sources_sha256': kernel_sources_digest(), 'commit': commit,
                   'triton': triton.__version__, 'python': sys.version.split()[0],
                   'capability': args.capability, 'cases': args.cases,
                   'launch_configs': args.launch_configs, 'kernels': tool.compiled}, f)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--cases', nargs='+', default=list(CASES), choices=list(CASES))
    parser.add_argument('--launch-configs', default=TABLE,
                        help='the tuned table the lease loads (its entries are the GPU\'s)')
    parser.add_argument('--capability', type=int, default=90,
                        help='the GPU\'s (major * 10 + minor)')
    parser.add_argument('--no-verify', dest='verify', action='store_false',
                        help='skip the check that Triton\'s own JIT finds every kernel')
    parser.add_argument('--out', default='.triton_cache.tar.gz',
                        help='the packed cache (git-ignored; carry it to the device)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cache_dir = os.environ.get('TRITON_CACHE_DIR')
    if cache_dir != CACHE_DIR:
        sys.exit(f'set TRITON_CACHE_DIR={CACHE_DIR}: the path the device unpacks the cache to '
                 f'(Triton\'s cache entries name their files by absolute path)')
    shutil.rmtree(cache_dir, ignore_errors=True)  # (only this run's kernels travel)
    torch.manual_seed(0)
    plan_as_on_the_gpu()
    tool = CompileForTarget(GPUTarget('cuda', args.capability, 32))
    tool.install()
    libcuda = tempfile.mkdtemp()
    stand_in_libcuda(libcuda)
    build_driver_utils()
    if args.launch_configs:
        launch_config.load(os.path.join(REPO, args.launch_configs))
    print(f'Triton {triton.__version__}, Python {sys.version.split()[0]}, torch '
          f'{torch.__version__}; target sm_{args.capability}; cache {cache_dir}', flush=True)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)
        for name in args.cases:
            for case in CASES[name]:
                start, before = time.perf_counter(), tool.compiled
                label = run_case(*case)
                print(f'{label}: {tool.compiled - before} kernels compiled, '
                      f'{time.perf_counter() - start:.0f} s', flush=True)
    kept = prune(cache_dir)
    print(f'{tool.compiled} compiled ({tool.seconds:.0f} s), {tool.repeated} launches of a '
          f'kernel already compiled, {tool.failed} failed; {kept} cache entries', flush=True)
    if args.verify:
        cases = [case for name in args.cases if name != 'tune_gemms' for case in CASES[name]]
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', UserWarning)
            missed = verify(tool.target, cases, cache_dir)
        print(f'verify: Triton\'s own JIT path, the cases run again: {len(missed)} kernels not '
              f'in the cache', flush=True)
        if missed:
            sys.exit('error: the cache misses kernels Triton looks up (see above)')
    write_manifest(cache_dir, args, tool)
    with tarfile.open(args.out, 'w:gz') as tar:
        tar.add(cache_dir, arcname=os.path.basename(cache_dir))
    print(f'{args.out}: {os.path.getsize(args.out) / 2**20:.1f} MiB')


if __name__ == '__main__':
    main()
