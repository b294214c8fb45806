"""Condense `mlp bench` JSON results into the markdown table the README shows:
samples/s of each implementation per network, mode and batch size, and the best mlp backend's
ratio to the best peer (PyTorch eager, torch.compile, JAX jit) measured in the same run.

    python benchmarks/summarize.py benchmarks/results/*.json
"""
import json
import sys
from collections import defaultdict

from mlp.bench import si

MLP = ("numpy", "numba")
PEERS = ("torch-eager", "torch-compile", "jax-jit")
COLUMNS = MLP + ("numpy-naive",) + PEERS


def summarize(report) -> str:
    rows = [r for r in report["results"] if "error" not in r]
    points = defaultdict(dict)
    for r in rows:
        points[(r["network"], r["mode"], r["batch"])][r["implementation"]] = r["samples_per_s"]
    lines = ["| network | mode | batch | " + " | ".join(COLUMNS) + " | best mlp / best peer |",
             "|" + "---|" * (len(COLUMNS) + 4)]
    for (network, mode, batch), p in sorted(points.items()):
        cells = [si(p[c]) if c in p else "-" for c in COLUMNS]
        ours = max((p[c] for c in MLP if c in p), default=None)
        peer = max((p[c] for c in PEERS if c in p), default=None)
        ratio = f"{ours / peer:.2f}" if ours and peer else "-"
        lines.append(f"| {network} | {mode} | {batch} | " + " | ".join(cells) + f" | {ratio} |")
    return "\n".join(lines)


if __name__ == "__main__":
    for path in sys.argv[1:]:
        with open(path) as f:
            report = json.load(f)
        print(f"{path}: `{report['machine']['command']}` on {report['machine']['cpu']}, "
              f"{report['machine']['cores']} cores, {report['date']}\n")
        print(summarize(report) + "\n")
