"""Models the project does not build, down the whole ladder, each beside its peers: summary.json and a table.

    python benchmarks/user_models.py --out reports/user-models                 # every model, one GPU
    python benchmarks/user_models.py --out reports/user-models --gpus 2        # two at a time, one a GPU
    python benchmarks/user_models.py --out reports/user-models --only vit-base,t5-small
    python benchmarks/user_models.py --summary reports/user-models             # summary.json + the README table
    python benchmarks/user_models.py --device cpu --sizes tiny --out reports/user-models-cpu   # on a CPU, float32

Each model gets its own folder: the ladder's run (`python -m playbook run`, as a user starts it, with
--budget-min), then benchmarks/peers.py with that run's recipe (eager, the four torch.compile modes and
the playbook, built together in their own processes and timed one at a time on the same GPU). The
summary row: {model, family, step, eager_ms, best_compile_mode, best_compile_ms, playbook_ms, correct,
failed_phases, ladder_s}; playbook_ms is the recipe's p50 from the same peers run as the compile modes
(verify_ms is the ladder's own). The language models are saved with save_pretrained first and loaded
from that folder, as a user's checkpoint is; the CNN is torchvision's ResNet-50 through --workload
custom (random weights: nothing is downloaded).
"""
import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# name: (family, step, workload, model, options, preset). "ckpt:TYPE" is saved with save_pretrained first.
MODELS = {
    "qwen2-decode": ("qwen2", "decode", "hf", "ckpt:qwen2", ["step=decode", "position=128"], ""),
    "qwen2-prefill": ("qwen2", "prefill", "hf", "ckpt:qwen2", ["step=prefill", "tokens=128"], ""),
    "phi3-decode": ("phi3", "decode", "hf", "ckpt:phi3", ["step=decode", "position=128"], ""),
    "phi3-prefill": ("phi3", "prefill", "hf", "ckpt:phi3", ["step=prefill", "tokens=128"], ""),
    "mistral-prefill": ("mistral", "prefill", "hf", "mistral", ["step=prefill", "tokens=128"], "small"),
    "bert-encoder": ("bert", "forward (128 tokens)", "hf", "bert", ["tokens=128"], "small"),
    "vit-base": ("vit", "forward (one 224 image)", "hf", "vit", [], "small"),
    "t5-small": ("t5", "forward (encoder + one decoder token)", "hf", "t5", ["tokens=128"], "small"),
    "resnet50": ("torchvision resnet", "forward (one 224 image)", "custom", "benchmarks.user_models:resnet50", [], ""),
}
COMPILE_PEERS = ("compile-default", "compile-reduce-overhead", "compile-max-autotune",
                 "compile-max-autotune-no-cudagraphs")


def resnet50(device=None, dtype=None):
    """torchvision's ResNet-50 with random weights and one 224x224 image (the `custom` workload's form)."""
    import torch
    try:
        from torchvision.models import resnet50 as make
    except ImportError as e:
        raise RuntimeError("resnet50 needs torchvision (pip install torchvision)") from e
    return make(weights=None).eval(), (torch.randn(1, 3, 224, 224),)


def checkpoint(model_type, folder, preset="small"):
    """A checkpoint folder the way a user has one (config.json + safetensors), at a preset's sizes."""
    import torch

    from playbook.workloads import hf
    if (folder / "config.json").exists():
        return folder
    cfg = hf._size_config(model_type, hf.PRESETS[preset])
    torch.manual_seed(0)
    hf.model_class(cfg, hf.kind(cfg)).from_config(cfg).save_pretrained(folder)
    return folder


def env():
    return dict(os.environ, PYTHONUNBUFFERED="1",
                PYTHONPATH=os.pathsep.join([str(ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))


def walk(name, out, budget_min, peer_limit_s, gpu=None, device="cuda", sizes=""):
    """One model: its ladder, then its peers; everything under out/name (log, run, peers.json, row.json).
    sizes: another hf preset for the models built from a type (a CPU smoke run uses tiny)."""
    family, step, workload, model, options, preset = MODELS[name]
    preset = sizes if sizes and preset else preset
    dtype = "bfloat16" if device == "cuda" else "float32"
    here = out / name
    here.mkdir(parents=True, exist_ok=True)
    e = env()
    if gpu is not None:
        e["CUDA_VISIBLE_DEVICES"] = str(gpu)
    if model.startswith("ckpt:"):
        kind = model.removeprefix("ckpt:")
        model = str(checkpoint(kind, out / "checkpoints" / f"{kind}-{sizes or 'small'}", sizes or "small"))
    common = ["--workload", workload, "--model", model] + (["--preset", preset] if preset else []) + \
        [x for o in options for x in ("--option", o)]
    log = open(here / "log.txt", "a")
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "playbook", "run", *common, "--device", device, "--out", str(here / "run"),
                    "--budget-min", str(budget_min)], cwd=ROOT, env=e, stdout=log, stderr=subprocess.STDOUT)
    ladder_s = round(time.time() - t0, 1)
    recipe = here / "run" / "recipe.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "peers.py"), *common, "--device", device,
                    "--dtype", dtype, "--together", "--limit-s", str(peer_limit_s), "--out", str(here / "peers.json")]
                   + (["--recipe", str(recipe)] if recipe.exists() else []), cwd=ROOT, env=e, stdout=log,
                   stderr=subprocess.STDOUT)
    (here / "row.json").write_text(json.dumps(row(name, here, ladder_s), indent=1) + "\n")
    return here


