"""This run against an earlier one, cell by cell (`mlp bench ... --compare OLD.json`, or
`python -m mlp.bench.compare OLD.json NEW.json` for two saved runs).

A cell is one implementation, network, mode and batch size. Its ratio is new samples/s over
old; its interval spans every reading the two runs hold (each round's quartiles), so a cell is
called slower or faster only when even the most favourable readings agree: the noise that
the runs themselves show is not a regression."""
from __future__ import annotations

import json
import sys

from mlp.bench import contention


def load(path) -> dict:
    """A report written by `mlp bench` (its JSON), or a ValueError saying what the file is not."""
    try:
        with open(path) as f:
            report = json.load(f)
    except OSError as error:
        raise ValueError(f"cannot read the earlier run {path}: {error.strerror or error}") from None
    except ValueError as error:
        raise ValueError(f"{path} is not the JSON of an mlp bench run ({error})") from None
    rows = report.get("results") if isinstance(report, dict) else None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ValueError(f"{path} is not the JSON of an mlp bench run (no list of results)")
    return report


def _cells(report) -> dict:
    cells = {}
    for r in report["results"]:
        try:
            if "error" not in r:
                key = (r["implementation"], r["network"], r["mode"], int(r["batch"]))
                readings = r.get("rounds") or [{k: r[k] for k in ("seconds", "q1", "q3")}]
                cells[key] = (float(r["seconds"]), [(float(x["q1"]), float(x["q3"])) for x in readings])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"a result of the bench run is malformed: {r!r:.200}") from None
    return cells


def compare(old, new) -> list:
    """One dict per cell the two reports share: ratio (new over old samples/s), its interval and
    a verdict: 'slower', 'faster' or 'within noise'."""
    old_cells, new_cells = _cells(old), _cells(new)
    rows = []
    for key in sorted(old_cells.keys() & new_cells.keys()):
        (old_seconds, old_readings), (new_seconds, new_readings) = old_cells[key], new_cells[key]
        low = min(q1 for q1, _ in old_readings) / max(q3 for _, q3 in new_readings)
        high = max(q3 for _, q3 in old_readings) / min(q1 for q1, _ in new_readings)
        verdict = "slower" if high < 1 else "faster" if low > 1 else "within noise"
        rows.append({"implementation": key[0], "network": key[1], "mode": key[2], "batch": key[3],
                     "old_samples_per_s": key[3] / old_seconds, "new_samples_per_s": key[3] / new_seconds,
                     "ratio": old_seconds / new_seconds, "interval": [low, high], "verdict": verdict})
    return rows


def table(rows, old, new) -> str:
    from mlp.bench import si

    lines = [f"Against the run of {old.get('date', '?')} (`{old.get('machine', {}).get('command', '?')}`):", "",
             "| network | mode | batch | implementation | old samples/s | new samples/s | new/old [interval] "
             "| verdict |",
             "|" + "---|" * 8]
    for r in rows:
        verdict = f"**{r['verdict']}**" if r["verdict"] != "within noise" else r["verdict"]
        lines.append(f"| {r['network']} | {r['mode']} | {r['batch']} | {r['implementation']} | "
                     f"{si(r['old_samples_per_s'])} | {si(r['new_samples_per_s'])} | {r['ratio']:.2f} "
                     f"[{r['interval'][0]:.2f}-{r['interval'][1]:.2f}] | {verdict} |")
    slower = sum(r["verdict"] == "slower" for r in rows)
    lines += ["", f"{len(rows)} cells compared: {slower} slower and {sum(r['verdict'] == 'faster' for r in rows)} "
              "faster beyond the noise both runs show."]
    for label, report in (("the earlier run", old), ("this run", new)):
        warning = contention.warning(report["contention"]) if report.get("contention") else None
        if warning:
            lines.append(f"In {label}: {warning}")
    return "\n".join(lines) + "\n"


def main(argv=None):
    from mlp.cli import Parser, run_command

    parser = Parser(prog="python -m mlp.bench.compare", description=__doc__.split("\n")[0])
    parser.add_argument("old", help="the earlier run's JSON")
    parser.add_argument("new", help="the later run's JSON")
    args = parser.parse_args(argv)

    def run(args):
        old, new = load(args.old), load(args.new)
        print(table(compare(old, new), old, new), end="")
        return 0
    return run_command("bench", run, args)


if __name__ == "__main__":
    sys.exit(main())
