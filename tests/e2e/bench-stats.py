#!/usr/bin/env python3
"""Figures for BENCHMARKS.md from interleaved samples: one implementation for every benchmark.

Reads "LABEL VALUE" lines (milliseconds, or any unit given by --unit) on stdin, in the order they
were measured: A, B, C, A, B, C, ... The i-th sample of each label belongs to round i, so a
difference between two labels is taken round by round (paired), and machine noise that lasts a
round falls on both sides of it.

Prints markdown: a row per label (n, median, min-max), then a row per difference asked with
--diff A-B (the median of the per-round differences, with a 95 % bootstrap interval), and a row per
ratio asked with --ratio A-B/C-D (the ratio of those two medians, with its interval from the same
resampled rounds). A side of a ratio may also be a single label (--ratio A/B: the ratio of their
medians, for throughput). The bootstrap is seeded, so the same samples always give the same figures.

--median prints the median of bare values on stdin: a benchmark whose round has several samples
(one per connection at once) gives the round one value with it.

When BENCH_SUMMARY names a file, each difference and ratio row is also appended to it, under the
title, and so is the row of each label named with --key (a figure that stands alone, such as a
process's memory); --summary FILE prints those rows as the one table of a `make bench` run.

  bench-stats.py --title "B1, the isolation step" --diff ours-floor --diff baseline-floor \
      --ratio baseline-floor/ours-floor <samples
  bench-stats.py --median <values
  bench-stats.py --summary FILE
  bench-stats.py --self-test
"""

import argparse
import os
import random
import sys
import tempfile

RESAMPLES = 2000
SEED = 20261201


def median(values):
    s = sorted(values)
    n = len(s)
    if n == 0:
        raise ValueError("no samples")
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def percentile(sorted_values, q):
    """The q-quantile (0..1) of sorted values, interpolated linearly."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = q * (len(sorted_values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def read_samples(lines):
    """{label: [values in round order]}, the labels in their first order."""
    samples = {}
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            label, value = line.split()
            samples.setdefault(label, []).append(float(value))
        except ValueError:
            raise SystemExit("bench-stats: line %d is not 'LABEL VALUE': %r" % (number, line))
    return samples


def rounds(samples, labels):
    """The rounds in which every label of `labels` has a sample: a list of per-label tuples."""
    n = min(len(samples[label]) for label in labels)
    return [tuple(samples[label][i] for label in labels) for i in range(n)]


def pair(spec):
    a, sep, b = spec.partition("-")
    if not sep or not a or not b:
        raise SystemExit("bench-stats: %r is not A-B" % spec)
    return a, b


def term(spec):
    """A side of a ratio: A-B (a difference), or a single label A."""
    return list(pair(spec)) if "-" in spec else [spec]


def bootstrap(rows, statistic, rng):
    """The statistic of the rounds, and its 95 % interval over RESAMPLES resamplings of them."""
    estimate = statistic(rows)
    values = []
    for _ in range(RESAMPLES):
        resampled = [rows[rng.randrange(len(rows))] for _ in rows]
        try:
            values.append(statistic(resampled))
        except ZeroDivisionError:
            continue
    values.sort()
    return estimate, percentile(values, 0.025), percentile(values, 0.975)


def diff_stat(rows):
    return median([r[0] - r[1] for r in rows])


def ratio_stat(width):
    """The ratio of the medians of two sides; the numerator's side has `width` labels (1 or 2)."""
    def side(row, start, n):
        return row[start] - row[start + 1] if n == 2 else row[start]

    def stat(rows):
        den = len(rows[0]) - width
        return (median([side(r, 0, width) for r in rows])
                / median([side(r, width, den) for r in rows]))
    return stat


def report(samples, title, unit, diffs, ratios, keys=()):
    """The tables, as markdown lines; and the rows for the summary: the labels in `keys`, then the
    differences and ratios."""
    out = []
    key_rows = []
    if title:
        out.append("**%s**" % title)
        out.append("")
    out.append("| what | n | median | min–max |")
    out.append("|---|---|---|---|")
    for label, values in samples.items():
        out.append("| %s | %d | %.2f %s | %.2f–%.2f %s |"
                   % (label, len(values), median(values), unit, min(values), max(values), unit))
        if label in keys:
            key_rows.append(out[-1])
    rng = random.Random(SEED)
    if diffs or ratios:
        out.append("")
        out.append("| difference | rounds | median | 95 % interval |")
        out.append("|---|---|---|---|")
    first_row = len(out)
    for spec in diffs:
        a, b = pair(spec)
        rows = rounds(samples, [a, b])
        est, lo, hi = bootstrap(rows, diff_stat, rng)
        out.append("| %s − %s | %d | %.2f %s | %.2f to %.2f %s |" % (a, b, len(rows), est, unit, lo, hi, unit))
    for spec in ratios:
        num, sep, den = spec.partition("/")
        if not sep:
            raise SystemExit("bench-stats: %r is not A-B/C-D" % spec)
        top, bottom = term(num), term(den)
        rows = rounds(samples, top + bottom)
        est, lo, hi = bootstrap(rows, ratio_stat(len(top)), rng)
        out.append("| %s / %s | %d | %.2f | %.2f to %.2f |"
                   % (side_name(top), side_name(bottom), len(rows), est, lo, hi))
    return "\n".join(out), key_rows + out[first_row:]


