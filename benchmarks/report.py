"""Turn a pytest-benchmark JSON file into the Markdown tables of the README.

    pytest benchmarks --benchmark-only --benchmark-json=results.json
    python benchmarks/report.py results.json > results.md

One table per benchmark group (a workload and its contenders): the median
time per epoch (or per kernel call) over the rounds and its spread
(min–max), each contender's time over cdnn's (the medians' ratio, and the
quartiles' as its spread), the GFLOP/s from ``extra_info["flops"]``, and
that as a share of the machine's practical SGEMM peak on the row's threads
(the faster of NumPy's ``matmul`` and cdnn's GEMM of 2048×2048 float32
matrices on 1, 2 and all cores: the ``sgemm-peak`` group), when the file
has it. Before them, the README's speed tables: a row per training workload
(seconds per epoch) and per inference batch (time per call), a column per
contender, with cdnn's GFLOP/s, share of the peak and lead over the fastest
peer.

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


def column_label(bench: dict, threads: int | None) -> str:
    """The contender, with its thread count when that is not the run's (``cdnn, 1 thread``)."""
    t = bench.get("extra_info", {}).get("threads")
    if t is None or threads is None or t == threads:
        return label(bench)
    return f"{label(bench)}, {t} thread{'s' if t != 1 else ''}"


def find_peaks(benchmarks: list[dict]) -> dict[int | None, tuple[float, str, int | None]]:
    """The practical SGEMM peak per thread count: ``{threads: (FLOP/s, contender, size)}``, the
    fastest entry of the ``sgemm-peak`` group on those threads (NumPy's matmul or cdnn's GEMM)."""
    peaks: dict[int | None, tuple[float, str, int | None]] = {}
    for b in benchmarks:
        info = b.get("extra_info", {})
        if b.get("group") != "sgemm-peak" or not info.get("flops") or not b["stats"].get("median"):
            continue
        rate = info["flops"] / b["stats"]["median"]
        threads = info.get("threads")
        if threads not in peaks or rate > peaks[threads][0]:
            peaks[threads] = (rate, label(b), info.get("size"))
    return peaks


def find_peak(benchmarks: list[dict]) -> tuple[float, int | None] | tuple[None, None]:
    """The SGEMM peak on the most threads measured, and its matrix size (``None, None`` if absent)."""
    peaks = find_peaks(benchmarks)
    if not peaks:
        return None, None
    rate, _, size = peaks[max(peaks, key=lambda t: t or 0)]
    return rate, size


def ratio(bench: dict, ref: dict) -> tuple[float, float, float]:
    """``bench``'s time over ``ref``'s: the medians' ratio, and a spread from the quartiles
    (``bench``'s first quartile over ``ref``'s third, its third over ``ref``'s first);
    min and max where a file has no quartiles."""
    a, r = bench["stats"], ref["stats"]
    lo = a.get("q1", a["min"]) / r.get("q3", r["max"])
    hi = a.get("q3", a["max"]) / r.get("q1", r["min"])
    return a["median"] / r["median"], lo, hi


def fmt_ratio(value: tuple[float, float, float], times: str = "") -> str:
    """``3.00 (2.45–3.67)``: the medians' ratio, then the quartiles' range when there is one."""
    med, lo, hi = value
    if abs(hi - lo) < 0.005:
        return f"{med:.2f}{times}"
    return f"{med:.2f}{times} ({lo:.2f}–{hi:.2f})"


def gflops(bench: dict) -> float | None:
    flops = bench.get("extra_info", {}).get("flops")
    return flops / bench["stats"]["median"] / 1e9 if flops else None


def fmt_share(bench: dict, peaks: dict) -> str:
    """``bench``'s GFLOP/s as a share of the SGEMM peak on its threads (all its processes' threads:
    ``n_jobs`` fits side by side on one thread each use the peak of ``n_jobs`` threads)."""
    rate = gflops(bench)
    info = bench.get("extra_info", {})
    threads = info.get("threads")
    if threads is not None:
        threads *= info.get("n_jobs", 1)
    peak = peaks.get(threads)
    if not rate or not peak:
        return "—"
    return f"{100 * rate * 1e9 / peak[0]:.0f}%"


def group_order(groups: dict[str, list[dict]]) -> list[str]:
    """Training epochs first (as they ran), then kernels and inference, the peak last."""

    def key(item):
        index, name = item
        unit = groups[name][0].get("extra_info", {}).get("unit")
        return (name == "sgemm-peak", unit != "epoch", index)

    return [name for _, name in sorted(enumerate(groups), key=key)]


def reference_of(benches: list[dict]) -> dict | None:
    return next((b for b in benches if b.get("extra_info", {}).get("reference")), None)


def table(name: str, benches: list[dict], peaks: dict) -> list[str]:
    """One group's table: a row per contender, fastest first."""
    unit = benches[0].get("extra_info", {}).get("unit") or "round"
    ref = reference_of(benches)
    has_bytes = any("bytes" in b.get("extra_info", {}) for b in benches)
    head = [
        "contender",
        "threads",
        f"time / {unit} (median)",
        "spread (min–max)",
        "× cdnn's time (median; quartiles)",
        "GFLOP/s",
    ]
    if peaks:
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
        rate = gflops(b)
        row = [
            label(b),
            str(info.get("threads", "")),
            fmt_time(med),
            fmt_range(st["min"], st["max"]),
            fmt_ratio(ratio(b, ref)) if ref else "—",
            f"{rate:.1f}" if rate else "—",
        ]
        if peaks:
            row.append(fmt_share(b, peaks))
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


