#!/usr/bin/env python3
"""Print criterion's medians for one benchmark group over several saved runs.

Usage: benches/criterion_medians.py GROUP BASELINE...

Reads target/criterion/GROUP/CASE/SIZE/BASELINE/estimates.json, which
`cargo bench --bench NAME -- --save-baseline BASELINE` writes (the target
folder is $CARGO_TARGET_DIR when set). For every CASE/SIZE it prints the
median time of each run with criterion's 95 % confidence interval. Then, for
every CASE with more than one SIZE, the ratio of each SIZE's median to the
smallest SIZE's median within the same run, with the median, min and max
of that ratio over the runs.
"""

import json
import os
import statistics
import sys
from pathlib import Path


def format_time(nanoseconds):
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("us", 1e3)):
        if nanoseconds >= scale:
            return f"{nanoseconds / scale:.3f} {unit}"
    return f"{nanoseconds:.1f} ns"


def read_median(folder, baseline):
    path = folder / baseline / "estimates.json"
    if not path.is_file():
        return None
    median = json.loads(path.read_text())["median"]
    interval = median["confidence_interval"]
    return median["point_estimate"], interval["lower_bound"], interval["upper_bound"]


def size_key(size):
    return (0, int(size)) if size.isdigit() else (1, size)


def main(argv):
    if len(argv) < 3:
        sys.stderr.write(__doc__)
        return 2
    group, baselines = argv[1], argv[2:]
    repo = Path(__file__).resolve().parent.parent
    root = Path(os.environ.get("CARGO_TARGET_DIR", repo / "target")) / "criterion" / group
    if not root.is_dir():
        sys.stderr.write(f"criterion_medians.py: {root} not found; run cargo bench first\n")
        return 1

    # medians[case][size][baseline] = (median, lower, upper) in nanoseconds
    medians = {}
    for case_folder in sorted(path for path in root.iterdir() if path.is_dir()):
        if case_folder.name == "report":
            continue
        for size_folder in sorted(case_folder.iterdir(), key=lambda path: size_key(path.name)):
            for baseline in baselines:
                found = read_median(size_folder, baseline)
                if found is not None:
                    medians.setdefault(case_folder.name, {}).setdefault(size_folder.name, {})[
                        baseline
                    ] = found

    width = max(len(f"{case}/{size}") for case, sizes in medians.items() for size in sizes)
    print(f"== {group}: median time per iteration [95 % confidence interval]")
    for case, sizes in medians.items():
        for size, runs in sizes.items():
            cells = [
                f"{baseline}: {format_time(m)} [{format_time(low)}, {format_time(high)}]"
                for baseline, (m, low, high) in runs.items()
            ]
            print(f"  {case + '/' + size:<{width}}  " + "; ".join(cells))

    print()
    rows = []
    for case, sizes in medians.items():
        ordered = sorted(sizes, key=size_key)
        smallest = sizes[ordered[0]]
        for size in ordered[1:]:
            ratios = [
                sizes[size][baseline][0] / smallest[baseline][0]
                for baseline in baselines
                if baseline in sizes[size] and baseline in smallest
            ]
            if ratios:
                rows.append((f"{case} {size}/{ordered[0]}", ratios))
    if not rows:
        return 0
    width = max(len(label) for label, _ in rows)
    print(f"== {group}: median of each size / median of the smallest size, within each run")
    for label, ratios in rows:
        per_run = " ".join(f"{ratio:.3f}" for ratio in ratios)
        print(
            f"  {label:<{width}}  median {statistics.median(ratios):.3f}"
            f" (min {min(ratios):.3f}, max {max(ratios):.3f})  runs: {per_run}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
