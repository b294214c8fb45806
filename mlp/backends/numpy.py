"""The reference backend: NumPy on the CPU. Everything is the base class's default."""
from mlp.backends._base import Backend as _Base


class Backend(_Base):
    name = "numpy"
