"""Custom-model functions the tests load through --model tests' fixture_models:NAME."""
import torch
import torch.nn as nn


class TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(16, 8)
        self.b = nn.Linear(16, 4)

    def forward(self, x, scale=1.0):
        return {"a": self.a(x) * scale, "nested": (self.b(x), torch.argmax(self.b(x), -1))}


def make(device=None, dtype=None):
    return TwoHeads(), {"x": torch.randn(2, 16), "scale": 2.0}


def zeros():
    return TwoHeads(), (torch.zeros(2, 16),)


def not_a_pair():
    return TwoHeads()
