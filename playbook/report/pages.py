"""The report's pages: report.md, report.html (self-contained: figures embedded, no script, nothing
from the network) and each executed notebook rendered to notebooks/NN-name.html.

    pngs = figures(run); markdown(run, pngs, pages); html_page(run, pngs, pages)
"""
import base64
import html
import re

from .plots import plot_categories, plot_p50, plot_time, plot_timeline, plot_waterfall, png, traced
from .tables import environment, phase_summary, progress_table, rows, verdict

def notebooks(run):
    return sorted((run.path / "notebooks").glob("*.ipynb"))


def notebook_page(nb_path):
    """An executed notebook as one offline HTML page: outputs and Markdown, code cells hidden."""
    import nbformat
    from nbconvert import HTMLExporter
    nb = nbformat.read(str(nb_path), as_version=4)
    exporter = HTMLExporter(template_name="basic", exclude_input=True, exclude_input_prompt=True,
                            exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nb)
    body = re.sub(r"<script\b.*?</script>", "", body, flags=re.S)        # widget state and the like: no scripts
    title = html.escape(nb_path.stem)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1000px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 3px 6px; }}
pre {{ background: #f6f6f6; padding: 6px; overflow-x: auto; }} img {{ max-width: 100%; }}
.jp-Cell {{ margin: 0.6em 0; }} .jp-RenderedText pre {{ font-size: 12px; }}
</style></head><body>
<p><a href="../report.html">&larr; report</a> &middot; executed notebook <code>{title}.ipynb</code>, code cells hidden</p>
{body}
</body></html>
"""


def render_notebooks(run):
    """notebooks/NN-name.html beside each executed notebook; {stem: file name or the error}."""
    out = {}
    for nb in notebooks(run):
        try:
            page = nb.with_suffix(".html")
            page.write_text(notebook_page(nb))
            out[nb.stem] = page.name
        except Exception as e:  # noqa: BLE001  (a notebook that cannot be rendered costs its page, not the report)
            out[nb.stem] = f"not rendered: {type(e).__name__}: {e}"
    return out


def figures(run):
    """{file name under figures/: png bytes}: p50 per phase, categories per phase, one timeline per trace."""
    out = {"waterfall.png": png(plot_waterfall(run)), "p50.png": png(plot_p50(run))}
    if any(p.get("category_ms") for p in run.phases()):
        out["categories.png"] = png(plot_categories(run))
    if any(p.get("time_s") for p in run.phases()):
        out["time.png"] = png(plot_time(run))
    for p, path in traced(run):
        out[timeline_name(p)] = png(plot_timeline(path, f"one step of phase {p['phase']} {p['name']}"))
    return out


def timeline_name(p):
    return f"timeline-{p['phase']:02d}-{p['name']}.png"


def _phase_notebook(p, pages):
    return next((stem for stem in pages if stem[3:] == p["name"]), None)


def markdown(run, names, pages=None):
    pages = pages or {}
    met, line = verdict(run)
    mark = {True: "✅", False: "❌", None: "ℹ️"}[met]
    parts = [f"# Inference playbook report: {run.params['workload']} {run.params.get('preset') or ''}", "",
             f"**{mark} {line}**", "", progress_table(run), "",
             "![p50 waterfall](figures/waterfall.png)", "", "![p50 per phase](figures/p50.png)", ""]
    if "categories.png" in names:
        parts += ["![time by category per phase](figures/categories.png)", ""]
    if "time.png" in names:
        parts += ["![where each phase's wall time went](figures/time.png)", ""]
    parts += ["## Phases", ""]
    for p in run.phases():
        parts.append(phase_summary(p))
        stem = _phase_notebook(p, pages)
        if stem and pages[stem].endswith(".html"):
            parts.append(f"- executed notebook: [notebooks/{pages[stem]}](notebooks/{pages[stem]}) "
                         f"([.ipynb](notebooks/{stem}.ipynb))")
        if timeline_name(p) in names:
            parts += ["", f"![one step of {p['name']}](figures/{timeline_name(p)})"]
        parts.append("")
    parts += ["## Environment", "", "| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in environment(run)]
    if pages:
        parts += ["", "## Executed notebooks", ""]
        for stem, page in pages.items():
            parts.append(f"- [{stem}](notebooks/{page})" if page.endswith(".html") else f"- {stem}: {page}")
    return "\n".join(parts) + "\n"


def _inline(text):
    """Escape, then render **bold** and `code` spans."""
    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def _md_to_html(text):
    """The few Markdown forms phase_summary writes: "- " items, tables, bold and code spans."""
    out, table = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            if not set(line) <= set("|- "):
                table.append([c.strip() for c in line.strip().strip("|").split(" | ")])
            continue
        if table:
            head, *body = table
            out.append("<table><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr>" +
                       "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in body) +
                       "</table>")
            table = []
        if line.startswith("- "):
            out.append(f"<li>{_inline(line[2:])}</li>")
        elif line.strip():
            out.append(f"<p>{_inline(line)}</p>")
    return "\n".join(out)


def _img(pngs, name, alt, id_=""):
    if name not in pngs:
        return ""
    ident = f" id='{id_}'" if id_ else ""
    return f"<img{ident} alt='{html.escape(alt)}' src='data:image/png;base64,{base64.b64encode(pngs[name]).decode()}'>"


def html_page(run, pngs, pages=None):
    esc, pages = html.escape, pages or {}
    met, line = verdict(run)
    table = "".join(
        f"<tr class='{r['raw']['status']}'><td>{esc(r['phase'])}</td><td>{r['p50']}</td><td>{esc(r['vs_baseline'])}</td>"
        f"<td class='target-{'met' if r['vs_target'] == 'met' else 'open'}'>{esc(r['vs_target'])}</td>"
        f"<td>{esc(r['next_action'])}</td><td>{r['time_s']}</td></tr>" for r in rows(run))
    env = "".join(f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>" for k, v in environment(run))

    def nb_link(p):
        stem = _phase_notebook(p, pages)
        if not stem:
            return ""
        page = pages[stem]
        return (f"<p class='nb'><a href='notebooks/{esc(page)}'>executed notebook {esc(stem)}</a></p>"
                if page.endswith(".html") else f"<p class='nb'>{esc(stem)}: {esc(page)}</p>")
    phases = "".join(f"<div class='phase' id='phase-{p['phase']}'><ul>{_md_to_html(phase_summary(p))}</ul>"
                     f"{nb_link(p)}{_img(pngs, timeline_name(p), 'one step of ' + p['name'])}</div>"
                     for p in run.phases())
    side = "".join(f"<li><a href='notebooks/{esc(page)}'>{esc(stem)}</a></li>" if page.endswith(".html")
                   else f"<li>{esc(stem)} ({esc(page)})</li>" for stem, page in pages.items())
    title = esc(f"Inference playbook report: {run.params['workload']} {run.params.get('preset') or ''}")
    cls = {True: "met", False: "missed", None: "none"}[met]
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 0; color: #222; }}
.layout {{ display: flex; align-items: flex-start; }}
main {{ flex: 1; max-width: 1100px; padding: 1em 2em; min-width: 0; }}
nav {{ position: sticky; top: 0; width: 230px; padding: 1em; background: #f7f7f7; border-right: 1px solid #ddd;
       min-height: 100vh; box-sizing: border-box; font-size: 14px; }}
nav ul {{ padding-left: 1.1em; }}
table {{ border-collapse: collapse; margin: 1em 0; }} td, th {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; }}
tr.rejected td, tr.failed td {{ color: #a33; }} tr.skipped td {{ color: #888; }}
td.target-met {{ background: #e3f4e6; font-weight: bold; }}
#verdict {{ padding: 0.7em 1em; border-radius: 6px; font-size: 1.15em; font-weight: bold; }}
#verdict.met {{ background: #e3f4e6; border: 2px solid #1b9e77; }} #verdict.missed {{ background: #fbe9e2; border: 2px solid #d95f02; }}
#verdict.none {{ background: #eef2f7; border: 2px solid #2b7bba; }}
.phase {{ border-left: 3px solid #2b7bba; padding-left: 1em; margin: 1em 0; }}
img {{ max-width: 100%; }} code {{ background: #f4f4f4; }}
</style></head><body><div class="layout">
<nav><b>Executed notebooks</b><ul id="notebooks">{side}</ul>
<b>Sections</b><ul><li><a href="#progress">Progress</a></li><li><a href="#phases">Phases</a></li>
<li><a href="#environment">Environment</a></li></ul></nav>
<main>
<h1>{title}</h1>
<p id="verdict" class="{cls}">{esc(line)}</p>
<h2>Progress</h2>
<table id="progress"><tr><th>Phase</th><th>p50 (ms)</th><th>vs Baseline</th><th>vs Target</th><th>Next Action</th><th>Time (s)</th></tr>{table}</table>
{_img(pngs, "waterfall.png", "p50 waterfall", "waterfall-plot")}
{_img(pngs, "p50.png", "p50 per phase", "p50-plot")}
{_img(pngs, "categories.png", "time by category per phase", "categories-plot")}
{_img(pngs, "time.png", "where each phase's wall time went", "time-plot")}
<h2 id="phases">Phases</h2>{phases}
<h2>Environment</h2><table id="environment">{env}</table>
</main></div>
</body></html>
"""


