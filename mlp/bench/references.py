"""Reference implementations of the same training step and inference, each run in its own
process (`python -m mlp.bench.references ...`) with the harness's thread settings, so thread
pools never fight: a plain hand-written NumPy step (the naive baseline), PyTorch eager,
torch.compile of the whole step, and JAX jit of the whole step. Same network, loss,
optimizer (SGD, lr 0.01), dtype and data shapes as the mlp backends."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys

import numpy as np

from mlp.bench import memory
from mlp.bench.networks import LR, PRIMER, Network, synthetic_data
from mlp.bench.timing import PEAK_SIZES, gemm_flops, measure, peak_repeat_time

FRAMEWORKS = ("numpy-naive", "torch-eager", "torch-compile", "torch-cudagraph", "jax-jit")
GPU_ONLY = ("torch-cudagraph",)
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "NUMBA_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")


# --- plain NumPy: what one writes by hand from the lectures, no buffers reused -----------
def numpy_naive(network: Network, X, Y):
    rng = np.random.default_rng(0)
    params = [(rng.normal(0, np.sqrt(2 / i), (o, i)).astype(X.dtype), np.zeros(o, X.dtype))
              for i, o in zip(network.sizes, network.sizes[1:])]
    hidden = {"relu": lambda z: np.maximum(z, 0), "tanh": np.tanh}[network.activation]
    hidden_grad = {"relu": lambda a: (a > 0).astype(a.dtype), "tanh": lambda a: 1 - a * a}[network.activation]

    def output(z):
        if network.output == "softmax":
            e = np.exp(z - z.max(axis=1, keepdims=True))
            return e / e.sum(axis=1, keepdims=True)
        if network.output == "sigmoid":
            return 1 / (1 + np.exp(-z))
        return z

    def forward(X):
        acts = [X]
        for i, (W, b) in enumerate(params):
            z = acts[-1] @ W.T + b
            acts.append(output(z) if i == len(params) - 1 else hidden(z))
        return acts

    def loss(A):
        if network.loss == "cross_entropy":
            return -np.sum(Y * np.log(np.maximum(A, 1e-30))) / len(X)
        if network.loss == "binary_cross_entropy":
            A = np.clip(A, 1e-7, 1 - 1e-7)
            return -np.mean(Y * np.log(A) + (1 - Y) * np.log(1 - A))
        return np.mean((A - Y) ** 2)

    def step():
        acts = forward(X)
        value = loss(acts[-1])
        norm = acts[-1].size if network.loss != "cross_entropy" else len(X)
        delta = (acts[-1] - Y) * ((2.0 if network.loss == "mse" else 1.0) / norm)
        for i in range(len(params) - 1, -1, -1):
            W, b = params[i]
            dW, db = delta.T @ acts[i], delta.sum(axis=0)
            if i:
                delta = (delta @ W) * hidden_grad(acts[i])
            params[i] = (W - LR * dW, b - LR * db)
        return value

    return step, lambda: forward(X)[-1], lambda: None


# the hidden activations each reference implements (mlp's own names)
TORCH_ACTIVATIONS = {"relu": ("ReLU", {}), "tanh": ("Tanh", {}), "sigmoid": ("Sigmoid", {}),
                     "gelu": ("GELU", {"approximate": "tanh"}), "silu": ("SiLU", {}), "mish": ("Mish", {}),
                     "elu": ("ELU", {}), "selu": ("SELU", {}), "softplus": ("Softplus", {}),
                     "softsign": ("Softsign", {}), "hardswish": ("Hardswish", {}),
                     "leaky_relu": ("LeakyReLU", {"negative_slope": 0.01})}


def supports(reference: str, activation: str, batch_norm: bool = False) -> bool:
    """Whether `reference` (torch-eager, jax-jit, ...) implements `activation` (and BatchNorm)."""
    if reference.startswith("torch"):
        return activation in TORCH_ACTIVATIONS
    return activation in ("relu", "tanh") and not batch_norm


def _torch_activation(torch, name):
    module, options = TORCH_ACTIVATIONS[name]
    return getattr(torch.nn, module)(**options)


# --- PyTorch ---------------------------------------------------------------------------
def torch_steps(network: Network, X, Y, device, compiled=False, graphed=False, on_data=lambda: None):
    import torch

    X_t = torch.as_tensor(X, device=device)
    if network.loss == "cross_entropy":
        Y_t, loss_fn = torch.as_tensor(Y.argmax(axis=1), device=device), torch.nn.CrossEntropyLoss()
    elif network.loss == "binary_cross_entropy":
        Y_t, loss_fn = torch.as_tensor(Y, device=device), torch.nn.BCEWithLogitsLoss()
    else:
        Y_t, loss_fn = torch.as_tensor(Y, device=device), torch.nn.MSELoss()
    on_data()
    dtype = getattr(torch, str(X.dtype))
    layers = []
    for i, (n_in, n_out) in enumerate(zip(network.sizes, network.sizes[1:])):
        hidden = i < len(network.sizes) - 2
        layers.append(torch.nn.Linear(n_in, n_out, bias=not (hidden and network.batch_norm)))
        if hidden:
            layers += [torch.nn.BatchNorm1d(n_out)] if network.batch_norm else []
            layers.append(_torch_activation(torch, network.activation))
    model = torch.nn.Sequential(*layers).to(device=device, dtype=dtype)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    final = {"softmax": lambda z: torch.softmax(z, 1), "sigmoid": torch.sigmoid}.get(network.output, lambda z: z)

    mode = model.train if network.batch_norm else (lambda flag=True: None)  # BatchNorm: batch or running stats

    def train():
        mode(True)
        optimizer.zero_grad(set_to_none=not graphed)
        loss = loss_fn(model(X_t), Y_t)
        loss.backward()
        optimizer.step()
        return loss

    def infer():
        mode(False)
        with torch.inference_mode():
            return final(model(X_t))

    if compiled:
        train, infer = torch.compile(train), torch.compile(infer)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    if graphed:
        train, infer = _cuda_graphed(train), _cuda_graphed(infer)
    return train, infer, sync


def _cuda_graphed(step):
    """PyTorch's own whole-step CUDA graph (torch.cuda.graph): warm up on a side stream,
    capture once, replay. Gradients are kept (not set to None) so their memory stays put."""
    import torch

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph.replay


# --- JAX -------------------------------------------------------------------------------
def jax_steps(network: Network, X, Y, on_data=lambda: None):
    import jax
    import jax.numpy as jnp

    X_d, Y_d = jax.block_until_ready((jnp.asarray(X), jnp.asarray(Y)))  # copied (asynchronously) first
    on_data()
    rng = np.random.default_rng(0)
    params = [(jnp.asarray(rng.normal(0, np.sqrt(2 / i), (o, i)).astype(X.dtype)), jnp.zeros(o, X.dtype))
              for i, o in zip(network.sizes, network.sizes[1:])]
    hidden = jax.nn.relu if network.activation == "relu" else jnp.tanh

    def logits(params, X):
        for W, b in params[:-1]:
            X = hidden(X @ W.T + b)
        W, b = params[-1]
        return X @ W.T + b

    def loss(params, X, Y):
        z = logits(params, X)
        if network.loss == "cross_entropy":
            return -jnp.mean(jnp.sum(Y * jax.nn.log_softmax(z), axis=1))
        if network.loss == "binary_cross_entropy":
            return jnp.mean(jnp.maximum(z, 0) - z * Y + jnp.log1p(jnp.exp(-jnp.abs(z))))
        return jnp.mean((z - Y) ** 2)

    @jax.jit
    def train_step(params, X, Y):
        grads = jax.grad(loss)(params, X, Y)
        return jax.tree_util.tree_map(lambda p, g: p - LR * g, params, grads)

    final = {"softmax": jax.nn.softmax, "sigmoid": jax.nn.sigmoid}.get(network.output, lambda z: z)
    infer_jit = jax.jit(lambda params, X: final(logits(params, X)))
    state = {"params": params}

    def train():
        state["params"] = train_step(state["params"], X_d, Y_d)

    def infer():
        state["output"] = infer_jit(state["params"], X_d)

    def sync():  # JAX dispatches asynchronously: wait for the step's results, outputs included
        jax.block_until_ready((state["params"], state.get("output")))

    return train, infer, sync


def torch_peak(dtype, device, min_repeat_time):
    """GEMM FLOP/s of torch's own BLAS (MKL on CPU, cuBLAS on GPU): the best over n x n products
    of the sizes mlp's own peak is measured at."""
    import torch

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    best = {"flops": 0.0, "n": None}
    for n in PEAK_SIZES["cpu" if device == "cpu" else "gpu"]:
        a = torch.randn(n, n, dtype=getattr(torch, dtype), device=device)
        b = torch.randn(n, n, dtype=getattr(torch, dtype), device=device)
        out = torch.empty_like(a)
        flops = gemm_flops(lambda: torch.mm(a, b, out=out), sync, n, min_repeat_time)
        if flops > best["flops"]:
            best = {"flops": flops, "n": n}
    return best


