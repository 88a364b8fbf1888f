"""The op's launch path without a GPU: a stand-in runtime whose plans convolve host
memory through the pointers they are given proves what convjit::conv2d hands a plan:
the pointers (storage offsets included), the layout of each tensor, the bias, the
workspace, the stream, and the plan cache's keys. The GPU tests run the same path on
convjit's kernels (test_torch_gpu.py)."""

import contextlib
import ctypes
import types

import pytest

try:
    import torch
    import torch.nn.functional as F
except ImportError as e:  # pragma: no cover - depends on the environment
    pytest.skip(f"PyTorch is not installed ({e})", allow_module_level=True)

import convjit
import convjit.torch as cj

CL = torch.channels_last
STREAM = 0x5EED
WORKSPACE = 4096


def host_tensor(address, shape, dtype):
    """The host memory at `address` as a contiguous tensor (no copy)."""
    count = 1
    for v in shape:
        count *= v
    nbytes = count * torch.empty((), dtype=dtype).element_size()
    return torch.frombuffer((ctypes.c_char * nbytes).from_address(address), dtype=dtype).view(shape)


class StandInPlan:
    """A Conv2dPlan that runs on host memory: reads x, w, bias and writes y by address."""

    def __init__(self, desc, device):
        self.desc, self.device, self.runs = desc, device, []
        self.workspace_bytes = WORKSPACE

    def run(self, *, x, w=0, y, bias=0, packed_w=0, workspace=0, workspace_bytes=0, stream=0):
        d = self.desc
        dtype = {convjit.DType.f32: torch.float32, convjit.DType.f16: torch.float16, convjit.DType.bf16: torch.bfloat16}[d.dtype]
        n, k, p, q = d.output_shape()
        if d.layout == convjit.Layout.nhwc:  # x n,h,w,c; w k,r,s,c/g; y n,p,q,k
            xt = host_tensor(x, (d.n, d.h, d.w, d.c), dtype).permute(0, 3, 1, 2)
            wt = host_tensor(w, (d.k, d.r, d.s, d.c // d.groups), dtype).permute(0, 3, 1, 2)
            yt = host_tensor(y, (n, p, q, k), dtype).permute(0, 3, 1, 2)
        else:
            xt = host_tensor(x, (d.n, d.c, d.h, d.w), dtype)
            wt = host_tensor(w, (d.k, d.c // d.groups, d.r, d.s), dtype)
            yt = host_tensor(y, (n, k, p, q), dtype)
        bt = host_tensor(bias, (d.k,), dtype).double() if d.bias else None
        yt.copy_(F.conv2d(xt.double(), wt.double(), bt, (d.stride_h, d.stride_w), (d.pad_h, d.pad_w),
                          (d.dilation_h, d.dilation_w), d.groups))  # fmt: skip
        self.runs.append(dict(x=x, w=w, y=y, bias=bias, packed_w=packed_w, workspace=workspace,
                              workspace_bytes=workspace_bytes, stream=stream))  # fmt: skip


class StandInRuntime:
    def __init__(self):
        self.plans = []

    def plan(self, desc, *, algorithm="auto", stream=0, device=None):
        plan = StandInPlan(desc, device)
        self.plans.append(plan)
        return plan


@pytest.fixture
def rt(monkeypatch):
    """CPU tensors take the CUDA path, with the stand-in runtime and a fake current stream."""
    runtime = StandInRuntime()
    monkeypatch.setattr(cj, "_DEVICES", ("cuda", "meta", "cpu"))
    monkeypatch.setattr(convjit, "default_runtime", lambda: runtime)
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: types.SimpleNamespace(cuda_stream=STREAM))
    cj.clear_plans()
    yield runtime
    cj.clear_plans()


def data(shape, dtype=torch.float32, memory_format=torch.contiguous_format, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g).to(dtype).contiguous(memory_format=memory_format)


def test_contiguous_run_passes_its_pointers_workspace_and_the_current_stream(rt):
    x, w, b = data((2, 4, 9, 9)), data((6, 4, 3, 3), seed=1), data((6,), seed=2)
    y = cj.conv2d(x, w, b, padding=1)
    torch.testing.assert_close(y, F.conv2d(x, w, b, padding=1))
    (plan,) = rt.plans
    assert plan.desc == convjit.Conv2dDesc(n=2, c=4, h=9, w=9, k=6, r=3, s=3, pad=1, bias=True, math=plan.desc.math)
    assert plan.device == 0
    (run,) = plan.runs
    assert (run["x"], run["w"], run["bias"], run["y"]) == (x.data_ptr(), w.data_ptr(), b.data_ptr(), y.data_ptr())
    assert run["stream"] == STREAM and run["workspace_bytes"] == WORKSPACE and run["workspace"] != 0
    assert run["packed_w"] == 0


def test_a_second_call_reuses_the_plan_and_a_tf32_change_binds_another(rt):
    x, w = data((1, 4, 8, 8)), data((4, 4, 3, 3))
    old = cj.tf32_enabled
    cj.conv2d(x, w)
    cj.conv2d(x.clone(), w)
    assert len(rt.plans) == 1 and len(rt.plans[0].runs) == 2
    try:
        cj.tf32_enabled = lambda: not old()
        cj.conv2d(x, w)
    finally:
        cj.tf32_enabled = old
    assert len(rt.plans) == 2 and rt.plans[0].desc.math != rt.plans[1].desc.math
    cj.conv2d(x.half(), w.half())
    assert rt.plans[-1].desc.math == convjit.MathMode.tf32  # 16-bit: one math mode, one cache entry


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_channels_last_runs_as_nhwc_on_the_tensors_own_memory_and_returns_channels_last(rt, dtype):
    x, w = data((2, 8, 7, 6), dtype, CL), data((16, 4, 3, 3), dtype, CL, seed=1)
    y = cj.conv2d(x, w, stride=2, padding=(1, 0), groups=2)
    assert y.is_contiguous(memory_format=CL) and not y.is_contiguous()
    want = F.conv2d(x.double(), w.double(), stride=2, padding=(1, 0), groups=2).to(dtype)
    torch.testing.assert_close(y, want, rtol=1e-2, atol=1e-2)
    (plan,) = rt.plans
    assert plan.desc.layout == convjit.Layout.nhwc
    assert (plan.runs[0]["x"], plan.runs[0]["w"], plan.runs[0]["y"]) == (x.data_ptr(), w.data_ptr(), y.data_ptr())


def test_a_contiguous_weight_beside_a_channels_last_input_is_the_one_copy(rt):
    x, w = data((2, 8, 7, 6), memory_format=CL), data((16, 8, 3, 3), seed=1)
    y = cj.conv2d(x, w, padding=1)
    torch.testing.assert_close(y, F.conv2d(x, w, padding=1))
    assert y.is_contiguous(memory_format=CL)
    (plan,) = rt.plans
    assert plan.desc.layout == convjit.Layout.nhwc
    assert plan.runs[0]["x"] == x.data_ptr() and plan.runs[0]["y"] == y.data_ptr()
    assert plan.runs[0]["w"] != w.data_ptr()  # w made channels-last: k, r, s, c


def test_channels_last_falls_back_to_nchw_copies_where_convjit_cannot_run_nhwc(rt, monkeypatch):
    monkeypatch.setattr(cj, "_layout_for", lambda nchw, channels_last: convjit.Layout.nchw)
    x, w = data((2, 8, 7, 6), memory_format=CL), data((16, 8, 3, 3), memory_format=CL, seed=1)
    y = cj.conv2d(x, w, stride=2, padding=1)
    torch.testing.assert_close(y, F.conv2d(x, w, stride=2, padding=1))
    assert y.is_contiguous(memory_format=CL)
    (plan,) = rt.plans
    assert plan.desc.layout == convjit.Layout.nchw
    assert plan.runs[0]["x"] != x.data_ptr()  # an NCHW copy
    assert plan.runs[0]["y"] != y.data_ptr()  # copied back to channels-last


def test_storage_offsets_reach_the_plan_in_the_pointers(rt):
    base_x, base_w = torch.zeros(1 + 2 * 4 * 8 * 8), torch.zeros(3 + 5 * 4 * 3 * 3)
    x, w = base_x[1:].view(2, 4, 8, 8), base_w[3:].view(5, 4, 3, 3)
    x.copy_(data((2, 4, 8, 8))), w.copy_(data((5, 4, 3, 3), seed=1))
    y = cj.conv2d(x, w)
    torch.testing.assert_close(y, F.conv2d(x, w))
    run = rt.plans[0].runs[0]
    assert run["x"] == base_x.data_ptr() + 4 and run["w"] == base_w.data_ptr() + 12


def test_other_strides_are_made_contiguous_first(rt):
    x = data((2, 4, 8, 16))[..., ::2]
    w = data((5, 4, 3, 3), seed=1)
    torch.testing.assert_close(cj.conv2d(x, w, padding=1), F.conv2d(x, w, padding=1))


def test_padding_same_with_an_even_kernel_gives_F_conv2d_values(rt):
    x, w = data((1, 3, 10, 9)), data((4, 3, 4, 2), seed=1)
    torch.testing.assert_close(cj.conv2d(x, w, padding="same", dilation=(1, 3)), F.conv2d(x, w, padding="same", dilation=(1, 3)))


def test_converted_module_runs_the_op_and_its_backward_gives_torchs_gradients(rt):
    m = torch.nn.Conv2d(4, 6, 3, padding=1)
    ref = torch.nn.Conv2d(4, 6, 3, padding=1)
    ref.load_state_dict(m.state_dict())
    cj.convert(m)
    x = data((2, 4, 8, 8)).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    y = m(x)
    assert len(rt.plans) == 1  # the converted forward went through the op
    grad = data(y.shape, seed=3)
    y.backward(grad)
    ref(x_ref).backward(grad)
    torch.testing.assert_close(y, ref(x_ref))
    torch.testing.assert_close(x.grad, x_ref.grad)
    torch.testing.assert_close(m.weight.grad, ref.weight.grad)
    torch.testing.assert_close(m.bias.grad, ref.bias.grad)


def test_opcheck_passes_on_the_stand_in(rt):
    x, w, b = data((2, 4, 9, 9)).requires_grad_(), data((6, 2, 3, 3), seed=1).requires_grad_(), data((6,), seed=2)
    torch.library.opcheck(torch.ops.convjit.conv2d.default, (x, w, b, [2, 1], [1, 0], [1, 2], 2))
    x_cl = data((2, 4, 9, 9), memory_format=CL)
    torch.library.opcheck(torch.ops.convjit.conv2d.default, (x_cl, data((6, 4, 1, 1), seed=1), None, [1, 1], [0, 0], [1, 1], 1))
