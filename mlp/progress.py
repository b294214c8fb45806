"""Progress display for `fit`: a tqdm bar per epoch when tqdm is installed, otherwise
one line per epoch. verbose=0 shows nothing and costs nothing."""
from __future__ import annotations

import functools
import sys


@functools.cache
def _tqdm():
    """tqdm's bar class, or None without tqdm (an optional extra). Imported on the first bar,
    not with mlp: tqdm.auto brings asyncio, 25-55 ms of every `import mlp`."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm


def format_logs(logs):
    parts = []
    for key, value in logs.items():
        if key == "seconds":
            continue
        parts.append(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}")
    return " - ".join(parts)


class Progress:
    def __init__(self, verbose, epochs, steps, samples):
        self.verbose, self.epochs, self.steps, self.samples = verbose, epochs, steps, samples
        self.bar = None

    def start_epoch(self, epoch):
        self.epoch = epoch
        tqdm = _tqdm() if self.verbose else None
        if tqdm is not None:
            self.bar = tqdm(total=self.steps, desc=f"Epoch {epoch + 1}/{self.epochs}",
                            unit="batch", leave=self.verbose > 1 or epoch == self.epochs - 1,
                            file=sys.stderr, dynamic_ncols=True)

    def step(self):
        if self.bar is not None:
            self.bar.update(1)

    def end_epoch(self, logs):
        rate = self.samples / logs["seconds"] if logs.get("seconds") else float("nan")
        text = f"{format_logs(logs)} - {rate:,.0f} samples/s"
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=True)
            self.bar.close()
            self.bar = None
        elif self.verbose:
            print(f"Epoch {self.epoch + 1}/{self.epochs} - {text}", file=sys.stderr, flush=True)

    def say(self, text):
        """One line on stderr, when verbose: what fit did beside training (stopping early)."""
        if self.verbose:
            print(text, file=sys.stderr, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
