#!/usr/bin/env python3
"""Markdown results tables from xyte-bench JSON files (used for BENCHMARKS.md).
Usage: tests/bench/table.py BEFORE.json RUN1.json RUN2.json    one column per run (the history sections)
       tests/bench/table.py --current RUN1.json [RUN2.json ...]  the current table: figure, daemon, peer or floor,
                                                                  ratio, target, met (one value per run in each cell)
A figure's "floor" is what it was compared with in the same run; newer files name it in "against" (e.g. "rmcp peer",
"echo floor"); older files have no "against" and compared with floors only."""
import json
import sys

current = sys.argv[1:2] == ["--current"]
paths = sys.argv[2:] if current else sys.argv[1:]
runs = [json.load(open(p)) for p in paths]
names = []
for r in runs:
    for f in r["figures"]:
        if f["name"] not in names:
            names.append(f["name"])


def fmt(v):
    if v is None:
        return "-"
    return f"{v:,.3f}" if abs(v) < 10 else f"{v:,.1f}" if abs(v) < 1000 else f"{v:,.0f}"


def figure(r, name):
    return next((f for f in r["figures"] if f["name"] == name), None)


def against(f):
    return f.get("against") or "floor"


def cell(r, name):
    f = figure(r, name)
    if f is None:
        return "-"
    s = fmt(f["value"])
    if f["floor"] is not None:
        s += f" ({against(f)} {fmt(f['floor'])}, {f['ratio']:.3g}x)"
    if f["met"] is not None:
        s += " ✓" if f["met"] else " ✗"
    return s


def first(name):
    for r in runs:
        f = figure(r, name)
        if f is not None:
            return f
    return None


def per_run(name, show):
    vals = []
    for r in runs:
        f = figure(r, name)
        vals.append("-" if f is None else show(f))
    return " / ".join(vals)


def met(f):
    if f["met"] is None:
        return ""
    return "yes" if f["met"] else "**no**"


if current:
    print("| figure | unit | compared with | daemon | peer or floor | ratio | target | met |")
    print("|---|---|---|---:|---:|---:|---|---|")
    for n in names:
        f0 = first(n)
        vs = f0.get("against") or ("floor" if f0["floor"] is not None else "")
        floor = per_run(n, lambda f: fmt(f["floor"])) if f0["floor"] is not None else ""
        ratio = per_run(n, lambda f: f"{f['ratio']:.2f}" if f["ratio"] is not None else "-") if f0["floor"] is not None else ""
        m = per_run(n, met) if f0["met"] is not None else ""
        print(f"| {n} | {f0['unit']} | {vs} | {per_run(n, lambda f: fmt(f['value']))} | {floor} | {ratio} | "
              f"{f0['target'] or ''} | {m} |")
    sys.exit(0)


def unit_target(name):
    f = first(name)
    return (f["unit"], f["target"] or "") if f else ("", "")


heads = ["before the changes", "run 1", "run 2"] if len(runs) == 3 else [f"run {i + 1}" for i in range(len(runs))]
print("| figure | unit | target | " + " | ".join(heads) + " |")
print("|---|---|---|" + "---|" * len(runs))
for n in names:
    u, t = unit_target(n)
    print(f"| {n} | {u} | {t} | " + " | ".join(cell(r, n) for r in runs) + " |")
