#!/usr/bin/env bash
# Every GPU check of the project in one run on a lent GPU machine (H100/H200: CUDA, PyTorch, cuda-python, nvcc,
# onnxruntime CPU; no TensorRT, no pycuda, no package registry), results under $OUT for BENCHMARKS.md.
#
#   here, once:     bash benchmarks/gpu_session.sh fetch .device-kit       (.device-kit is git-ignored)
#   on the device:  bash benchmarks/gpu_session.sh run .device-kit tests   (carry .device-kit; <= 7 min 40 s)
#                   bash benchmarks/gpu_session.sh run .device-kit bench   (a second call: <= 7 minutes)
#   dry run here:   OUT=/tmp/gpu-dry bash benchmarks/gpu_session.sh run .device-kit all   (GPU parts skip or fail,
#                   and say why)
# (two calls because one device command may run 10 minutes at most; a lease has 15 minutes in all, starts included:
# the step timeouts below add up to 880 s at worst, and most steps take a fraction of theirs)
#
# fetch: the pycuda kit (../shared/tools/pycuda-kit.sh: pycuda's source and its dependencies) and wheels of the
# project's own dependencies for the device's Python 3.12, for those it lacks. run: installs what is missing (pycuda
# into /tmp/site, the rest from the wheels), then the GPU tests once per CUDA binding, `lpn-edge bench --device
# cuda` (encode, ring pooling, matching, training against the reference) on the random-weight ResNet-50 subject,
# each step under its own timeout so that one hang cannot eat the lease. Files under $OUT (at most 8 come back).
set -uo pipefail
command=${1:?fetch or run}; kit=${2:-.device-kit}; part=${3:-all}
OUT=${OUT:-$PWD/gpu-out}
WHEELS=(typer click rich markdown-it-py mdurl pygments shellingham typing_extensions PyYAML pillow tqdm onnx
        onnxscript onnx_ir ml_dtypes protobuf packaging pytest pytest-timeout iniconfig pluggy)

case "$command" in
  fetch)
    bash ../shared/tools/pycuda-kit.sh fetch "$kit"
    mkdir -p "$kit/wheels"
    pip download -q --no-deps --only-binary :all: --python-version 3.12 --implementation cp --abi cp312 \
      --abi abi3 --abi none --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux_2_28_x86_64 --platform any -d "$kit/wheels" "${WHEELS[@]}"
    du -sh "$kit"
    exit 0 ;;
  run) ;;
  *) echo "usage: $0 fetch DIR | run DIR [tests|bench|all]" >&2; exit 2 ;;
esac

mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$OUT/session.log"; }
step() {  # step NAME SECONDS COMMAND...: run with a timeout, output to $OUT/NAME.log, status to the session log
  local name=$1 seconds=$2; shift 2
  log "$name: $*"
  timeout -k 10 "$seconds" "$@" > "$OUT/$name.log" 2>&1
  log "$name: exit $?"
}

log "machine: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null \
  || echo 'no GPU (dry run)'); commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ "$part" != bench ] && [ -f "$kit/pycuda-kit.sh" ] && ! python3 -c "import pycuda" 2>/dev/null; then
  step pycuda 200 bash "$kit/pycuda-kit.sh" install "$kit"
fi
missing=$(python3 - <<'EOF'
import importlib.util
modules = {"typer": "typer", "rich": "rich", "yaml": "PyYAML", "PIL": "pillow", "tqdm": "tqdm", "onnx": "onnx",
           "onnxscript": "onnxscript", "pytest": "pytest", "pytest_timeout": "pytest-timeout"}
print(" ".join(wheel for module, wheel in modules.items() if importlib.util.find_spec(module) is None))
EOF
)
if [ -n "$missing" ] && [ -d "$kit/wheels" ]; then
  # into the device's own environment (bare and given back after the lease): pip installs only what is missing
  # and leaves what is there, torch and numpy included
  step deps 60 pip install -q --no-index --find-links "$kit/wheels" $missing
fi
python3 - <<'EOF' | tee -a "$OUT/session.log"
import importlib
for name in ("torch", "numpy", "onnx", "onnxruntime", "cuda.bindings", "pycuda", "cupy", "typer"):
    try:
        module = importlib.import_module(name)
        print(f"  {name} {getattr(module, '__version__', '')}")
    except Exception as error:  # noqa: BLE001
        print(f"  {name}: not importable ({type(error).__name__})")
EOF

# 1. GPU tests, once per CUDA binding the machine has (the kernels compile at first use: NVRTC or nvcc)
if [ "$part" != bench ]; then
  # every GPU test on the preferred binding; the kernel tests (the only ones that honour LPN_EDGE_CUDA_BACKEND)
  # once more on pycuda
  LPN_EDGE_CUDA_BACKEND=cuda-python step tests-cuda-python 140 python3 -m pytest -q -p no:cacheprovider \
    tests/test_cuda_gpu.py tests/test_runtime_encoders_gpu.py tests/test_runtime_matching_engines.py
  LPN_EDGE_CUDA_BACKEND=pycuda step tests-pycuda 60 python3 -m pytest -q -p no:cacheprovider tests/test_cuda_gpu.py
fi
# 2. the benchmark subject, then every figure of issue 14 that needs a GPU, each beside the reference
if [ "$part" != tests ]; then
  step subject 150 python3 benchmarks/make_bench_model.py --out /tmp/bw-gpu --onnx
  # --out writes the JSON after every part: a run cut short by its timeout keeps the parts it finished
  step bench 210 python3 -m lpn_edge.cli bench --model /tmp/bw-gpu/bench-drone.onnx --model /tmp/bw-gpu/bench.pt \
    --device cuda --batch 1,64 --iters 20 --warmup 5 --gallery-size 100000 --queries 1,64 --out "$OUT/bench.json"
fi
log "done; files: $(ls "$OUT" | tr '\n' ' ')"
