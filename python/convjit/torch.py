"""convjit from PyTorch: the custom op convjit::conv2d, convert(model) and prewarm(model).

    import convjit.torch as cj
    y = cj.conv2d(x, w, bias, stride=1, padding="same")   # F.conv2d's arguments
    model = cj.convert(model)                              # nn.Conv2d forwards -> convjit
    cj.prewarm(model, (example,), arch="sm_90")            # compile its convs, no GPU needed

Conventions (docs/python.md):
- conv2d is the custom op ``convjit::conv2d`` (torch.library) with a fake implementation,
  so torch.compile traces it without a graph break and opcheck can test it.
- It runs on ``torch.cuda.current_stream(x.device)`` in x's device, takes its workspace
  from the caching allocator (a uint8 tensor), and so can be captured in a CUDA graph
  once each problem ran (compiled) outside the capture.
- f32 uses TF32 when cuDNN convolutions would (torch.backends.cudnn.allow_tf32, or the
  fp32_precision settings of torch 2.9+), strict fp32 otherwise.
- Channels-last in gives channels-last out (x or w channels-last, as cuDNN decides), and
  runs as convjit's NHWC layout on the tensors' own memory: x N,H,W,C, the weight
  K,R,S,C/groups (a channels-last weight), y N,P,Q,K. A weight in the other memory format
  than x is made channels-last (one copy per call; convert the model's weights too to
  avoid it). Where convjit cannot run a problem in NHWC (convjit.why_unsupported), such
  tensors are copied to NCHW and the result back.
- Gradients: the backward runs PyTorch's own convolution_backward (cuDNN).
- CPU (or other non-CUDA) tensors: conv2d raises convjit.Unsupported; a converted
  module runs torch's own forward for them instead. Meta tensors get shapes (the fake
  implementation), as from any op.

This module is ``convjit.torch``; inside it ``import torch`` is the real PyTorch
(imports are absolute), never this file.
"""

import dataclasses
import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch._prims_common import suggest_memory_format
from torch.utils._python_dispatch import TorchDispatchMode

import convjit
from convjit._errors import InvalidArgument, Unsupported

__all__ = [
    "ModelPrewarm",
    "clear_plans",
    "conv2d",
    "convert",
    "converted_modules",
    "desc_for",
    "prewarm",
    "record_convs",
    "tf32_enabled",
]

_DTYPES = {
    torch.float32: convjit.DType.f32,
    torch.float16: convjit.DType.f16,
    torch.bfloat16: convjit.DType.bf16,
}

# Where the op runs: CUDA, and meta (shapes only, through the fake implementation).
_DEVICES = ("cuda", "meta")

IntPair = Union[int, Sequence[int]]


# ---- argument handling (F.conv2d's forms) ----------------------------------------------


def _pair(value: IntPair, name: str) -> Tuple[int, int]:
    """An int, or a sequence of 1 or 2 ints, as (h, w), as ATen expands them."""
    if isinstance(value, bool):
        raise InvalidArgument(f"conv2d: {name} must be an int or a pair of ints, got {value!r}")
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, (tuple, list, torch.Size)):
        if len(value) == 1:
            return (int(value[0]), int(value[0]))
        if len(value) == 2:
            return (int(value[0]), int(value[1]))
    raise InvalidArgument(
        f"conv2d: expected {name} to be a single integer value or a list of 2 values to match the "
        f"convolution dimensions, but got {name}={value!r}"
    )


def _same_padding(weight: Tensor, dilation: Tuple[int, int]) -> Tuple[Tuple[int, int], Tuple[int, int]]:
    """padding='same' as ATen's _convolution_same: the symmetric part and the extra
    bottom/right rows and columns (1 where the dilated kernel's span is even)."""
    sym = []
    extra = []
    for i, d in enumerate(dilation):
        total = d * (weight.shape[2 + i] - 1)
        left = total // 2
        sym.append(left)
        extra.append(total - left - left)
    return (sym[0], sym[1]), (extra[0], extra[1])


