"""convjit.torch without a GPU: the op's registration and fake implementation, F.conv2d's
argument forms, errors for what convjit cannot take, convert() and prewarm(model)."""

import pytest

try:
    import torch
    import torch.nn.functional as F
    from torch import nn
except ImportError as e:  # pragma: no cover - depends on the environment
    pytest.skip(
        f"PyTorch is not installed ({e}); scripts/test.sh installs a CPU build unless CONVJIT_PY_TORCH=0",
        allow_module_level=True,
    )

import convjit
import convjit.torch as cj

CL = torch.channels_last

# (x shape, w shape, stride, padding, dilation, groups): the geometry forms a model meets.
GEOMETRIES = [
    ((2, 8, 15, 17), (16, 8, 3, 3), 1, 1, 1, 1),
    ((1, 3, 32, 32), (8, 3, 7, 7), 2, 3, 1, 1),
    ((2, 16, 9, 9), (16, 1, 3, 3), 1, 1, 1, 16),  # depthwise
    ((2, 8, 10, 12), (12, 4, 3, 5), (2, 1), (0, 2), (1, 2), 2),
    ((4, 32, 7, 7), (64, 32, 1, 1), 2, 0, 1, 1),  # strided pointwise
    ((1, 4, 20, 9), (6, 2, 5, 2), (2, 1), 0, (1, 3), 2),
]


def meta(shape, dtype=torch.float32, memory_format=torch.contiguous_format):
    return torch.empty(shape, dtype=dtype, device="meta", memory_format=memory_format)


def test_import_convjit_torch_loads_torch_before_the_extension():
    import subprocess
    import sys

    code = "import sys, convjit.torch; m = list(sys.modules); print(m.index('torch') < m.index('convjit._convjit'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True"


def test_the_op_is_registered_with_its_schema():
    schema = str(torch.ops.convjit.conv2d.default._schema)
    assert schema.startswith("convjit::conv2d(Tensor x, Tensor weight, Tensor? bias, int[] stride")
    assert schema.endswith("-> Tensor")


