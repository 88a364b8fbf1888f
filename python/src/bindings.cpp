// convjit._convjit: the public C++ API (runtime/include/convjit) for Python.
//
// Device pointers and streams cross as Python ints (tensor.data_ptr(),
// torch.cuda.current_stream().cuda_stream), so the extension builds against no
// framework: one wheel serves any PyTorch. Every convjit::Error becomes an instance
// of the matching class in convjit._errors (convjit.Error and its subclasses), with
// the ErrorCode as its `.code`.
#include <nanobind/nanobind.h>
#include <nanobind/operators.h>
#include <nanobind/stl/filesystem.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <exception>
#include <optional>
#include <string>
#include <utility>

#include "convjit/convjit.hpp"
#include "disassembler.hpp"

namespace nb = nanobind;
using namespace nb::literals;

namespace convjit::python {
namespace {

// ---- enums: bound as Python enums, and accepted as their text form too --------------

template <typename E>
struct EnumText;  // every value of E with its Python name

template <>
struct EnumText<DType> {
  static constexpr std::array values = {DType::kFloat32, DType::kFloat16, DType::kBFloat16};
  static std::string_view name(DType v) { return to_string(v); }
  static constexpr const char* field = "dtype";
};
template <>
struct EnumText<Layout> {
  static constexpr std::array values = {Layout::kNCHW, Layout::kNHWC};
  static std::string_view name(Layout v) { return to_string(v); }
  static constexpr const char* field = "layout";
};
template <>
struct EnumText<MathMode> {
  static constexpr std::array values = {MathMode::kTF32, MathMode::kStrictFp32};
  static std::string_view name(MathMode v) { return to_string(v); }
  static constexpr const char* field = "math";
};
template <>
struct EnumText<Activation> {
  static constexpr std::array values = {Activation::kNone, Activation::kRelu};
  static std::string_view name(Activation v) { return to_string(v); }
  static constexpr const char* field = "activation";
};
template <>
struct EnumText<Algorithm> {
  static constexpr std::array values = {Algorithm::kAuto, Algorithm::kDirect, Algorithm::kImplicitGemm,
                                        Algorithm::kIm2colGemm};
  static std::string_view name(Algorithm v) { return to_string(v); }
  static constexpr const char* field = "algorithm";
};
template <>
struct EnumText<LogLevel> {
  static constexpr std::array values = {LogLevel::kError, LogLevel::kWarn, LogLevel::kInfo, LogLevel::kDebug};
  static std::string_view name(LogLevel v) {
    switch (v) {
      case LogLevel::kError:
        return "error";
      case LogLevel::kWarn:
        return "warn";
      case LogLevel::kInfo:
        return "info";
      case LogLevel::kDebug:
        return "debug";
    }
    return "?";
  }
  static constexpr const char* field = "log_level";
};

// Python names of the error codes: identifiers, unlike to_string(ErrorCode)'s prose.
std::string_view code_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument:
      return "invalid_argument";
    case ErrorCode::kUnsupported:
      return "unsupported";
    case ErrorCode::kNoDriver:
      return "no_driver";
    case ErrorCode::kNoDevice:
      return "no_device";
    case ErrorCode::kDriver:
      return "driver";
    case ErrorCode::kContextLost:
      return "context_lost";
    case ErrorCode::kCompile:
      return "compile";
    case ErrorCode::kCublas:
      return "cublas";
    case ErrorCode::kCache:
      return "cache";
    case ErrorCode::kIo:
      return "io";
    case ErrorCode::kInternal:
      return "internal";
  }
  return "internal";
}
constexpr std::array kErrorCodes = {
    ErrorCode::kInvalidArgument, ErrorCode::kUnsupported, ErrorCode::kNoDriver, ErrorCode::kNoDevice,
    ErrorCode::kDriver,          ErrorCode::kContextLost, ErrorCode::kCompile,  ErrorCode::kCublas,
    ErrorCode::kCache,           ErrorCode::kIo,          ErrorCode::kInternal};

template <typename E>
void bind_enum(nb::module_& m, const char* name, const char* doc) {
  nb::enum_<E> e(m, name, doc);
  for (E v : EnumText<E>::values) e.value(std::string(EnumText<E>::name(v)).c_str(), v);
}

