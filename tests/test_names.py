"""No module of ours shadows an installed package's.

transformers 5.25 depends on Hugging Face's `kernels` package and imports it when it loads a model
config; our Triton kernels were a top-level `kernels/` then, and every run from the repository root
handed transformers ours (ImportError: cannot import name 'CUDAProperties' from 'kernels', CI,
2026-12-03). They live in `playbook/kernels/` now. A run puts the repository root, `tests/`,
`benchmarks/` (a script's own folder) and `notebooks/` (papermill's working folder) ahead of
site-packages: nothing importable there may take a name an installed distribution ships.
"""
import importlib.metadata
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("", "tests", "benchmarks", "notebooks")


def importable_names(folder: Path):
    """The top-level names `import` finds in folder: modules and packages (a folder with __init__.py)."""
    for p in folder.iterdir():
        if p.suffix == ".py":
            yield p.stem
        elif p.is_dir() and (p / "__init__.py").exists():
            yield p.name


def test_nothing_on_a_runs_path_shadows_an_installed_package():
    ours = {"inference-playbook", "inference_playbook"}
    shipped = importlib.metadata.packages_distributions()
    clashes = {}
    for folder in FOLDERS:
        for name in importable_names(ROOT / folder):
            others = sorted(set(shipped.get(name, ())) - ours)
            if others:
                clashes[f"{folder or '.'}/{name}"] = others
    assert not clashes, f"these shadow installed packages of the same name (rename them): {clashes}"


def test_the_kernels_are_ours_and_hugging_faces_kernels_stays_theirs():
    from playbook import kernels
    assert Path(kernels.__file__).resolve().parent == ROOT / "playbook" / "kernels"
    spec = importlib.util.find_spec("kernels")
    if spec is not None:                       # transformers >= 5.25 installs it
        assert "site-packages" in Path(spec.origin).parts, f"`import kernels` finds {spec.origin}, not the installed one"


def test_transformers_loads_a_config_with_its_kernels_package_installed():
    from transformers import LlamaConfig
    assert LlamaConfig(hidden_size=64, num_attention_heads=4).hidden_size == 64