def _check_tensors(x: Tensor, weight: Tensor, bias: Optional[Tensor], groups: int, *, need_cuda: bool) -> None:
    if x.dim() != 4:
        raise InvalidArgument(f"conv2d: expected a 4D input (n, c, h, w), got shape {tuple(x.shape)}")
    if weight.dim() != 4:
        raise InvalidArgument(f"conv2d: expected a 4D weight (k, c / groups, r, s), got shape {tuple(weight.shape)}")
    if x.dtype not in _DTYPES:
        raise Unsupported(f"conv2d: convjit takes float32, float16 and bfloat16 tensors, got {x.dtype}")
    if weight.dtype != x.dtype or (bias is not None and bias.dtype != x.dtype):
        raise InvalidArgument(
            f"conv2d: input, weight and bias must have the same dtype, got {x.dtype}, {weight.dtype}"
            + (f", {bias.dtype}" if bias is not None else "")
        )
    if need_cuda and x.device.type not in _DEVICES:
        raise Unsupported(
            f"conv2d: convjit runs on CUDA tensors (and meta ones, for shapes), got a tensor on {x.device}; use "
            "torch.nn.functional.conv2d there (a module converted by convjit.torch.convert does)"
        )
    if weight.device != x.device or (bias is not None and bias.device != x.device):
        raise InvalidArgument(
            f"conv2d: input, weight and bias must be on one device, got {x.device}, {weight.device}"
            + (f", {bias.device}" if bias is not None else "")
        )
    if groups < 1 or x.shape[1] != weight.shape[1] * groups:
        raise InvalidArgument(
            f"conv2d: given groups={groups}, weight of size {tuple(weight.shape)}, expected input "
            f"{tuple(x.shape)} to have {weight.shape[1] * groups} channels, but got {x.shape[1]} channels instead"
        )
    if weight.shape[0] % groups != 0:
        raise InvalidArgument(f"conv2d: weight's {weight.shape[0]} output channels do not divide by groups={groups}")
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != weight.shape[0]):
        raise InvalidArgument(f"conv2d: expected a bias of {weight.shape[0]} elements, got shape {tuple(bias.shape)}")


def conv2d(
    input: Tensor,
    weight: Tensor,
    bias: Optional[Tensor] = None,
    stride: IntPair = 1,
    padding: Union[IntPair, str] = 0,
    dilation: IntPair = 1,
    groups: int = 1,
) -> Tensor:
    """torch.nn.functional.conv2d on convjit's kernels, with F.conv2d's arguments.

    stride, padding and dilation take an int or a pair; padding also 'valid' or 'same'
    ('same' needs stride 1; where the dilated kernel spans an even size the input gets
    one more zero row/column at the bottom/right, as in F.conv2d). An unbatched input
    (c, h, w) gives an unbatched output. The work is the custom op convjit::conv2d.
    """
    stride2 = _pair(stride, "stride")
    dilation2 = _pair(dilation, "dilation")
    unbatched = input.dim() == 3
    x = input.unsqueeze(0) if unbatched else input
    _check_tensors(x, weight, bias, groups, need_cuda=True)
    if isinstance(padding, str):
        if padding == "valid":
            padding2 = (0, 0)
        elif padding == "same":
            if stride2 != (1, 1):
                raise InvalidArgument("conv2d: padding='same' is not supported for strided convolutions")
            padding2, extra = _same_padding(weight, dilation2)
            if extra != (0, 0):
                # F.pad's last dimension first: (left, right, top, bottom).
                x = F.pad(x, (0, extra[1], 0, extra[0]))
        else:
            raise InvalidArgument(f"conv2d: invalid padding string {padding!r}, should be one of {{'valid', 'same'}}")
    else:
        padding2 = _pair(padding, "padding")
    if min(padding2) < 0:
        raise InvalidArgument(f"conv2d: negative padding is not supported, got {padding2}")
    if min(stride2) < 1 or min(dilation2) < 1:
        raise InvalidArgument(f"conv2d: stride and dilation must be positive, got stride={stride2}, dilation={dilation2}")
    y = torch.ops.convjit.conv2d(x, weight, bias, list(stride2), list(padding2), list(dilation2), groups)
    return y.squeeze(0) if unbatched else y


# ---- descriptors ---------------------------------------------------------------------------