@pytest.mark.parametrize("x_shape,w_shape,stride,padding,dilation,groups", GEOMETRIES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_fake_impl_gives_F_conv2d_shape_dtype_and_strides_on_meta(x_shape, w_shape, stride, padding, dilation, groups, dtype):
    for x_format, w_format in [(torch.contiguous_format,) * 2, (CL, torch.contiguous_format), (torch.contiguous_format, CL), (CL, CL)]:
        x, w = meta(x_shape, dtype, x_format), meta(w_shape, dtype, w_format)
        bias = meta((w_shape[0],), dtype)
        got = cj.conv2d(x, w, bias, stride, padding, dilation, groups)
        want = F.conv2d(x, w, bias, stride, padding, dilation, groups)
        assert got.shape == want.shape and got.dtype == dtype and got.device.type == "meta"
        # Channels-last in (x or w) gives channels-last out, as cuDNN does.
        channels_last = x_format == CL or w_format == CL
        assert got.is_contiguous(memory_format=CL if channels_last else torch.contiguous_format)
        assert got.stride() == torch.empty(want.shape, memory_format=CL if channels_last else torch.contiguous_format).stride()


def test_fake_impl_under_fake_tensor_mode_on_a_fake_cuda_device():
    from torch._subclasses.fake_tensor import FakeTensorMode

    try:
        with FakeTensorMode():
            x = torch.empty(2, 8, 16, 16, device="cuda", dtype=torch.bfloat16).contiguous(memory_format=CL)
            w = torch.empty(32, 8, 3, 3, device="cuda", dtype=torch.bfloat16)
            y = cj.conv2d(x, w, padding=1)
    except (RuntimeError, AssertionError) as e:
        if "cuda" not in str(e).lower():
            raise
        pytest.skip(f"this torch cannot make fake CUDA tensors without a GPU ({e})")
    assert y.shape == (2, 32, 16, 16) and y.device.type == "cuda" and y.dtype == torch.bfloat16
    assert y.is_contiguous(memory_format=CL)


@pytest.mark.parametrize("r,s,dilation", [(3, 3, 1), (4, 4, 1), (2, 5, 1), (3, 4, 2), (1, 1, 1), (4, 3, (2, 3))])
def test_padding_same_and_valid_match_F_conv2d_shapes(r, s, dilation):
    x, w = meta((2, 4, 11, 13)), meta((6, 4, r, s))
    for padding in ("same", "valid"):
        assert cj.conv2d(x, w, padding=padding, dilation=dilation).shape == F.conv2d(x, w, padding=padding, dilation=dilation).shape


class _OpCalls(torch.utils._python_dispatch.TorchDispatchMode):
    """The convjit::conv2d calls a function makes, with their arguments."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.convjit.conv2d.default:
            self.calls.append(args)
        return func(*args, **(kwargs or {}))


def test_padding_same_with_an_even_kernel_pads_the_bottom_right_as_F_conv2d_does():
    # Kernel 4 spans an even size: 'same' is 1 row/column before and 2 after, so the
    # input grows by one at the bottom/right and the op gets the symmetric part.
    x, w = meta((1, 2, 10, 10)), meta((3, 2, 4, 3))
    with _OpCalls() as mode:
        y = cj.conv2d(x, w, padding="same")
    assert y.shape == (1, 3, 10, 10)
    (x_op, _, _, stride, padding, dilation, groups), = mode.calls
    assert tuple(x_op.shape) == (1, 2, 11, 10)
    assert (list(stride), list(padding), list(dilation), groups) == ([1, 1], [1, 1], [1, 1], 1)


def test_padding_same_matches_F_conv2d_values_on_cpu_through_the_same_padding_rule():
    # The op needs CUDA, but its padding rule is plain torch: check it against F.conv2d on CPU values.
    torch.manual_seed(0)
    x, w = torch.randn(1, 2, 9, 8, dtype=torch.float64), torch.randn(3, 2, 4, 2, dtype=torch.float64)
    sym, extra = cj._same_padding(w, (2, 1))
    padded = F.pad(x, (0, extra[1], 0, extra[0]))
    got = F.conv2d(padded, w, padding=sym, dilation=(2, 1))
    torch.testing.assert_close(got, F.conv2d(x, w, padding="same", dilation=(2, 1)))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(padding="same", stride=2), "padding='same' is not supported for strided convolutions"),
        (dict(padding="full"), "invalid padding string 'full'"),
        (dict(padding=-1), "negative padding"),
        (dict(stride=(1, 2, 3)), "a list of 2 values"),
        (dict(groups=3), "expected input .* to have 12 channels"),
    ],
)
def test_bad_arguments_raise_invalid_argument_like_F_conv2d(kwargs, match):
    with pytest.raises(convjit.InvalidArgument, match=match):
        cj.conv2d(meta((1, 4, 8, 8)), meta((6, 4, 3, 3)), **kwargs)


def test_cpu_tensors_raise_unsupported_naming_the_device_and_the_alternative():
    with pytest.raises(convjit.Unsupported, match="convjit runs on CUDA tensors.*got a tensor on cpu") as err:
        cj.conv2d(torch.randn(1, 4, 8, 8), torch.randn(6, 4, 3, 3))
    assert err.value.code == convjit.ErrorCode.unsupported
    with pytest.raises(convjit.Unsupported, match="convjit runs on CUDA tensors"):
        torch.ops.convjit.conv2d(torch.randn(1, 4, 8, 8), torch.randn(6, 4, 3, 3), None, [1, 1], [0, 0], [1, 1], 1)


def test_other_dtypes_and_mixed_dtypes_are_refused():
    with pytest.raises(convjit.Unsupported, match="float32, float16 and bfloat16 tensors, got torch.float64"):
        cj.conv2d(meta((1, 4, 8, 8), torch.float64), meta((6, 4, 3, 3), torch.float64))
    with pytest.raises(convjit.InvalidArgument, match="same dtype"):
        cj.conv2d(meta((1, 4, 8, 8)), meta((6, 4, 3, 3), torch.float16))


def test_unbatched_input_gives_unbatched_output():
    assert cj.conv2d(meta((4, 8, 8)), meta((6, 4, 3, 3)), padding=1).shape == (6, 8, 8)


def test_backward_is_registered_and_gives_input_weight_and_bias_grads_on_meta():
    x = meta((2, 4, 8, 8)).requires_grad_()
    w = meta((6, 4, 3, 3)).requires_grad_()
    b = meta((6,)).requires_grad_()
    cj.conv2d(x, w, b, stride=2, padding=1).sum().backward()
    assert x.grad.shape == x.shape and w.grad.shape == w.shape and b.grad.shape == b.shape


def test_torch_compile_traces_the_op_without_graph_breaks():
    def f(x, w, b):
        return torch.relu(cj.conv2d(x, w, b, stride=1, padding="same"))

    explanation = torch._dynamo.explain(f)(meta((1, 4, 8, 8)), meta((6, 4, 3, 3)), meta((6,)))
    assert explanation.graph_break_count == 0
    ops = [str(n.target) for g in explanation.graphs for n in g.graph.nodes if n.op == "call_function"]
    assert any("convjit.conv2d" in op for op in ops), ops


# ---- convert ---------------------------------------------------------------------------


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.depthwise = nn.Conv2d(8, 8, 3, padding="same", groups=8, bias=False)
        self.reflect = nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect")
        self.pointwise = nn.Conv2d(8, 16, 1, stride=2)
        self.even = nn.Conv2d(16, 16, 4, padding="same")
        self.up = nn.ConvTranspose2d(16, 8, 2, stride=2)
        self.line = nn.Conv1d(8, 8, 3, padding=1)

    def forward(self, x):
        x = self.reflect(self.depthwise(torch.relu(self.conv(x))))
        x = self.up(self.even(self.pointwise(x)))
        n, c, h, w = x.shape
        return self.line(x.reshape(n, c, h * w)).reshape(n, c, h, w)


class OwnForward(nn.Conv2d):
    def forward(self, x):
        return super().forward(x) * 2


def test_convert_swaps_zero_padded_conv2d_forwards_and_keeps_parameters():
    torch.manual_seed(0)
    model = nn.Sequential(Net(), OwnForward(8, 8, 1))
    params = {name: p for name, p in model.named_parameters()}
    keys = list(model.state_dict())
    assert cj.convert(model) is model
    assert cj.converted_modules(model) == ["0.conv", "0.depthwise", "0.pointwise", "0.even"]
    for name in ("conv", "depthwise", "pointwise", "even"):
        m = getattr(model[0], name)
        assert isinstance(m, nn.Conv2d) and type(m).__name__ == "ConvjitConv2d"
    assert type(model[0].reflect) is nn.Conv2d  # padding_mode 'reflect': torch's forward
    assert type(model[0].up) is nn.ConvTranspose2d and type(model[0].line) is nn.Conv1d
    assert type(model[1]) is OwnForward
    assert {name: p for name, p in model.named_parameters()} == params
    assert all(p is params[name] for name, p in model.named_parameters())
    assert list(model.state_dict()) == keys


def test_converted_model_on_cpu_runs_torchs_forward_with_the_same_result():
    torch.manual_seed(0)
    model = Net().eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        want = model(x)
        got = cj.convert(model)(x)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_converted_model_on_meta_goes_through_the_op_and_compiles_without_graph_breaks():
    model = cj.convert(Net().to("meta"))
    with _OpCalls() as mode:
        y = model(meta((2, 3, 16, 16)))
    assert y.shape == (2, 8, 16, 16)
    assert len(mode.calls) == 4  # conv, depthwise, pointwise, even
    explanation = torch._dynamo.explain(model)(meta((2, 3, 16, 16)))
    assert explanation.graph_break_count == 0


# ---- prewarm -------------------------------------------------------------------------------


def _tf32(enabled):
    """Sets PyTorch's cuDNN conv TF32 switch; returns a function that restores it."""
    cudnn = torch.backends.cudnn
    if hasattr(cudnn, "conv") and hasattr(torch.backends, "fp32_precision"):
        old = cudnn.conv.fp32_precision
        cudnn.conv.fp32_precision = "tf32" if enabled else "ieee"

        def restore():
            cudnn.conv.fp32_precision = old

    else:
        old = cudnn.allow_tf32
        cudnn.allow_tf32 = enabled

        def restore():
            cudnn.allow_tf32 = old

    return restore


def expected_net_descs(dtype, math, n=2):
    D = convjit.Conv2dDesc
    kw = dict(dtype=dtype, math=math)
    return [
        D(n=n, c=3, h=16, w=16, k=8, r=3, s=3, pad=1, bias=True, **kw),
        D(n=n, c=8, h=16, w=16, k=8, r=3, s=3, pad=1, groups=8, **kw),
        D(n=n, c=8, h=16, w=16, k=16, r=1, s=1, stride=2, bias=True, **kw),
        # padding='same' with kernel 4: the input padded to 9x9, then 1 on each side.
        D(n=n, c=16, h=9, w=9, k=16, r=4, s=4, pad=1, bias=True, **kw),
    ]


def test_record_convs_gives_the_descriptors_convjit_runs_and_names_the_unsupported():
    restore = _tf32(False)
    try:
        descs, unsupported = cj.record_convs(Net(), torch.randn(2, 3, 16, 16))
    finally:
        restore()
    # The reflect-padded conv is a plain conv after its F.pad: convjit can run that one too.
    want = expected_net_descs("f32", "strict")
    want.insert(2, convjit.Conv2dDesc(n=2, c=8, h=18, w=18, k=8, r=3, s=3, bias=True, math="strict"))
    assert descs == want
    assert len(unsupported) == 2
    assert any("transposed" in u for u in unsupported) and any("3D weight" in u for u in unsupported)


def test_record_convs_runs_on_fake_tensors_so_batch_32_costs_no_compute():
    model = cj.convert(Net().to(torch.bfloat16).to(memory_format=CL))
    x = torch.randn(32, 3, 16, 16, dtype=torch.bfloat16).contiguous(memory_format=CL)
    descs, _ = cj.record_convs(model, (x,))
    # bf16 always records math tf32 (one cache entry); channels-last runs as NHWC.
    assert descs[0] == expected_net_descs("bf16", "tf32", n=32)[0].replace(layout=convjit.Layout.nhwc)
    assert all(d.dtype == convjit.DType.bf16 and d.n == 32 for d in descs)


def test_prewarm_model_with_arch_compiles_every_conv_without_a_gpu_and_then_finds_them_cached(tmp_path):
    rt = convjit.Runtime(cache_dir=tmp_path / "cache")
    model = cj.convert(Net().to(torch.float16))
    x = torch.randn(2, 3, 16, 16, dtype=torch.float16)
    result = cj.prewarm(model, (x,), arch="sm_90", runtime=rt, jobs=2)
    assert result.failed == 0, result.errors
    assert result.compiled == len(result.descs) == 5
    assert result.descs[:2] == expected_net_descs("f16", "tf32")[:2]
    assert rt.stats().compiles == 5
    again = cj.prewarm(model, (x,), arch="sm_90", runtime=rt)
    assert (again.compiled, again.already_cached) == (0, 5)


def test_desc_for_follows_the_tf32_switch_for_f32_only():
    x, w = meta((1, 4, 8, 8)), meta((4, 4, 3, 3))
    restore = _tf32(True)
    try:
        assert cj.tf32_enabled()
        assert cj.desc_for(x, w).math == convjit.MathMode.tf32
        restore_inner = _tf32(False)
        assert not cj.tf32_enabled()
        assert cj.desc_for(x, w).math == convjit.MathMode.strict
        assert cj.desc_for(x.half(), w.half()).math == convjit.MathMode.tf32
        restore_inner()
    finally:
        restore()


def test_resnet50_records_its_distinct_convolutions():
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet50(weights=None).eval()
    descs, unsupported = cj.record_convs(model, torch.randn(32, 3, 224, 224))
    assert not unsupported
    assert descs[0] == convjit.Conv2dDesc(n=32, c=3, h=224, w=224, k=64, r=7, s=7, stride=2, pad=3, math=descs[0].math)
    # 53 convolutions, 23 distinct problems (repeated bottleneck blocks share theirs).
    assert len(descs) == len(set(descs)) == 23
