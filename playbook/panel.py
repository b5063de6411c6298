"""The ipywidgets panel a phase notebook shows in JupyterLab: pick, press Run, read the result below.

    from playbook.panel import phase_panel
    phase_panel("attention", run_dir, workload="tiny", preset="", target_ms=0.0, ...)   # the parameters cell

Its defaults are the notebook's parameters, and its button calls what the headless path calls
(open_run, then run_and_show), so a phase run from the panel writes the same JSON, traces and report
as papermill would. Papermill runs set interactive = False and never build it.
"""
import json

from . import runs
from .errors import PlaybookError
from .notebook import open_run, run_and_show
from .phases import get_phase
from .workloads import WORKLOADS, presets

DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "bfloat16", "float16")


def choices(phase):
    """{knob-set name: what it does} for the phase's checkboxes (baseline and verify have none)."""
    return dict(getattr(get_phase(phase), "CHOICES", {}))


def values(widgets):
    """The panel's widgets as open_run's and run_and_show's keyword arguments."""
    options = widgets["options"].value.strip()
    try:
        options = json.loads(options) if options else {}
    except json.JSONDecodeError as e:
        raise PlaybookError(f"options {options!r} is not JSON (e.g. {{\"cameras\": 3}}): {e}") from None
    return {"workload": widgets["workload"].value, "preset": widgets["preset"].value or "",
            "model": widgets["model"].value.strip(), "options": options, "device": widgets["device"].value,
            "dtype": widgets["dtype"].value, "target_ms": widgets["target_ms"].value or 0.0,
            "iters": widgets["iters"].value, "warmup": widgets["warmup"].value,
            "knobs_to_try": [name for name, box in widgets["knobs"].items() if box.value]}


def build(phase, run_dir="", workload="tiny", preset="", model="", options=None, device="auto", dtype="auto",
          target_ms=0.0, iters=100, warmup=10, knobs_to_try=None):
    """(container widget, {name: widget}, output widget), not yet displayed."""
    import ipywidgets as W
    style, wide = {"description_width": "90px"}, W.Layout(width="340px")
    w = {"workload": W.Dropdown(options=list(WORKLOADS), value=workload, description="workload", style=style,
                                layout=wide),
         "preset": W.Dropdown(options=[""] + presets(workload), value=preset if preset in presets(workload) else "",
                              description="preset", style=style, layout=wide),
         "model": W.Text(value=model, description="model", placeholder="package.module:function (custom)",
                         style=style, layout=wide),
         "options": W.Text(value=json.dumps(options or {}), description="options", style=style, layout=wide),
         "device": W.Dropdown(options=DEVICES, value=device, description="device", style=style, layout=wide),
         "dtype": W.Dropdown(options=DTYPES, value=dtype, description="dtype", style=style, layout=wide),
         "target_ms": W.BoundedFloatText(value=float(target_ms or 0.0), min=0.0, max=1e6, step=0.1,
                                         description="target ms", style=style, layout=wide),
         "iters": W.BoundedIntText(value=int(iters), min=5, max=100000, description="iters", style=style,
                                   layout=wide),
         "warmup": W.BoundedIntText(value=int(warmup), min=0, max=10000, description="warmup", style=style,
                                    layout=wide)}
    picked = set(knobs_to_try or [])
    w["knobs"] = {name: W.Checkbox(value=not picked or name in picked, description=name, tooltip=what,
                                   indent=False) for name, what in choices(phase).items()}

    def on_workload(change):
        w["preset"].options = [""] + presets(change["new"])
        w["preset"].value = ""
    w["workload"].observe(on_workload, names="value")
    button = W.Button(description=f"Run {phase}", button_style="primary", icon="play")
    out = W.Output()

    def on_click(_):
        out.clear_output()
        button.disabled = True
        with out:
            try:
                kw = values(w)
                knobs = kw.pop("knobs_to_try")
                if choices(phase) and not knobs:
                    raise PlaybookError("tick at least one knob set to try")
                run = open_run(run_dir, phase=phase, **kw)
                print(f"run {run.path}")
                run_and_show(phase, run, iters=kw["iters"], warmup=kw["warmup"],
                             knobs_to_try=knobs if len(knobs) < len(choices(phase)) else None)
            except PlaybookError as e:
                print(f"error: {e}")
            finally:
                button.disabled = False
    button.on_click(on_click)
    knob_box = ([W.HTML(f"<b>knobs to try</b> ({len(w['knobs'])})"), W.VBox(list(w["knobs"].values()))]
                if w["knobs"] else [W.HTML("<i>this phase has no knobs to choose</i>")])
    form = W.HBox([W.VBox([w[k] for k in ("workload", "preset", "model", "options", "device", "dtype")]),
                   W.VBox([w["target_ms"], w["iters"], w["warmup"]] + knob_box)])
    return W.VBox([W.HTML(f"<h3>Phase {get_phase(phase).NUMBER} {phase}</h3>"), form, button, out],
                  layout=W.Layout(border="1px solid #ccc", padding="8px")), w, out


def phase_panel(phase, run_dir="", **params):
    """Show the panel for this phase with the notebook's parameters as its defaults."""
    from IPython.display import display
    runs.parse_options(params.get("options"))            # a bad default fails here, before any widget
    panel, _, _ = build(phase, run_dir, **params)
    display(panel)
    return panel
