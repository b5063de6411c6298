#!/usr/bin/env bash
# One GPU sitting on the device machine, in parts that each fit one call (10 minutes), results to $OUT.
#   bash benchmarks/gpu_session.sh tests            # gpu-marked tests + kernel tests on CUDA
#   bash benchmarks/gpu_session.sh kernels          # benchmarks/kernels_bandwidth.py
#   bash benchmarks/gpu_session.sh gemv             # benchmarks/gemv.py: decode projections vs cuBLAS, Inductor
#   bash benchmarks/gpu_session.sh sweep            # benchmarks/kernels_sweep.py: block/warp choices
#   bash benchmarks/gpu_session.sh ladder [args]    # the ladder on llama 1b (--resume to go on)
#   bash benchmarks/gpu_session.sh profile          # phases 0-1 on llama 1b, traced, then benchmarks/profile_check.py
#   bash benchmarks/gpu_session.sh pi0 [--resume]   # the ladder on pi0 full (3 cameras, horizon 10), target 25 ms
#   bash benchmarks/gpu_session.sh lab              # notebooks/lab-custom-kernel.ipynb on the GPU
#   bash benchmarks/gpu_session.sh peers pi0|llama  # benchmarks/peers.py: eager, compile modes, the recipe
#   bash benchmarks/gpu_session.sh check            # python -m playbook check on RECIPE (llama 1b's), CHECKS times
#   bash benchmarks/gpu_session.sh rerecord         # llama 1b: phases tuning + verify again on this machine, then check
#   bash benchmarks/gpu_session.sh ladder-time      # whole ladders, uninterrupted, cold compile cache: llama 1b then
#                                                   # pi0 full, in the background (setsid); each call waits up to
#                                                   # WAIT_S (570 s) and copies what is done to $OUT: call it again
#   bash benchmarks/gpu_session.sh pi0-bg           # pi0-time in the background (setsid); each call waits up to WAIT_S
#                                                   # and copies what is done: call it again at once while it runs
#   bash benchmarks/gpu_session.sh pi0-resume       # a recorded pi0 full run (PI0_RUN) from phase PI0_FROM (4) on again at this
#                                                   # code, in the background; call again at once while it runs
#   bash benchmarks/gpu_session.sh pi0-pdl          # benchmarks/tuning_variants.py: pi0 full's recipe with the vision tower
#                                                   # on SDPA, with and without PDL (ours and Inductor's), each built twice
#   bash benchmarks/gpu_session.sh gemv-pdl         # kernels.gemv with Programmatic Dependent Launch: its CUDA tests,
#                                                   # then llama 1b's and pi0's projections with and without it
#   bash benchmarks/gpu_session.sh pi0-fold         # pi0 full's recipe beside itself with phase 5's folds (rotary + cache
#                                                   # writes in one launch, the gated down projection), each alone, and
#                                                   # all with residual adds and q/k/v, gate+up routed with their norms
#   bash benchmarks/gpu_session.sh pdl              # benchmarks/pdl_check.py: llama 1b's and pi0 full's recipes, with
#                                                   # and without Inductor's Programmatic Dependent Launch
#   bash benchmarks/gpu_session.sh llama-time       # llama 1b's whole ladder alone, uninterrupted, in the foreground
#   bash benchmarks/gpu_session.sh pi0-time         # pi0 full's whole ladder alone, uninterrupted, in the foreground:
#                                                   # one call (budget PI0_BUDGET_MIN, 9.2 min, under the call's 10)
#   bash benchmarks/gpu_session.sh tuning-variants  # benchmarks/tuning_variants.py: llama 1b's recipe with each tuning
#                                                   # candidate (the GEMV kept or given back, PDL or not), side by side
#   bash benchmarks/gpu_session.sh combo            # benchmarks/tuning_variants.py: llama 1b's recipe beside itself with
#                                                   # Inductor's combo kernels (independent small kernels as one)
#   bash benchmarks/gpu_session.sh rope-append      # benchmarks/tuning_variants.py: llama 1b's recipe beside itself with
#                                                   # the one-launch decode (rotary + cache write + attention)
#   bash benchmarks/gpu_session.sh few-rows         # kernels.gemv's few-row kernel: its tests on CUDA, pi0's 11-row
#                                                   # projections against cuBLAS (a sweep), pi0 full's recipe beside
#                                                   # itself with its denoise projections through it
#   bash benchmarks/gpu_session.sh pi0-kernels      # the committed pi0 full run from phase 5 on again (kernels, tuning,
#                                                   # verify; tuning's recorded budget dropped for its default), target 15 ms
#   bash benchmarks/gpu_session.sh freezing         # benchmarks/tuning_variants.py: the llama 1b recipe that llama-time just
#                                                   # wrote (or the committed one) beside itself with Inductor's freezing
#   bash benchmarks/gpu_session.sh autotune-cache   # benchmarks/autotune_cache_check.py: a cached coordinate-descent
#                                                   # build, does it tune again in a new process?
#   bash benchmarks/gpu_session.sh few-query        # kernels.few_query_attention: its tests on CUDA, then pi0's denoise
#                                                   # attention against the compiled math it replaces (a sweep)
#   bash benchmarks/gpu_session.sh pi0-attention    # few-query (above), then pi0 full's recipe beside itself with phase 5's
#                                                   # folds, and with them and its denoise attention through the kernel,
#                                                   # each with its launch table
#   bash benchmarks/gpu_session.sh gated-pair       # benchmarks/gated_pair.py: the gated down projection alone and after
#                                                   # the gate+up projection that writes its input
#   bash benchmarks/gpu_session.sh pi0-attention-2  # the few-query sweep (no tests), gated-pair, then pi0 full's recipe
#                                                   # beside itself with the rotary fold, and with the few-query kernel too
#   bash benchmarks/gpu_session.sh pi0-vision       # benchmarks/tuning_variants.py: pi0 full's recipe beside itself with
#                                                   # its vision tower on SDPA, and with coordinate-descent tuning
#   bash benchmarks/gpu_session.sh glu              # benchmarks/glu_sweep.py: kernels.gemv's GLU epilogue and gated prologue at
#                                                   # pi0's denoise shapes, over blocks, warps and pipeline stages
#   bash benchmarks/gpu_session.sh user-models      # benchmarks/user_models.py: models the project does not build,
#                                                   # ladder + peers each, GPUS at a time, in the background;
#                                                   # each call waits up to WAIT_S and copies what is done
#                                                   # (UM_DIR: another folder under reports/; a new machine
#                                                   # starts over, so name the models left with --only)
#   bash benchmarks/gpu_session.sh families [m...] # the ladder on hf model types at preset small, each in FAM_MIN (1.5) minutes
#                                                   # (default: jamba whisper), then a table of their phases
# Run from the repo root with .whl/ carried along (../shared/device/fetch-wheels.sh liger-kernel).
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site:$PWD JUPYTER_PATH=/tmp/site/share/jupyter || exit 1
export PYTHONUNBUFFERED=1 OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
part=${1:-all}; shift || true
wait_for() {   # wait_for FLAG: until the background job's FLAG file exists or WAIT_S (570 s) has passed
  local end=$((SECONDS + ${WAIT_S:-570}))
  while [[ ! -f $1 && $SECONDS -lt $end ]]; do sleep 5; done
}
drop_keys() {  # drop_keys RUN_JSON KEY...: a recorded run's keys removed (a resumed run plans anew)
  python3 -c "import json, sys; p = sys.argv[1]; r = json.load(open(p)); [r.pop(k, None) for k in sys.argv[2:]]; json.dump(r, open(p, 'w'), indent=1)" "$@"
}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/device.txt"
python3 -c "import torch, transformers, triton; print('torch', torch.__version__, 'transformers', transformers.__version__, 'triton', triton.__version__)" | tee -a "$OUT/device.txt"
if [[ $part == tests || $part == all ]]; then
  python3 -m pytest -q -m gpu tests 2>&1 | tail -5 | tee "$OUT/gpu-tests.txt"
  python3 -m pytest -q tests/test_kernels.py 2>&1 | tail -3 | tee -a "$OUT/gpu-tests.txt"   # compiled, on CUDA
  python3 -m pytest -q tests/test_decode_attention.py -k "filled or rope" 2>&1 | tail -3 | tee -a "$OUT/gpu-tests.txt"