def tf32_enabled() -> bool:
    """Whether PyTorch's cuDNN convolutions would use TF32 for float32 now.

    torch 2.9+ keeps the setting as fp32_precision, conv's own else cuDNN's else the
    generic one ('none' defers to the next); torch.backends.cudnn.allow_tf32 sets the
    conv level. Reading allow_tf32 there raises once the levels disagree, so the
    levels are read instead. Older torch: allow_tf32.
    """
    cudnn = torch.backends.cudnn
    conv = getattr(cudnn, "conv", None)
    if conv is not None and hasattr(torch.backends, "fp32_precision"):
        for precision in (conv.fp32_precision, cudnn.fp32_precision, torch.backends.fp32_precision):
            if precision != "none":
                return precision == "tf32"
        return False
    return bool(cudnn.allow_tf32)


def _channels_last(x: Tensor, weight: Tensor) -> bool:
    """cuDNN's rule for a 2D convolution's output: channels-last when x or w is
    (ATen's suggest_memory_format, which its conv meta functions use too)."""
    return suggest_memory_format(x) == torch.channels_last or suggest_memory_format(weight) == torch.channels_last


def _nchw_desc(x_shape, w_shape, has_bias: bool, stride, padding, dilation, groups: int, dtype) -> "convjit.Conv2dDesc":
    n, c, h, w = (int(v) for v in x_shape)
    k, _, r, s = (int(v) for v in w_shape)
    cj_dtype = _DTYPES[dtype]
    # 16-bit data runs the same kernel in either math mode; one mode keeps one cache entry.
    math = convjit.MathMode.tf32 if (cj_dtype != convjit.DType.f32 or tf32_enabled()) else convjit.MathMode.strict
    return convjit.Conv2dDesc(
        n=n, c=c, h=h, w=w, k=k, r=r, s=s,
        stride=tuple(stride), pad=tuple(padding), dilation=tuple(dilation),
        groups=int(groups), bias=has_bias, dtype=cj_dtype, math=math,
    )  # fmt: skip


_nhwc_support: dict = {}


def _layout_for(nchw: "convjit.Conv2dDesc", channels_last: bool) -> "convjit.Layout":
    """NHWC when the tensors are channels-last and convjit runs this problem in NHWC
    (convjit.why_unsupported says so), else NCHW, with the copies that implies."""
    if not channels_last:
        return convjit.Layout.nchw
    supported = _nhwc_support.get(nchw)
    if supported is None:
        try:
            supported = convjit.why_unsupported(nchw.replace(layout=convjit.Layout.nhwc)) is None
        except Unsupported:
            supported = False
        except InvalidArgument:
            supported = False  # the NCHW path reports the problem with its own message
        _nhwc_support[nchw] = supported
    return convjit.Layout.nhwc if supported else convjit.Layout.nchw


def desc_for(
    x: Tensor,
    weight: Tensor,
    bias: Optional[Tensor] = None,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    groups: int = 1,
) -> "convjit.Conv2dDesc":
    """The descriptor convjit::conv2d runs for these tensors (explicit integer padding),
    with the math mode and layout it would pick now."""
    stride2, padding2, dilation2 = _pair(stride, "stride"), _pair(padding, "padding"), _pair(dilation, "dilation")
    _check_tensors(x, weight, bias, groups, need_cuda=False)
    d = _nchw_desc(x.shape, weight.shape, bias is not None, stride2, padding2, dilation2, groups, x.dtype)
    return d.replace(layout=_layout_for(d, _channels_last(x, weight)))


# ---- the custom op -----------------------------------------------------------------------

# The bound plan for each problem a process runs, keyed by plain Python values (shapes,
# geometry, dtype, memory format, TF32, device) so that a call builds no descriptor.
_plans: dict = {}
_plans_lock = threading.Lock()


@dataclasses.dataclass(frozen=True)
class _Bound:
    plan: "convjit.Conv2dPlan"
    layout: "convjit.Layout"
    workspace_bytes: int


def clear_plans() -> None:
    """Forget the bound plans (they are rebuilt from the runtime's cache on next use)."""
    with _plans_lock:
        _plans.clear()


