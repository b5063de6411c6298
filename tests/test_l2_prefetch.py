"""playbook/kernels/l2_prefetch.py in Triton's interpreter: it asks for every address of every tensor once,
whatever their sizes, the grid and the stride, and writes nothing they hold. The PTX modes compile for
sm_90 in tests/test_triton_compile.py; what they buy is measured by benchmarks/l2_prefetch.py on a GPU."""
import pytest
import torch

from playbook.kernels import l2_prefetch as l2

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def odd_tensors():
    g = torch.Generator().manual_seed(0)
    ts = [torch.randn(1001, generator=g).to(torch.bfloat16), torch.randn(3, 7, generator=g),
          torch.randint(0, 255, (1,), dtype=torch.uint8, generator=g),
          torch.randint(-9, 9, (513,), dtype=torch.int64, generator=g)]
    return [t.to(DEVICE) for t in ts]


@pytest.mark.parametrize("programs", [1, 3, 7])
@pytest.mark.parametrize("stride", [128, 32, 100])
def test_every_address_of_every_tensor_is_asked_for_once_and_nothing_is_written(programs, stride):
    ts = odd_tensors()
    before = [t.clone() for t in ts]
    counter = torch.zeros(2, dtype=torch.int32, device=DEVICE)
    l2.l2_prefetch(*ts, mode="load", programs=programs, stride=stride, counter=counter)
    # 1001 x 2 bytes, 84, 1 and 4104: over 128 bytes 16 + 1 + 1 + 33 addresses
    assert counter[0].item() == l2.lines(ts, stride) == sum(-(-t.numel() * t.element_size() // stride) for t in ts)
    assert stride != 128 or counter[0].item() == 51
    assert counter[1].item() == 0                                  # the never-true store never ran
    for t, b in zip(ts, before):
        assert torch.equal(t, b)


def test_one_tensor_more_programs_than_blocks_and_an_empty_tensor():
    w = torch.randn(40, 33, device=DEVICE)                         # 5280 bytes: 42 lines, one block
    counter = torch.zeros(2, dtype=torch.int32, device=DEVICE)
    l2.l2_prefetch(w, torch.empty(0, device=DEVICE), mode="load", programs=5, counter=counter)
    assert counter[0].item() == 42
    assert l2.l2_prefetch(w) is None                               # the default mode here, no counter asked for


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["line", "bulk"])
def test_the_prefetch_modes_run_on_an_nvidia_gpu_and_write_nothing(mode):
    if torch.version.hip:
        pytest.skip("the prefetch modes are NVIDIA PTX")
    if mode == "bulk" and torch.cuda.get_device_capability() < (9, 0):
        pytest.skip("cp.async.bulk needs sm_90")
    ts = [t for t in odd_tensors() if t.data_ptr() % 16 == 0]
    before = [t.clone() for t in ts]
    l2.l2_prefetch(*ts, mode=mode, programs=3)
    torch.cuda.synchronize()
    assert all(torch.equal(t, b) for t, b in zip(ts, before))


def test_bad_calls_are_refused_by_name():
    w = torch.randn(8, 8)                                          # a CPU tensor: no PTX for it
    with pytest.raises(ValueError, match="1 to 4 tensors"):
        l2.l2_prefetch()
    with pytest.raises(ValueError, match="1 to 4 tensors"):
        l2.l2_prefetch(*[w] * 5)
    if DEVICE == "cpu":
        assert l2.default_mode(w.device) == "load"
    with pytest.raises(ValueError, match="not one of"):
        l2.l2_prefetch(w, mode="magic")
    with pytest.raises(ValueError, match="NVIDIA PTX; here only 'load' runs"):
        l2.l2_prefetch(w, mode="line")
    with pytest.raises(ValueError, match="stride"):
        l2.l2_prefetch(w, mode="load", stride=-4)
    with pytest.raises(ValueError, match="contiguous"):
        l2.l2_prefetch(w.t(), mode="load")


def test_the_benchmarks_layers_run_with_and_without_the_prefetch_and_agree(monkeypatch):
    """benchmarks/l2_prefetch.py's layer chain at a small geometry, in the interpreter: the prefetch
    before the attention leaves every value as it was (the GPU run holds its sides to the same)."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "l2_prefetch.py"
    spec = importlib.util.spec_from_file_location("l2_prefetch_benchmark", path)
    bm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bm)
    monkeypatch.setattr(bm, "GEOMETRY", {"rows": 3, "hidden": 32, "heads": 4, "kv_heads": 1, "head_dim": 16,
                                         "mlp": 48, "kv_len": 70})
    g = torch.Generator(device=DEVICE).manual_seed(0)
    layers = bm.make_layers(2, torch.device(DEVICE), torch.float32, g)
    x = torch.randn(3, 32, device=DEVICE, generator=g)
    mask = torch.ones(1, 1, 3, 70, dtype=torch.bool, device=DEVICE)
    mask[..., 60:67] = False
    plain = bm.run_layers(x, layers, mask)
    warmed = bm.run_layers(x, layers, mask, "before", "load", programs=3)
    assert plain.shape == (3, 32) and torch.isfinite(plain).all() and plain.abs().max() > 0
    assert torch.equal(plain, warmed)
    assert torch.equal(plain, bm.run_layers(x, layers, mask, "before", "load", programs=3, next_qkv=True))
    assert sum(w.numel() for w in bm.weights(layers[0])) == 32 * 64 + 96 * 32 + 32 * 48
