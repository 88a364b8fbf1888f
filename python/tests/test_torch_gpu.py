"""convjit.torch on a GPU: values against F.conv2d, torch.library.opcheck, torch.compile
without graph breaks, CUDA graph capture and replay, autograd, streams, layouts and
storage offsets. Skips without CUDA (run on the device machine: scripts/device_python.sh)."""

import copy

import pytest

try:
    import torch
    import torch.nn.functional as F
    from torch import nn
except ImportError as e:  # pragma: no cover - depends on the environment
    pytest.skip(f"PyTorch is not installed ({e})", allow_module_level=True)

if not torch.cuda.is_available():
    pytest.skip(
        "no CUDA device visible to PyTorch (the GPU tests run on the device machine: scripts/device_python.sh)",
        allow_module_level=True,
    )

import convjit
import convjit.torch as cj

CL = torch.channels_last
DEV = torch.device("cuda")

# Relative L2 error against a float64 reference: README's guarantees per dtype and math.
TOL = {("f32", "strict"): 1e-5, ("f32", "tf32"): 1e-3, ("f16", None): 1e-2, ("bf16", None): 1e-2}


def tolerance(dtype):
    if dtype == torch.float16:
        return TOL[("f16", None)]
    if dtype == torch.bfloat16:
        return TOL[("bf16", None)]
    return TOL[("f32", "tf32" if cj.tf32_enabled() else "strict")]


def rel_l2(got, want):
    got, want = got.double(), want.double()
    return ((got - want).norm() / want.norm().clamp_min(1e-30)).item()


def reference(x, w, b, stride, padding, dilation, groups):
    """F.conv2d in float64 on the same (possibly 16-bit) values."""
    return F.conv2d(x.double(), w.double(), None if b is None else b.double(), stride, padding, dilation, groups)


@pytest.fixture(autouse=True)
def strict_fp32():
    """Strict fp32 unless a test asks for TF32, so f32 comparisons are tight."""
    cudnn = torch.backends.cudnn
    if hasattr(cudnn, "conv") and hasattr(torch.backends, "fp32_precision"):
        old = cudnn.conv.fp32_precision
        cudnn.conv.fp32_precision = "ieee"
        yield
        cudnn.conv.fp32_precision = old
    else:
        old = cudnn.allow_tf32
        cudnn.allow_tf32 = False
        yield
        cudnn.allow_tf32 = old


def with_offset(t, elements=1):
    """The same values in a tensor at a storage offset of `elements`."""
    base = torch.empty(t.numel() + elements, dtype=t.dtype, device=t.device)
    out = base[elements:].view(t.shape)
    out.copy_(t)
    return out


# (x shape, w shape, stride, padding, dilation, groups, bias)
CASES = [
    ((2, 16, 17, 19), (32, 16, 3, 3), 1, 1, 1, 1, True),
    ((1, 3, 64, 64), (64, 3, 7, 7), 2, 3, 1, 1, True),  # ResNet stem
    ((4, 64, 14, 14), (128, 64, 1, 1), 2, 0, 1, 1, False),  # strided pointwise
    ((2, 32, 20, 20), (32, 1, 3, 3), 1, 1, 1, 32, False),  # depthwise
    ((2, 16, 12, 10), (24, 8, 3, 5), (2, 1), (0, 2), (1, 2), 2, True),  # grouped, asymmetric
    ((3, 64, 9, 9), (64, 64, 3, 3), 1, 2, 2, 1, False),  # dilated
]
IDS = ["3x3", "stem7x7s2", "1x1s2", "depthwise", "grouped", "dilated"]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def make(case, dtype, memory_format=torch.contiguous_format, offset=False, requires_grad=False):
    x_shape, w_shape, stride, padding, dilation, groups, has_bias = case
    g = torch.Generator(device=DEV).manual_seed(hash((x_shape, w_shape)) % 2**31)
    x = torch.randn(x_shape, device=DEV, generator=g).to(dtype).contiguous(memory_format=memory_format)
    w = (torch.randn(w_shape, device=DEV, generator=g) / (w_shape[1] * w_shape[2] * w_shape[3]) ** 0.5).to(dtype)
    w = w.contiguous(memory_format=memory_format)
    b = torch.randn(w_shape[0], device=DEV, generator=g).to(dtype) if has_bias else None
    if offset:
        x = with_offset(x)  # only contiguous layouts: with_offset keeps the shape's default strides
    if requires_grad:
        x.requires_grad_()
        w.requires_grad_()
        if b is not None:
            b.requires_grad_()
    return x, w, b, dict(stride=stride, padding=padding, dilation=dilation, groups=groups)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f16", "bf16"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "offset"])
