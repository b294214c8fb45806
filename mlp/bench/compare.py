"""This run against an earlier one, cell by cell (`mlp bench ... --compare OLD.json`, or
`python -m mlp.bench.compare OLD.json NEW.json` for two saved runs).

A cell is one implementation, network, mode and batch size. Its ratio is new samples/s over
old; its interval spans every reading the two runs hold (each round's quartiles). Machines
drift between runs (another host, another load: a reference mlp cannot speed up read 1.6x
faster a week later), so an mlp cell is judged against the drift of a reference measured at
the same point in both runs (torch eager first): its ratio divided by the reference's, with
the intervals combined. A cell is called slower or faster only when that whole interval
says so; without a reference at its point, the verdict says that drift was not controlled."""
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


CONTROLS = ("torch-eager", "torch-compile", "jax-jit", "numpy-naive")  # references, most trusted first


def _cells(report) -> dict:
    """(implementation, network, mode, batch) -> (kind, seconds, [(q1, q3) per round])."""
    cells = {}
    for r in report["results"]:
        try:
            if "error" not in r:
                key = (r["implementation"], r["network"], r["mode"], int(r["batch"]))
                readings = r.get("rounds") or [{k: r[k] for k in ("seconds", "q1", "q3")}]
                values = [(float(x["q1"]), float(x["q3"])) for x in readings]
                seconds = float(r["seconds"])
                if not all(0 < q1 <= q3 < float("inf") for q1, q3 in values) or not 0 < seconds < float("inf"):
                    raise ValueError
                cells[key] = (r.get("kind", "reference" if key[0] in CONTROLS else "backend"), seconds, values)
        except (KeyError, TypeError, ValueError, AttributeError):
            raise ValueError(f"a result of the bench run is malformed: {r!r:.200}") from None
    return cells


def _ratio(old, new):
    """(new over old samples/s, [low, high]) of one cell in two runs."""
    (_, old_seconds, old_readings), (_, new_seconds, new_readings) = old, new
    low = min(q1 for q1, _ in old_readings) / max(q3 for _, q3 in new_readings)
    high = max(q3 for _, q3 in old_readings) / min(q1 for q1, _ in new_readings)
    return old_seconds / new_seconds, [low, high]


def compare(old, new) -> list:
    """One dict per cell the two reports share: ratio (new over old samples/s) and its interval;
    for mlp's cells the same divided by a reference's at that point (`control`), and a verdict:
    'slower', 'faster', 'within noise', or for a cell without a control its raw reading with
    '(drift not controlled)'."""
    old_cells, new_cells = _cells(old), _cells(new)
    shared = old_cells.keys() & new_cells.keys()
    ratios = {key: _ratio(old_cells[key], new_cells[key]) for key in shared}
    rows = []
    for key in sorted(shared):
        ratio, interval = ratios[key]
        row = {"implementation": key[0], "network": key[1], "mode": key[2], "batch": key[3],
               "old_samples_per_s": key[3] / old_cells[key][1], "new_samples_per_s": key[3] / new_cells[key][1],
               "ratio": ratio, "interval": interval, "control": None}
        judged = interval
        if new_cells[key][0] == "backend":
            control = next((name for name in CONTROLS if (name, *key[1:]) in ratios), None)
            if control is not None:
                control_ratio, (control_low, control_high) = ratios[(control, *key[1:])]
                judged = [interval[0] / control_high, interval[1] / control_low]
                row.update(control=control, controlled_ratio=ratio / control_ratio, controlled_interval=judged)
        verdict = "slower" if judged[1] < 1 else "faster" if judged[0] > 1 else "within noise"
        if new_cells[key][0] == "backend" and row["control"] is None and verdict != "within noise":
            verdict += " (drift not controlled)"
        rows.append({**row, "verdict": verdict})
    return rows


def differences(old, new) -> list:
    """What differs between the two runs' settings and machines, one line each."""
    lines = []
    for label, read in (("settings", lambda r: r.get("settings")),
                        ("dtype", lambda r: (r.get("machine") or {}).get("dtype")),
                        ("threads", lambda r: (r.get("machine") or {}).get("threads")),
                        ("CPU", lambda r: (r.get("machine") or {}).get("cpu")),
                        ("GPU", lambda r: (r.get("machine") or {}).get("gpu"))):
        if read(old) != read(new):
            lines.append(f"{label} differ: {read(old)!r:.120} then, {read(new)!r:.120} now")
    return lines


def table(rows, old, new) -> str:
    from mlp.bench import si

    command = (old.get("machine") or {}).get("command", "?")
    lines = [f"Against the run of {old.get('date', '?')} (`{command}`):", ""]
    lines += [f"**Not like for like: {line}.**" for line in differences(old, new)]
    if not rows:
        return "\n".join(lines + ["The two runs share no cell (implementation, network, mode, batch size): "
                                   "nothing to compare."]) + "\n"
    lines += ["| network | mode | batch | implementation | old samples/s | new samples/s | new/old [interval] "
              "| / reference's [interval] | verdict |", "|" + "---|" * 9]
    for r in rows:
        verdict = f"**{r['verdict']}**" if r["verdict"] != "within noise" else r["verdict"]
        controlled = (f"{r['controlled_ratio']:.2f} [{r['controlled_interval'][0]:.2f}-"
                      f"{r['controlled_interval'][1]:.2f}] ({r['control']})" if r["control"] else "-")
        lines.append(f"| {r['network']} | {r['mode']} | {r['batch']} | {r['implementation']} | "
                     f"{si(r['old_samples_per_s'])} | {si(r['new_samples_per_s'])} | {r['ratio']:.2f} "
                     f"[{r['interval'][0]:.2f}-{r['interval'][1]:.2f}] | {controlled} | {verdict} |")
    slower = sum(r["verdict"].startswith("slower") for r in rows)
    faster = sum(r["verdict"].startswith("faster") for r in rows)
    lines += ["", f"{len(rows)} cells compared: {slower} slower and {faster} faster beyond the noise both runs "
              "show (mlp's cells against a reference's drift where one ran at the same point)."]
    for label, report in (("the earlier run", old), ("this run", new)):
        verdict = report.get("contention")
        warning = contention.warning(verdict) if isinstance(verdict, dict) and verdict.get("contended") else None
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
