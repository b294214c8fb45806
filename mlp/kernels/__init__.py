"""Compiled kernels: generated Numba CPU code (numba_cpu), and GPU kernels in their own modules."""