def _bound_for(x: Tensor, weight: Tensor, has_bias: bool, stride, padding, dilation, groups: int,
               channels_last: bool) -> _Bound:  # fmt: skip
    tf32 = x.dtype == torch.float32 and tf32_enabled()
    device_index = x.device.index if x.device.index is not None else torch.cuda.current_device()
    key = (tuple(x.shape), tuple(weight.shape), has_bias, tuple(stride), tuple(padding), tuple(dilation), groups,
           x.dtype, channels_last, tf32, device_index)  # fmt: skip
    bound = _plans.get(key)
    if bound is None:
        with _plans_lock:
            bound = _plans.get(key)
            if bound is None:
                nchw = _nchw_desc(x.shape, weight.shape, has_bias, stride, padding, dilation, groups, x.dtype)
                layout = _layout_for(nchw, channels_last)
                desc = nchw if layout == convjit.Layout.nchw else nchw.replace(layout=layout)
                # Bound to the device's primary context: the CUDA runtime's, which torch uses.
                plan = convjit.default_runtime().plan(desc, device=device_index)
                bound = _Bound(plan, layout, plan.workspace_bytes)
                _plans[key] = bound
    return bound


def _output_size(x_shape, w_shape, stride, padding, dilation):
    n, _, h, w = x_shape
    k, _, r, s = w_shape
    p = (h + 2 * padding[0] - dilation[0] * (r - 1) - 1) // stride[0] + 1
    q = (w + 2 * padding[1] - dilation[1] * (s - 1) - 1) // stride[1] + 1
    return (n, k, p, q)


def _check_geometry(x: Tensor, weight: Tensor, stride, padding, dilation) -> None:
    if len(stride) != 2 or len(padding) != 2 or len(dilation) != 2:
        raise InvalidArgument(f"convjit::conv2d: stride, padding and dilation take 2 ints each, got {stride}, {padding}, {dilation}")
    if min(stride) < 1 or min(dilation) < 1 or min(padding) < 0:
        raise InvalidArgument(f"convjit::conv2d: stride={stride}, padding={padding}, dilation={dilation} out of range")
    for i, name in ((0, "height"), (1, "width")):
        span = dilation[i] * (weight.shape[2 + i] - 1) + 1
        if x.shape[2 + i] + 2 * padding[i] < span:
            raise InvalidArgument(
                f"convjit::conv2d: padded input {name} {x.shape[2 + i]} + 2*{padding[i]} is smaller than the dilated "
                f"kernel {name} {span}"
            )


_SCHEMA = "(Tensor x, Tensor weight, Tensor? bias, int[] stride, int[] padding, int[] dilation, int groups) -> Tensor"


@torch.library.custom_op("convjit::conv2d", mutates_args=(), schema=_SCHEMA)
def _conv2d_op(
    x: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    stride: List[int],
    padding: List[int],
    dilation: List[int],
    groups: int,
) -> Tensor:
    _check_tensors(x, weight, bias, groups, need_cuda=True)
    _check_geometry(x, weight, stride, padding, dilation)
    channels_last = _channels_last(x, weight)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    shape = _output_size(x.shape, weight.shape, stride, padding, dilation)
    if x.numel() == 0 or weight.numel() == 0:
        # An empty batch (F.conv2d allows it; convjit's descriptors do not): nothing to launch.
        return torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=memory_format).zero_()

    device = x.device
    with torch.cuda.device(device):
        bound = _bound_for(x, weight, bias is not None, stride, padding, dilation, groups, channels_last)
        layout = bound.layout
        if layout == convjit.Layout.nhwc:
            # convjit's NHWC weight is k x r x s x (c / groups): the channels-last weight
            # tensor, as cuDNN's. Both are no-ops for channels-last tensors; a contiguous
            # weight beside a channels-last x costs its one copy here (and x the other way).
            xs = x.contiguous(memory_format=torch.channels_last)
            ws = weight.contiguous(memory_format=torch.channels_last)
            y = torch.empty(shape, dtype=x.dtype, device=device, memory_format=torch.channels_last)
        else:
            # Channels-last tensors of a problem convjit cannot run in NHWC: one copy of x
            # (and w) to NCHW here and one of y back below.
            xs = x.contiguous()
            ws = weight.contiguous()
            y = torch.empty(shape, dtype=x.dtype, device=device)
        b = bias.contiguous() if bias is not None else None
        nbytes = bound.workspace_bytes
        # From the caching allocator, on this stream: reused only by later work on it, and
        # from the graph's pool during a capture.
        workspace = torch.empty(nbytes, dtype=torch.uint8, device=device) if nbytes else None
        bound.plan.run(
            x=xs.data_ptr(),
            w=ws.data_ptr(),
            y=y.data_ptr(),
            bias=b.data_ptr() if b is not None else 0,
            workspace=workspace.data_ptr() if workspace is not None else 0,
            workspace_bytes=nbytes,
            stream=torch.cuda.current_stream(device).cuda_stream,
        )
    if channels_last and layout == convjit.Layout.nchw:
        out = torch.empty(shape, dtype=x.dtype, device=device, memory_format=torch.channels_last)
        out.copy_(y)
        y = out
    return y


