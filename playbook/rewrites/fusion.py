"""Phase 4's rewrite: sibling projections (nn.Linear modules fed the same tensor) become one GEMM.

    groups = find_siblings(model, args, kwargs)    # [Group(parent="layers.0.self_attn", names=[...]), ...]
    fuse(model, groups)                            # in place; one copy of the weights

Siblings are found two ways: by Hugging Face names (q_proj/k_proj/v_proj, gate_proj/up_proj under one
parent), and by data flow for any other model: one eager call with a hook on every nn.Linear, grouping
the ones whose input is the same tensor object. A linear whose weight is shared (tied embeddings) or
that runs more than once per step is left alone.

The fused group owns the concatenated weight (and bias: zeros where a member had none); each member is
replaced by a `FusedPart` that serves its slice of the one GEMM's output. The first member called with
an input runs the GEMM; the others called with the same tensor get views of that output.
"""
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

KNOWN = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"), ("query", "key", "value"),
         ("w1", "w3"))


@dataclass
class Group:
    parent: str                 # module path of the common parent ("" for the root)
    names: list                 # member attribute names under parent, in call order
    found_by: str               # "names" or "data flow"

    def as_dict(self):
        return {"parent": self.parent, "names": list(self.names), "found_by": self.found_by}


class FusedLinear(nn.Module):
    """The concatenated projection of a sibling group; members read their slice through FusedPart."""

    def __init__(self, weight, bias, sizes):
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
        self.sizes = list(sizes)
        self._x, self._parts, self._left = None, None, 0

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def part(self, x, i):
        if self._x is not x:                     # a new input: one GEMM for every member (forward: a
            self._parts = self.forward(x).split(self.sizes, dim=-1)     # later rewrite may route it)
            self._x, self._left = x, len(self.sizes)
        out = self._parts[i]
        self._left -= 1
        if self._left == 0:                      # all members served: drop the references
            self._x, self._parts = None, None
        return out


class FusedPart(nn.Module):
    """Stands where a member nn.Linear stood; its weight is a view into the group's weight."""

    def __init__(self, group, index, in_features, out_features, offset):
        super().__init__()
        self._group = [group]                    # a list: not registered twice as a submodule
        self.index, self.in_features, self.out_features, self.offset = index, in_features, out_features, offset

    @property
    def group(self):
        return self._group[0]

    @property
    def weight(self):
        return self.group.weight[self.offset:self.offset + self.out_features]

    @property
    def bias(self):
        b = self.group.bias
        return None if b is None else b[self.offset:self.offset + self.out_features]

    def forward(self, x):
        return self.group.part(x, self.index)

    def extra_repr(self):
        return f"slice {self.index} of a fused projection: in {self.in_features}, out {self.out_features}"


def _shared_weights(model):
    seen, shared = {}, set()
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            shared.add(id(p))
        seen[id(p)] = name
    return shared


def _fusable(mods):
    first = mods[0]
    return (len(mods) >= 2 and all(isinstance(m, nn.Linear) for m in mods)
            and all(m.in_features == first.in_features and m.weight.dtype == first.weight.dtype
                    and m.weight.device == first.weight.device for m in mods))


def find_siblings(model, args=(), kwargs=None, use_data_flow=True):
    shared = _shared_weights(model)
    modules = dict(model.named_modules())
    groups, taken = [], set()
    for path, mod in modules.items():
        for names in KNOWN:
            mods = [getattr(mod, n, None) for n in names]
            if _fusable(mods) and not any(id(m.weight) in shared for m in mods):
                groups.append(Group(path, list(names), "names"))
                taken.update(f"{path}.{n}" if path else n for n in names)
    if use_data_flow:
        groups += _by_data_flow(model, modules, shared, taken, args, kwargs or {})
    return groups


def _by_data_flow(model, modules, shared, taken, args, kwargs):
    calls, hooks = [], []
    for path, mod in modules.items():
        if isinstance(mod, nn.Linear) and path not in taken and id(mod.weight) not in shared:
            hooks.append(mod.register_forward_pre_hook(lambda m, inp, path=path: calls.append((path, inp[0]))))
    try:
        with torch.no_grad():
            model(*args, **kwargs)
    finally:
        for h in hooks:
            h.remove()
    times = {}
    for path, _ in calls:
        times[path] = times.get(path, 0) + 1
    by_input = {}
    for path, x in calls:
        if times[path] == 1:
            by_input.setdefault(id(x), (x, []))[1].append(path)     # x kept alive: ids stay unique
    groups = []
    for _, paths in by_input.values():
        parents = {p.rpartition(".")[0] for p in paths}
        if len(paths) < 2 or len(parents) != 1:
            continue
        parent = parents.pop()
        if _fusable([modules[p] for p in paths]):
            groups.append(Group(parent, [p.rpartition(".")[2] for p in paths], "data flow"))
    return groups


def fuse(model, groups):
    """Replace each group's members by slices of one FusedLinear registered on the parent as
    fused_<a>_<b>...; returns the fused module paths."""
    done = []
    for g in groups:
        parent = model.get_submodule(g.parent) if g.parent else model
        mods = [getattr(parent, n) for n in g.names]
        if not _fusable(mods):
            raise ValueError(f"cannot fuse {g.parent}: {g.names} are not nn.Linear siblings of one input size")
        weight = torch.cat([m.weight.detach() for m in mods], dim=0)
        bias = None
        if any(m.bias is not None for m in mods):
            bias = torch.cat([m.bias.detach() if m.bias is not None
                              else m.weight.new_zeros(m.out_features) for m in mods])
        fused = FusedLinear(weight, bias, [m.out_features for m in mods])
        name = "fused_" + "_".join(g.names)
        parent.add_module(name, fused)
        offset = 0
        for i, (n, m) in enumerate(zip(g.names, mods)):
            setattr(parent, n, FusedPart(fused, i, m.in_features, m.out_features, offset))
            offset += m.out_features
        done.append(f"{g.parent}.{name}" if g.parent else name)
    return done


def param_bytes(model):
    """Bytes of distinct parameter storage (a view counts once)."""
    seen, total = set(), 0
    for p in model.parameters():
        key = (p.untyped_storage().data_ptr(), p.device)
        if key not in seen:
            seen.add(key)
            total += p.untyped_storage().nbytes()
    return total
