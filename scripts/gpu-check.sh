#!/usr/bin/env bash
# The GPU check of seqrec's CUDA backend, in two halves:
#
#   bash scripts/gpu-check.sh build [DIR]   on a machine with the Rust toolchain (no GPU needed):
#                                           builds the CUDA test and benchmark binaries and the
#                                           `seqrec` tool (with CUDA) into DIR
#                                           (default target-gpu/, ignored by git; about 12 MB
#                                           after stripping), with the kernels prebuilt as cubins
#                                           for sm_80/sm_90/sm_100 (needs libnvrtc here).
#   bash scripts/gpu-check.sh run [DIR]     on the GPU machine (NVIDIA driver; NVRTC from a CUDA
#                                           toolkit or a Python wheel such as PyTorch's
#                                           nvidia-cuda-nvrtc, else the kernels prebuilt into DIR;
#                                           no Rust, no network): runs them and
#                                           writes everything to $OUT (default ./gpu-out), ending
#                                           with a one-object JSON summary on stdout and in
#                                           $OUT/summary.json. Takes a few minutes.
#
# The binaries are built against this machine's glibc (2.34 or later is needed where they run)
# and load libcuda and libnvrtc at run time, so nothing CUDA is needed to build them. Where the
# GPU machine gets a copy of the work tree, copy the ignored DIR along with it (it is about
# 45 MB) and run `bash scripts/gpu-check.sh run` in the copy.
#
# What runs: `seqrec score` on the CPU and on the GPU (same top-10 expected) and `seqrec info
# --device cuda` over a small SASRec trained at build time, the NVRTC compile test (every kernels/cuda/*.cu source, sm_80/sm_90), the CUDA
# backend's tests against the CPU (tests/tests/cuda.rs, with SEQREC_REQUIRE_GPU=1 so that a
# missing GPU fails instead of skipping), and the benchmark against the CPU
# (tests/tests/cuda_bench.rs: SASRec at batch 1/256/4096 over 23,716 and 352,602 items with
# f32/bf16/int8 tables, GRU4Rec and NextItNet at batch 1/256, the scan's bandwidth next to a
# device-to-device copy), whose JSON lines land in $OUT/bench.jsonl.
set -uo pipefail
cd "$(dirname "$0")/.."
mode="${1:-}"
dir="${2:-target-gpu}"

