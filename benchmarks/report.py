"""Turn a pytest-benchmark JSON file into the Markdown tables of the README.

    pytest benchmarks --benchmark-only --benchmark-json=results.json
    python benchmarks/report.py results.json > results.md

One table per benchmark group (a workload and its contenders): the median
time per epoch (or per kernel call) over the rounds and its spread
(min–max), how many times slower than cdnn each contender is, the GFLOP/s
from ``extra_info["flops"]``, and that as a share of the machine's practical
SGEMM peak (NumPy's float32 ``matmul`` of 2048×2048 matrices, the
``sgemm-peak`` group), when the file has it.

Only the standard library is used, so the report can be made anywhere.
"""

from __future__ import annotations

import argparse
import json
import sys


def cpu_model() -> str:
    """This machine's CPU model (used when the JSON lacks it), as cdnn.build_info() reports it."""
    try:
        import cdnn
    except ImportError:
        return "unknown CPU"
    return cdnn.build_info()["cpu"]


def fmt_time(seconds: float) -> str:
    """Seconds with a unit that keeps 3 significant digits readable: 1.23 s, 45.6 ms, 789 µs."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale or unit == "µs":
            return f"{seconds / scale:.3g} {unit}"
    raise AssertionError("unreachable")


def fmt_range(lo: float, hi: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if lo >= scale or unit == "µs":
            return f"{lo / scale:.3g}–{hi / scale:.3g} {unit}"
    raise AssertionError("unreachable")


def label(bench: dict) -> str:
    info = bench.get("extra_info", {})
    return info.get("contender") or bench.get("param") or bench["name"]


def find_peak(benchmarks: list[dict]) -> tuple[float, int | None] | tuple[None, None]:
    """Practical SGEMM peak in FLOP/s (and the matrix size): the ``peak`` entry of ``sgemm-peak``."""
    for b in benchmarks:
        info = b.get("extra_info", {})
        if b.get("group") == "sgemm-peak" and info.get("peak") and info.get("flops"):
            return info["flops"] / b["stats"]["median"], info.get("size")
    return None, None


def group_order(groups: dict[str, list[dict]]) -> list[str]:
    """Training epochs first (as they ran), then kernels, the peak last."""

    def key(item):
        index, name = item
        unit = groups[name][0].get("extra_info", {}).get("unit")
        return (name == "sgemm-peak", unit != "epoch", index)

    return [name for _, name in sorted(enumerate(groups), key=key)]


def table(name: str, benches: list[dict], peak: float | None) -> list[str]:
    unit = benches[0].get("extra_info", {}).get("unit") or "round"
    ref = next((b for b in benches if b.get("extra_info", {}).get("reference")), None)
    has_bytes = any("bytes" in b.get("extra_info", {}) for b in benches)
    head = ["contender", "threads", f"time / {unit} (median)", "spread (min–max)", "× slower than cdnn", "GFLOP/s"]
    if peak:
        head.append("% of sgemm peak")
    if has_bytes:
        head.append("GB/s")
    lines = [
        f"### {name}",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|",
    ]
    for b in sorted(benches, key=lambda b: b["stats"]["median"]):
        st, info = b["stats"], b.get("extra_info", {})
        med = st["median"]
        ratio = f"{med / ref['stats']['median']:.2f}" if ref else "—"
        flops = info.get("flops")
        gflops = flops / med / 1e9 if flops else None
        row = [
            label(b),
            str(info.get("threads", "")),
            fmt_time(med),
            fmt_range(st["min"], st["max"]),
            ratio,
            f"{gflops:.1f}" if gflops else "—",
        ]
        if peak:
            row.append(f"{100 * gflops * 1e9 / peak:.0f}%" if gflops else "—")
        if has_bytes:
            row.append(f"{info['bytes'] / med / 1e9:.1f}" if "bytes" in info else "—")
        lines.append("| " + " | ".join(row) + " |")
    rounds = sorted({b["stats"]["rounds"] for b in benches})
    iters = sorted({b["stats"].get("iterations", 1) for b in benches})
    note = f"{'/'.join(map(str, rounds))} round(s)"
    if iters != [1]:
        note += f" of {'/'.join(map(str, iters))} call(s)"
    samples = {b.get("extra_info", {}).get("samples") for b in benches} - {None}
    if unit == "epoch" and samples:
        note += f"; {'/'.join(f'{s:,}' for s in sorted(samples))} images per epoch"
    lines += ["", f"_{note}._", ""]
    return lines


def machine_line(data: dict) -> str:
    mi = data.get("machine_info", {})
    info = mi.get("cdnn_bench", {})
    cpu = info.get("cpu_model") or mi.get("cpu", {}).get("brand_raw") or cpu_model()
    cores = info.get("cores") or mi.get("cpu", {}).get("count")
    parts = [f"**Machine:** {cpu}, {cores} cores, {info.get('threads', '?')} threads per contender"]
    build = info.get("cdnn_build")
    if build:
        parts.append(
            f"cdnn {build.get('compiler', '?')} {build.get('simd_selected', '?')} "
            f"{build.get('micro_kernel', '')}, OpenMP {'on' if build.get('openmp') else 'off'}"
        )
    libs = [f"{k} {info[k]}" for k in ("numpy", "sklearn", "torch") if k in info]
    if libs:
        parts.append(", ".join(libs))
    parts.append(f"Python {mi.get('python_version', '?')}")
    return "; ".join(parts)


def render(data: dict) -> str:
    benchmarks = [b for b in data.get("benchmarks", []) if b.get("stats")]
    if not benchmarks:
        return "No benchmark results in this file.\n"
    groups: dict[str, list[dict]] = {}
    for b in benchmarks:
        groups.setdefault(b.get("group") or b["name"], []).append(b)
    peak, size = find_peak(benchmarks)
    lines = [
        "## Benchmarks",
        "",
        machine_line(data) + "  ",
        f"**Command:** `{data.get('command', 'pytest benchmarks --benchmark-only --benchmark-json=…')}`  ",
        f"**Date:** {data.get('datetime', '?')[:19]}, commit {data.get('commit_info', {}).get('id', '?')[:10]}"
        f"{' (dirty)' if data.get('commit_info', {}).get('dirty') else ''}  ",
    ]
    if peak:
        shape = f" {size}×{size}" if size else ""
        lines.append(
            f"**Practical SGEMM peak:** {peak / 1e9:.1f} GFLOP/s (NumPy float32 matmul{shape}, group sgemm-peak)"
        )
    if data.get("machine_info", {}).get("cdnn_bench", {}).get("quick"):
        lines.append("")
        lines.append("> Quick run (small slices, one round): a smoke test, not a measurement.")
    lines.append("")
    lines.append(
        "Median over the rounds; “× slower than cdnn” divides by cdnn's median on the same "
        "threads. GFLOP/s count useful matrix-product FLOPs only (see benchmarks/test_bench_training.py)."
    )
    lines.append("")
    for name in group_order(groups):
        lines += table(name, groups[name], peak)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json_file", help="the file written by pytest --benchmark-json=FILE")
    args = parser.parse_args(argv)
    try:
        with open(args.json_file, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        print(f"report.py: cannot read {args.json_file}: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(render(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
