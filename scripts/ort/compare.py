#!/usr/bin/env python3
"""seqrec against ONNX Runtime on the same random RecBole-shaped models, in one run.

    python scripts/ort/compare.py [--seqrec target/release/seqrec] [--out target/ort-compare]
                                  [--threads 2] [--iters 200] [--rounds 1] [--only NAME ...]
                                  [--isa LEVEL ...]

(`scripts/compare-ort.sh` builds the release binary first and calls this.) Steps:
  1. writes the models with seeded random weights (scripts/ort/random_model.py) and exports each
     to an ONNX top-10 graph (scripts/ort/export.py);
  2. checks every graph, and graphs of three models with non-default hyper-parameters, against
     `seqrec score` (scripts/ort/check.py), and where ../shared is present graphs of fixtures of
     the spec's numpy reference against their cases: the run stops with exit status 1 when a
     top-10 differs;
  3. for every workload runs `seqrec bench` and scripts/ort/bench.py back to back on the same
     model (the order alternates between rounds), each a fresh process, same batch, threads,
     iterations and k; seqrec once per instruction-set level (`--isa`, default every level the
     CPU supports above scalar, as `seqrec info --cpu` lists them), forced with SEQREC_ISA;
  4. prints a markdown table: per workload and level the median over rounds of p50 and seq/s of
     both, and the ratios ORT p50 / seqrec p50 (> 1: seqrec is faster) and seqrec seq/s / ORT
     seq/s.
The raw JSON lines go to OUT/results.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

# name -> (architecture, n_items, --set overrides); RecBole defaults otherwise (window 50).
MODELS = {
    "sasrec-23716": ("sasrec", 23_716, ["hidden_size=64", "n_layers=2", "n_heads=2"]),
    "sasrec-352602": ("sasrec", 352_602, ["hidden_size=64", "n_layers=2", "n_heads=2"]),
    "gru4rec-23716": ("gru4rec", 23_716, ["embedding_size=64"]),
    "nextitnet-23716": ("nextitnet", 23_716, ["embedding_size=64"]),
}

# Checked but not timed: non-default hyper-parameters, so that the exporter's other paths
# (several GRU layers, other activations and head counts, other dilation patterns) are verified.
VARIANTS = {
    "sasrec-variant": ("sasrec", 2_000, ["n_heads=4", "hidden_act=\"swish\"", "n_layers=3", "inner_size=96"]),
    "gru4rec-variant": ("gru4rec", 2_000, ["num_layers=2", "hidden_size=48", "MAX_ITEM_LIST_LENGTH=20"]),
    "nextitnet-variant": ("nextitnet", 2_000, ["kernel_size=2", "dilations=[1,2,3]", "block_num=2"]),
}

# (label, model, batch, extra seqrec bench arguments); ORT always runs the f32 graph.
WORKLOADS = [
    ("SASRec 23,716 items, batch 1", "sasrec-23716", 1, []),
    ("SASRec 23,716 items, batch 1, seqrec int8 table", "sasrec-23716", 1, ["--item-dtype", "i8"]),
    ("SASRec 23,716 items, batch 256", "sasrec-23716", 256, []),
    ("SASRec 352,602 items, batch 1", "sasrec-352602", 1, []),
    ("SASRec 352,602 items, batch 1, seqrec f16 table", "sasrec-352602", 1, ["--item-dtype", "f16"]),
    ("SASRec 352,602 items, batch 1, seqrec bf16 table", "sasrec-352602", 1, ["--item-dtype", "bf16"]),
    ("SASRec 352,602 items, batch 1, seqrec int8 table", "sasrec-352602", 1, ["--item-dtype", "i8"]),
    ("GRU4Rec 23,716 items, batch 1", "gru4rec-23716", 1, []),
    ("GRU4Rec 23,716 items, batch 256", "gru4rec-23716", 256, []),
    ("NextItNet 23,716 items, batch 1", "nextitnet-23716", 1, []),
    ("NextItNet 23,716 items, batch 256", "nextitnet-23716", 256, []),
]


def run(cmd: list[str], what: str, env: dict[str, str] | None = None) -> str:
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        sys.stderr.write(res.stdout + res.stderr)
        print(f"error: {what} failed (exit {res.returncode}): {' '.join(cmd)}", file=sys.stderr)
        sys.exit(1)
    return res.stdout


def py(script: str, *args: str) -> list[str]:
    return [sys.executable, os.path.join(HERE, script), *args]


def cpu_model() -> str:
    """lscpu's model name, family/model numbers and the widest x86 vector extension."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        return platform.processor() or "unknown"
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = fields.get("Flags", "").split()
    isa = "AVX-512" if "avx512f" in flags else "AVX2+FMA" if "avx2" in flags else "no AVX2"
    return f"{fields.get('Model name', 'unknown')} (family {fields.get('CPU family', '?')}, model {fields.get('Model', '?')}, {isa})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seqrec", default="target/release/seqrec", help="the seqrec binary (release build)")
    ap.add_argument("--out", default="target/ort-compare", help="folder for models, graphs and results")
    ap.add_argument("--threads", type=int, default=2, help="threads of both runtimes (default 2)")
    ap.add_argument("--iters", type=int, default=200, help="timed iterations per bench (default 200)")
    ap.add_argument("--rounds", type=int, default=1, help="repeat every pair of benches; medians are reported")
    ap.add_argument("--only", nargs="*", metavar="MODEL", help=f"subset of {', '.join(MODELS)}")
    ap.add_argument("--isa", nargs="*", metavar="LEVEL", help="seqrec levels to time (SEQREC_ISA values; default: every level of this CPU but scalar)")
    args = ap.parse_args()
    if not os.access(args.seqrec, os.X_OK):
        print(f"error: {args.seqrec} is not an executable (cargo build --release -p seqrec-trainer --bin seqrec)", file=sys.stderr)
        sys.exit(2)
    models = args.only or list(MODELS)
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        print(f"error: unknown model `{unknown[0]}` (one of {', '.join(MODELS)})", file=sys.stderr)
        sys.exit(2)
    os.makedirs(args.out, exist_ok=True)
    cpu = json.loads(run([args.seqrec, "info", "--cpu", "--format", "json"], "seqrec info --cpu"))
    levels = args.isa or [lvl for lvl in cpu["levels"] if lvl != "scalar"] or ["scalar"]

    for name, (arch, n_items, sets) in [(m, MODELS[m]) for m in models] + list(VARIANTS.items()):
        st, gr = os.path.join(args.out, f"{name}.safetensors"), os.path.join(args.out, f"{name}.onnx")
        run(py("random_model.py", arch, str(n_items), st, "--seed", "1", *[a for s in sets for a in ("--set", s)]), "random model")
        run(py("export.py", st, gr), "export")
        print(run(py("check.py", st, gr, "--seqrec", args.seqrec), "check").strip().splitlines()[-1], flush=True)
    # An independent reference: the spec's numpy implementation, where ../shared is present.
    ref = os.path.join(HERE, "..", "..", "..", "shared", "spec", "recbole_ref.py")
    if os.path.exists(ref):
        for arch in ("sasrec", "gru4rec", "nextitnet"):
            fx = os.path.join(args.out, f"fixture-{arch}")
            run([sys.executable, ref, "make", arch, fx, "--seed", "3", "--n-items", "500"], "recbole_ref.py make")
            st, gr = os.path.join(fx, "model.safetensors"), os.path.join(fx, "model.onnx")
            run(py("export.py", st, gr), "export")
            out = run(py("check.py", st, gr, "--seqrec", args.seqrec, "--fixture", fx), "fixture check")
            print(out.strip().splitlines()[-1], flush=True)
    else:
        print("skipping the check against ../shared/spec/recbole_ref.py (../shared not found)", flush=True)

    import onnxruntime

    load_before = os.getloadavg()[0]
    rows = [w for w in WORKLOADS if w[1] in models]
    results: dict[tuple[str, str], list[dict]] = {}
    log = open(os.path.join(args.out, "results.jsonl"), "w")
    for rnd in range(args.rounds):
        for label, name, batch, extra in rows:
            st, gr = os.path.join(args.out, f"{name}.safetensors"), os.path.join(args.out, f"{name}.onnx")
            common = ["--batch", str(batch), "--threads", str(args.threads), "--iters", str(args.iters), "--format", "json"]
            cmds = {f"seqrec {lvl}": [args.seqrec, "bench", st, *common, "-k", "10", *extra] for lvl in levels}
            cmds["ort"] = py("bench.py", gr, *common)
            order = list(cmds)
            if rnd % 2 == 1:
                order.reverse()
            for who in order:
                env = None
                if who != "ort":
                    env = dict(os.environ, SEQREC_ISA=who.split()[1])
                r = json.loads(run(cmds[who], f"{who} bench", env).strip().splitlines()[-1])
                r.update(workload=label, runtime_name=who, round=rnd)
                log.write(json.dumps(r) + "\n")
                log.flush()
                results.setdefault((label, who), []).append(r)
            o = results[(label, "ort")][-1]
            mine = ", ".join(f"{lvl} {results[(label, f'seqrec {lvl}')][-1]['p50_ms']:.3f}" for lvl in levels)
            print(
                f"round {rnd + 1}: {label}: seqrec p50 {mine} ms, ORT p50 {o['p50_ms']:.3f} ms",
                file=sys.stderr,
                flush=True,
            )
    log.close()
    load_after = os.getloadavg()[0]


    def med(label: str, who: str, key: str) -> float:
        return statistics.median(r[key] for r in results[(label, who)])

    print()
    print(
        f"Machine: {cpu_model()}, {os.cpu_count()} logical CPUs; {args.threads} threads each; "
        f"onnxruntime {onnxruntime.__version__}; seqrec levels {', '.join(levels)} (extensions {', '.join(cpu['extensions']) or 'none'}); {args.iters} timed iterations after warm-up; "
        f"{args.rounds} round(s), medians; 1-minute load average {load_before:.1f} before the benches, "
        f"{load_after:.1f} after; {time.strftime('%Y-%m-%d')}"
    )
    print()
    print("| workload | seqrec level | seqrec p50 ms | seqrec seq/s | ORT p50 ms | ORT seq/s | ORT p50 / seqrec p50 | seqrec seq/s / ORT seq/s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for label, _, _, _ in rows:
        op, os_ = med(label, "ort", "p50_ms"), med(label, "ort", "seq_per_s")
        for lvl in levels:
            sp, ss = med(label, f"seqrec {lvl}", "p50_ms"), med(label, f"seqrec {lvl}", "seq_per_s")
            print(f"| {label} | {lvl} | {sp:.3f} | {ss:,.0f} | {op:.3f} | {os_:,.0f} | {op / sp:.2f}x | {ss / os_:.2f}x |")


if __name__ == "__main__":
    main()
