# Build llama 1b's committed recipe in a fresh Inductor cache and keep Inductor's generated wrapper modules
# (every Triton kernel's source and launch config) under $OUT/code.tgz.
export TORCHINDUCTOR_CACHE_DIR=/tmp/dumpcache
rm -rf /tmp/dumpcache
python3 - <<'PY'
import sys
sys.path.insert(0, ".")
from playbook.pipeline import Pipeline
from playbook.reuse import load_recipe
data = load_recipe("benchmarks/results/llama-1b/recipe.json")
pipe = Pipeline.from_recipe({"seed": 0, **data["workload"]}, data["phases"])
print("built, compile", pipe.build().compile_s, "s")
PY
mkdir -p "$OUT/code"
grep -rl "def call(" /tmp/dumpcache --include=*.py | while read -r f; do cp "$f" "$OUT/code/"; done
grep -rl "unsqueeze" "$OUT/code" | head; (cd "$OUT" && tar czf code.tgz code && rm -rf code)
