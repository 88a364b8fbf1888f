"""The extension without PyTorch and without a GPU: descriptors, errors, prewarm,
inspect (source, PTX, CUBIN, SASS through the toolkit's disassembler), cache stats."""

import os
import pickle
import stat
import subprocess
import sys
import textwrap

import pytest

import convjit

# Small problems: each compiles in about a second on the CPU machine.
DESC_3X3 = dict(n=1, c=8, h=12, w=12, k=16, r=3, s=3, pad=1)
DESC_DEPTHWISE = dict(n=2, c=8, h=12, w=12, k=8, r=3, s=3, groups=8, bias=True)


def test_import_exposes_version_enums_and_error_classes():
    assert convjit.__version__ == convjit._convjit.__version__ == "0.1.0"
    assert convjit.DType.bf16 != convjit.DType.f16
    assert issubclass(convjit.InvalidArgument, convjit.Error)
    assert issubclass(convjit.InvalidArgument, ValueError)
    assert issubclass(convjit.Unsupported, NotImplementedError)
    assert issubclass(convjit.Error, RuntimeError)


@pytest.fixture(scope="module")
def warm_runtime(tmp_path_factory):
    """One Runtime for the inspect tests: DESC_3X3 compiles once, then comes from memory."""
    return convjit.Runtime(cache_dir=tmp_path_factory.mktemp("warm") / "cache")


def test_import_convjit_alone_loads_neither_the_extension_nor_torch():
    # The extension links the toolkit's NVRTC and cuBLAS: with PyTorch in the process,
    # torch's copies must load first, so `import convjit` defers the extension.
    code = "import sys, convjit; print('convjit._convjit' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_desc_keywords_set_fields_and_shorthands_set_both_sides():
    d = convjit.Conv2dDesc(n=8, c=64, h=512, w=256, k=128, r=5, s=7, stride=2, pad=(1, 3), dilation_w=2)
    assert (d.n, d.c, d.h, d.w, d.k, d.r, d.s) == (8, 64, 512, 256, 128, 5, 7)
    assert (d.stride_h, d.stride_w, d.pad_h, d.pad_w, d.dilation_h, d.dilation_w) == (2, 2, 1, 3, 1, 2)
    assert d.groups == 1 and d.bias is False
    assert d.dtype == convjit.DType.f32 and d.layout == convjit.Layout.nchw and d.math == convjit.MathMode.tf32


def test_desc_refuses_a_shorthand_and_its_per_side_field_together():
    with pytest.raises(convjit.InvalidArgument, match="stride or stride_h/stride_w"):
        convjit.Conv2dDesc(stride=2, stride_h=1)


def test_desc_takes_enum_names_as_strings_and_names_the_choices_for_a_bad_one():
    d = convjit.Conv2dDesc(dtype="bf16", math="strict", activation="relu")
    assert d.dtype == convjit.DType.bf16 and d.math == convjit.MathMode.strict
    assert d.activation == convjit.Activation.relu
    d.dtype = "f16"
    assert d.dtype == convjit.DType.f16
    with pytest.raises(convjit.InvalidArgument, match="dtype: expected one of f32, f16, bf16, got 'f64'") as err:
        convjit.Conv2dDesc(dtype="f64")
    assert err.value.code == convjit.ErrorCode.invalid_argument


def test_validate_error_is_invalid_argument_with_code_and_field_name():
    with pytest.raises(convjit.InvalidArgument) as err:
        convjit.Conv2dDesc(c=3, k=4, groups=2).validate()
    assert err.value.code == convjit.ErrorCode.invalid_argument
    assert "Conv2dDesc.groups" in str(err.value)
    assert isinstance(err.value, ValueError)


def test_layout_nhwc_validates_and_the_direct_and_im2col_algorithms_run_it():
    d = convjit.Conv2dDesc(**DESC_3X3, layout="nhwc")
    d.validate()
    assert convjit.why_unsupported(d) is None
    assert convjit.why_unsupported(d, algorithm="direct") is None
    assert convjit.why_unsupported(d, algorithm="im2col_gemm") is None


def test_desc_is_a_value_equal_hashable_copyable_and_picklable():
    a = convjit.Conv2dDesc(**DESC_DEPTHWISE, dtype="bf16")
    b = convjit.Conv2dDesc(**DESC_DEPTHWISE, dtype="bf16")
    assert a == b and hash(a) == hash(b)
    assert len({a, b}) == 1
    c = a.replace(dtype="f16", layout="nhwc")
    assert c != a and c.dtype == convjit.DType.f16 and c.layout == convjit.Layout.nhwc and a.dtype == convjit.DType.bf16
    assert pickle.loads(pickle.dumps(a)) == a
    with pytest.raises(convjit.InvalidArgument, match="no field 'padding'"):
        a.replace(padding=1)
    assert repr(a).startswith("convjit.Conv2dDesc('n2c8h12w12k8r3s3")
    assert str(a) == a.to_string()


