#!/usr/bin/env python3
"""Print per-round ratios and their medians from a load results file.

Usage: report.py [--latency] RESULTS_TSV SECTION:NUMERATOR/DENOMINATOR...

RESULTS_TSV has one line per run, tab-separated:
  section round contender requests_per_s p50_ms p99_ms cpu_us_per_request ...
For each pair, the script divides the numerator's figure by the
denominator's figure within each round, for requests/s and for CPU time
per request, then prints every round's ratio, the median, min and max.
--latency adds the same for the p50 and p99 latencies.
"""

import statistics
import sys

# Column of each figure in a results line.
COLUMNS = {"req/s": 3, "p50": 4, "p99": 5, "CPU/req": 6}


def load(path):
    runs = {}
    with open(path) as results:
        for line in results:
            fields = line.rstrip("\n").split("\t")
            section, round_no, contender = fields[0], int(fields[1]), fields[2]
            runs[(section, round_no, contender)] = {
                name: float(fields[column]) for name, column in COLUMNS.items()
            }
    return runs


def ratios(runs, section, numerator, denominator, figure):
    values = []
    rounds = sorted({key[1] for key in runs if key[0] == section})
    for round_no in rounds:
        top = runs.get((section, round_no, numerator))
        bottom = runs.get((section, round_no, denominator))
        if top is None or bottom is None or bottom[figure] == 0:
            continue
        values.append(top[figure] / bottom[figure])
    return values


def format_row(label, width, values):
    if not values:
        return f"  {label:<{width}} no complete round"
    per_round = " ".join(f"{value:6.3f}" for value in values)
    median = statistics.median(values)
    return (
        f"  {label:<{width}} median {median:6.3f}  "
        f"(min {min(values):.3f}, max {max(values):.3f})  rounds: {per_round}"
    )


def main(argv):
    args = argv[1:]
    figures = ["req/s", "CPU/req"]
    if args and args[0] == "--latency":
        figures += ["p50", "p99"]
        args = args[1:]
    if len(args) < 2:
        sys.stderr.write(__doc__)
        return 2
    runs = load(args[0])
    rows = []
    for pair in args[1:]:
        section, names = pair.split(":", 1)
        numerator, denominator = names.split("/", 1)
        for figure in figures:
            label = f"{section} {numerator}/{denominator} {figure}"
            rows.append((label, ratios(runs, section, numerator, denominator, figure)))
    width = max(len(label) for label, _ in rows)
    for label, values in rows:
        print(format_row(label, width, values))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