@_conv2d_op.register_fake
def _conv2d_fake(x, weight, bias, stride, padding, dilation, groups):
    _check_tensors(x, weight, bias, groups, need_cuda=False)
    _check_geometry(x, weight, stride, padding, dilation)
    memory_format = torch.channels_last if _channels_last(x, weight) else torch.contiguous_format
    shape = _output_size(x.shape, weight.shape, stride, padding, dilation)
    return torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=memory_format)


def _setup_context(ctx, inputs, output):
    x, weight, bias, stride, padding, dilation, groups = inputs
    ctx.save_for_backward(x, weight)
    ctx.has_bias = bias is not None
    ctx.geometry = (list(stride), list(padding), list(dilation), groups)


def _backward(ctx, grad):
    # PyTorch's own convolution_backward (cuDNN): convjit has no backward kernels yet.
    x, weight = ctx.saved_tensors
    stride, padding, dilation, groups = ctx.geometry
    grad_x = grad_w = grad_b = None
    if ctx.needs_input_grad[0]:
        grad_x = torch.nn.grad.conv2d_input(x.shape, weight, grad, stride, padding, dilation, groups)
    if ctx.needs_input_grad[1]:
        grad_w = torch.nn.grad.conv2d_weight(x, weight.shape, grad, stride, padding, dilation, groups)
    if ctx.has_bias and ctx.needs_input_grad[2]:
        grad_b = grad.sum((0, 2, 3))
    return grad_x, grad_w, grad_b, None, None, None, None


_conv2d_op.register_autograd(_backward, setup_context=_setup_context)


# ---- whole models ------------------------------------------------------------------------


def _convjit_can_take(x: Tensor, weight: Tensor) -> bool:
    return x.device.type in _DEVICES and weight.device == x.device and x.dtype in _DTYPES