def _is_cdnn(bench: dict) -> bool:
    return label(bench).startswith("cdnn")


def summary_table(
    title: str, groups: dict[str, list[dict]], names: list[str], peaks: dict, threads: int | None, seconds: bool
) -> list[str]:
    """The README's speed table: a row per workload, a column per contender (median time), then
    cdnn's GFLOP/s and share of the peak, and how many times faster it is than the fastest peer."""
    columns: list[str] = []
    for name in names:
        for b in groups[name]:
            col = column_label(b, threads)
            if col not in columns:
                columns.append(col)
    columns.sort(key=lambda c: not c.startswith("cdnn"))
    unit = "s" if seconds else "time"
    head = ["workload", *[f"{c} ({unit})" if seconds else c for c in columns]]
    head += ["cdnn GFLOP/s", "% of peak", "cdnn's speed-up over the fastest peer (median; quartiles)"]
    lines = [
        f"### {title}",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(head) - 2) + ["---"]) + "|",
    ]
    for name in names:
        benches = groups[name]
        by_col = {column_label(b, threads): b for b in benches}
        ref = reference_of(benches)
        cells = []
        for c in columns:
            b = by_col.get(c)
            med = b["stats"]["median"] if b else None
            cells.append("—" if med is None else f"{med:.3g}" if seconds else fmt_time(med))
        rate = gflops(ref) if ref else None
        on = threads if threads is not None else (ref or benches[0]).get("extra_info", {}).get("threads")
        peers = [b for b in benches if not _is_cdnn(b) and b.get("extra_info", {}).get("threads") == on]
        if ref and peers:
            best = min(peers, key=lambda b: b["stats"]["median"])
            lead = f"{fmt_ratio(ratio(best, ref), '×')} over {label(best)}"
        else:
            lead = "—"
        describe = next((d for b in benches if (d := b.get("extra_info", {}).get("describe"))), None)
        row = [describe or name, *cells, f"{rate:.1f}" if rate else "—", fmt_share(ref, peaks) if ref else "—", lead]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    return lines


def summaries(groups: dict[str, list[dict]], peaks: dict, threads: int | None) -> list[str]:
    """The README's tables: training epochs (seconds) and inference calls."""
    training = [n for n in group_order(groups) if groups[n][0].get("extra_info", {}).get("unit") == "epoch"]
    inference = [n for n in group_order(groups) if n.startswith("inference ")]
    lines: list[str] = []
    if training:
        lines += summary_table("Training: seconds per epoch", groups, training, peaks, threads, seconds=True)
    if inference:
        lines += summary_table("Inference: time per call", groups, inference, peaks, threads, seconds=False)
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


def run_threads(data: dict, benchmarks: list[dict]) -> int | None:
    """The threads every contender got in this run (the reference rows')."""
    threads = data.get("machine_info", {}).get("cdnn_bench", {}).get("threads")
    if threads:
        return threads
    refs = [b["extra_info"].get("threads") for b in benchmarks if b.get("extra_info", {}).get("reference")]
    return max(set(refs), key=refs.count) if refs else None


def render(data: dict) -> str:
    benchmarks = [b for b in data.get("benchmarks", []) if b.get("stats")]
    if not benchmarks:
        return "No benchmark results in this file.\n"
    groups: dict[str, list[dict]] = {}
    for b in benchmarks:
        groups.setdefault(b.get("group") or b["name"], []).append(b)
    peaks = find_peaks(benchmarks)
    threads = run_threads(data, benchmarks)
    lines = [
        "## Benchmarks",
        "",
        machine_line(data) + "  ",
        f"**Command:** `{data.get('command', 'pytest benchmarks --benchmark-only --benchmark-json=…')}`  ",
        f"**Date:** {data.get('datetime', '?')[:19]}, commit {data.get('commit_info', {}).get('id', '?')[:10]}"
        f"{' (dirty)' if data.get('commit_info', {}).get('dirty') else ''}  ",
    ]
    if peaks:
        parts = []
        for t in sorted(peaks, key=lambda t: t or 0):
            rate, who, size = peaks[t]
            shape = f" {size}×{size}" if size else ""
            parts.append(f"{rate / 1e9:.1f} GFLOP/s on {t} thread{'s' if t != 1 else ''} ({who}{shape})")
        lines.append("**Practical SGEMM peak:** " + "; ".join(parts) + ", group sgemm-peak")
    else:
        lines.append("**Practical SGEMM peak:** not in this run (select test_sgemm_peak for the % of peak)")
    if data.get("machine_info", {}).get("cdnn_bench", {}).get("quick"):
        lines.append("")
        lines.append("> Quick run (small slices, one round): a smoke test, not a measurement.")
    lines.append("")
    lines.append(
        "Median over the rounds. “× cdnn's time” divides a contender's median by cdnn's on the same "
        "threads; the range after it divides its quartiles by cdnn's (first by third, third by first). "
        "GFLOP/s count useful matrix-product FLOPs only (see benchmarks/test_bench_training.py); "
        "“% of peak” divides them by the SGEMM peak on the row's threads."
    )
    lines.append("")
    lines += summaries(groups, peaks, threads)
    for name in group_order(groups):
        lines += table(name, groups[name], peaks)
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
