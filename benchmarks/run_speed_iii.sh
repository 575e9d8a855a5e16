#!/usr/bin/env bash
# Issue 31's one run, on one GPU machine in one call (about 9 minutes on an H100; through the device tool:
# `. benchmarks/device_env.sh && bash benchmarks/run_speed_iii.sh`, carrying .whl and .vifb):
#   1. bench_fp8.py: the demo model's fidelity over VIFB, then the bf16 and float8 engines end to end on 2,048 448-px
#      JPEGs (two alternating rounds), model only, the vision-tower line, the 8B level-logit error, and a device-only
#      profile of 512 images per engine with GPU idle before, between and after the kernels;
#   2. bench_mixed_sizes.py: the first pass on 512 samples of mixed IVIF sizes in a process with an empty compile cache,
#      then in a second process with the cache the first one left, against the plain batched forward;
#   3. bench_fp8.py --parts host (HOST=0 skips it): the float8 engine as shipped against other host settings
#      (HOST_SETTINGS, `bench_fp8.parse_host_settings`; by default bench_fp8's HOST_SETTINGS: position inputs
#      computed anew in every call, kept across calls as shipped, and the ramp-up of calls 12-14),
#      alternating passes on 2,048 images, as many as the first step's calls (about 3 minutes);
#   4. bench_attention_shapes.py: attention's first call at new shapes per sdpa backend and FuScore's choice, and
#      cuDNN's float8 attention at the steady shapes (needs nvidia-cudnn-frontend, carried in .whl);
# MIXED=0 skips step 2, ATTENTION=0 step 4. (The steps the issue's one run needs come first: a call cut at its
# limit loses the diagnosis, not them.)
# Results (JSON, logs, gzipped traces) are packed into $OUT/speed_iii.tgz (./speed_iii/ when OUT is not set) after
# every step: the device tool returns at most 8 files from $OUT, and a call cut at its limit keeps the steps before.
# ROUNDS (default 2) and PROFILE_IMAGES (default 512) shorten the first step where device time is short; each step has
# a time limit, so that a slow one leaves time to the next.
set -uo pipefail
cd "$(dirname "$0")/.."
packed="${OUT:-speed_iii}"
vifb="${VIFB:-.vifb}"
mkdir -p "$packed"
out="$(mktemp -d)"
pack() { tar czf "$packed/speed_iii.tgz" -C "$out" .; }
cache="$(mktemp -d)"
timeout 300 python benchmarks/bench_fp8.py --vifb "$vifb" --images 2048 --rounds "${ROUNDS:-2}" \
    --profile-images "${PROFILE_IMAGES:-512}" --trace "$out" --output "$out/fp8.json" > "$out/fp8.log" 2>&1
pack
first_pass="python benchmarks/bench_mixed_sizes.py --vifb $vifb --modes fused --images 512 --no-static --first-pass-only --compile-cache $cache"
if [ "${MIXED:-1}" = 1 ]; then
    timeout 140 $first_pass --plain-images 512 --output "$out/mixed_cold.json" > "$out/mixed_cold.log" 2>&1
    timeout 90 $first_pass --plain-images 0 --plain-from "$out/mixed_cold.json" --output "$out/mixed_warm.json" > "$out/mixed_warm.log" 2>&1
    pack
fi
if [ "${HOST:-1}" = 1 ]; then
    timeout 300 python benchmarks/bench_fp8.py --parts host --images 2048 --rounds 2 --output "$out/host.json" \
        ${HOST_SETTINGS:+--host-settings "$HOST_SETTINGS"} > "$out/host.log" 2>&1
    pack
fi
if [ "${ATTENTION:-1}" = 1 ]; then
    timeout 80 python benchmarks/bench_attention_shapes.py --parts shapes,fp8 --output "$out/attention.json" > "$out/attention.log" 2>&1
    pack
fi
grep -h "summary\|waits for the GPU\|first call at a new shape\|end to end below\|vision tower, the\|first pass / plain\|compiling in the first pass\|fp8 attention\|median" \
    "$out/fp8.log" "$out/mixed_cold.log" "$out/mixed_warm.log" "$out/attention.log" "$out"/host.log 2>/dev/null | cut -c1-400