def test_three_dimensional_transposed_fields_are_settable_picklable_and_validated():
    d = convjit.Conv2dDesc(n=2, c=8, h=6, w=10, k=4, r=3, s=5, stride=2, groups=2)
    t = d.replace(spatial_dims=3, d=5, t=3, stride_d=2, transposed=True, output_padding_d=1, output_padding_w=1)
    t.validate()
    assert t != d and t.transposed and t.d == 5 and t.output_padding_w == 1
    assert pickle.loads(pickle.dumps(t)) == t
    assert t.to_string().startswith("n2c8d5h6w10k4t3r3s5 stride=2 ")
    assert "transposed=1 output_padding=1,0,1" in t.to_string()
    assert convjit.why_unsupported(t, algorithm="direct") is None
    assert convjit.why_unsupported(t, algorithm="im2col_gemm") is None
    # A strided transposed convolution is not a forward one on the implicit GEMM (yet).
    assert "stride 1" in convjit.why_unsupported(t, algorithm="implicit_gemm")
    with pytest.raises(convjit.InvalidArgument, match="Conv2dDesc.output_padding_h"):
        t.replace(output_padding_h=2).validate()


def test_output_shape_follows_the_conv_arithmetic():
    d = convjit.Conv2dDesc(n=2, c=3, h=224, w=224, k=64, r=7, s=7, stride=2, pad=3)
    assert d.output_shape() == (2, 64, 112, 112)
    assert d.flops == 2.0 * 2 * 64 * 112 * 112 * 3 * 7 * 7


def test_device_arch_without_a_driver_raises_no_driver_or_no_device(runtime):
    try:
        arch = runtime.device_arch()
    except (convjit.NoDriver, convjit.NoDevice) as e:
        assert e.code in (convjit.ErrorCode.no_driver, convjit.ErrorCode.no_device)
    else:
        pytest.skip(f"a GPU is present ({arch})")


def test_prewarm_with_arch_compiles_into_the_cache_dir_and_a_new_runtime_reuses_it(tmp_path):
    descs = [convjit.Conv2dDesc(**DESC_3X3), convjit.Conv2dDesc(**DESC_DEPTHWISE, dtype="bf16")]
    rt = convjit.Runtime(cache_dir=tmp_path / "cache")
    result = rt.prewarm(descs, arch="sm_90")
    assert (result.compiled, result.already_cached, result.failed) == (2, 0, 0)
    stats = rt.stats()
    assert stats.compiles == 2 and stats.disk_writes == 2 and stats.compile_ms > 0
    assert stats.as_dict()["compiles"] == 2
    assert rt.cache_dir == tmp_path / "cache"

    again = convjit.Runtime(cache_dir=tmp_path / "cache")
    result = again.prewarm(descs, arch="sm_90")
    assert (result.compiled, result.already_cached) == (0, 2)
    assert again.stats().compiles == 0 and again.stats().disk_hits == 2


def test_first_tier_is_a_runtime_option_whose_counters_start_at_zero_and_wait_returns_with_nothing_queued(tmp_path):
    rt = convjit.Runtime(cache_dir=tmp_path / "cache", first_tier=True)
    rt.wait_for_compiles()  # nothing was queued: returns at once, GPU or not
    stats = rt.stats().as_dict()
    assert (stats["first_tier_runs"], stats["background_builds"], stats["background_failures"]) == (0, 0, 0)
    # Prewarming never involves the first tier: it compiles, as before.
    result = rt.prewarm([convjit.Conv2dDesc(**DESC_3X3)], arch="sm_90")
    assert result.compiled == 1 and rt.stats().first_tier_runs == 0


def test_prewarm_reports_a_bad_descriptor_without_failing_the_others(runtime):
    result = runtime.prewarm([convjit.Conv2dDesc(c=3, k=4, groups=2), convjit.Conv2dDesc(**DESC_3X3)], arch="sm_90")
    assert (result.compiled, result.failed) == (1, 1)
    assert len(result.errors) == 1 and "groups" in result.errors[0]