// An enum argument given as the enum or as its name ("bf16", "nhwc", "strict", ...).
template <typename E>
E enum_arg(nb::handle value) {
  if (nb::isinstance<E>(value)) return nb::cast<E>(value);
  std::string names;
  for (E v : EnumText<E>::values) {
    if (!names.empty()) names += ", ";
    names += EnumText<E>::name(v);
  }
  if (nb::isinstance<nb::str>(value)) {
    const std::string text = nb::cast<std::string>(value);
    for (E v : EnumText<E>::values) {
      if (EnumText<E>::name(v) == text) return v;
    }
    throw Error(ErrorCode::kInvalidArgument,
                std::string(EnumText<E>::field) + ": expected one of " + names + ", got '" + text + "'");
  }
  throw Error(ErrorCode::kInvalidArgument, std::string(EnumText<E>::field) + ": expected one of " + names +
                                               " (a string or the enum), got " +
                                               nb::cast<std::string>(nb::repr(value)));
}

// An int or an (h, w) pair, for the stride / pad / dilation shorthands.
std::pair<int, int> pair_arg(nb::handle value, const char* field) {
  if (nb::isinstance<nb::int_>(value)) {
    const int v = nb::cast<int>(value);
    return {v, v};
  }
  if (nb::isinstance<nb::tuple>(value) || nb::isinstance<nb::list>(value)) {
    if (nb::len(value) == 2) return {nb::cast<int>(value[0]), nb::cast<int>(value[1])};
  }
  throw Error(ErrorCode::kInvalidArgument, std::string("Conv2dDesc.") + field +
                                               ": expected an int or an (h, w) pair, got " +
                                               nb::cast<std::string>(nb::repr(value)));
}

// Resolves `name` (both sides) against `name_h` / `name_w`: giving both forms is an error.
void apply_pair(nb::handle both, std::optional<int> h, std::optional<int> w, const char* field, int& out_h,
                int& out_w) {
  if (!both.is_none()) {
    if (h || w) {
      throw Error(ErrorCode::kInvalidArgument,
                  std::string("Conv2dDesc: give ") + field + " or " + field + "_h/" + field + "_w, not both");
    }
    std::tie(out_h, out_w) = pair_arg(both, field);
    return;
  }
  if (h) out_h = *h;
  if (w) out_w = *w;
}

// ---- errors ----------------------------------------------------------------------------

// Raises the Python class for `e` (convjit._errors.from_code picks it by code).
void raise_python(const Error& e) {
  nb::object errors = nb::module_::import_("convjit._errors");
  nb::object instance = errors.attr("from_code")(nb::cast(e.code()), e.what());
  PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(instance.ptr())), instance.ptr());
}

// ---- pointers and streams --------------------------------------------------------------

const void* cptr(std::uintptr_t p) { return reinterpret_cast<const void*>(p); }
void* mptr(std::uintptr_t p) { return reinterpret_cast<void*>(p); }
Stream stream_arg(std::uintptr_t s) { return reinterpret_cast<Stream>(s); }

Conv2dArgs make_args(std::uintptr_t x, std::uintptr_t w, std::uintptr_t y, std::uintptr_t bias, std::uintptr_t packed_w,
                     std::uintptr_t workspace, std::uint64_t workspace_bytes) {
  return Conv2dArgs{.x = cptr(x),
                    .w = cptr(w),
                    .packed_w = cptr(packed_w),
                    .bias = cptr(bias),
                    .y = mptr(y),
                    .workspace = mptr(workspace),
                    .workspace_bytes = workspace_bytes};
}

std::string sass_of(const KernelInfo& info) {
  const auto tool = disasm::find_disassembler();
  if (!tool) {
    throw Error(ErrorCode::kUnsupported,
                "KernelInfo.sass() needs nvdisasm or cuobjdump from the CUDA toolkit; neither is in " +
                    disasm::disassembler_search_path() +
                    " (install the toolkit's nvdisasm, e.g. the cuda-nvdisasm package, set CUDA_HOME, or use .ptx)");
  }
  if (info.cubin.empty()) throw Error(ErrorCode::kInternal, "KernelInfo.sass(): no CUBIN for " + info.kernel_name);
  return disasm::sass(*tool, info.cubin);
}

// The fields replace() may change (the settable attributes).
constexpr std::array<std::string_view, 29> kDescFields = {"n",
                                                          "c",
                                                          "h",
                                                          "w",
                                                          "k",
                                                          "r",
                                                          "s",
                                                          "stride_h",
                                                          "stride_w",
                                                          "pad_h",
                                                          "pad_w",
                                                          "dilation_h",
                                                          "dilation_w",
                                                          "groups",
                                                          "bias",
                                                          "activation",
                                                          "dtype",
                                                          "layout",
                                                          "math",
                                                          "spatial_dims",
                                                          "d",
                                                          "t",
                                                          "stride_d",
                                                          "pad_d",
                                                          "dilation_d",
                                                          "transposed",
                                                          "output_padding_d",
                                                          "output_padding_h",
                                                          "output_padding_w"};

