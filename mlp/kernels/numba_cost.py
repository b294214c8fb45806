"""Whether compiling pays for a fit on the Numba backend: the seconds its steps would save against
the seconds compiling costs with an empty cache, both estimated from the model and the fit's
settings alone (never timed at run time, never from what the cache holds), so that a fit's path,
and so its weights, depend on its settings and the machine's tables and nothing else.

    saved     = steps x reference step x SAVES[path]
    compiling = COMPILE_SECONDS[path] + COMPILE_SECONDS_PER_LAYER[path] x layers
                (x SPLIT_COMPILE_FACTOR for a whole step split across threads)
    reference step = REFERENCE_SECONDS_PER_LAYER x layers + 6 x batch x weights / REFERENCE_FLOPS

Fitted to `python benchmarks/compile_cost.py` (benchmarks/results/cpu-2core-compile-cost.json:
tiny, a digits net, a 10-layer net and mnist at batch 32 and 128, Adam, float32, each compiled in a
fresh process with an empty cache, on a 2-core AMD EPYC). The reference step's estimate is within
about 30% of the measured ones (below them where NumPy's Adam passes over many weights dominate,
mnist at 32); the savings are the least measured share among the paths the crossover would choose,
the compile times about the most measured: a fit compiles only where it clearly wins.
"""
from __future__ import annotations

from mlp.kernels.numba_plan import n_weights

REFERENCE_SECONDS_PER_LAYER = 25e-6  # NumPy's reference step: Python and small-array calls, per layer
REFERENCE_FLOPS = 60e9  # ... and its products' rate, FLOP/s (measured steps: 94 us-8.5 ms)

# The share of the reference step each compiled path saves. Whole step: 0.51-0.76 measured (0.31 at
# mnist 128, where the crossover takes the per-layer path). Per-layer kernels (fused bias and
# activation, one-pass optimizer updates): 0.55 on mnist, -0.35 to 0.35 on the small nets, whose
# steps the whole step takes.
SAVES = {"whole": 0.5, "layers": 0.2}

# Compiling with an empty cache, seconds: whole steps measured 4.7-12.6 s with 3 layers and 18.1 s
# with 10; split across threads 2.2-2.3x that (26.8 s, 27.2 s, 44.2 s); the per-layer kernels of one
# network 1.1-1.9 s.
COMPILE_SECONDS = {"whole": 9.0, "layers": 2.0}
COMPILE_SECONDS_PER_LAYER = {"whole": 1.0, "layers": 0.0}
SPLIT_COMPILE_FACTOR = 2.5


def reference_step_seconds(model, batch) -> float:
    """A training step of `batch` rows on NumPy's reference code, estimated."""
    return REFERENCE_SECONDS_PER_LAYER * len(model.layers) + 6 * batch * n_weights(model) / REFERENCE_FLOPS


def compile_seconds(model, path, split=False) -> float:
    """Compiling `path` ("whole" or "layers") for `model` with an empty cache, estimated."""
    seconds = COMPILE_SECONDS[path] + COMPILE_SECONDS_PER_LAYER[path] * len(model.layers)
    return seconds * (SPLIT_COMPILE_FACTOR if split else 1.0)


def compiling_pays(model, steps, batch, path, split=False) -> bool:
    """Whether `steps` steps of `batch` rows on the compiled `path` ("whole": the whole compiled
    step, `split` across threads or not; "layers": the per-layer kernels) save more than
    compiling them costs."""
    return steps * reference_step_seconds(model, batch) * SAVES[path] > compile_seconds(model, path, split)