build() {
    set -e
    mkdir -p "$dir/bin"
    local json
    json="$(mktemp)"
    cargo test --no-run -p seqrec-tests --features cuda --test cuda --test cuda_bench \
        --message-format=json >"$json"
    cargo test --no-run -p seqrec-kernels --features cuda --test nvrtc \
        --message-format=json >>"$json"
    python3 - "$json" "$dir/bin" <<'PY'
import json, shutil, sys
src, dst = sys.argv[1], sys.argv[2]
for line in open(src):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        name = m["target"]["name"]
        if name in ("cuda", "cuda_bench", "nvrtc"):
            shutil.copy(m["executable"], f"{dst}/{name}")
            print(f"{dst}/{name}")
PY
    rm -f "$json"
    # The command-line tool with CUDA, and a small trained SASRec for its check.
    cargo build -p seqrec-trainer --features cuda --bin seqrec
    cp target/debug/seqrec "$dir/bin/seqrec"
    "$dir/bin/seqrec" demo --time-budget 5 --quiet --out "$dir/demo-sasrec.safetensors" >/dev/null
    strip --strip-debug "$dir"/bin/* 2>/dev/null || true
    # Prebuilt kernels (sm_80, sm_90, sm_100) for a GPU machine without NVRTC; needs libnvrtc
    # here (pip install nvidia-cuda-nvrtc, its lib folder on LD_LIBRARY_PATH).
    LD_LIBRARY_PATH="$(nvrtc_dirs | paste -sd: -)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
        cargo run -q -p seqrec-kernels --features cuda --example cuda-cubins -- \
        "$dir/kernels" 80 90 100 >/dev/null
    du -sh "$dir"
}

# Folders holding libnvrtc on this machine: CUDA toolkits and Python wheels (PyTorch ships it).
nvrtc_dirs() {
    {
        ls -d /usr/local/cuda*/lib64 /usr/local/cuda*/targets/*/lib 2>/dev/null
        for py in python3 python; do
            command -v "$py" >/dev/null || continue
            "$py" - <<'PY' 2>/dev/null
import glob, os, site, sys
roots = set(site.getsitepackages() + [site.getusersitepackages()] + sys.path)
for r in roots:
    for f in glob.glob(os.path.join(r, "nvidia", "**", "libnvrtc.so*"), recursive=True):
        print(os.path.dirname(f))
PY
        done
        ldconfig -p 2>/dev/null | awk '/libnvrtc\.so/ {print $NF}' | xargs -r -n1 dirname
    } | awk '!seen[$0]++'
}

run() {
    local out="${OUT:-gpu-out}"
    mkdir -p "$out"
    local libs
    libs="$(nvrtc_dirs | paste -sd: -)"
    export LD_LIBRARY_PATH="${libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    # Without NVRTC here, the kernels come prebuilt from the build machine.
    if [ -z "$libs" ] && [ -d "$dir/kernels" ]; then
        SEQREC_CUDA_KERNELS="$(cd "$dir/kernels" && pwd)"
        export SEQREC_CUDA_KERNELS
    fi
    {
        echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
        echo "SEQREC_CUDA_KERNELS=${SEQREC_CUDA_KERNELS:-}"
    } >"$out/env.txt"
    nvidia-smi >"$out/nvidia-smi.txt" 2>&1 || true
    local t0=$SECONDS
    local nvrtc=-1
    if [ -n "$libs" ]; then
        SEQREC_REQUIRE_NVRTC=1 timeout 180 "$dir/bin/nvrtc" --nocapture >"$out/nvrtc.txt" 2>&1
        nvrtc=$?
    fi
    SEQREC_REQUIRE_GPU=1 timeout 300 "$dir/bin/cuda" --nocapture >"$out/cuda-tests.txt" 2>&1
    local tests=$?
    # The command line on the GPU: the same recommendations as on the CPU.
    local model="$dir/demo-sasrec.safetensors" cli=0
    for dev in cpu cuda; do
        timeout 120 "$dir/bin/seqrec" score "$model" --history 3,17,42,8 -k 10 --device "$dev" \
            --format json >"$out/cli-score-$dev.json" 2>>"$out/cli.txt" || cli=$?
    done
    timeout 60 "$dir/bin/seqrec" info "$model" --device cuda --format json \
        >"$out/cli-info-cuda.json" 2>>"$out/cli.txt" || cli=$?
    rm -f "$out/bench.jsonl"
    SEQREC_BENCH_JSON="$out/bench.jsonl" timeout 300 "$dir/bin/cuda_bench" --ignored \
        --nocapture >"$out/bench.txt" 2>&1
    local bench=$?
    python3 - "$out" "$nvrtc" "$tests" "$bench" "$((SECONDS - t0))" "$cli" <<'PY' | tee "$out/summary.json"
import json, re, sys
out, nvrtc, tests, bench, secs, cli = sys.argv[1], *map(int, sys.argv[2:])
def load(name):
    try:
        return json.load(open(f"{out}/{name}"))
    except (OSError, ValueError):
        return None
cpu, gpu = load("cli-score-cpu.json"), load("cli-score-cuda.json")
cli_same = bool(cpu and gpu) and cpu["items"] == gpu["items"] and all(
    abs(a - b) <= 1e-4 * (1 + abs(a)) for a, b in zip(cpu["scores"], gpu["scores"]))
try:
    text = open(f"{out}/cuda-tests.txt", errors="replace").read()
except OSError:
    text = ""
passed = re.findall(r"^test (\S+) \.\.\. ok", text, re.M)
failed = re.findall(r"^test (\S+) \.\.\. FAILED", text, re.M)
try:
    rows = [json.loads(l) for l in open(f"{out}/bench.jsonl")]
except OSError:
    rows = []
print(json.dumps({
    "nvrtc_rc": nvrtc, "tests_rc": tests, "bench_rc": bench, "cli_rc": cli,
    "cli_gpu_equals_cpu": cli_same, "seconds": secs,
    "tests_passed": len(passed), "tests_failed": failed, "bench": rows,
}))
PY
}

case "$mode" in
build) build ;;
run) run ;;
*)
    echo "usage: $0 build|run [DIR]" >&2
    exit 2
    ;;
esac