SUMMARY_HEAD = ["| benchmark | figure | rounds | median | 95 % interval (min–max for a figure alone) |",
                "|---|---|---|---|---|"]


def append_summary(path, title, rows):
    with open(path, "a", encoding="utf-8") as f:
        for row in rows:
            f.write("| %s %s\n" % (title, row))


def summary(path):
    try:
        with open(path, encoding="utf-8") as f:
            rows = [line.rstrip("\n") for line in f if line.strip()]
    except FileNotFoundError:
        rows = []
    if not rows:
        raise SystemExit("bench-stats: no figures in %s: no benchmark ran with BENCH_SUMMARY set" % path)
    return "\n".join(SUMMARY_HEAD + rows)


def side_name(labels):
    return "(%s − %s)" % tuple(labels) if len(labels) == 2 else labels[0]


def self_test():
    assert median([3, 1, 2]) == 2 and median([4, 1, 2, 3]) == 2.5
    assert percentile([0, 10], 0.5) == 5
    s = read_samples(["a 10", "b 4", "# comment", "", "a 12", "b 5", "a 11"])
    assert s == {"a": [10, 12, 11], "b": [4, 5]}, s
    assert rounds(s, ["a", "b"]) == [(10, 4), (12, 5)]
    # A constant difference has a zero-width interval.
    s = {"x": [5.0, 7.0, 6.0, 9.0], "y": [1.0, 3.0, 2.0, 5.0]}
    est, lo, hi = bootstrap(rounds(s, ["x", "y"]), diff_stat, random.Random(1))
    assert (est, lo, hi) == (4.0, 4.0, 4.0), (est, lo, hi)
    # Paired: drift shared by both sides cancels.
    s = {"ours": [3, 13, 23], "floor": [1, 11, 21], "base": [11, 21, 31]}
    text, diff_rows = report(s, "t", "ms", ["ours-floor", "base-floor"], ["base-floor/ours-floor"])
    assert diff_rows == ["| ours − floor | 3 | 2.00 ms | 2.00 to 2.00 ms |",
                    "| base − floor | 3 | 10.00 ms | 10.00 to 10.00 ms |",
                    "| (base − floor) / (ours − floor) | 3 | 5.00 | 5.00 to 5.00 |"], diff_rows
    assert "| ours − floor | 3 | 2.00 ms | 2.00 to 2.00 ms |" in text, text
    assert "| (base − floor) / (ours − floor) | 3 | 5.00 | 5.00 to 5.00 |" in text, text
    # A single label on each side: a ratio of medians (throughput through two paths).
    s = {"iso": [97, 194, 291], "plain": [100, 200, 300]}
    text, rows = report(s, "", "Mbit/s", [], ["iso/plain"], keys=["plain"])
    assert rows[0] == "| plain | 3 | 200.00 Mbit/s | 100.00–300.00 Mbit/s |", rows
    assert "| iso / plain | 3 | 0.97 | 0.97 to 0.97 |" in text, text
    # Mixed: a difference over a label.
    text, _ = report({"a": [3, 5], "b": [1, 1], "c": [4, 8]}, "", "ms", [], ["a-b/c"])
    assert "| (a − b) / c | 2 | 0.50 | 0.50 to 0.50 |" in text, text
    # Seeded: the same input gives the same interval.
    noisy = {"a": [1, 5, 2, 8, 3], "b": [0, 1, 0, 2, 1]}
    assert report(noisy, "", "ms", ["a-b"], []) == report(noisy, "", "ms", ["a-b"], [])
    # The run's one table gathers the rows under their titles.
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "summary")
        append_summary(path, "B0", diff_rows)
        table = summary(path).split("\n")
        assert table[2] == "| B0 | ours − floor | 3 | 2.00 ms | 2.00 to 2.00 ms |", table
    print("bench-stats: self-test passed")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--title", default="")
    p.add_argument("--unit", default="ms")
    p.add_argument("--diff", action="append", default=[], metavar="A-B")
    p.add_argument("--ratio", action="append", default=[], metavar="A-B/C-D")
    p.add_argument("--median", action="store_true", help="print the median of the values on stdin")
    p.add_argument("--key", action="append", default=[], metavar="LABEL",
                   help="a label whose own row goes to the summary")
    p.add_argument("--summary", metavar="FILE", help="print the rows gathered in FILE as one table")
    p.add_argument("--self-test", action="store_true")
    args = p.parse_args()
    if args.self_test:
        self_test()
        return
    if args.summary:
        print(summary(args.summary))
        return
    if args.median:
        try:
            print("%g" % median([float(v) for v in sys.stdin.read().split()]))
        except ValueError as e:
            raise SystemExit("bench-stats: --median: %s" % e)
        return
    samples = read_samples(sys.stdin)
    if not samples:
        raise SystemExit("bench-stats: no samples on stdin")
    named = [pair(d) for d in args.diff] + [term(part) for r in args.ratio for part in r.split("/")] + [args.key]
    for labels in named:
        for label in labels:
            if label not in samples:
                raise SystemExit("bench-stats: no samples of %r (have %s)" % (label, ", ".join(samples)))
    text, rows = report(samples, args.title, args.unit, args.diff, args.ratio, args.key)
    print(text)
    if os.environ.get("BENCH_SUMMARY") and rows:
        append_summary(os.environ["BENCH_SUMMARY"], args.title or "(untitled)", rows)


if __name__ == "__main__":
    main()
