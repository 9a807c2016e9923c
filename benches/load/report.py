#!/usr/bin/env python3
"""Print per-round ratios and their medians from compare.sh's results file.

Usage: report.py RESULTS_TSV SECTION:NUMERATOR/DENOMINATOR...

RESULTS_TSV has one line per run, tab-separated:
  section round contender requests_per_s p50_ms p99_ms cpu_us_per_request ...
For each pair, the script divides the numerator's figure by the
denominator's figure within each round, for requests/s and for CPU time
per request, then prints every round's ratio, the median, min and max.
"""

import statistics
import sys


def load(path):
    runs = {}
    with open(path) as results:
        for line in results:
            fields = line.rstrip("\n").split("\t")
            section, round_no, contender = fields[0], int(fields[1]), fields[2]
            rps, cpu = float(fields[3]), float(fields[6])
            runs[(section, round_no, contender)] = (rps, cpu)
    return runs


def ratios(runs, section, numerator, denominator, column):
    values = []
    rounds = sorted({key[1] for key in runs if key[0] == section})
    for round_no in rounds:
        top = runs.get((section, round_no, numerator))
        bottom = runs.get((section, round_no, denominator))
        if top is None or bottom is None or bottom[column] == 0:
            continue
        values.append(top[column] / bottom[column])
    return values


def format_row(label, values):
    if not values:
        return f"  {label:<38} no complete round"
    per_round = " ".join(f"{value:6.3f}" for value in values)
    median = statistics.median(values)
    return (
        f"  {label:<38} median {median:6.3f}  "
        f"(min {min(values):.3f}, max {max(values):.3f})  rounds: {per_round}"
    )


def main(argv):
    if len(argv) < 3:
        sys.stderr.write(__doc__)
        return 2
    runs = load(argv[1])
    for pair in argv[2:]:
        section, names = pair.split(":", 1)
        numerator, denominator = names.split("/", 1)
        rps = ratios(runs, section, numerator, denominator, 0)
        cpu = ratios(runs, section, numerator, denominator, 1)
        print(format_row(f"{section} {numerator}/{denominator} req/s", rps))
        print(format_row(f"{section} {numerator}/{denominator} CPU/req", cpu))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
