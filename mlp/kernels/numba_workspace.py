"""The layout of the one workspace buffer a generated Numba step or forward pass takes as
`work`: one array argument instead of one per layer (each array argument costs ~0.15 us of
Numba's dispatch, a third of a small net's whole step). The generator prints its views
(`views`) and the backend allocates it (`allocate`) from the same description."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Workspace:
    """`arrays`: ((name, width), ...), each an (n, width) array for a batch of n rows, one after
    another; then `transposes`: ((name, rows, cols), ...), fixed-size matrices (W_l^T)."""

    arrays: tuple
    transposes: tuple = ()

    @classmethod
    def of(cls, layers, training, transposed=()):
        """For `layers` (Layer plans): A_l of every layer; when `training`, D_l = dL/dZ_l of every
        layer, then Z_l of the layers whose activation's derivative reads it, then the normalised
        products X_hat_l of the layers batch-normalised (`Layer.norm`); W_l^T for the
        layer numbers in `transposed`."""
        numbered = list(enumerate(layers, start=1))
        arrays = [(f"A{k}", layer.n_out) for k, layer in numbered]
        if training:
            arrays += [(f"D{k}", layer.n_out) for k, layer in numbered]
            arrays += [(f"Z{k}", layer.n_out) for k, layer in numbered if layer.keeps_input]
            arrays += [(f"H{k}", layer.n_out) for k, layer in numbered if layer.norm]  # BatchNorm's X_hat
        transposes = [(f"WT{k}", layer.n_in, layer.n_out) for k, layer in numbered if k in set(transposed)]
        return cls(tuple(arrays), tuple(transposes))

    def _row_offsets(self):
        offset, found = 0, {}
        for name, width in self.arrays:
            found[name] = (offset, width)
            offset += width
        return found, offset

    def views(self, indent="    ") -> list:
        """Statements binding each array's view of `work` (n: the batch rows)."""
        offsets, total = self._row_offsets()
        lines = [f"{indent}{name} = work[n * {start}:n * {start + width}].reshape((n, {width}))"
                 for name, (start, width) in offsets.items()]
        start = 0
        for name, rows, cols in self.transposes:
            lines.append(f"{indent}{name} = work[n * {total} + {start}:n * {total} + {start + rows * cols}]"
                         f".reshape(({rows}, {cols}))")
            start += rows * cols
        return lines

    def allocate(self, batch, dtype, output):
        """(work, the view of array `output`) for a batch of `batch` rows."""
        offsets, total = self._row_offsets()
        work = np.empty(batch * total + sum(rows * cols for _, rows, cols in self.transposes), dtype)
        start, width = offsets[output]
        return work, work[batch * start:batch * (start + width)].reshape(batch, width)