def build(framework, network, X, Y, device, on_data=lambda: None):
    """(train, infer, sync) of `framework`; `on_data()` runs once the data is where the framework
    reads it (on the device, in its own arrays), before the model is built."""
    if framework == "numpy-naive":
        on_data()
        return numpy_naive(network, X, Y)
    if framework in GPU_ONLY and device != "cuda":
        raise ValueError(f"{framework} needs --device cuda")
    if framework in ("torch-eager", "torch-compile", "torch-cudagraph"):
        return torch_steps(network, X, Y, device, compiled=framework == "torch-compile",
                           graphed=framework == "torch-cudagraph", on_data=on_data)
    if framework == "jax-jit":
        return jax_steps(network, X, Y, on_data)
    raise ValueError(f"unknown reference {framework!r}; known: {', '.join(FRAMEWORKS)}")


def installed(framework) -> bool:
    import importlib.util

    package = {"numpy-naive": "numpy", "torch-eager": "torch", "torch-compile": "torch",
               "torch-cudagraph": "torch", "jax-jit": "jax"}[framework]
    return importlib.util.find_spec(package) is not None


def run_in_subprocess(framework, network, batch_sizes, modes, dtype, threads, device, timing,
                      timeout=1800):
    """Run one reference in a fresh process with `threads` threads; yields result dicts."""
    env = dict(os.environ, **{name: str(threads) for name in THREAD_VARIABLES})
    command = [sys.executable, "-m", "mlp.bench.references", "--framework", framework,
               "--network", json.dumps(dataclasses.asdict(network)),
               "--batch-sizes", ",".join(map(str, batch_sizes)), "--modes", ",".join(modes),
               "--dtype", dtype, "--threads", str(threads), "--device", device,
               "--timing", json.dumps(timing)]
    process = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    results = [json.loads(line) for line in process.stdout.splitlines() if line.startswith("{")]
    if process.returncode != 0:
        message = process.stderr.strip().splitlines()[-1] if process.stderr.strip() else "no output"
        results.append({"framework": framework, "error": message})
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--framework", required=True, choices=FRAMEWORKS)
    parser.add_argument("--network", required=True, help="the Network as JSON (name, sizes, activation, ...)")
    parser.add_argument("--batch-sizes", required=True)
    parser.add_argument("--modes", default="train,infer")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--timing", default="{}")
    args = parser.parse_args(argv)
    fields = json.loads(args.network)
    network = Network(**{**fields, "sizes": tuple(fields["sizes"])})
    if args.framework.startswith("torch"):
        import torch

        torch.set_num_threads(args.threads)
        # every batch size and mode compiles its own graph (a model each), the primer too: past
        # dynamo's default of 8 a case would run eager, unsaid
        torch._dynamo.config.recompile_limit = 64
    timing = json.loads(args.timing)
    if args.framework == "torch-eager":  # the framework's own GEMM peak, to compare with ours
        print(json.dumps({"framework": args.framework, "peak_gemm": torch_peak(args.dtype, args.device,
                                                                                  peak_repeat_time(timing))}),
              flush=True)
    X, Y = synthetic_data(PRIMER, 2, dtype=args.dtype)
    _prime(args.framework, X, Y, args.device)
    on_gpu = args.device == "cuda" and args.framework.startswith("torch")  # (JAX takes 75% up front)
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        X, Y = synthetic_data(network, batch, dtype=args.dtype)
        for mode in args.modes.split(","):  # a model per mode: each mode's memory is its own
            result = one_case(args.framework, network, X, Y, mode, args.device, timing, on_gpu)
            print(json.dumps({"framework": args.framework, "network": network.name, "mode": mode,
                              "batch": batch, **result}), flush=True)


def _prime(framework, X, Y, device):
    """One call of each of a 2-4-1 network's steps: the framework's own start-up, not charged to
    the first case. In a function, so that nothing of it outlives the call."""
    for run in build(framework, PRIMER, X, Y, device):
        run()


def one_case(framework, network, X, Y, mode, device, timing, on_gpu=False) -> dict:
    """Timing and peak memory of one mode of a fresh model. A function of its own: the model,
    its steps and its synchronisation (JAX's holds the parameters and the last output) go on
    return, before the next case's memory baseline, so that case cannot reuse their memory
    unseen."""
    footprint = memory.Peaks(memory.torch_device_peak() if on_gpu else None)
    train, infer, sync = build(framework, network, X, Y, device, on_data=footprint.start)
    result = measure(train if mode == "train" else infer, sync, **timing,
                     after_first_call=footprint.first_call_done)
    return {**result, **footprint.result()}


if __name__ == "__main__":
    main()