def test_values_match_float64_within_the_dtype_tolerance(case, dtype, layout):
    x, w, b, geo = make(case, dtype, CL if layout == "channels_last" else torch.contiguous_format, offset=layout == "offset")
    y = cj.conv2d(x, w, b, **geo)
    want = reference(x, w, b, **geo)
    assert y.shape == want.shape and y.dtype == dtype
    assert y.is_contiguous(memory_format=CL if layout == "channels_last" else torch.contiguous_format)
    assert rel_l2(y, want) < tolerance(dtype)


def test_tf32_switch_selects_tf32_for_f32():
    x, w, b, geo = make(CASES[0], torch.float32)
    cudnn = torch.backends.cudnn
    if hasattr(cudnn, "conv") and hasattr(torch.backends, "fp32_precision"):
        cudnn.conv.fp32_precision = "tf32"
    else:
        cudnn.allow_tf32 = True
    assert cj.desc_for(x, w, b, geo["stride"], geo["padding"], geo["dilation"], geo["groups"]).math == convjit.MathMode.tf32
    assert rel_l2(cj.conv2d(x, w, b, **geo), reference(x, w, b, **geo)) < TOL[("f32", "tf32")]


@pytest.mark.parametrize("padding,dilation,k", [("same", 1, 3), ("same", 1, 4), ("same", 2, 4), ("valid", 1, 3)])
def test_string_padding_matches_F_conv2d(padding, dilation, k):
    x = torch.randn(2, 8, 15, 16, device=DEV)
    w = torch.randn(8, 8, k, k, device=DEV) / (8 * k * k) ** 0.5
    y = cj.conv2d(x, w, padding=padding, dilation=dilation)
    want = F.conv2d(x.double(), w.double(), padding=padding, dilation=dilation)
    assert y.shape == want.shape and rel_l2(y, want) < TOL[("f32", "strict")]


def test_non_contiguous_input_is_made_contiguous_first():
    x = torch.randn(2, 8, 16, 32, device=DEV)[..., ::2]  # other strides
    w = torch.randn(16, 8, 3, 3, device=DEV)
    assert rel_l2(cj.conv2d(x, w, padding=1), F.conv2d(x.double(), w.double(), padding=1)) < TOL[("f32", "strict")]


def test_empty_batch_gives_an_empty_output():
    y = cj.conv2d(torch.randn(0, 8, 16, 16, device=DEV), torch.randn(16, 8, 3, 3, device=DEV), padding=1)
    assert y.shape == (0, 16, 16, 16)


def test_runs_on_the_current_stream_and_device():
    x, w, b, geo = make(CASES[0], torch.bfloat16)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        y = cj.conv2d(x, w, b, **geo)
    torch.cuda.current_stream().wait_stream(side)
    assert rel_l2(y, reference(x, w, b, **geo)) < tolerance(torch.bfloat16)
    if torch.cuda.device_count() > 1:
        x1, w1 = x.to("cuda:1"), w.to("cuda:1")
        b1 = b.to("cuda:1") if b is not None else None
        y1 = cj.conv2d(x1, w1, b1, **geo)
        assert y1.device == x1.device and rel_l2(y1.cpu(), reference(x, w, b, **geo).cpu()) < tolerance(torch.bfloat16)


def opcheck_cases():
    for case, name in zip(CASES, IDS):
        for dtype in DTYPES:
            for fmt in ("nchw", "channels_last"):
                yield pytest.param(case, dtype, fmt, id=f"{name}-{str(dtype)[6:]}-{fmt}")


@pytest.mark.parametrize("case,dtype,fmt", list(opcheck_cases()))
def test_opcheck_passes_for_the_op(case, dtype, fmt):
    x, w, b, geo = make(case, dtype, CL if fmt == "channels_last" else torch.contiguous_format, requires_grad=True)
    args = (x, w, b, list(cj._pair(geo["stride"], "stride")), list(cj._pair(geo["padding"], "padding")),
            list(cj._pair(geo["dilation"], "dilation")), geo["groups"])  # fmt: skip
    atol = rtol = 2e-2 if dtype != torch.float32 else 1e-4
    torch.library.opcheck(torch.ops.convjit.conv2d.default, args, atol=atol, rtol=rtol)