fi
if [[ $part == families ]]; then   # any model: state-space, speech, dual-encoder and vision models down the GPU ladder
  for model in ${@:-jamba whisper}; do
    timeout "${FAM_S:-150}" python3 -m playbook run --workload hf --model "$model" --budget-min "${FAM_MIN:-1.5}" \
      --out "$OUT/families/$model" > "$OUT/families-$model.log" 2>&1
    echo "$model rc=$?" | tee -a "$OUT/families.txt"
    grep -E "^\[[0-9]/8\]" "$OUT/families-$model.log" | grep -v running | cut -c1-200
  done
fi
if [[ $part == gemv ]]; then
  python3 -m pytest -q tests/test_gemv.py 2>&1 | tail -2 | tee "$OUT/gemv-tests.txt"     # compiled, on CUDA
  python3 benchmarks/gemv.py --out "$OUT/gemv" --sweep "$@" 2>&1 | tee "$OUT/gemv.log"
fi
if [[ $part == pi0-fold ]]; then   # issue 19: pi0's denoise layer in fewer kernels (phase 5's folds), and each's share
  five='[[1, 1024, 32, false], [10, 1024, 32, false], [10, 1024, 2048, false], [11, 1024, 2048, false], [11, 1024, 4096, false]'
  seven="$five, [11, 2560, 1024, true], [11, 8192, 1024, true]]"
  rope='"rope_append_rows": true'
  gated='"gemv_gated": true'
  # what phase 5 now offers pi0 (rotary + cache writes in one launch, the gated down), each alone, and all the folds
  # with q/k/v and gate+up routed (benchmarks/results/pi0-fold/'s candidate)
  timeout "${TV_S:-300}" python3 benchmarks/tuning_variants.py --recipe benchmarks/results/pi0-full/recipe.json \
    --knobs "kernels={$rope, $gated, \"gemv\": $five]}" --knobs "kernels={$rope, \"gemv\": $five]}" \
    --knobs "kernels={$gated, \"gemv\": $five]}" \
    --knobs "kernels={$rope, $gated, \"gemv_residual\": true, \"gemv\": $seven}" --iters 50 --warmup 10 \
    --json "$OUT/pi0-fold.json" 2>&1 | grep -v Warning > "$OUT/pi0-fold.log"
  grep -E "built in|p50|kernels a step|Error|error" "$OUT/pi0-fold.log"