std::string desc_repr(const Conv2dDesc& d) { return "convjit.Conv2dDesc('" + d.to_string() + "')"; }

}  // namespace
}  // namespace convjit::python

NB_MODULE(_convjit, m) {
  using namespace convjit;
  using namespace convjit::python;

  m.doc() = "convjit's C++ runtime (the public API of runtime/include/convjit); see the convjit package";
  m.attr("__version__") = kVersion;

  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const Error& e) {
      raise_python(e);
    }
  });

  nb::enum_<ErrorCode> error_code(m, "ErrorCode", "What kind of failure a convjit.Error reports (its .code)");
  for (ErrorCode c : kErrorCodes) error_code.value(std::string(code_name(c)).c_str(), c);
  m.def(
      "describe_error_code", [](ErrorCode c) { return std::string(to_string(c)); },
      "The code in words, e.g. 'invalid argument'");

  bind_enum<DType>(m, "DType", "Element type of x, w, bias and y alike");
  bind_enum<Layout>(m, "Layout",
                    "Tensor layout: nchw, or nhwc (x N,H,W,C; w K,R,S,C/groups as PyTorch's channels-last weight; "
                    "y N,P,Q,K)");
  bind_enum<MathMode>(m, "MathMode", "f32 arithmetic: tf32 (PyTorch's conv default) or strict fp32 accuracy");
  bind_enum<Activation>(m, "Activation", "Applied after the bias, before the store");
  bind_enum<Algorithm>(m, "Algorithm", "How a problem is computed; auto picks per problem");
  bind_enum<LogLevel>(m, "LogLevel", "How much the runtime logs to stderr");
  nb::enum_<DiskCacheMode>(m, "DiskCacheMode", "How a Runtime uses its disk cache")
      .value("read_write", DiskCacheMode::kReadWrite)
      .value("read_only", DiskCacheMode::kReadOnly)
      .value("off", DiskCacheMode::kOff);
  m.def(
      "size_of", [](nb::handle dtype) { return size_of(enum_arg<DType>(dtype)); }, "dtype"_a,
      "Bytes of one element of `dtype`");

  // ---- Conv2dDesc ----------------------------------------------------------------------
  nb::class_<Conv2dDesc> desc(m, "Conv2dDesc",
                              "A 2D convolution problem as a value: input n x c x h x w, filter k x (c / groups) "
                              "x r x s. Defaults match nn.Conv2d's geometry; no bias, f32, nchw, tf32.");
  desc.def(
      "__init__",
      [](Conv2dDesc* self, int n, int c, int h, int w, int k, int r, int s, nb::handle stride,
         std::optional<int> stride_h, std::optional<int> stride_w, nb::handle pad, std::optional<int> pad_h,
         std::optional<int> pad_w, nb::handle dilation, std::optional<int> dilation_h, std::optional<int> dilation_w,
         int groups, bool bias, nb::handle activation, nb::handle dtype, nb::handle layout, nb::handle math) {
        Conv2dDesc d{.n = n, .c = c, .h = h, .w = w, .k = k, .r = r, .s = s, .groups = groups, .bias = bias};
        apply_pair(stride, stride_h, stride_w, "stride", d.stride_h, d.stride_w);
        apply_pair(pad, pad_h, pad_w, "pad", d.pad_h, d.pad_w);
        apply_pair(dilation, dilation_h, dilation_w, "dilation", d.dilation_h, d.dilation_w);
        d.activation = enum_arg<Activation>(activation);
        d.dtype = enum_arg<DType>(dtype);
        d.layout = enum_arg<Layout>(layout);
        d.math = enum_arg<MathMode>(math);
        new (self) Conv2dDesc(d);
      },
      nb::kw_only(), "n"_a = 1, "c"_a = 1, "h"_a = 1, "w"_a = 1, "k"_a = 1, "r"_a = 1, "s"_a = 1,
      "stride"_a = nb::none(), "stride_h"_a = nb::none(), "stride_w"_a = nb::none(), "pad"_a = nb::none(),
      "pad_h"_a = nb::none(), "pad_w"_a = nb::none(), "dilation"_a = nb::none(), "dilation_h"_a = nb::none(),
      "dilation_w"_a = nb::none(), "groups"_a = 1, "bias"_a = false, "activation"_a = nb::cast(Activation::kNone),
      "dtype"_a = nb::cast(DType::kFloat32), "layout"_a = nb::cast(Layout::kNCHW), "math"_a = nb::cast(MathMode::kTF32),
      "Keyword arguments only. stride, pad and dilation take an int or an (h, w) pair; enums also take their "
      "names ('bf16', 'strict', ...). Nothing is checked until validate().");