def _conv2d_module_forward(self, input: Tensor) -> Tensor:
    # Tensors convjit cannot take (CPU, float64, ...) run torch's own forward, so a
    # converted model still runs (and records its convolutions) anywhere.
    if not _convjit_can_take(input, self.weight):
        return self._conv_forward(input, self.weight, self.bias)
    return conv2d(input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


_converted_classes: dict = {}


def _converted_class(cls: type) -> type:
    sub = _converted_classes.get(cls)
    if sub is None:
        sub = type(
            f"Convjit{cls.__name__}",
            (cls,),
            {"forward": _conv2d_module_forward, "_convjit_original_class": cls, "__module__": __name__},
        )
        _converted_classes[cls] = sub
    return sub


def _convertible(module: nn.Module) -> bool:
    # Only the stock forward is replaced: a subclass with a forward of its own keeps it.
    return (
        isinstance(module, nn.Conv2d)
        and type(module).forward is nn.Conv2d.forward
        and module.padding_mode == "zeros"
    )


def convert(model: nn.Module) -> nn.Module:
    """Runs the nn.Conv2d modules of `model` on convjit, in place; returns `model`.

    Each module keeps its parameters, buffers, state_dict keys and isinstance(nn.Conv2d):
    only its class is swapped for a subclass whose forward calls convjit.torch.conv2d
    (the same swap torch.compile traces like any module). Left as they are: padding
    modes other than 'zeros', nn.Conv2d subclasses with their own forward, and Conv1d,
    Conv3d and ConvTranspose (convjit has no kernels for them yet).
    """
    for module in model.modules():
        if _convertible(module):
            module.__class__ = _converted_class(type(module))
    return model


def converted_modules(model: nn.Module) -> List[str]:
    """Names of the modules convert() swapped (for logs and tests)."""
    return [name for name, m in model.named_modules() if hasattr(type(m), "_convjit_original_class")]


@dataclasses.dataclass
class ModelPrewarm:
    """What prewarm(model, ...) recorded and compiled."""

    descs: List["convjit.Conv2dDesc"]  # distinct problems, in the order the forward first ran them
    compiled: int = 0
    already_cached: int = 0
    failed: int = 0
    errors: List[str] = dataclasses.field(default_factory=list)
    unsupported: List[str] = dataclasses.field(default_factory=list)  # convolutions convjit cannot run yet


class _ConvRecorder(TorchDispatchMode):
    """Records the 2D convolutions a forward pass dispatches, as convjit descriptors."""

    def __init__(self):
        super().__init__()
        self.descs: List[convjit.Conv2dDesc] = []
        self.unsupported: List[str] = []
        self._seen: set = set()

    def _add(self, x, weight, bias, stride, padding, dilation, groups):
        try:
            d = desc_for(x, weight, bias, stride, padding, dilation, groups)
        except convjit.Error as e:
            self.unsupported.append(str(e))
            return
        if d not in self._seen:
            self._seen.add(d)
            self.descs.append(d)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.ops.aten.convolution.default:
            x, weight, bias, stride, padding, dilation, transposed, _output_padding, groups = args
            if transposed or weight.dim() != 4:
                kind = "transposed " if transposed else ""
                self.unsupported.append(f"{kind}conv with a {weight.dim()}D weight {tuple(weight.shape)}")
            else:
                self._add(x, weight, bias, stride, padding, dilation, groups)
        elif func is torch.ops.convjit.conv2d.default:
            self._add(*args, **kwargs)
        return func(*args, **kwargs)


def record_convs(model: nn.Module, example_inputs, example_kwargs=None, *, fake: bool = True) -> Tuple[list, list]:
    """Runs model(*example_inputs) once and returns (descriptors, unsupported): the
    distinct convolutions it dispatched, as convjit would run them now (dtype, layout,
    math from the TF32 setting, batch size of the inputs).

    With fake=True the pass runs on fake tensors (torch._subclasses.FakeTensorMode):
    shapes only, no memory, no compute, no GPU, whatever device the model is on. A model
    whose forward needs real values (data-dependent control flow) falls back to a real
    pass under torch.no_grad().
    """
    if isinstance(example_inputs, Tensor):
        example_inputs = (example_inputs,)
    example_kwargs = example_kwargs or {}
    if fake:
        from torch._subclasses.fake_tensor import FakeTensorMode
        from torch.utils._pytree import tree_map

        try:
            mode = FakeTensorMode(allow_non_fake_inputs=True)
            with torch.no_grad(), mode:
                fake_args = tree_map(lambda t: mode.from_tensor(t) if isinstance(t, Tensor) else t, example_inputs)
                fake_kwargs = tree_map(lambda t: mode.from_tensor(t) if isinstance(t, Tensor) else t, example_kwargs)
                with _ConvRecorder() as recorder:
                    model(*fake_args, **fake_kwargs)
            return recorder.descs, recorder.unsupported
        except Exception as e:  # noqa: BLE001 - any failure of the fake pass: run it for real
            warnings.warn(f"convjit.torch.record_convs: the fake pass failed ({e!r}); running the model for real")
    with torch.no_grad(), _ConvRecorder() as recorder:
        model(*example_inputs, **example_kwargs)
    return recorder.descs, recorder.unsupported


def prewarm(
    model: nn.Module,
    example_inputs,
    arch: Optional[str] = None,
    *,
    example_kwargs=None,
    runtime: Optional["convjit.Runtime"] = None,
    jobs: Optional[int] = None,
) -> ModelPrewarm:
    """Compiles into the cache every convolution model(*example_inputs) runs.

    The forward runs on fake tensors (record_convs), so with `arch` (e.g. "sm_90") no GPU
    is needed; without it the runtime's device arch is used. The descriptors carry the
    example's batch size, dtypes and memory format and the TF32 setting of now: prewarm
    with what you will run. `jobs` threads compile in parallel (default: the CPU count).
    """
    descs, unsupported = record_convs(model, example_inputs, example_kwargs)
    rt = runtime if runtime is not None else convjit.default_runtime()
    result = ModelPrewarm(descs=list(descs), unsupported=list(unsupported))
    if not descs:
        return result
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(descs)))
    # Runtime.prewarm releases the GIL and the runtime is thread-safe: one chunk a thread.
    chunks = [descs[i::jobs] for i in range(jobs)]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        parts = list(pool.map(lambda chunk: rt.prewarm(chunk, arch), chunks))
    for part in parts:
        result.compiled += part.compiled
        result.already_cached += part.already_cached
        result.failed += part.failed
        result.errors.extend(part.errors)
    return result