fi
if [[ $part == pi0-attention ]]; then   # issue 19: pi0's denoise attention in two launches, in the step
  five='[[1, 1024, 32, false], [10, 1024, 32, false], [10, 1024, 2048, false], [11, 1024, 2048, false], [11, 1024, 4096, false]]'
  folds="kernels={\"rope_append_rows\": true, \"gemv_gated\": true, \"gemv\": $five}"
  timeout "${TV_S:-400}" python3 benchmarks/tuning_variants.py --recipe benchmarks/results/pi0-full/recipe.json \
    --knobs "$folds" --knobs "$folds;attention={\"few_query\": true}" --kernels --iters 50 --warmup 10 \
    --json "$OUT/pi0-attention.json" 2>&1 | grep -v Warning > "$OUT/pi0-attention.log"
  grep -E "built in|p50|kernels a step|Error|error| us  gap" "$OUT/pi0-attention.log" | head -70
fi
if [[ $part == gated-pair || $part == pi0-attention-2 ]]; then
  python3 benchmarks/gated_pair.py --json "$OUT/gated-pair.json" 2>&1 | tee "$OUT/gated-pair.log"
fi
if [[ $part == pi0-attention-2 ]]; then   # issue 19: the folds that won in the step, with the few-query kernel
  python3 benchmarks/few_query_attention.py --json "$OUT/few-query-attention.json" 2>&1 | tee "$OUT/few-query.log"
  five='[[1, 1024, 32, false], [10, 1024, 32, false], [10, 1024, 2048, false], [11, 1024, 2048, false], [11, 1024, 4096, false]]'
  rope="kernels={\"rope_append_rows\": true, \"gemv\": $five}"
  timeout "${TV_S:-330}" python3 benchmarks/tuning_variants.py --recipe benchmarks/results/pi0-full/recipe.json \
    --knobs "$rope" --knobs "$rope;attention={\"few_query\": true}" --knobs 'attention={"few_query": true}' \
    --kernels --iters 50 --warmup 10 --json "$OUT/pi0-attention-2.json" 2>&1 | grep -v Warning > "$OUT/pi0-attention-2.log"
  grep -E "built in|p50|kernels a step|Error|error| us  gap" "$OUT/pi0-attention-2.log" | head -70
fi
if [[ $part == pi0-vision ]]; then   # issue 19: pi0 full's recipe beside itself with its vision tower on SDPA (grouped
  # attention takes the language model and the expert, whose calls carry masks; the vision tower's carry none), and
  # with Inductor's coordinate-descent tuning (phase 6, which its budget skipped)
  timeout "${TV_S:-520}" python3 benchmarks/tuning_variants.py --recipe benchmarks/results/pi0-full/recipe.json \
    --knobs 'attention={"route": {"hf": ["vision"], "rewrite": []}}' --variant '{"tune": ["coordinate_descent_tuning"]}' \
    --kernels --iters 50 --warmup 10 --json "$OUT/pi0-vision.json" 2>&1 | grep -v Warning > "$OUT/pi0-vision.log"
  grep -E "built in|p50|kernels a step|Error|error| us  gap" "$OUT/pi0-vision.log" | head -80
