"""Record the data version of runs and results saved before data fingerprints, after checking
each against the data (hiva_lib.engine.adopt). Prints one line per result.

    python scripts/adopt_data_version.py synth-bp4d synth-disfa --data-root data/prepared
    python scripts/adopt_data_version.py --relative-checkpoints   # absolute checkpoint names
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hiva_lib.engine.adopt import adopt_data_version, relative_checkpoints

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("datasets", nargs="*")
    ap.add_argument("--data-root", type=Path, default=ROOT / "data" / "prepared")
    ap.add_argument("--results-root", type=Path, default=ROOT / "results")
    ap.add_argument("--relative-checkpoints", action="store_true",
                    help="instead: name every result's checkpoint relative to its runs root")
    args = ap.parse_args(argv)
    if args.relative_checkpoints:
        done = relative_checkpoints(args.results_root)
        print(f"{len(done)} metrics.json now name their checkpoint relative to the runs root")
        return 0
    if not args.datasets:
        ap.error("name the data sets to adopt (or pass --relative-checkpoints)")
    left = 0
    for dataset in args.datasets:
        for a in adopt_data_version(dataset, args.data_root, args.results_root):
            print(f"{'adopted' if a.adopted else 'left   '} {a.metrics.parent}: {a.reason}")
            left += not a.adopted and "records this data version" not in a.reason
    print(f"{left} result(s) left without this data version" if left else "all results record "
          "this data version")
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())