def test_opcheck_passes_at_a_storage_offset():
    x, w, b, geo = make(CASES[0], torch.float32, offset=True)
    torch.library.opcheck(torch.ops.convjit.conv2d.default, (x, w, b, [1, 1], [1, 1], [1, 1], 1))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f16", "bf16"])
def test_autograd_matches_torch_gradients(dtype):
    x, w, b, geo = make(CASES[4], dtype, requires_grad=True)
    y = cj.conv2d(x, w, b, **geo)
    grad = torch.randn_like(y)
    gx, gw, gb = torch.autograd.grad(y, (x, w, b), grad)
    x2, w2, b2 = (t.detach().clone().requires_grad_() for t in (x, w, b))
    want = torch.autograd.grad(F.conv2d(x2, w2, b2, **geo), (x2, w2, b2), grad)
    for got, expected in zip((gx, gw, gb), want):
        assert got.shape == expected.shape and rel_l2(got, expected) < tolerance(dtype)


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(16, 32, 3, padding=1)
        self.b = nn.Conv2d(32, 32, 3, padding="same", groups=4, bias=False)
        self.c = nn.Conv2d(32, 64, 1, stride=2)

    def forward(self, x):
        return self.c(torch.relu(self.b(torch.relu(self.a(x)))))


@pytest.mark.parametrize("dtype,fmt", [(torch.float32, "nchw"), (torch.bfloat16, "channels_last")], ids=["f32", "bf16-cl"])
def test_torch_compile_of_a_converted_model_has_no_graph_break_and_matches(dtype, fmt):
    memory_format = CL if fmt == "channels_last" else torch.contiguous_format
    model = Block().to(DEV, dtype).to(memory_format=memory_format).eval()
    converted = cj.convert(copy.deepcopy(model))
    x = torch.randn(4, 16, 32, 32, device=DEV, dtype=dtype).contiguous(memory_format=memory_format)
    explanation = torch._dynamo.explain(converted)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    ops = [str(n.target) for g in explanation.graphs for n in g.graph.nodes if n.op == "call_function"]
    assert sum("convjit.conv2d" in op for op in ops) == 3, ops
    torch._dynamo.reset()
    compiled = torch.compile(converted, fullgraph=True)
    with torch.no_grad():
        got, want = compiled(x), model(x)
    assert rel_l2(got, want) < tolerance(dtype) * 3


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
def test_cuda_graph_captured_after_warm_up_replays_correctly(dtype):
    model = cj.convert(Block().to(DEV, dtype).to(memory_format=CL).eval())
    static_x = torch.randn(4, 16, 32, 32, device=DEV, dtype=dtype).contiguous(memory_format=CL)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side), torch.no_grad():
        for _ in range(3):  # warm-up: compiles (or reads the cache) and loads every kernel
            model(static_x)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), torch.no_grad():
        static_y = model(static_x)
    for _ in range(3):
        x = torch.randn_like(static_x)
        static_x.copy_(x)
        graph.replay()
        torch.cuda.synchronize()
        with torch.no_grad():
            want = model(x)
        assert rel_l2(static_y, want) < 1e-6  # the same kernels on the same values


def test_cpu_tensor_is_refused_and_a_converted_module_falls_back():
    with pytest.raises(convjit.Unsupported, match="got a tensor on cpu"):
        cj.conv2d(torch.randn(1, 4, 8, 8), torch.randn(6, 4, 3, 3))
    m = cj.convert(nn.Conv2d(4, 6, 3))
    x = torch.randn(1, 4, 8, 8)
    torch.testing.assert_close(m(x), F.conv2d(x, m.weight, m.bias))


def test_converted_resnet50_matches_eager_in_channels_last_bf16():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None).to(DEV, torch.bfloat16).to(memory_format=CL).eval()
    converted = cj.convert(copy.deepcopy(model))
    x = torch.randn(2, 3, 224, 224, device=DEV, dtype=torch.bfloat16).contiguous(memory_format=CL)
    with torch.no_grad():
        got, want = converted(x), model(x)
    assert got.is_contiguous() or got.is_contiguous(memory_format=CL)
    assert rel_l2(got, want) < 5e-2  # two bf16 implementations, 53 convolutions deep (examples/resnet50_torch.py)
