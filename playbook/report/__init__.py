"""The report of a run: the verdict, the progress table, the p50 waterfall, where the time went, traces,
the environment, and every executed phase notebook rendered beside it.

    python -m playbook report reports/<run>        # writes report.md, report.html, notebooks/*.html there
    progress_table(run)                            # | Phase | p50 (ms) | vs Baseline | vs Target | Next Action | Time (s) |

Everything is rendered from the JSON in the run directory; no number is parsed back out of text.
report.html is self-contained: its figures are embedded, nothing is loaded from the network, and no
script runs. Each executed notebook is rendered to notebooks/NN-name.html with its code cells hidden
(nbconvert's basic template in our own page: no CDN script or style) and linked from the index.
report.md carries the same content for a pull request. The sections live in tables.py (words and
tables), plots.py (figures) and pages.py (the Markdown and HTML pages); this module writes them.
"""
from .. import bkc
from ..errors import PlaybookError
from ..state import Run
from .pages import figures, html_page, markdown, render_notebooks
from .plots import close, plot_categories, plot_p50, plot_time, plot_timeline, plot_waterfall, png, traced
from .tables import phase_summary, progress_table, rows, time_line, verdict

__all__ = ["close", "figures", "phase_summary", "plot_categories", "plot_p50", "plot_time", "plot_timeline",
           "plot_waterfall", "png", "progress_table", "rows", "time_line", "traced", "verdict", "write"]


def write(run_dir):
    """Write report.md, report.html, the figures (figures/*.png), notebooks/*.html and bkc.md into the run."""
    run = Run.open(run_dir)
    pngs = figures(run)
    (run.path / "figures").mkdir(exist_ok=True)
    for name, data in pngs.items():
        (run.path / "figures" / name).write_bytes(data)
    pages = render_notebooks(run)
    (run.path / "report.md").write_text(markdown(run, pngs, pages))
    (run.path / "report.html").write_text(html_page(run, pngs, pages))
    try:
        bkc.write(run)
    except PlaybookError as e:                  # a corrupt recipe must not cost the report of what was measured
        (run.path / "bkc.md").write_text(f"No best known config: {e}\n")
    return run.path / "report.html"