#define CONVJIT_FIELD(name) desc.def_rw(#name, &Conv2dDesc::name)
  CONVJIT_FIELD(n);
  CONVJIT_FIELD(c);
  CONVJIT_FIELD(h);
  CONVJIT_FIELD(w);
  CONVJIT_FIELD(k);
  CONVJIT_FIELD(r);
  CONVJIT_FIELD(s);
  CONVJIT_FIELD(stride_h);
  CONVJIT_FIELD(stride_w);
  CONVJIT_FIELD(pad_h);
  CONVJIT_FIELD(pad_w);
  CONVJIT_FIELD(dilation_h);
  CONVJIT_FIELD(dilation_w);
  CONVJIT_FIELD(groups);
  CONVJIT_FIELD(bias);
  // 1-D and 3-D, transposed (issue 15): set them as attributes or through replace().
  CONVJIT_FIELD(spatial_dims);
  CONVJIT_FIELD(d);
  CONVJIT_FIELD(t);
  CONVJIT_FIELD(stride_d);
  CONVJIT_FIELD(pad_d);
  CONVJIT_FIELD(dilation_d);
  CONVJIT_FIELD(transposed);
  CONVJIT_FIELD(output_padding_d);
  CONVJIT_FIELD(output_padding_h);
  CONVJIT_FIELD(output_padding_w);
