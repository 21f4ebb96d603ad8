#!/usr/bin/env python3
"""Markdown results table from xyte-bench JSON files (used for BENCHMARKS.md).
Usage: tests/bench/table.py BEFORE.json RUN1.json RUN2.json"""
import json
import sys

runs = [json.load(open(p)) for p in sys.argv[1:]]
names = []
for r in runs:
    for f in r["figures"]:
        if f["name"] not in names:
            names.append(f["name"])


def fmt(v):
    if v is None:
        return "-"
    return f"{v:,.3f}" if abs(v) < 10 else f"{v:,.1f}" if abs(v) < 1000 else f"{v:,.0f}"


def cell(r, name):
    f = next((f for f in r["figures"] if f["name"] == name), None)
    if f is None:
        return "-"
    s = fmt(f["value"])
    if f["floor"] is not None:
        s += f" (floor {fmt(f['floor'])}, {f['ratio']:.3g}x)"
    if f["met"] is not None:
        s += " ✓" if f["met"] else " ✗"
    return s


def unit_target(name):
    for r in runs:
        for f in r["figures"]:
            if f["name"] == name:
                return f["unit"], f["target"] or ""
    return "", ""


heads = ["before the changes", "run 1", "run 2"] if len(runs) == 3 else [f"run {i + 1}" for i in range(len(runs))]
print("| figure | unit | target | " + " | ".join(heads) + " |")
print("|---|---|---|" + "---|" * len(runs))
for n in names:
    u, t = unit_target(n)
    print(f"| {n} | {u} | {t} | " + " | ".join(cell(r, n) for r in runs) + " |")
