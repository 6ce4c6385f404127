"""Triton's interpreter made about twice as fast for the test suite, without changing what any
kernel computes or what ``tests/interpreter_checks.py`` checks.

Two costs of Triton's interpreter (3.6-3.9) serve nothing in this suite's tests:

* **Its integer-overflow sanitizer.** By default the interpreter recomputes every 32-bit integer
  add, subtract and multiply in 64 bits and compares (``sanitize_overflow``), nearly half of a
  kernel test's time. The tests' shapes are a few thousand elements, so no offset comes near
  2**31. The ops keep the GPU's int32 limits themselves (``group_conv`` hands tensors of more
  than 2**31 - 1 elements to the stock path, ``pointwise_conv`` computes its rows in int64),
  and an offset that went wrong any other way still lands outside the launch's tensors, which
  the bounds check of ``interpreter_checks`` fails.
* **Re-patching ``triton.language`` at every device-function call.** A launch swaps the
  language's builtins for the interpreter's once; then every call of a ``@triton.jit`` helper
  inside a program swaps them all again (``inspect.getmembers`` over the package, ~2 ms), once
  per call per program. A helper whose ``triton.language`` modules the running launch already
  patched now runs as it is; any other still gets its own patch.
"""
import dataclasses
import functools
import inspect


@functools.lru_cache(maxsize=None)  # once per kernel or helper, not per call
def _languages(fn) -> frozenset:
    """The ``triton.language`` modules the interpreter patches for ``fn`` (those in its globals)."""
    import triton.language as tl
    return frozenset(id(value) for value in fn.__globals__.values()
                     if inspect.ismodule(value) and value in (tl, tl.core))


def install() -> bool:
    """Both speed-ups for the rest of the process; False where this Triton's interpreter is not
    the one this module knows (then it runs as it comes)."""
    try:
        from triton.runtime import interpreter
    except ImportError:  # pragma: no cover - Triton is optional
        return False
    builder = getattr(interpreter, 'interpreter_builder', None)
    executor, function = interpreter.GridExecutor, interpreter.InterpretedFunction
    if builder is None or not dataclasses.is_dataclass(getattr(builder, 'options', None)) or \
            not hasattr(builder.options, 'sanitize_overflow') or \
            not hasattr(interpreter, '_patch_lang'):
        return False
    if getattr(function.__call__, 'patch_once', False):
        return True
    builder.options = dataclasses.replace(builder.options, sanitize_overflow=False)

    run, call = executor.__call__, function.__call__
    patched = []  # the language modules of the launches running now, innermost last

    def run_marking_patched(self, *args, **kwargs):
        patched.append(_languages(self.fn))
        try:
            return run(self, *args, **kwargs)
        finally:
            patched.pop()

    def call_patching_once(self, *args, **kwargs):
        if not patched or not _languages(self.fn) <= patched[-1]:
            return call(self, *args, **kwargs)
        fn = self.rewrite()
        try:
            return fn(*args, **kwargs)
        except Exception as error:  # as the interpreter's own call reports it
            raise interpreter.InterpreterError(repr(error)) from error

    call_patching_once.patch_once = True
    executor.__call__, function.__call__ = run_marking_patched, call_patching_once
    return True
