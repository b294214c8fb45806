"""pytest-benchmark suite: every available backend x network x batch size, training step and
inference. Run it with `pytest benchmarks/ --benchmark-only` (add --benchmark-save=NAME and
--benchmark-compare to track changes). MLP_BENCH_SMOKE=1 keeps the smallest batch sizes, for
the smoke test that runs each case once with --benchmark-disable."""
import os

SMOKE = os.environ.get("MLP_BENCH_SMOKE") == "1"
BATCH_SIZES = {
    "tiny": [1, 32] if SMOKE else [1, 8, 32, 128, 512, 2048, 8192],
    "mnist": [1, 32] if SMOKE else [1, 8, 32, 128, 512, 2048, 8192],
    "wide": [1, 8] if SMOKE else [1, 128, 2048, 8192],
}
