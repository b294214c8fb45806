"""Objects that belong to one model: a layer (its W and b are views into that model's
parameter buffer) and an optimizer (its state mirrors that buffer). Used by a second live
model, either would train one model with another's numbers; the model refuses it."""
from __future__ import annotations

import weakref


class Owned:
    _owner = None  # a weak reference: a model that is gone frees what it owned

    @property
    def owner(self):
        """The model this belongs to while that model lives (None: free to use)."""
        return self._owner() if self._owner is not None else None

    @owner.setter
    def owner(self, model):
        self._owner = weakref.ref(model)

    def __getstate__(self):
        """A copy (pickle, deepcopy) belongs to no model until one takes it."""
        return {k: v for k, v in self.__dict__.items() if k != "_owner"}

    def __setstate__(self, state):
        self.__dict__.update(state)
