"""Sluice's benchmark suite: every figure is a ratio against a plain baseline run on the same
files in the same run, and every benchmark checks that Sluice's output equals the baseline's.

Run it with ``make bench`` (size S) or ``make bench SIZE=M``; ``python -m bench --help`` lists
the options. Results go to ``docs/benchmarks.md`` and ``bench/results/<size>.json``.
"""
