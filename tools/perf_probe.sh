#!/usr/bin/env bash
# Build and run tools/perf_probe.c (see its header): the FMA peak, the micro-kernel in L1, one thread's
# share of a BIG-b128 step part by part, the optimizer, barriers and bandwidth. Args: a SIMD path.
# PROBE_BUILD_ONLY=1: build it only (PROBE_OPT: the optimization flag, -O3 unless given; tests build at -O1).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${TMPDIR:-/tmp}/cdnn_perf_probe
${CC:-gcc} "${PROBE_OPT:--O3}" -std=gnu11 -fno-math-errno -fno-trapping-math -fno-strict-aliasing -Wno-unused-function \
    -fopenmp -Isrc_c -o "$out" tools/perf_probe.c $(ls src_c/*.c | grep -v gemm.c) -lm
[ -n "${PROBE_BUILD_ONLY:-}" ] && exit 0
uptime
"$out" "$@"