fi
if [[ $part == pi0-pdl ]]; then   # issue 19: pi0 full's recipe with its vision tower on SDPA, beside itself with PDL for
  # Inductor's kernels and ours (phase 6's "PDL" candidate), beside itself again (a second build of the same recipe: does
  # a row's place in the process matter?), and the recipe as recorded, twice
  python3 -c "import json; r = json.load(open('benchmarks/results/pi0-full/recipe.json')); a = next(p for p in r['phases'] if p['name'] == 'attention'); a['knobs']['route'] = {'hf': ['vision'], 'rewrite': []}; json.dump(r, open('/tmp/pi0-vision-recipe.json', 'w'))"
  timeout "${TV_S:-520}" python3 benchmarks/tuning_variants.py --recipe /tmp/pi0-vision-recipe.json \
    --variant '{"tune": ["pdl"]}' --variant null --knobs 'attention={"route": {"hf": [], "rewrite": []}}' \
    --knobs 'attention={"route": {"hf": [], "rewrite": []}}' --kernels --iters 50 --warmup 10 \
    --json "$OUT/pi0-pdl.json" 2>&1 | grep -v Warning > "$OUT/pi0-pdl.log"
  grep -E "built in|p50|kernels a step|Error|error" "$OUT/pi0-pdl.log" | head -40
fi
if [[ $part == gemv-pdl ]]; then   # issue 19: the GEMV reading W while the kernel before it finishes
  python3 -m pytest -q tests/test_gemv.py -k "pdl or chain" 2>&1 | tail -2 | tee "$OUT/gemv-pdl-tests.txt"
  python3 benchmarks/gemv.py --out "$OUT" 2>&1 | tee "$OUT/gemv-pdl.log"
  python3 benchmarks/gemv.py --rows 11 --shapes pi0 --out "$OUT" 2>&1 | tee -a "$OUT/gemv-pdl.log"
  # pi0 full's recipe beside itself with every few-row projection through the GEMV with PDL, and with Inductor's PDL
  timeout "${TV_S:-400}" python3 benchmarks/tuning_variants.py --recipe benchmarks/results/pi0-full/recipe.json \
    --knobs 'kernels={"gemv": true, "pdl": true}' --inductor '{"triton.enable_pdl": true}' --kernels --iters 50 \
    --warmup 10 --json "$OUT/pi0-gemv-pdl.json" 2>&1 | grep -v Warning > "$OUT/pi0-gemv-pdl.log"
  grep -E "built in|p50|kernels a step|Error|error" "$OUT/pi0-gemv-pdl.log"
fi
if [[ $part == sweep ]]; then
  python3 benchmarks/kernels_sweep.py "$@" 2>&1 | tee "$OUT/sweep.log"
fi
if [[ $part == kernels || $part == all ]]; then
  python3 benchmarks/kernels_bandwidth.py --out "$OUT/kernels" 2>&1 | tee "$OUT/kernels.log"
fi
if [[ $part == ladder || $part == all ]]; then
  run=$PWD/reports/llama-1b      # inside the repo: kept between calls while the machine stays warm
  # stopped before the call's limit so the run (references included) comes back and --resume can go on
  timeout "${LADDER_S:-540}" python3 -m playbook run --workload llama --preset 1b --device cuda --target-ms "${LLAMA_TARGET_MS:-0.9}" \
    --iters 200 --warmup 20 --out "$run" "$@" 2>&1 | grep -v IPKernelApp | tee -a "$OUT/ladder.log"
  tar czf "$OUT/llama-1b-run.tgz" --exclude inductor-cache -C "$PWD/reports" llama-1b
fi
if [[ $part == profile ]]; then
  run=$PWD/reports/llama-1b-profile
  python3 -m playbook run --workload llama --preset 1b --device cuda --phases baseline,cudagraph \
    --iters 200 --warmup 20 --out "$run" "$@" 2>&1 | grep -v IPKernelApp | tee "$OUT/profile.log"
  python3 benchmarks/profile_check.py "$run" | tee -a "$OUT/profile.log"
  tar czf "$OUT/llama-1b-profile.tgz" --exclude inductor-cache -C "$PWD/reports" llama-1b-profile