#undef CONVJIT_FIELD
#define CONVJIT_ENUM_FIELD(name, E) \
  desc.def_prop_rw(                 \
      #name, [](const Conv2dDesc& d) { return d.name; }, [](Conv2dDesc& d, nb::handle v) { d.name = enum_arg<E>(v); })
  CONVJIT_ENUM_FIELD(activation, Activation);
  CONVJIT_ENUM_FIELD(dtype, DType);
  CONVJIT_ENUM_FIELD(layout, Layout);
  CONVJIT_ENUM_FIELD(math, MathMode);
#undef CONVJIT_ENUM_FIELD
  desc.def("validate", &Conv2dDesc::validate,
           "Raises convjit.InvalidArgument naming the first bad field; whether an algorithm runs a valid "
           "problem is convjit.why_unsupported's answer")
      .def(
          "output_shape",
          [](const Conv2dDesc& d) {
            const auto o = d.output_shape();
            return std::make_tuple(o.n, o.k, o.p, o.q);
          },
          "(n, k, p, q) of y; validate() first for a guaranteed positive shape")
      .def_prop_ro("x_elements", &Conv2dDesc::x_elements)
      .def_prop_ro("w_elements", &Conv2dDesc::w_elements)
      .def_prop_ro("y_elements", &Conv2dDesc::y_elements)
      .def_prop_ro("flops", &Conv2dDesc::flops, "Multiply-adds times two")
      .def("to_string", &Conv2dDesc::to_string, "The one-line form, e.g. 'n8c64h512w256k128r5s7 stride=1 ...'")
      .def("__str__", &Conv2dDesc::to_string)
      .def("__repr__", &desc_repr)
      .def(nb::self == nb::self)
      .def("__hash__", [](const Conv2dDesc& d) { return Conv2dDescHash{}(d); })
      .def("__copy__", [](const Conv2dDesc& d) { return d; })
      .def(
          "__deepcopy__", [](const Conv2dDesc& d, nb::handle) { return d; }, "memo"_a)
      .def(
          "replace",
          [](const Conv2dDesc& d, nb::kwargs changes) {
            nb::object out = nb::cast(Conv2dDesc(d));
            for (auto [key, value] : changes) {
              const std::string name = nb::cast<std::string>(key);
              if (std::find(kDescFields.begin(), kDescFields.end(), name) == kDescFields.end()) {
                throw Error(ErrorCode::kInvalidArgument, "Conv2dDesc.replace: no field '" + name + "'");
              }
              nb::setattr(out, name.c_str(), value);
            }
            return out;
          },
          "A copy with the given fields changed, e.g. desc.replace(dtype='bf16', layout='nhwc')")
      .def("__getstate__",
           [](const Conv2dDesc& d) {
             return nb::make_tuple(
                 d.n, d.c, d.h, d.w, d.k, d.r, d.s, d.stride_h, d.stride_w, d.pad_h, d.pad_w, d.dilation_h,
                 d.dilation_w, d.groups, d.bias, d.activation, d.dtype, d.layout, d.math,
                 nb::make_tuple(d.spatial_dims, d.d, d.t, d.stride_d, d.pad_d, d.dilation_d, d.transposed,
                                d.output_padding_d, d.output_padding_h, d.output_padding_w));
           })
      .def("__setstate__", [](Conv2dDesc& d, nb::tuple t) {
        new (&d) Conv2dDesc{.n = nb::cast<int>(t[0]),
                            .c = nb::cast<int>(t[1]),
                            .h = nb::cast<int>(t[2]),
                            .w = nb::cast<int>(t[3]),
                            .k = nb::cast<int>(t[4]),
                            .r = nb::cast<int>(t[5]),
                            .s = nb::cast<int>(t[6]),
                            .stride_h = nb::cast<int>(t[7]),
                            .stride_w = nb::cast<int>(t[8]),
                            .pad_h = nb::cast<int>(t[9]),
                            .pad_w = nb::cast<int>(t[10]),
                            .dilation_h = nb::cast<int>(t[11]),
                            .dilation_w = nb::cast<int>(t[12]),
                            .groups = nb::cast<int>(t[13]),
                            .bias = nb::cast<bool>(t[14]),
                            .activation = nb::cast<Activation>(t[15]),
                            .dtype = nb::cast<DType>(t[16]),
                            .layout = nb::cast<Layout>(t[17]),
                            .math = nb::cast<MathMode>(t[18])};
        // States pickled before issue 15 have 19 items: a 2-D forward problem.
        if (t.size() > 19) {
          const nb::tuple nd = nb::cast<nb::tuple>(t[19]);
          d.spatial_dims = nb::cast<int>(nd[0]);
          d.d = nb::cast<int>(nd[1]);
          d.t = nb::cast<int>(nd[2]);
          d.stride_d = nb::cast<int>(nd[3]);
          d.pad_d = nb::cast<int>(nd[4]);
          d.dilation_d = nb::cast<int>(nd[5]);
          d.transposed = nb::cast<bool>(nd[6]);
          d.output_padding_d = nb::cast<int>(nd[7]);
          d.output_padding_h = nb::cast<int>(nd[8]);
          d.output_padding_w = nb::cast<int>(nd[9]);
        }
      });

  // ---- results and reports ---------------------------------------------------------------
  nb::class_<ResourceUsage>(m, "ResourceUsage", "What ptxas reported for a kernel")
      .def_ro("registers", &ResourceUsage::registers)
      .def_ro("static_shared_bytes", &ResourceUsage::static_shared_bytes)
      .def_ro("stack_bytes", &ResourceUsage::stack_bytes)
      .def_ro("spill_store_bytes", &ResourceUsage::spill_store_bytes)
      .def_ro("spill_load_bytes", &ResourceUsage::spill_load_bytes)
      .def("__repr__", [](const ResourceUsage& r) {
        return "ResourceUsage(registers=" + std::to_string(r.registers) +
               ", static_shared_bytes=" + std::to_string(r.static_shared_bytes) +
               ", stack_bytes=" + std::to_string(r.stack_bytes) +
               ", spill_store_bytes=" + std::to_string(r.spill_store_bytes) +
               ", spill_load_bytes=" + std::to_string(r.spill_load_bytes) + ")";
      });

  nb::class_<AlignmentNeeds>(m, "AlignmentNeeds",
                             "Bytes of alignment each pointer needs for the fastest kernel (less runs a variant)")
      .def_ro("x", &AlignmentNeeds::x)
      .def_ro("w", &AlignmentNeeds::w)
      .def_ro("bias", &AlignmentNeeds::bias)
      .def_ro("y", &AlignmentNeeds::y)
      .def(nb::self == nb::self)
      .def("__repr__", [](const AlignmentNeeds& a) {
        return "AlignmentNeeds(x=" + std::to_string(a.x) + ", w=" + std::to_string(a.w) +
               ", bias=" + std::to_string(a.bias) + ", y=" + std::to_string(a.y) + ")";
      });

  nb::class_<KernelInfo>(m, "KernelInfo", "What the runtime generated for one problem (Runtime.inspect)")
      .def_ro("algorithm", &KernelInfo::algorithm)
      .def_ro("tile", &KernelInfo::tile)
      .def_ro("grid_blocks", &KernelInfo::grid_blocks)
      .def_ro("block_threads", &KernelInfo::block_threads)
      .def_ro("dynamic_shared_bytes", &KernelInfo::dynamic_shared_bytes)
      .def_ro("resources", &KernelInfo::resources)
      .def_ro("kernel_name", &KernelInfo::kernel_name)
      .def_ro("arch", &KernelInfo::arch)
      .def_ro("key_hash", &KernelInfo::key_hash)
      .def_ro("source", &KernelInfo::source)
      .def_ro("ptx", &KernelInfo::ptx)
      .def_ro("cubin_bytes", &KernelInfo::cubin_bytes)
      .def_prop_ro("cubin", [](const KernelInfo& i) { return nb::bytes(i.cubin.data(), i.cubin.size()); })
      .def_ro("alignment", &KernelInfo::alignment)
      .def_ro("options", &KernelInfo::options)
      .def_ro("log", &KernelInfo::log)
      .def_ro("cache_path", &KernelInfo::cache_path)
      .def("sass", &sass_of, nb::call_guard<nb::gil_scoped_release>(),
           "The SASS of the CUBIN, through the toolkit's nvdisasm (else cuobjdump -sass), found as `convjit "
           "inspect --sass` finds it; raises convjit.Unsupported when neither is there")
      .def("__repr__", [](const KernelInfo& i) {
        return "KernelInfo(kernel_name='" + i.kernel_name + "', arch='" + i.arch + "', algorithm='" + i.algorithm +
               "', tile='" + i.tile + "')";
      });

  nb::class_<PrewarmResult>(m, "PrewarmResult", "What Runtime.prewarm did")
      .def_ro("compiled", &PrewarmResult::compiled)
      .def_ro("already_cached", &PrewarmResult::already_cached)
      .def_ro("failed", &PrewarmResult::failed)
      .def_ro("errors", &PrewarmResult::errors)
      .def("__repr__", [](const PrewarmResult& r) {
        return "PrewarmResult(compiled=" + std::to_string(r.compiled) +
               ", already_cached=" + std::to_string(r.already_cached) + ", failed=" + std::to_string(r.failed) + ")";
      });

  nb::class_<CacheStats> stats(m, "CacheStats", "Counters since the Runtime was made; every counter only grows");
#define CONVJIT_STAT(name) stats.def_ro(#name, &CacheStats::name)
  CONVJIT_STAT(memory_hits);
  CONVJIT_STAT(disk_hits);
  CONVJIT_STAT(misses);
  CONVJIT_STAT(compiles);
  CONVJIT_STAT(corrupt_rebuilt);
  CONVJIT_STAT(disk_writes);
  CONVJIT_STAT(disk_write_errors);
  CONVJIT_STAT(module_loads);
  CONVJIT_STAT(evictions);
  CONVJIT_STAT(bytes_read);
  CONVJIT_STAT(bytes_written);
  CONVJIT_STAT(lock_waits);
  CONVJIT_STAT(lock_takeovers);
  CONVJIT_STAT(lock_timeouts);
  CONVJIT_STAT(autotune_runs);
  CONVJIT_STAT(autotune_reused);
  CONVJIT_STAT(first_tier_runs);
  CONVJIT_STAT(background_builds);
  CONVJIT_STAT(background_failures);
  CONVJIT_STAT(compile_ms);
  CONVJIT_STAT(compile_ms_saved);
  CONVJIT_STAT(key_ms);
  CONVJIT_STAT(disk_read_ms);
  CONVJIT_STAT(disk_verify_ms);
  CONVJIT_STAT(module_load_ms);
  CONVJIT_STAT(function_load_ms);
  CONVJIT_STAT(disk_mode);
  CONVJIT_STAT(disk_note);
#undef CONVJIT_STAT
  stats.def("as_dict", [](const CacheStats& s) {
    nb::dict d;
    nb::object self = nb::cast(s);
    for (const char* name : {"memory_hits",
                             "disk_hits",
                             "misses",
                             "compiles",
                             "corrupt_rebuilt",
                             "disk_writes",
                             "disk_write_errors",
                             "module_loads",
                             "evictions",
                             "bytes_read",
                             "bytes_written",
                             "lock_waits",
                             "lock_takeovers",
                             "lock_timeouts",
                             "autotune_runs",
                             "autotune_reused",
                             "first_tier_runs",
                             "background_builds",
                             "background_failures",
                             "compile_ms",
                             "compile_ms_saved",
                             "key_ms",
                             "disk_read_ms",
                             "disk_verify_ms",
                             "module_load_ms",
                             "function_load_ms",
                             "disk_mode",
                             "disk_note"}) {
      d[name] = self.attr(name);
    }
    return d;
  });
  stats.def("__repr__", [](const CacheStats& s) {
    return "CacheStats(memory_hits=" + std::to_string(s.memory_hits) + ", disk_hits=" + std::to_string(s.disk_hits) +
           ", misses=" + std::to_string(s.misses) + ", compiles=" + std::to_string(s.compiles) +
           ", module_loads=" + std::to_string(s.module_loads) + ")";
  });

  // ---- Conv2dPlan --------------------------------------------------------------------------
  nb::class_<Conv2dPlan>(m, "Conv2dPlan",
                         "A problem bound to its compiled kernel and to one CUDA context (Runtime.plan). "
                         "Pointers and streams are ints.")
      .def_prop_ro("desc", &Conv2dPlan::desc)
      .def_prop_ro("algorithm", &Conv2dPlan::algorithm)
      .def_prop_ro("workspace_bytes", &Conv2dPlan::workspace_bytes,
                   "Scratch a run given `w` (not `packed_w`) needs, 16-byte aligned")
      .def_prop_ro("packed_weight_bytes", &Conv2dPlan::packed_weight_bytes,
                   "Bytes of the weights in the kernel's own layout; 0 when it reads `w` as it is")
      .def_prop_ro("alignment", &Conv2dPlan::alignment)
      .def_prop_ro("kernel_name", &Conv2dPlan::kernel_name)
      .def_prop_ro("device", &Conv2dPlan::device)
      .def(
          "pack_weights",
          [](const Conv2dPlan& p, std::uintptr_t w, std::uintptr_t packed, std::uintptr_t stream) {
            p.pack_weights(cptr(w), mptr(packed), stream_arg(stream));
          },
          nb::kw_only(), "w"_a, "packed"_a, "stream"_a = 0, nb::call_guard<nb::gil_scoped_release>(),
          "Enqueues the pack of `w` into `packed` (packed_weight_bytes bytes) on `stream`")
      .def(
          "prepare", [](const Conv2dPlan& p, std::uintptr_t stream) { p.prepare(stream_arg(stream)); }, "stream"_a = 0,
          nb::call_guard<nb::gil_scoped_release>(),
          "Makes the plan's own per-stream workspace now, before a graph capture on `stream`")
      .def(
          "run",
          [](const Conv2dPlan& p, std::uintptr_t x, std::uintptr_t w, std::uintptr_t y, std::uintptr_t bias,
             std::uintptr_t packed_w, std::uintptr_t workspace, std::uint64_t workspace_bytes, std::uintptr_t stream) {
            p.run(make_args(x, w, y, bias, packed_w, workspace, workspace_bytes), stream_arg(stream));
          },
          nb::kw_only(), "x"_a, "w"_a = 0, "y"_a, "bias"_a = 0, "packed_w"_a = 0, "workspace"_a = 0,
          "workspace_bytes"_a = 0, "stream"_a = 0, nb::call_guard<nb::gil_scoped_release>(),
          "Enqueues y = conv2d(x, w) (+ bias) on `stream` (Conv2dArgs); 0 is a null pointer / the default stream");

  // ---- Runtime -----------------------------------------------------------------------------
  nb::class_<Runtime>(m, "Runtime",
                      "Compiles a kernel per problem at first use, keeps it on disk and in memory, launches it. "
                      "Thread-safe; one serves every device of the process.")
      .def(
          "__init__",
          [](Runtime* self, std::optional<std::filesystem::path> cache_dir, bool disk_cache, int device,
             std::uint64_t workspace_limit_bytes, std::optional<bool> autotune, nb::handle log_level,
             std::optional<bool> cache_readonly, std::optional<std::uint64_t> cache_max_bytes,
             std::optional<bool> first_tier) {
            RuntimeOptions options{.cache_dir = cache_dir.value_or(std::filesystem::path{}),
                                   .disk_cache = disk_cache,
                                   .device = device,
                                   .workspace_limit_bytes = workspace_limit_bytes,
                                   .autotune = autotune,
                                   .cache_readonly = cache_readonly,
                                   .cache_max_bytes = cache_max_bytes};
            options.first_tier = first_tier;
            if (!log_level.is_none()) options.log_level = enum_arg<LogLevel>(log_level);
            nb::gil_scoped_release release;
            new (self) Runtime(std::move(options));
          },
          nb::kw_only(), "cache_dir"_a = nb::none(), "disk_cache"_a = true, "device"_a = 0,
          "workspace_limit_bytes"_a = 0, "autotune"_a = nb::none(), "log_level"_a = nb::none(),
          "cache_readonly"_a = nb::none(), "cache_max_bytes"_a = nb::none(), "first_tier"_a = nb::none(),
          "RuntimeOptions as keywords; None takes the environment's setting (CONVJIT_CACHE_DIR, ...)")
      .def("wait_for_compiles", &Runtime::wait_for_compiles, nb::call_guard<nb::gil_scoped_release>(),
           "Returns once every kernel the first tier stands in for is built (or failed): before capturing graphs "
           "or timing")
      .def(
          "plan",
          [](Runtime& rt, const Conv2dDesc& d, nb::handle algorithm, std::uintptr_t stream, std::optional<int> device) {
            const PlanOptions options{
                .algorithm = enum_arg<Algorithm>(algorithm), .stream = stream_arg(stream), .device = device};
            nb::gil_scoped_release release;
            return rt.plan(d, options);
          },
          "desc"_a, nb::kw_only(), "algorithm"_a = nb::cast(Algorithm::kAuto), "stream"_a = 0, "device"_a = nb::none(),
          nb::keep_alive<0, 1>(),
          "Compiles (or finds) the kernel and binds it to a context: `device`'s primary context, else the "
          "stream's, else the current one")
      .def(
          "conv2d",
          [](Runtime& rt, const Conv2dDesc& d, std::uintptr_t x, std::uintptr_t w, std::uintptr_t y,
             std::uintptr_t bias, std::uintptr_t packed_w, std::uintptr_t workspace, std::uint64_t workspace_bytes,
             std::uintptr_t stream) {
            rt.conv2d(d, make_args(x, w, y, bias, packed_w, workspace, workspace_bytes), stream_arg(stream));
          },
          "desc"_a, nb::kw_only(), "x"_a, "w"_a = 0, "y"_a, "bias"_a = 0, "packed_w"_a = 0, "workspace"_a = 0,
          "workspace_bytes"_a = 0, "stream"_a = 0, nb::call_guard<nb::gil_scoped_release>(),
          "y = conv2d(x, w) (+ bias) on device pointers, in the stream's context; compiles on first use")
      .def(
          "prewarm",
          [](Runtime& rt, std::vector<Conv2dDesc> descs, std::optional<std::string> arch) {
            return rt.prewarm(descs, std::move(arch));
          },
          "descs"_a, "arch"_a = nb::none(), nb::call_guard<nb::gil_scoped_release>(),
          "Compiles and caches every descriptor; with `arch` (e.g. 'sm_90') no GPU is needed")
      .def("source", &Runtime::source, "desc"_a, "arch"_a = nb::none(), nb::call_guard<nb::gil_scoped_release>(),
           "The specialized CUDA source of the kernel inspect() shows; with `arch` no GPU is needed, never a compile")
      .def("ptx", &Runtime::ptx, "desc"_a, "arch"_a = nb::none(), nb::call_guard<nb::gil_scoped_release>(),
           "The PTX (compiling or reading the cache); with `arch` no GPU is needed")
      .def(
          "inspect",
          [](Runtime& rt, const Conv2dDesc& d, std::optional<std::string> arch, nb::handle algorithm) {
            const PlanOptions options{.algorithm = enum_arg<Algorithm>(algorithm)};
            nb::gil_scoped_release release;
            return rt.inspect(d, std::move(arch), options);
          },
          "desc"_a, "arch"_a = nb::none(), nb::kw_only(), "algorithm"_a = nb::cast(Algorithm::kAuto),
          "Source, PTX, CUBIN, resources and launch geometry of the kernel for `desc`; with `arch` no GPU is needed")
      .def(
          "synchronize", [](Runtime& rt, std::uintptr_t stream) { rt.synchronize(stream_arg(stream)); }, "stream"_a = 0,
          nb::call_guard<nb::gil_scoped_release>())
      .def("stats", &Runtime::stats)
      .def_prop_ro("cache_dir", &Runtime::cache_dir)
      .def("device_arch", &Runtime::device_arch, nb::call_guard<nb::gil_scoped_release>(),
           "The device's arch, e.g. 'sm_90'; raises convjit.NoDriver / NoDevice without a GPU");

  m.def(
      "why_unsupported",
      [](const Conv2dDesc& d, nb::handle algorithm, std::optional<std::string> arch) {
        return why_unsupported(d, enum_arg<Algorithm>(algorithm), arch.value_or(""));
      },
      "desc"_a, "algorithm"_a = nb::cast(Algorithm::kAuto), "arch"_a = nb::none(),
      "Why this version cannot run desc with algorithm (auto: any) for arch, or None when it can. No GPU needed.");
  m.def("default_cache_dir", &default_cache_dir, "The cache directory the environment names");
  m.def(
      "find_disassembler",
      []() -> std::optional<std::filesystem::path> {
        if (auto tool = disasm::find_disassembler()) return tool->program;
        return std::nullopt;
      },
      "The nvdisasm (else cuobjdump) KernelInfo.sass() would run, or None");
  m.def("disassembler_search_path", &disasm::disassembler_search_path, "Where find_disassembler looks");
}
