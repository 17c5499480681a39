"""Turns a run's results.json (bench/harness) into docs/benchmarks.md and its PNG plots (or, for
a `--trained` run, docs/benchmarks-trained.md).

Every figure in the report is computed here from the figures the harness printed and saved:
medians with (min-max) over the repetitions. The markdown is also printed on stdout.

    PYTHONPATH=bench python -m report RESULTS.json --md docs/benchmarks.md --plots docs/benchmarks

(`scripts/bench --report` does that for the stored docs/benchmarks/results.json.) The modules,
one idea each: cells (numbers and markdown cells), judging (the targets and the rules that judge
them), results (lookups over results.json), tables, plots, markdown (the whole text), trained
(the trained model's run, `scripts/bench --trained`: docs/benchmarks-trained.md), __main__.
"""