fi
if [[ $part == pi0 ]]; then
  run=$PWD/reports/pi0-full      # 3 cameras, action_horizon 10, 10 steps: the published H200 setting
  [[ -d $run || ${1:-} != --resume ]] || cp -r benchmarks/results/pi0-full "$run"   # go on from the committed run
  timeout "${LADDER_S:-540}" python3 -m playbook run --workload pi0 --preset full --device cuda --target-ms "${PI0_TARGET_MS:-25}" \
    --option cameras=3 --option action_horizon=10 --option num_steps=10 --iters 50 --warmup 10 --out "$run" "$@" \
    2>&1 | grep -v IPKernelApp | tee -a "$OUT/pi0-ladder.log"
  tar czf "$OUT/pi0-full-run.tgz" --exclude inductor-cache -C "$PWD/reports" pi0-full
fi
if [[ $part == lab ]]; then
  python3 -m papermill notebooks/lab-custom-kernel.ipynb "$OUT/lab-custom-kernel.ipynb" -p device cuda \
    -p out_dir "$OUT" 2>&1 | grep -v IPKernelApp | tail -3
fi
if [[ $part == peers ]]; then     # peers [pi0|llama] [limit_s]: built together, timed one at a time
  if [[ ${1:-pi0} == pi0 ]]; then
    recipe=reports/pi0-full/recipe.json; [[ -f $recipe ]] || recipe=benchmarks/results/pi0-full/recipe.json
    python3 benchmarks/peers.py --workload pi0 --preset full --option cameras=3 --option action_horizon=10 \
      --option num_steps=10 --recipe $recipe --iters 50 --together --limit-s "${2:-420}" \
      --out "$OUT/peers-pi0-full.json" 2>&1 | tee "$OUT/peers-pi0.log"
  else
    recipe=reports/lt-llama-1b/recipe.json; [[ -f $recipe ]] || recipe=benchmarks/results/llama-1b/recipe.json
    python3 benchmarks/peers.py --workload llama --preset 1b --recipe $recipe \
      --iters 100 --together --limit-s "${2:-300}" --out "$OUT/peers-llama-1b.json" 2>&1 | tee "$OUT/peers-llama.log"
  fi
fi
if [[ $part == rerecord ]]; then  # the recipe measured on this machine, then guarded here
  run=$PWD/reports/llama-1b
  [[ -d $run ]] || cp -r benchmarks/results/llama-1b "$run"
  rm -f "$run/phases/06-tuning.json" "$run/phases/07-verify.json"
  python3 -m playbook run --out "$run" --resume --phases tuning,verify 2>&1 | grep -v IPKernelApp | tee "$OUT/rerecord.log"
  for i in 1 2; do
    python3 -m playbook check --recipe "$run/recipe.json" --json "$OUT/check$i.json" 2>&1 | grep -v Warning \
      | tee -a "$OUT/check.log"
  done
  tar czf "$OUT/llama-1b-run.tgz" --exclude inductor-cache -C "$PWD/reports" llama-1b
fi
if [[ $part == pi0-bg ]]; then   # pi0 full's whole ladder (pi0-time) in the background (setsid): each call waits
  mkdir -p reports                # up to WAIT_S and copies what is done; call again at once while it runs
  if [[ ! -f reports/pi0bg-started ]]; then
    touch reports/pi0bg-started
    setsid nohup bash -c "OUT=$PWD/reports/pi0bg LADDER_S=3000 bash benchmarks/gpu_session.sh pi0-time; touch reports/pi0bg-done" \
      > reports/pi0bg-session.log 2>&1 &
  fi
  wait_for reports/pi0bg-done
  cp reports/pi0bg/lt-pi0.log reports/pi0bg/ladder-time.json reports/pi0bg/lt-pi0-full.tgz "$OUT/" 2>/dev/null
  [[ -f reports/pi0bg-done ]] && echo "pi0-bg: done" || { echo "pi0-bg: still running; call again at once"; tail -3 reports/pi0bg/lt-pi0.log; }