def test_inspect_gives_source_ptx_cubin_resources_and_alignment_for_sm_90(warm_runtime):
    d = convjit.Conv2dDesc(**DESC_3X3)
    info = warm_runtime.inspect(d, arch="sm_90")
    assert info.kernel_name and info.kernel_name in info.source
    assert info.arch.startswith("sm_90")
    assert ".target sm_90" in info.ptx and info.kernel_name in info.ptx
    assert len(info.cubin) == info.cubin_bytes > 0 and info.cubin[:4] == b"\x7fELF"
    assert info.resources.registers > 0
    assert info.tile and info.algorithm in ("direct", "implicit_gemm", "im2col_gemm")
    assert info.grid_blocks > 0 and info.block_threads > 0
    assert info.alignment.x >= 2 and info.alignment.w >= 2
    assert len(info.key_hash) == 64
    assert info.cache_path.is_relative_to(warm_runtime.cache_dir)
    assert warm_runtime.source(d, "sm_90") == info.source
    assert warm_runtime.ptx(d, "sm_90") == info.ptx


def test_inspect_with_a_forced_algorithm_names_it(runtime):
    info = runtime.inspect(convjit.Conv2dDesc(**DESC_3X3), "sm_90", algorithm="direct")
    assert info.algorithm == "direct"
    with pytest.raises(convjit.InvalidArgument, match="algorithm: expected one of auto, direct"):
        runtime.inspect(convjit.Conv2dDesc(**DESC_3X3), "sm_90", algorithm="fastest")


def test_module_level_prewarm_inspect_and_stats_share_the_default_runtime():
    d = convjit.Conv2dDesc(**DESC_3X3, dtype="f16")
    before = convjit.stats().compiles
    assert convjit.prewarm([d], arch="sm_90").failed == 0
    assert convjit.inspect(d, "sm_90").kernel_name
    assert convjit.stats().compiles >= before
    assert convjit.default_runtime() is convjit.default_runtime()
    assert convjit.default_runtime().cache_dir == convjit.default_cache_dir()


def _fake_tool(directory, name, body):
    path = directory / name
    path.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def tool_dir(tmp_path, monkeypatch):
    """A directory first on PATH (and CUDA_HOME/CUDA_PATH unset) for a stand-in nvdisasm."""
    directory = tmp_path / "bin"
    directory.mkdir()
    monkeypatch.setenv("PATH", f"{directory}:{os.environ.get('PATH', '')}")
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    return directory


def test_sass_runs_the_disassembler_found_on_path_on_the_cubin_and_returns_its_output(warm_runtime, tool_dir):
    # A stand-in nvdisasm: proves the CUBIN reaches the tool as a file and its stdout comes back.
    _fake_tool(tool_dir, "nvdisasm", """\
        echo "fake-sass args: $1"
        head -c 4 "$2" | od -An -c | tr -d ' '
        echo "to stderr, not the result" >&2
        """)
    assert convjit.find_disassembler() == tool_dir / "nvdisasm"
    info = warm_runtime.inspect(convjit.Conv2dDesc(**DESC_3X3), "sm_90")
    sass = info.sass()
    assert sass.startswith("fake-sass args: --print-code\n")
    assert "177ELF" in sass
    assert "stderr" not in sass


def test_sass_from_a_failing_disassembler_raises_io_error_with_its_stderr(warm_runtime, tool_dir):
    _fake_tool(tool_dir, "nvdisasm", """\
        echo "nvdisasm fatal: bad cubin" >&2
        exit 3
        """)
    info = warm_runtime.inspect(convjit.Conv2dDesc(**DESC_3X3), "sm_90")
    with pytest.raises(convjit.IoError, match="exited with status 3: nvdisasm fatal: bad cubin") as err:
        info.sass()
    assert err.value.code == convjit.ErrorCode.io


def test_sass_without_a_disassembler_says_what_to_install(warm_runtime, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    if convjit.find_disassembler() is not None:
        pytest.skip(f"the toolkit's disassembler is installed ({convjit.find_disassembler()})")
    info = warm_runtime.inspect(convjit.Conv2dDesc(**DESC_3X3), "sm_90")
    with pytest.raises(convjit.Unsupported, match="needs nvdisasm or cuobjdump from the CUDA toolkit"):
        info.sass()


def test_sass_of_a_real_kernel_through_the_toolkit(warm_runtime):
    if convjit.find_disassembler() is None:
        pytest.skip(f"no nvdisasm or cuobjdump in {convjit.disassembler_search_path()}")
    sass = warm_runtime.inspect(convjit.Conv2dDesc(**DESC_3X3), "sm_90").sass()
    assert "EXIT" in sass