def row(name, here, ladder_s):
    from playbook.state import Run
    family, step = MODELS[name][:2]
    out = {"model": name, "family": family, "step": step, "eager_ms": None, "best_compile_mode": None,
           "best_compile_ms": None, "playbook_ms": None, "verify_ms": None, "correct": False,
           "failed_phases": [], "ladder_s": ladder_s, "phases": {}}
    if (here / "run" / "run.json").exists():
        run = Run.open(here / "run")
        out["phases"] = {p["name"]: p["status"] for p in run.phases()}
        out["failed_phases"] = [p["name"] for p in run.phases() if p["status"] == "failed"]
        verify = run.phase("verify") or {}
        out["verify_ms"], out["correct"] = verify.get("p50_ms"), bool(verify.get("correct"))
    if (here / "peers.json").exists():
        peers = {r["peer"]: r for r in json.loads((here / "peers.json").read_text())["peers"]}
        ok = {k: r for k, r in peers.items() if r["status"] == "ok" and r.get("correct")}
        out["eager_ms"] = ok.get("eager", {}).get("p50_ms")
        modes = [(r["p50_ms"], k) for k, r in ok.items() if k in COMPILE_PEERS]
        if modes:
            out["best_compile_ms"], best = min(modes)
            out["best_compile_mode"] = best.removeprefix("compile-")
        out["playbook_ms"] = ok.get("playbook", {}).get("p50_ms")
        out["correct"] = out["correct"] and "playbook" in ok
        out["peer_status"] = {k: (r["status"] if r["status"] != "ok" else ("ok" if r.get("correct") else "wrong"))
                              for k, r in peers.items()}
    return out


def summary(out):
    rows = [json.loads((out / n / "row.json").read_text()) for n in MODELS if (out / n / "row.json").exists()]
    meta = {}
    for n in MODELS:
        p = out / n / "peers.json"
        if p.exists():
            d = json.loads(p.read_text())
            meta = {"device": d.get("device"), "torch": d.get("torch")}
            break
    doc = {"date": dt.date.today().isoformat(), **meta, "rows": rows}
    (out / "summary.json").write_text(json.dumps(doc, indent=1) + "\n")
    lines = ["| model | step | eager (ms) | best torch.compile (ms) | playbook (ms) | playbook vs best | correct | "
             "failed phases | ladder (s) |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]

    def ms(v):
        return f"{v:.3f}" if v else "-"
    for r in rows:
        vs = f"{r['best_compile_ms'] / r['playbook_ms']:.2f}x" if r["best_compile_ms"] and r["playbook_ms"] else "-"
        best = f"{ms(r['best_compile_ms'])} ({r['best_compile_mode']})" if r["best_compile_mode"] else "-"
        lines.append(f"| {r['model']} | {r['step']} | {ms(r['eager_ms'])} | {best} | {ms(r['playbook_ms'])} | {vs} | "
                     f"{r['correct']} | {', '.join(r['failed_phases']) or 'none'} | {r['ladder_s']} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "reports" / "user-models"))
    ap.add_argument("--only", default="", help="comma-separated model names (default: all)")
    ap.add_argument("--gpus", type=int, default=1, help="models walked at once, one GPU each")
    ap.add_argument("--budget-min", type=float, default=3.0, help="each ladder's --budget-min")
    ap.add_argument("--peer-limit-s", type=int, default=240)
    ap.add_argument("--device", default="cuda", help="cuda, or cpu for a smoke run (with --sizes tiny)")
    ap.add_argument("--sizes", default="", help="an hf preset for the models built from a type (default: small)")
    ap.add_argument("--summary", default="", help="only write summary.json and print the table for this folder")
    args = ap.parse_args(argv)
    if args.summary:
        print(summary(Path(args.summary)))
        return 0
    names = [n for n in (args.only.split(",") if args.only else MODELS) if n]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        ap.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    todo = [n for n in names if not (out / n / "row.json").exists()]     # a second call goes on where one stopped
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(max_workers=max(1, args.gpus)) as pool:
        free = list(range(args.gpus))

        def one(name):
            gpu = free.pop(0)
            try:
                walk(name, out, args.budget_min, args.peer_limit_s, gpu if args.gpus > 1 else None, args.device,
                     args.sizes)
                print(f"{name}: {json.loads((out / name / 'row.json').read_text())}", flush=True)
            finally:
                free.append(gpu)
        list(pool.map(one, todo))
    print(summary(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