fi
if [[ $part == pi0-resume ]]; then   # a recorded pi0 full run (PI0_RUN, carried) again from phase 4 at this code, in
  run=$PWD/reports/pi0-resume      # the background (setsid): each call waits up to WAIT_S and copies what is done
  if [[ ! -f reports/pi0r-started ]]; then
    touch reports/pi0r-started
    if [[ -n ${BEFORE_TESTS:-} ]]; then      # BEFORE_TESTS: pytest arguments, run before the chain starts (first call)
      python3 -m pytest -q $BEFORE_TESTS 2>&1 | tail -3 | tee "$OUT/before-tests.txt"
    fi
    rm -rf "$run"; cp -r "${PI0_RUN:?a recorded pi0 run directory}" "$run"
    rm -f "$run"/phases/0["${PI0_FROM:-4}"-7]-*.json "$run"/notebooks/0["${PI0_FROM:-4}"-7]-*   # PI0_FROM: the first phase again
    drop_keys "$run/run.json" budgets budget_min
    setsid nohup nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw,temperature.gpu,clocks_event_reasons.active \
      --format=csv -l 1 > reports/pi0r-clocks.csv 2>&1 &     # the GPU's clocks while the chain runs
    clocks=$!
    setsid nohup bash -c "python3 -m playbook run --out $run --resume --target-ms ${PI0_TARGET_MS:-15} 2>&1 \
      | grep -v IPKernelApp > reports/pi0r.log; kill $clocks; touch reports/pi0r-done" > /dev/null 2>&1 &
  fi
  wait_for reports/pi0r-done
  cp reports/pi0r.log "$OUT/pi0-resume.log" 2>/dev/null; cp reports/pi0r-clocks.csv "$OUT/" 2>/dev/null
  tar czf "$OUT/pi0-resume.tgz" --exclude inductor-cache --exclude traces --exclude "*.pt" -C reports pi0-resume
  [[ -f reports/pi0r-done ]] && echo "pi0-resume: done" || { echo "pi0-resume: still running; call again at once"; tail -3 reports/pi0r.log; }
  if [[ -f reports/pi0r-done && -n ${AFTER_TESTS:-} ]]; then   # AFTER_TESTS: pytest arguments, run once the chain is done
    python3 -m pytest -q $AFTER_TESTS 2>&1 | tail -3 | tee "$OUT/after-tests.txt"
  fi
fi
if [[ $part == ladder-time-run ]]; then   # (the background half of ladder-time: both parts below, untimed out)
  export OUT=$PWD/reports LADDER_S=3000 PI0_BUDGET_MIN=${PI0_BUDGET_MIN:-9.5}
  bash benchmarks/gpu_session.sh llama-time
  bash benchmarks/gpu_session.sh pi0-time
  touch reports/lt-done
fi
if [[ $part == few-query || $part == pi0-attention ]]; then     # issue 19: pi0's denoise attention in one launch
  python3 -m pytest -q tests/test_few_query_attention.py tests/test_rewrites.py -k "few_query or grouped or Few" 2>&1 | tail -3 | tee "$OUT/few-query-tests.txt"
  python3 benchmarks/few_query_attention.py --json "$OUT/few-query-attention.json" 2>&1 | tee "$OUT/few-query.log"
fi
if [[ $part == llama-time ]]; then
  timeout "${LADDER_S:-585}" python3 benchmarks/ladder_time.py --workload llama --preset 1b --device cuda --target-ms "${LLAMA_TARGET_MS:-0.9}" \
    --iters 200 --warmup 20 --out "$PWD/reports/lt-llama-1b" --json "$OUT/ladder-time.json" 2>&1 \
    | grep -v IPKernelApp > "$OUT/lt-llama.log"
  tar czf "$OUT/lt-llama-1b.tgz" --exclude inductor-cache --exclude traces --exclude "*.pt" -C reports lt-llama-1b
fi
if [[ $part == pdl ]]; then         # benchmarks/pdl_check.py: the committed recipes with and without PDL
  timeout "${PDL_LLAMA_S:-200}" python3 benchmarks/pdl_check.py --recipe benchmarks/results/llama-1b/recipe.json \
    --json "$OUT/pdl-llama-1b.json" 2>&1 | grep -v Warning | tail -6 | tee "$OUT/pdl.log"
  [[ ${PDL_PI0_S:-330} == 0 ]] || timeout "${PDL_PI0_S:-330}" python3 benchmarks/pdl_check.py --recipe benchmarks/results/pi0-full/recipe.json \
    --iters 50 --warmup 10 --json "$OUT/pdl-pi0-full.json" 2>&1 | grep -v Warning | tail -6 | tee -a "$OUT/pdl.log"
fi
if [[ $part == glu ]]; then        # the GLU epilogue and the gated prologue at pi0's shapes (benchmarks/results/glu/)
  timeout "${GLU_S:-170}" python3 benchmarks/glu_sweep.py --json "$OUT/glu-sweep.json" 2>&1 | grep -v -i warn \
    | tee "$OUT/glu-sweep.log"
