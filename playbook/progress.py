"""Progress bars for long work (building candidates, timing, the chain), shown where someone is watching.

    from playbook.progress import steps
    for knobs in steps(candidates, "attention candidates"):
        ...

tqdm.auto draws a widget bar in JupyterLab and a text bar in a terminal. Headless runs (papermill, CI)
turn it off with PLAYBOOK_PROGRESS=0, which the chain sets, so executed notebooks carry no bars.
"""
import os


def enabled():
    return os.environ.get("PLAYBOOK_PROGRESS", "1") != "0"


def steps(iterable, desc, total=None):
    if not enabled():
        return iterable
    from tqdm.auto import tqdm
    return tqdm(iterable, desc=desc, total=total, leave=False)
