# Source this on a GPU machine that has torch, transformers and peft but cannot reach PyPI:
#   . benchmarks/device_env.sh
# It installs the wheels carried in .whl/ (datasets, evaluate and their small pure-Python needs) into /tmp/site and
# makes the checkout importable under the installed names (fuscore_data -> data/, fuscore_metrics -> evaluate_metrics/).
set -e
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
mkdir -p /tmp/fuscore_shim
ln -sfn "$PWD/data" /tmp/fuscore_shim/fuscore_data
ln -sfn "$PWD/evaluate_metrics" /tmp/fuscore_shim/fuscore_metrics
export PYTHONPATH="/tmp/site:/tmp/fuscore_shim:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
set +e
