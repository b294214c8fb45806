import pytest

from benchmarks.conftest import BATCH_SIZES
from mlp.backends import available
from mlp.bench import backend_step
from mlp.bench.networks import NETWORKS

CASES = [(net, batch) for net, sizes in BATCH_SIZES.items() for batch in sizes]


@pytest.mark.parametrize("mode", ["train", "infer"])
@pytest.mark.parametrize("network,batch", CASES, ids=[f"{n}-{b}" for n, b in CASES])
@pytest.mark.parametrize("backend", available())
def test_throughput(benchmark, backend, network, batch, mode):
    step, synchronize, model = backend_step(backend, NETWORKS[network], batch, mode)
    step()  # first call (compilation) outside the timing
    synchronize()

    def timed():
        step()
        synchronize()  # a GPU step is timed to its end, not to its launch

    benchmark.group = f"{network}-{mode}-{batch}"
    benchmark.extra_info.update(samples=batch, flops=NETWORKS[network].flops(batch, mode))
    benchmark(timed)
    loss = float(step()) if mode == "train" else None
    assert loss is None or loss == loss  # the timed step still computes a number