fi
if [[ $part == tuning-variants ]]; then   # benchmarks/tuning_variants.py: llama 1b's recipe beside each tuning variant
  i=0                                     # one process a variant: a build that breaks the CUDA context loses only its row
  for v in '{"tune": ["coordinate_descent_tuning", "pdl"]}' '{"tune": ["coordinate_descent_tuning"]}' \
           '{"tune": ["coordinate_descent_tuning"], "projections": "inductor"}'; do
    i=$((i + 1))
    timeout "${TV_S:-190}" python3 benchmarks/tuning_variants.py --recipe benchmarks/results/llama-1b/recipe.json \
      --variant "$v" --json "$OUT/tuning-variants-$i.json" 2>&1 | grep -v Warning >> "$OUT/tuning-variants.log"
  done
  grep -E "built in|p50|Error|error" "$OUT/tuning-variants.log"
fi
if [[ $part == combo ]]; then   # Inductor's combo kernels on llama 1b's recipe: kernels a step and p50, side by side
  i=0                           # one process a variant (three graphs in one process hit an illegal address)
  for v in '{"combo_kernels": true}' '{"combo_kernels": true, "combo_kernel_allow_mixed_sizes": 2}'; do
    i=$((i + 1))
    timeout "${TV_S:-200}" python3 benchmarks/tuning_variants.py --recipe benchmarks/results/llama-1b/recipe.json \
      --inductor "$v" --kernels --json "$OUT/combo-$i.json" 2>&1 | grep -v Warning >> "$OUT/combo.log"
  done
  grep -E "built in|p50|kernels a step|Error|error" "$OUT/combo.log"
fi
if [[ $part == rope-append ]]; then   # llama 1b's recipe with its attention modules' decode in one launch a layer
  sites=$(python3 -c "import json; print(json.dumps({'rope_append': [f'model.model.layers.{i}.self_attn' for i in range(16)]}))")
  timeout "${TV_S:-250}" python3 benchmarks/tuning_variants.py --recipe benchmarks/results/llama-1b/recipe.json \
    --knobs "attention=$sites" --kernels --json "$OUT/rope-append.json" 2>&1 | grep -v Warning > "$OUT/rope-append.log"
  grep -E "built in|p50|kernels a step|Error|error" "$OUT/rope-append.log"
fi
if [[ $part == freezing ]]; then   # does freezing (weights as constants) make a GPU recipe faster? it costs AOTAutograd's cache
  recipe=reports/lt-llama-1b/recipe.json; [[ -f $recipe ]] || recipe=benchmarks/results/llama-1b/recipe.json
  timeout "${TV_S:-300}" python3 benchmarks/tuning_variants.py --recipe "$recipe" --inductor '{"freezing": true}' \
    --json "$OUT/freezing-llama-1b.json" 2>&1 | grep -v Warning > "$OUT/freezing.log"
  grep -E "built in|p50|Error|error" "$OUT/freezing.log"
fi
if [[ $part == few-rows ]]; then   # pi0's denoise projections (11 rows) through kernels.gemv
  python3 -m pytest -q tests/test_gemv.py 2>&1 | tail -2 | tee "$OUT/gemv-tests.txt"     # compiled, on CUDA
  timeout "${GEMV_S:-200}" python3 benchmarks/gemv.py --rows 11 --shapes pi0 --sweep --out "$OUT" 2>&1 | tee "$OUT/gemv-pi0.log"
  timeout "${TV_S:-330}" python3 benchmarks/tuning_variants.py --recipe benchmarks/results/pi0-full/recipe.json \
    --knobs 'kernels={"gemv": true}' --kernels --iters 50 --warmup 10 --json "$OUT/pi0-gemv.json" 2>&1 \
    | grep -v Warning > "$OUT/pi0-gemv.log"
  grep -E "built in|p50|kernels a step|Error|error" "$OUT/pi0-gemv.log"
fi
if [[ $part == pi0-kernels ]]; then   # phases 5-7 of the committed pi0 full run again, at this code
  python3 -m pytest -q tests/test_gpu.py -k "projection_shape" 2>&1 | tail -2 | tee "$OUT/gpu-tests.txt"
  run=$PWD/reports/pi0-full
  rm -rf "$run"; cp -r benchmarks/results/pi0-full "$run"
  rm -f "$run"/phases/0[5-7]-*.json "$run"/notebooks/0[5-7]-*
  drop_keys "$run/run.json" budgets
  timeout "${LADDER_S:-500}" python3 -m playbook run --out "$run" --resume --target-ms "${PI0_TARGET_MS:-15}" 2>&1 \
    | grep -v IPKernelApp | tee "$OUT/pi0-kernels.log"
  tar czf "$OUT/pi0-full-run.tgz" --exclude inductor-cache --exclude traces --exclude "*.pt" -C "$PWD/reports" pi0-full
fi
if [[ $part == pi0-time ]]; then
  timeout "${LADDER_S:-585}" python3 benchmarks/ladder_time.py --workload pi0 --preset full --device cuda --target-ms "${PI0_TARGET_MS:-20}" \
    --option cameras=3 --option action_horizon=10 --option num_steps=10 --iters 50 --warmup 10 \
    --budget-min "${PI0_BUDGET_MIN:-9.2}" --out "$PWD/reports/lt-pi0-full" --json "$OUT/ladder-time.json" 2>&1 \
    | grep -v IPKernelApp > "$OUT/lt-pi0.log"
  tar czf "$OUT/lt-pi0-full.tgz" --exclude inductor-cache --exclude traces --exclude "*.pt" -C reports lt-pi0-full
fi
if [[ $part == ladder-time ]]; then
  mkdir -p reports
  if [[ ! -f reports/lt-started ]]; then
    touch reports/lt-started
    setsid nohup bash benchmarks/gpu_session.sh ladder-time-run > reports/lt-session.log 2>&1 &
  fi
  wait_for reports/lt-done
  cp reports/lt-*.log "$OUT/" 2>/dev/null; cp reports/ladder-time.json "$OUT/" 2>/dev/null
  for r in lt-llama-1b lt-pi0-full; do
    [[ -f reports/$r/report.html ]] && tar czf "$OUT/$r.tgz" --exclude inductor-cache --exclude traces --exclude "*.pt" -C reports "$r"
  done
  [[ -f reports/lt-done ]] && echo "ladder-time: done" || echo "ladder-time: still running; call again at once"
fi
if [[ $part == user-models ]]; then
  mkdir -p reports
  if ! python3 -c "import torchvision" 2>/dev/null && ls .whl-extra/torchvision-*.whl >/dev/null 2>&1; then
    # the image lacks torchvision: the wheel for its torch, carried in .whl-extra/ (not shadowing one it has)
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site-tv .whl-extra/torchvision-*.whl \
      && export PYTHONPATH=/tmp/site-tv:$PYTHONPATH
  fi
  python3 -c "import torchvision; print('torchvision', torchvision.__version__)" 2>&1 | tail -1 | tee -a "$OUT/device.txt"
  if [[ ! -f reports/um-started ]]; then
    touch reports/um-started
    setsid nohup bash -c "python3 benchmarks/user_models.py --out $PWD/reports/${UM_DIR:-user-models} --gpus ${GPUS:-1} $* \
      > reports/um.log 2>&1; touch reports/um-done" > /dev/null 2>&1 &
  fi
  wait_for reports/um-done
  cp reports/um.log "$OUT/" 2>/dev/null
  tar czf "$OUT/user-models.tgz" --exclude checkpoints --exclude traces --exclude "*.pt" --exclude inductor-cache \
    -C reports "${UM_DIR:-user-models}" 2>/dev/null
  [[ -f reports/um-done ]] && echo "user-models: done" || echo "user-models: still running; call again at once"
fi
if [[ $part == autotune-cache ]]; then   # does a cached coordinate-descent build tune again? (issue 17)
  python3 benchmarks/autotune_cache_check.py --out "$OUT/autotune-cache.json" 2>&1 | tee "$OUT/autotune-cache.log"
  timeout "${AC_S:-240}" python3 benchmarks/autotune_cache_check.py --recipe benchmarks/results/llama-1b/recipe.json \
    --processes 2 --out "$OUT/autotune-cache-llama-1b.json" 2>&1 | tee -a "$OUT/autotune-cache.log"
fi
if [[ $part == check ]]; then     # RECIPE (llama 1b's), CHECKS times (1), each in its own process under CHECK_S (300 s)
  recipe=${RECIPE:-benchmarks/results/llama-1b/recipe.json}; name=$(basename "$(dirname "$recipe")")
  for i in $(seq "${CHECKS:-1}"); do
    timeout "${CHECK_S:-300}" python3 -m playbook check --recipe "$recipe" --json "$OUT/check-$name-$i.json" 2>&1 \
      | grep -v Warning | tee -a "$OUT/check-$name.log"
  done
fi
