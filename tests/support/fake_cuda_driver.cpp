// The fake CUDA driver (see fake_cuda_driver.hpp): every entry point the runtime lists
// in driver/cuda_driver.hpp, served from host memory and tables, with injected faults.
// Built as libcuda.so.1; nothing here is linked into the runtime itself.
#include "support/fake_cuda_driver.hpp"

#include <elf.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <unordered_map>

#include "driver/cuda_driver.hpp"  // CONVJIT_DRIVER_ENTRY_POINTS: the list the fake must serve

namespace {

using convjit::testing::FakeLaunch;

constexpr int kMultiprocessors = 132;
constexpr int kOptinSharedBytes = 227 * 1024;  // Hopper's per-block opt-in limit
constexpr int kDefaultDynamicSharedBytes = 48 * 1024;
constexpr std::size_t kAllocationAlign = 256;
// Device memory is host memory: a bound keeps a runaway test from eating the machine.
constexpr std::size_t kDeviceMemoryBytes = std::size_t{1} << 30;

struct Context {
  unsigned long long id = 0;
  bool primary = false;
  bool destroyed = false;  // a created context after cuCtxDestroy, or the primary with no reference
  int references = 0;      // primary only
};

struct Allocation {
  std::size_t bytes = 0;
  Context* context = nullptr;
  void* memory = nullptr;
  bool holds_primary = false;  // made by the test: holds a primary-context reference
};

struct KernelParam {
  unsigned ordinal = 0;
  unsigned size = 0;
};

struct Module;
struct Function {
  Module* module = nullptr;
  std::string name;
  std::optional<std::vector<KernelParam>> params;  // from the CUBIN; unknown for other images
  int max_dynamic_shared = kDefaultDynamicSharedBytes;
};

struct Module {
  Context* context = nullptr;
  std::string image;
  bool elf = false;
  std::map<std::string, std::unique_ptr<Function>, std::less<>> functions;
};

struct Stream {
  Context* context = nullptr;
  unsigned flags = 0;
  bool capturing = false;
  bool invalidated = false;
  bool holds_primary = false;
};

struct Event {
  Context* context = nullptr;
  bool recorded = false;
};

struct Fault {
  CUresult result = CUDA_SUCCESS;
  int remaining = 0;  // < 0: forever
};

struct State {
  std::mutex mutex;
  bool initialized = false;
  Context* primary = nullptr;
  // NOTE: contexts are never freed: a destroyed one's handle must keep answering
  // CUDA_ERROR_CONTEXT_IS_DESTROYED, and other threads may still have it on their stacks.
  std::vector<std::unique_ptr<Context>> contexts;
  unsigned long long next_context_id = 1;
  std::map<CUdeviceptr, Allocation> allocations;  // by base address
  std::size_t allocated_bytes = 0;
  std::map<Module*, std::unique_ptr<Module>> modules;
  std::map<Function*, Function*> functions;  // live function handles
  std::map<Stream*, std::unique_ptr<Stream>> streams;
  std::map<Event*, std::unique_ptr<Event>> events;

  std::unordered_map<std::string, Fault> faults;
  std::unordered_map<std::string, std::uint64_t> calls;
  std::vector<FakeLaunch> launches;
  std::uint64_t allocation_count = 0;
  std::uint64_t module_load_count = 0;
  std::uint64_t invalidations = 0;
  std::uint64_t destroyed_with_context = 0;
  std::string last_image;
  std::vector<convjit::testing::FakeIm2colEncode> im2col_encodes;
  std::vector<convjit::testing::FakeTiledEncode> tiled_encodes;

  State() {
    contexts.push_back(std::make_unique<Context>());
    primary = contexts.back().get();
    primary->id = next_context_id++;
    primary->primary = true;
    primary->destroyed = true;  // until the first retain
  }
};

// NOTE: never destroyed: the runtime's own static objects may still call the driver
// while the process exits.
State& state() {
  static State* s = new State();
  return *s;
}

// Per thread, like the real driver's: the context stack and the stream-capture mode.
thread_local std::vector<Context*> tls_context_stack;
thread_local CUstreamCaptureMode tls_capture_mode = CU_STREAM_CAPTURE_MODE_GLOBAL;

CUcontext handle(Context* context) { return reinterpret_cast<CUcontext>(context); }

bool is_special(CUstream stream) {
  return stream == nullptr || stream == CU_STREAM_LEGACY || stream == CU_STREAM_PER_THREAD;
}

Context* find_context(State& s, CUcontext context) {
  for (const auto& c : s.contexts) {
    if (handle(c.get()) == context) return c.get();
  }
  return nullptr;
}

Context* current_context() { return tls_context_stack.empty() ? nullptr : tls_context_stack.back(); }

// The context a call that needs one runs in, or why there is none.
CUresult usable_current(Context*& out) {
  out = current_context();
  if (out == nullptr) return CUDA_ERROR_INVALID_CONTEXT;
  if (out->destroyed) return CUDA_ERROR_CONTEXT_IS_DESTROYED;
  return CUDA_SUCCESS;
}

Stream* find_stream(State& s, CUstream stream) {
  auto it = s.streams.find(reinterpret_cast<Stream*>(stream));
  return it == s.streams.end() ? nullptr : it->second.get();
}

// The lookup an allocation-range question makes: the allocation holding `address`.
Allocation* allocation_containing(State& s, CUdeviceptr address, CUdeviceptr* base = nullptr) {
  auto it = s.allocations.upper_bound(address);
  if (it == s.allocations.begin()) return nullptr;
  --it;
  if (address >= it->first + it->second.bytes) return nullptr;
  if (base != nullptr) *base = it->first;
  return &it->second;
}

void invalidate_captures(State& s, Context* only_blocking_in = nullptr) {
  for (auto& [key, stream] : s.streams) {
    if (!stream->capturing || stream->invalidated) continue;
    if (only_blocking_in != nullptr &&
        (stream->context != only_blocking_in || (stream->flags & CU_STREAM_NON_BLOCKING) != 0)) {
      continue;
    }
    stream->invalidated = true;
    ++s.invalidations;
  }
}

// Calls that allocate, free, load or synchronize are illegal while a stream captures,
// unless the calling thread relaxed its capture mode; the capture is invalidated.
bool capture_forbids(State& s) {
  if (tls_capture_mode == CU_STREAM_CAPTURE_MODE_RELAXED) return false;
  const bool any = std::any_of(s.streams.begin(), s.streams.end(), [](const auto& e) { return e.second->capturing; });
  if (any) invalidate_captures(s);
  return any;
}

void release_memory(State& s, std::map<CUdeviceptr, Allocation>::iterator it) {
  s.allocated_bytes -= it->second.bytes;
  std::free(it->second.memory);
  s.allocations.erase(it);
}

void destroy_module(State& s, std::map<Module*, std::unique_ptr<Module>>::iterator it) {
  for (const auto& [name, function] : it->second->functions) s.functions.erase(function.get());
  s.modules.erase(it);
}

// What a context takes with it: every allocation, module, stream and event made in it.
// Allocations and modules still there were not freed by their owner in time.
void destroy_context_objects(State& s, Context* context) {
  for (auto it = s.allocations.begin(); it != s.allocations.end();) {
    auto next = std::next(it);
    if (it->second.context == context) {
      ++s.destroyed_with_context;
      release_memory(s, it);
    }
    it = next;
  }
  for (auto it = s.modules.begin(); it != s.modules.end();) {
    auto next = std::next(it);
    if (it->second->context == context) {
      ++s.destroyed_with_context;
      destroy_module(s, it);
    }
    it = next;
  }
  std::erase_if(s.streams, [&](const auto& e) { return e.second->context == context; });
  std::erase_if(s.events, [&](const auto& e) { return e.second->context == context; });
}

void retain_primary(State& s) {
  if (s.primary->references++ == 0) s.primary->destroyed = false;
}

CUresult release_primary(State& s) {
  if (s.primary->references == 0) return CUDA_ERROR_INVALID_CONTEXT;
  if (--s.primary->references == 0) {
    destroy_context_objects(s, s.primary);
    s.primary->destroyed = true;
  }
  return CUDA_SUCCESS;
}

// ---- CUBIN reading: which kernels a module has, and each kernel's parameters ----

// The bytes of an image whose size the caller does not pass: an ELF's extent from its
// headers, else a NUL-terminated text (PTX).
std::string copy_image(const void* image, bool& elf) {
  const auto* bytes = static_cast<const unsigned char*>(image);
  elf = std::memcmp(bytes, ELFMAG, SELFMAG) == 0 && bytes[EI_CLASS] == ELFCLASS64;
  if (!elf) return std::string(static_cast<const char*>(image));
  Elf64_Ehdr header;
  std::memcpy(&header, bytes, sizeof(header));
  std::size_t end =
      std::max<std::size_t>(sizeof(header), header.e_shoff + std::size_t{header.e_shnum} * header.e_shentsize);
  end = std::max<std::size_t>(end, header.e_phoff + std::size_t{header.e_phnum} * header.e_phentsize);
  for (unsigned i = 0; i < header.e_shnum; ++i) {
    Elf64_Shdr section;
    std::memcpy(&section, bytes + header.e_shoff + std::size_t{i} * header.e_shentsize, sizeof(section));
    if (section.sh_type != SHT_NOBITS) end = std::max<std::size_t>(end, section.sh_offset + section.sh_size);
  }
  return std::string(reinterpret_cast<const char*>(bytes), end);
}

// The contents of the section called `name`, if the ELF image has one.
std::optional<std::string_view> elf_section(const std::string& image, std::string_view name) {
  Elf64_Ehdr header;
  std::memcpy(&header, image.data(), sizeof(header));
  const auto section_at = [&](unsigned i) {
    Elf64_Shdr section;
    std::memcpy(&section, image.data() + header.e_shoff + std::size_t{i} * header.e_shentsize, sizeof(section));
    return section;
  };
  if (header.e_shstrndx >= header.e_shnum) return std::nullopt;
  const Elf64_Shdr names = section_at(header.e_shstrndx);
  for (unsigned i = 0; i < header.e_shnum; ++i) {
    const Elf64_Shdr section = section_at(i);
    if (section.sh_name >= names.sh_size) continue;
    if (std::string_view(image.data() + names.sh_offset + section.sh_name) == name) {
      return std::string_view(image.data() + section.sh_offset, section.sh_size);
    }
  }
  return std::nullopt;
}

// A kernel's parameters from its .nv.info.<kernel> section: attribute records of a format
// byte and an attribute byte; format 4 carries a 16-bit size and that many bytes, the
// others a 16-bit value. EIATTR_KPARAM_INFO (0x17) describes one parameter: index (4
// bytes), ordinal (2), offset (2), then a word whose bits 18..31 are its size in bytes.
std::optional<std::vector<KernelParam>> kernel_params(const std::string& image, const std::string& kernel) {
  const auto info = elf_section(image, ".nv.info." + kernel);
  if (!info) return std::vector<KernelParam>{};  // no attributes: a kernel without parameters
  constexpr unsigned char kFormatSized = 0x04;
  constexpr unsigned char kParamInfo = 0x17;
  std::vector<KernelParam> params;
  std::size_t at = 0;
  while (at + 4 <= info->size()) {
    const auto format = static_cast<unsigned char>((*info)[at]);
    const auto attribute = static_cast<unsigned char>((*info)[at + 1]);
    std::uint16_t value = 0;
    std::memcpy(&value, info->data() + at + 2, 2);
    if (format != kFormatSized) {
      at += 4;
      continue;
    }
    if (at + 4 + value > info->size()) return std::nullopt;
    if (attribute == kParamInfo && value >= 12) {
      std::uint16_t ordinal = 0;
      std::uint32_t word = 0;
      std::memcpy(&ordinal, info->data() + at + 8, 2);
      std::memcpy(&word, info->data() + at + 12, 4);
      params.push_back({ordinal, (word >> 18) & 0x3fff});
    }
    at += 4 + value;
  }
  std::sort(params.begin(), params.end(), [](const auto& a, const auto& b) { return a.ordinal < b.ordinal; });
  return params;
}

// ---- the entry points, each with the signature cuda_driver.hpp lists ----

CUresult impl_cuInit(unsigned flags) {
  if (flags != 0) return CUDA_ERROR_INVALID_VALUE;
  std::lock_guard lock(state().mutex);
  state().initialized = true;
  return CUDA_SUCCESS;
}

CUresult impl_cuDriverGetVersion(int* version) {
  if (version == nullptr) return CUDA_ERROR_INVALID_VALUE;
  *version = CUDA_VERSION;  // the toolkit the tests were built with
  return CUDA_SUCCESS;
}

struct ErrorText {
  CUresult code;
  const char* name;
  const char* text;
};
constexpr ErrorText kErrors[] = {
    {CUDA_SUCCESS, "CUDA_SUCCESS", "no error"},
    {CUDA_ERROR_INVALID_VALUE, "CUDA_ERROR_INVALID_VALUE", "invalid argument"},
    {CUDA_ERROR_OUT_OF_MEMORY, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory"},
    {CUDA_ERROR_NOT_INITIALIZED, "CUDA_ERROR_NOT_INITIALIZED", "initialization error"},
    {CUDA_ERROR_NO_DEVICE, "CUDA_ERROR_NO_DEVICE", "no CUDA-capable device is detected"},
    {CUDA_ERROR_INVALID_DEVICE, "CUDA_ERROR_INVALID_DEVICE", "invalid device ordinal"},
    {CUDA_ERROR_INVALID_IMAGE, "CUDA_ERROR_INVALID_IMAGE", "device kernel image is invalid"},
    {CUDA_ERROR_INVALID_CONTEXT, "CUDA_ERROR_INVALID_CONTEXT", "invalid device context"},
    {CUDA_ERROR_NO_BINARY_FOR_GPU, "CUDA_ERROR_NO_BINARY_FOR_GPU",
     "no kernel image is available for execution on the device"},
    {CUDA_ERROR_ECC_UNCORRECTABLE, "CUDA_ERROR_ECC_UNCORRECTABLE", "uncorrectable ECC error encountered"},
    {CUDA_ERROR_INVALID_PTX, "CUDA_ERROR_INVALID_PTX", "a PTX JIT compilation failed"},
    {CUDA_ERROR_INVALID_HANDLE, "CUDA_ERROR_INVALID_HANDLE", "invalid resource handle"},
    {CUDA_ERROR_NOT_FOUND, "CUDA_ERROR_NOT_FOUND", "named symbol not found"},
    {CUDA_ERROR_NOT_READY, "CUDA_ERROR_NOT_READY", "device not ready"},
    {CUDA_ERROR_ILLEGAL_ADDRESS, "CUDA_ERROR_ILLEGAL_ADDRESS", "an illegal memory access was encountered"},
    {CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES, "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES",
     "too many resources requested for launch"},
    {CUDA_ERROR_LAUNCH_FAILED, "CUDA_ERROR_LAUNCH_FAILED", "unspecified launch failure"},
    {CUDA_ERROR_MISALIGNED_ADDRESS, "CUDA_ERROR_MISALIGNED_ADDRESS", "misaligned address"},
    {CUDA_ERROR_CONTEXT_IS_DESTROYED, "CUDA_ERROR_CONTEXT_IS_DESTROYED", "context is destroyed"},
    {CUDA_ERROR_NOT_SUPPORTED, "CUDA_ERROR_NOT_SUPPORTED", "operation not supported"},
    {CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED, "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED",
     "operation not permitted when stream is capturing"},
    {CUDA_ERROR_STREAM_CAPTURE_INVALIDATED, "CUDA_ERROR_STREAM_CAPTURE_INVALIDATED",
     "operation failed due to a previous error during capture"},
    {CUDA_ERROR_STREAM_CAPTURE_IMPLICIT, "CUDA_ERROR_STREAM_CAPTURE_IMPLICIT",
     "operation would make the legacy stream depend on a capturing blocking stream"},
    {CUDA_ERROR_UNKNOWN, "CUDA_ERROR_UNKNOWN", "unknown error"},
};

CUresult impl_cuGetErrorName(CUresult code, const char** name) {
  if (name == nullptr) return CUDA_ERROR_INVALID_VALUE;
  for (const auto& e : kErrors) {
    if (e.code == code) {
      *name = e.name;
      return CUDA_SUCCESS;
    }
  }
  *name = nullptr;
  return CUDA_ERROR_INVALID_VALUE;
}

CUresult impl_cuGetErrorString(CUresult code, const char** text) {
  if (text == nullptr) return CUDA_ERROR_INVALID_VALUE;
  for (const auto& e : kErrors) {
    if (e.code == code) {
      *text = e.text;
      return CUDA_SUCCESS;
    }
  }
  *text = nullptr;
  return CUDA_ERROR_INVALID_VALUE;
}

CUresult impl_cuDeviceGet(CUdevice* device, int ordinal) {
  if (device == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (ordinal != 0) return CUDA_ERROR_INVALID_DEVICE;
  *device = 0;
  return CUDA_SUCCESS;
}

CUresult impl_cuDeviceGetCount(int* count) {
  if (count == nullptr) return CUDA_ERROR_INVALID_VALUE;
  *count = 1;
  return CUDA_SUCCESS;
}

CUresult impl_cuDeviceGetAttribute(int* value, CUdevice_attribute attribute, CUdevice device) {
  if (value == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (device != 0) return CUDA_ERROR_INVALID_DEVICE;
  switch (attribute) {
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR:
      *value = 9;
      break;
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR:
      *value = 0;
      break;
    case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT:
      *value = kMultiprocessors;
      break;
    case CU_DEVICE_ATTRIBUTE_PAGEABLE_MEMORY_ACCESS:
      *value = 0;
      break;
    case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK:
      *value = 1024;
      break;
    case CU_DEVICE_ATTRIBUTE_WARP_SIZE:
      *value = 32;
      break;
    case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK:
      *value = kDefaultDynamicSharedBytes;
      break;
    case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN:
      *value = kOptinSharedBytes;
      break;
    case CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING:
      *value = 1;
      break;
    default:
      // NOTE: an attribute the fake does not model fails loudly rather than answering 0.
      return CUDA_ERROR_INVALID_VALUE;
  }
  return CUDA_SUCCESS;
}

CUresult impl_cuDeviceGetName(char* name, int length, CUdevice device) {
  if (name == nullptr || length <= 0) return CUDA_ERROR_INVALID_VALUE;
  if (device != 0) return CUDA_ERROR_INVALID_DEVICE;
  std::snprintf(name, static_cast<std::size_t>(length), "%s", "Fake H200");
  return CUDA_SUCCESS;
}

CUresult impl_cuDevicePrimaryCtxRetain(CUcontext* context, CUdevice device) {
  if (context == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (device != 0) return CUDA_ERROR_INVALID_DEVICE;
  auto& s = state();
  std::lock_guard lock(s.mutex);
  retain_primary(s);
  *context = handle(s.primary);
  return CUDA_SUCCESS;
}

CUresult impl_cuDevicePrimaryCtxRelease(CUdevice device) {
  if (device != 0) return CUDA_ERROR_INVALID_DEVICE;
  auto& s = state();
  std::lock_guard lock(s.mutex);
  return release_primary(s);
}

CUresult impl_cuDevicePrimaryCtxGetState(CUdevice device, unsigned* flags, int* active) {
  if (flags == nullptr || active == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (device != 0) return CUDA_ERROR_INVALID_DEVICE;
  auto& s = state();
  std::lock_guard lock(s.mutex);
  *flags = 0;
  *active = s.primary->references > 0 ? 1 : 0;
  return CUDA_SUCCESS;
}

CUresult destroy_created_context(State& s, CUcontext context) {
  Context* c = find_context(s, context);
  if (c == nullptr || c->primary) return CUDA_ERROR_INVALID_CONTEXT;
  if (c->destroyed) return CUDA_ERROR_CONTEXT_IS_DESTROYED;
  destroy_context_objects(s, c);
  c->destroyed = true;
  return CUDA_SUCCESS;
}

CUresult impl_cuCtxDestroy(CUcontext context) {
  auto& s = state();
  std::lock_guard lock(s.mutex);
  const CUresult res = destroy_created_context(s, context);
  if (res == CUDA_SUCCESS && current_context() == find_context(s, context)) tls_context_stack.pop_back();
  return res;
}

CUresult impl_cuCtxGetId(CUcontext context, unsigned long long* id) {
  if (id == nullptr) return CUDA_ERROR_INVALID_VALUE;
  auto& s = state();
  std::lock_guard lock(s.mutex);
  Context* c = context == nullptr ? current_context() : find_context(s, context);
  if (c == nullptr) return CUDA_ERROR_INVALID_CONTEXT;
  if (c->destroyed) return CUDA_ERROR_CONTEXT_IS_DESTROYED;
  *id = c->id;
  return CUDA_SUCCESS;
}

CUresult impl_cuCtxGetDevice(CUdevice* device) {
  if (device == nullptr) return CUDA_ERROR_INVALID_VALUE;
  std::lock_guard lock(state().mutex);
  Context* c = nullptr;
  if (const CUresult res = usable_current(c); res != CUDA_SUCCESS) return res;
  *device = 0;
  return CUDA_SUCCESS;
}

CUresult impl_cuCtxGetCurrent(CUcontext* context) {
  if (context == nullptr) return CUDA_ERROR_INVALID_VALUE;
  *context = handle(current_context());
  return CUDA_SUCCESS;
}

CUresult impl_cuCtxSetCurrent(CUcontext context) {
  auto& s = state();
  std::lock_guard lock(s.mutex);
  if (context == nullptr) {
    if (!tls_context_stack.empty()) tls_context_stack.pop_back();
    return CUDA_SUCCESS;
  }
  Context* c = find_context(s, context);
  if (c == nullptr) return CUDA_ERROR_INVALID_CONTEXT;
  if (tls_context_stack.empty()) {
    tls_context_stack.push_back(c);
  } else {
    tls_context_stack.back() = c;
  }
  return CUDA_SUCCESS;
}

CUresult impl_cuCtxPushCurrent(CUcontext context) {
  auto& s = state();
  std::lock_guard lock(s.mutex);
  Context* c = find_context(s, context);
  if (c == nullptr) return CUDA_ERROR_INVALID_CONTEXT;
  tls_context_stack.push_back(c);
  return CUDA_SUCCESS;
}

CUresult impl_cuCtxPopCurrent(CUcontext* context) {
  if (tls_context_stack.empty()) return CUDA_ERROR_INVALID_CONTEXT;
  if (context != nullptr) *context = handle(tls_context_stack.back());
  tls_context_stack.pop_back();
  return CUDA_SUCCESS;
}

CUresult impl_cuCtxSynchronize() {
  auto& s = state();
  std::lock_guard lock(s.mutex);
  Context* c = nullptr;
  if (const CUresult res = usable_current(c); res != CUDA_SUCCESS) return res;
  if (capture_forbids(s)) return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
  return CUDA_SUCCESS;
}

CUresult impl_cuModuleLoadData(CUmodule* module, const void* image) {
  if (module == nullptr || image == nullptr) return CUDA_ERROR_INVALID_VALUE;
  auto& s = state();
  std::lock_guard lock(s.mutex);
  Context* c = nullptr;
  if (const CUresult res = usable_current(c); res != CUDA_SUCCESS) return res;
  if (capture_forbids(s)) return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
  if (*static_cast<const char*>(image) == '\0') return CUDA_ERROR_INVALID_IMAGE;
  auto m = std::make_unique<Module>();
  m->context = c;
  m->image = copy_image(image, m->elf);
  s.last_image = m->image;
  ++s.module_load_count;
  *module = reinterpret_cast<CUmodule>(m.get());
  s.modules.emplace(m.get(), std::move(m));
  return CUDA_SUCCESS;
}

CUresult impl_cuModuleUnload(CUmodule module) {
  auto& s = state();
  std::lock_guard lock(s.mutex);
  auto it = s.modules.find(reinterpret_cast<Module*>(module));
  if (it == s.modules.end()) return CUDA_ERROR_INVALID_HANDLE;
  if (capture_forbids(s)) return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
  destroy_module(s, it);
  return CUDA_SUCCESS;
}

CUresult impl_cuModuleGetFunction(CUfunction* function, CUmodule module, const char* name) {
  if (function == nullptr || name == nullptr) return CUDA_ERROR_INVALID_VALUE;
  auto& s = state();
  std::lock_guard lock(s.mutex);
  auto it = s.modules.find(reinterpret_cast<Module*>(module));
  if (it == s.modules.end()) return CUDA_ERROR_INVALID_HANDLE;
  Module& m = *it->second;
  if (auto found = m.functions.find(name); found != m.functions.end()) {
    *function = reinterpret_cast<CUfunction>(found->second.get());
    return CUDA_SUCCESS;
  }
  auto f = std::make_unique<Function>();
  f->module = &m;
  f->name = name;
  if (m.elf) {
    // A CUBIN holds each kernel's code in .text.<kernel>: any other name is not there.
    if (!elf_section(m.image, ".text." + f->name)) return CUDA_ERROR_NOT_FOUND;
    f->params = kernel_params(m.image, f->name);
  }
  *function = reinterpret_cast<CUfunction>(f.get());
  s.functions.emplace(f.get(), f.get());
  m.functions.emplace(f->name, std::move(f));
  return CUDA_SUCCESS;
}

Function* find_function(State& s, CUfunction function) {
  auto it = s.functions.find(reinterpret_cast<Function*>(function));
  return it == s.functions.end() ? nullptr : it->second;
}

CUresult impl_cuFuncGetAttribute(int* value, CUfunction_attribute attribute, CUfunction function) {
  if (value == nullptr) return CUDA_ERROR_INVALID_VALUE;
  auto& s = state();
  std::lock_guard lock(s.mutex);
  Function* f = find_function(s, function);
  if (f == nullptr) return CUDA_ERROR_INVALID_HANDLE;
  switch (attribute) {
    case CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES:
      *value = f->max_dynamic_shared;
      break;
    case CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK:
      *value = 1024;
      break;
    case CU_FUNC_ATTRIBUTE_NUM_REGS:
      *value = 64;
      break;
    case CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES:
    case CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES:
      *value = 0;
      break;
    default:
      return CUDA_ERROR_INVALID_VALUE;
  }
  return CUDA_SUCCESS;
}

// The runtime resolves cuFuncLoad only where the driver has it (CUDA 12.4 and later).
CUresult impl_cuFuncLoad(CUfunction function) { return function == nullptr ? CUDA_ERROR_INVALID_HANDLE : CUDA_SUCCESS; }

CUresult impl_cuFuncSetAttribute(CUfunction function, CUfunction_attribute attribute, int value) {
  auto& s = state();
  std::lock_guard lock(s.mutex);
  Function* f = find_function(s, function);
  if (f == nullptr) return CUDA_ERROR_INVALID_HANDLE;
  switch (attribute) {
    case CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES:
      if (value < 0 || value > kOptinSharedBytes) return CUDA_ERROR_INVALID_VALUE;
      f->max_dynamic_shared = value;
      return CUDA_SUCCESS;
    case CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT:
      return value >= -1 && value <= 100 ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
    default:
      return CUDA_ERROR_INVALID_VALUE;
  }
}

CUresult impl_cuLaunchKernel(CUfunction function, unsigned grid_x, unsigned grid_y, unsigned grid_z, unsigned block_x,
                             unsigned block_y, unsigned block_z, unsigned shared_bytes, CUstream stream, void** params,
                             void** extra) {
  auto& s = state();
  std::lock_guard lock(s.mutex);
  Context* c = nullptr;
  if (const CUresult res = usable_current(c); res != CUDA_SUCCESS) return res;
  Function* f = find_function(s, function);
  // A function runs in the context its module was loaded in, and only there.
  if (f == nullptr || f->module->context != c) return CUDA_ERROR_INVALID_HANDLE;
  bool captured = false;
  if (is_special(stream)) {
    // The legacy stream waits for every blocking stream of its context: a capturing one
    // cannot be waited for, and its capture is invalidated.
    if (stream != CU_STREAM_PER_THREAD && std::any_of(s.streams.begin(), s.streams.end(), [&](const auto& e) {
          return e.second->capturing && e.second->context == c && (e.second->flags & CU_STREAM_NON_BLOCKING) == 0;
        })) {
      invalidate_captures(s, c);
      return CUDA_ERROR_STREAM_CAPTURE_IMPLICIT;
    }
  } else {
    Stream* st = find_stream(s, stream);
    if (st == nullptr || st->context != c) return CUDA_ERROR_INVALID_HANDLE;
    if (st->invalidated) return CUDA_ERROR_STREAM_CAPTURE_INVALIDATED;
    captured = st->capturing;
  }
  if (grid_x == 0 || grid_y == 0 || grid_z == 0 || grid_y > 65535 || grid_z > 65535 || grid_x > 0x7fffffffu) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  if (block_x == 0 || block_y == 0 || block_z == 0 || std::uint64_t{block_x} * block_y * block_z > 1024 ||
      block_z > 64) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  if (shared_bytes > static_cast<unsigned>(f->max_dynamic_shared)) return CUDA_ERROR_INVALID_VALUE;
  if (extra != nullptr) return CUDA_ERROR_NOT_SUPPORTED;
  FakeLaunch launch{.function = f->name,
                    .grid = {grid_x, grid_y, grid_z},
                    .block = {block_x, block_y, block_z},
                    .shared_bytes = shared_bytes,
                    .stream = stream,
                    .context = handle(c),
                    .captured = captured};
  if (f->params) {
    if (!f->params->empty() && params == nullptr) return CUDA_ERROR_INVALID_VALUE;
    for (const KernelParam& p : *f->params) {
      std::uint64_t value = 0;
      std::memcpy(&value, params[p.ordinal], std::min<std::size_t>(p.size, sizeof(value)));
      launch.args.push_back(value);
    }
  }
  s.launches.push_back(std::move(launch));
  return CUDA_SUCCESS;
}

std::size_t tensor_map_element_bytes(CUtensorMapDataType type) {
  switch (type) {
    case CU_TENSOR_MAP_DATA_TYPE_UINT8:
      return 1;
    case CU_TENSOR_MAP_DATA_TYPE_UINT16:
    case CU_TENSOR_MAP_DATA_TYPE_FLOAT16:
    case CU_TENSOR_MAP_DATA_TYPE_BFLOAT16:
      return 2;
    case CU_TENSOR_MAP_DATA_TYPE_UINT32:
    case CU_TENSOR_MAP_DATA_TYPE_INT32:
    case CU_TENSOR_MAP_DATA_TYPE_FLOAT32:
    case CU_TENSOR_MAP_DATA_TYPE_FLOAT32_FTZ:
    case CU_TENSOR_MAP_DATA_TYPE_TFLOAT32:
    case CU_TENSOR_MAP_DATA_TYPE_TFLOAT32_FTZ:
      return 4;
    case CU_TENSOR_MAP_DATA_TYPE_UINT64:
    case CU_TENSOR_MAP_DATA_TYPE_INT64:
    case CU_TENSOR_MAP_DATA_TYPE_FLOAT64:
      return 8;
    default:
      return 0;  // the packed sub-byte types: not served
  }
}

// What cuda.h requires of every tensor map encode: a 64-byte aligned map, a served type,
// a 16-byte aligned address, rank dimensions of 1 to 2^32 elements, element strides of 1
// to 8, and global strides of 16-byte multiples under 2^40.
bool valid_map_layout(const CUtensorMap* map, std::size_t element, cuuint32_t rank, const void* address,
                      const cuuint64_t* dims, const cuuint64_t* strides, const cuuint32_t* element_strides,
                      CUtensorMapInterleave interleave) {
  if (map == nullptr || reinterpret_cast<std::uintptr_t>(map) % 64 != 0 || element == 0) return false;
  if (address == nullptr || reinterpret_cast<std::uintptr_t>(address) % 16 != 0) return false;
  if (dims == nullptr || element_strides == nullptr || (rank > 1 && strides == nullptr)) return false;
  if (interleave != CU_TENSOR_MAP_INTERLEAVE_NONE) return false;
  for (cuuint32_t i = 0; i < rank; ++i) {
    if (dims[i] == 0 || dims[i] > (std::uint64_t{1} << 32)) return false;
    if (element_strides[i] == 0 || element_strides[i] > 8) return false;
  }
  for (cuuint32_t i = 0; i + 1 < rank; ++i) {
    if (strides[i] % 16 != 0 || strides[i] >= (std::uint64_t{1} << 40)) return false;
  }
  return true;
}

// A swizzle the driver knows, whose span holds the box's inner dimension (`inner` bytes).
bool fits_swizzle(CUtensorMapSwizzle swizzle, std::size_t inner) {
  const std::size_t span = swizzle == CU_TENSOR_MAP_SWIZZLE_32B    ? 32
                           : swizzle == CU_TENSOR_MAP_SWIZZLE_64B  ? 64
                           : swizzle == CU_TENSOR_MAP_SWIZZLE_128B ? 128
                                                                   : 0;
  return swizzle == CU_TENSOR_MAP_SWIZZLE_NONE || (span != 0 && inner <= span);
}

// The fake's map: the address in its first 8 bytes, the encode's serial in the next.
void write_fake_map(CUtensorMap* map, const void* address, std::size_t serial) {
  *map = CUtensorMap{};
  map->opaque[0] = static_cast<cuuint64_t>(reinterpret_cast<std::uintptr_t>(address));
  map->opaque[1] = serial;
}

// The requirements cuda.h documents for cuTensorMapEncodeIm2col (the non-packed types, no
// interleave), so that a test sees the runtime's arguments refused where the driver would.
CUresult impl_cuTensorMapEncodeIm2col(CUtensorMap* map, CUtensorMapDataType type, cuuint32_t rank, void* address,
                                      const cuuint64_t* dims, const cuuint64_t* strides, const int* lower,
                                      const int* upper, cuuint32_t channels, cuuint32_t pixels,
                                      const cuuint32_t* element_strides, CUtensorMapInterleave interleave,
                                      CUtensorMapSwizzle swizzle, CUtensorMapL2promotion l2,
                                      CUtensorMapFloatOOBfill oob) {
  const std::size_t element = tensor_map_element_bytes(type);
  if (rank < 3 || rank > 5 || lower == nullptr || upper == nullptr ||
      !valid_map_layout(map, element, rank, address, dims, strides, element_strides, interleave)) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  const int corner = rank == 3 ? 32768 : rank == 4 ? 128 : 16;
  for (cuuint32_t i = 0; i + 2 < rank; ++i) {
    if (lower[i] < -corner || lower[i] >= corner || upper[i] < -corner || upper[i] >= corner) {
      return CUDA_ERROR_INVALID_VALUE;
    }
    // A bounding box of non-zero area: its last coordinate (the dimension's last plus the
    // upper corner) not before its first.
    if (static_cast<std::int64_t>(dims[i + 1]) - 1 + upper[i] < lower[i]) return CUDA_ERROR_INVALID_VALUE;
  }
  if (channels == 0 || channels > 256 || pixels == 0 || pixels > 1024) return CUDA_ERROR_INVALID_VALUE;
  if (!fits_swizzle(swizzle, channels * element)) return CUDA_ERROR_INVALID_VALUE;
  if (oob == CU_TENSOR_MAP_FLOAT_OOB_FILL_NAN_REQUEST_ZERO_FMA && type <= CU_TENSOR_MAP_DATA_TYPE_INT64) {
    return CUDA_ERROR_INVALID_VALUE;  // the NaN fill is for floating-point types
  }
  convjit::testing::FakeIm2colEncode e{
      .dtype = type,
      .rank = rank,
      .address = address,
      .dims = std::vector<std::uint64_t>(dims, dims + rank),
      .strides = std::vector<std::uint64_t>(strides, strides + rank - 1),
      .lower = std::vector<int>(lower, lower + rank - 2),
      .upper = std::vector<int>(upper, upper + rank - 2),
      .channels_per_pixel = channels,
      .pixels_per_column = pixels,
      .element_strides = std::vector<unsigned>(element_strides, element_strides + rank),
      .interleave = interleave,
      .swizzle = swizzle,
      .l2_promotion = l2,
      .oob_fill = oob};
  auto& s = state();
  std::lock_guard lock(s.mutex);
  s.im2col_encodes.push_back(std::move(e));
  write_fake_map(map, address, s.im2col_encodes.size());
  return CUDA_SUCCESS;
}

// The requirements cuda.h documents for cuTensorMapEncodeTiled (the non-packed types, no
// interleave).
CUresult impl_cuTensorMapEncodeTiled(CUtensorMap* map, CUtensorMapDataType type, cuuint32_t rank, void* address,
                                     const cuuint64_t* dims, const cuuint64_t* strides, const cuuint32_t* box,
                                     const cuuint32_t* element_strides, CUtensorMapInterleave interleave,
                                     CUtensorMapSwizzle swizzle, CUtensorMapL2promotion l2,
                                     CUtensorMapFloatOOBfill oob) {
  (void)l2;
  const std::size_t element = tensor_map_element_bytes(type);
  if (rank < 1 || rank > 5 || box == nullptr ||
      !valid_map_layout(map, element, rank, address, dims, strides, element_strides, interleave)) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  for (cuuint32_t i = 0; i < rank; ++i) {
    if (box[i] == 0 || box[i] > 256) return CUDA_ERROR_INVALID_VALUE;
  }
  const std::size_t inner = box[0] * element;
  if (inner % 16 != 0 || !fits_swizzle(swizzle, inner)) return CUDA_ERROR_INVALID_VALUE;
  convjit::testing::FakeTiledEncode e{.dtype = type,
                                      .rank = rank,
                                      .address = address,
                                      .dims = std::vector<std::uint64_t>(dims, dims + rank),
                                      .strides = std::vector<std::uint64_t>(strides, strides + rank - 1),
                                      .box = std::vector<unsigned>(box, box + rank),
                                      .element_strides = std::vector<unsigned>(element_strides, element_strides + rank),
                                      .swizzle = swizzle,
                                      .oob_fill = oob};
  auto& s = state();
  std::lock_guard lock(s.mutex);
  s.tiled_encodes.push_back(std::move(e));
  write_fake_map(map, address, s.tiled_encodes.size());
  return CUDA_SUCCESS;
}

CUresult allocate_in(State& s, Context* c, CUdeviceptr* pointer, std::size_t bytes, bool holds_primary) {
  if (bytes == 0) return CUDA_ERROR_INVALID_VALUE;
  const std::size_t rounded = (bytes + kAllocationAlign - 1) / kAllocationAlign * kAllocationAlign;
  if (s.allocated_bytes + rounded > kDeviceMemoryBytes) return CUDA_ERROR_OUT_OF_MEMORY;
  void* memory = std::aligned_alloc(kAllocationAlign, rounded);
  if (memory == nullptr) return CUDA_ERROR_OUT_OF_MEMORY;
  const auto base = static_cast<CUdeviceptr>(reinterpret_cast<std::uintptr_t>(memory));
  s.allocations.emplace(base, Allocation{bytes, c, memory, holds_primary});
  s.allocated_bytes += rounded;
  *pointer = base;
  return CUDA_SUCCESS;
}

CUresult impl_cuMemAlloc(CUdeviceptr* pointer, std::size_t bytes) {
  if (pointer == nullptr) return CUDA_ERROR_INVALID_VALUE;
  auto& s = state();
  std::lock_guard lock(s.mutex);
  Context* c = nullptr;
  if (const CUresult res = usable_current(c); res != CUDA_SUCCESS) return res;
  if (capture_forbids(s)) return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
  const CUresult res = allocate_in(s, c, pointer, bytes, false);
  if (res == CUDA_SUCCESS) ++s.allocation_count;
  return res;
}

CUresult impl_cuMemFree(CUdeviceptr pointer) {
  auto& s = state();
  std::lock_guard lock(s.mutex);
  Context* c = nullptr;
  if (const CUresult res = usable_current(c); res != CUDA_SUCCESS) return res;
  auto it = s.allocations.find(pointer);
  if (it == s.allocations.end()) return CUDA_ERROR_INVALID_VALUE;
  if (capture_forbids(s)) return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
  release_memory(s, it);
  return CUDA_SUCCESS;
}

// The host bytes behind [pointer, pointer + bytes), when one allocation holds them all.
void* device_bytes(State& s, CUdeviceptr pointer, std::size_t bytes) {
  CUdeviceptr base = 0;
  Allocation* a = allocation_containing(s, pointer, &base);
  if (a == nullptr || pointer - base + bytes > a->bytes) return nullptr;
  return static_cast<char*>(a->memory) + (pointer - base);
}

CUresult impl_cuMemcpyHtoD(CUdeviceptr dst, const void* src, std::size_t bytes) {
  auto& s = state();
  std::lock_guard lock(s.mutex);
  Context* c = nullptr;
  if (const CUresult res = usable_current(c); res != CUDA_SUCCESS) return res;
  if (capture_forbids(s)) return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
  void* to = device_bytes(s, dst, bytes);
  if (to == nullptr || (src == nullptr && bytes > 0)) return CUDA_ERROR_INVALID_VALUE;
  if (bytes > 0) std::memcpy(to, src, bytes);
  return CUDA_SUCCESS;
}

CUresult impl_cuMemcpyDtoH(void* dst, CUdeviceptr src, std::size_t bytes) {
  auto& s = state();
  std::lock_guard lock(s.mutex);
  Context* c = nullptr;
  if (const CUresult res = usable_current(c); res != CUDA_SUCCESS) return res;
  if (capture_forbids(s)) return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
  const void* from = device_bytes(s, src, bytes);
  if (from == nullptr || (dst == nullptr && bytes > 0)) return CUDA_ERROR_INVALID_VALUE;
  if (bytes > 0) std::memcpy(dst, from, bytes);
  return CUDA_SUCCESS;
}

CUresult impl_cuMemsetD32(CUdeviceptr dst, unsigned value, std::size_t count) {
  auto& s = state();
  std::lock_guard lock(s.mutex);
  Context* c = nullptr;
  if (const CUresult res = usable_current(c); res != CUDA_SUCCESS) return res;
  if (capture_forbids(s)) return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
  if (dst % 4 != 0) return CUDA_ERROR_INVALID_VALUE;
  auto* to = static_cast<unsigned char*>(device_bytes(s, dst, count * 4));
  if (to == nullptr) return CUDA_ERROR_INVALID_VALUE;
  for (std::size_t i = 0; i < count; ++i) std::memcpy(to + 4 * i, &value, 4);
  return CUDA_SUCCESS;
}

// Stream order is the fake's call order: done at once, and allowed while capturing (a
// memset node).
CUresult impl_cuMemsetD32Async(CUdeviceptr dst, unsigned value, std::size_t count, CUstream stream) {
  (void)stream;
  auto& s = state();
  std::lock_guard lock(s.mutex);
  Context* c = nullptr;
  if (const CUresult res = usable_current(c); res != CUDA_SUCCESS) return res;
  if (dst % 4 != 0) return CUDA_ERROR_INVALID_VALUE;
  auto* to = static_cast<unsigned char*>(device_bytes(s, dst, count * 4));
  if (to == nullptr) return CUDA_ERROR_INVALID_VALUE;
  for (std::size_t i = 0; i < count; ++i) std::memcpy(to + 4 * i, &value, 4);
  return CUDA_SUCCESS;
}

CUresult create_stream_in(State& s, Context* c, CUstream* stream, unsigned flags, bool holds_primary) {
  auto st = std::make_unique<Stream>();
  st->context = c;
  st->flags = flags;
  st->holds_primary = holds_primary;
  *stream = reinterpret_cast<CUstream>(st.get());
  s.streams.emplace(st.get(), std::move(st));
  return CUDA_SUCCESS;
}

CUresult impl_cuStreamCreate(CUstream* stream, unsigned flags) {
  if (stream == nullptr || (flags & ~unsigned{CU_STREAM_NON_BLOCKING}) != 0) return CUDA_ERROR_INVALID_VALUE;
  auto& s = state();
  std::lock_guard lock(s.mutex);
  Context* c = nullptr;
  if (const CUresult res = usable_current(c); res != CUDA_SUCCESS) return res;
  return create_stream_in(s, c, stream, flags, false);
}

CUresult impl_cuStreamDestroy(CUstream stream) {
  auto& s = state();
  std::lock_guard lock(s.mutex);
  auto it = s.streams.find(reinterpret_cast<Stream*>(stream));
  if (it == s.streams.end()) return CUDA_ERROR_INVALID_HANDLE;
  s.streams.erase(it);
  return CUDA_SUCCESS;
}

CUresult impl_cuStreamGetCtx(CUstream stream, CUcontext* context) {
  if (context == nullptr) return CUDA_ERROR_INVALID_VALUE;
  auto& s = state();
  std::lock_guard lock(s.mutex);
  if (is_special(stream)) {
    Context* c = nullptr;
    if (const CUresult res = usable_current(c); res != CUDA_SUCCESS) return res;
    *context = handle(c);
    return CUDA_SUCCESS;
  }
  Stream* st = find_stream(s, stream);
  if (st == nullptr) return CUDA_ERROR_INVALID_HANDLE;
  *context = handle(st->context);
  return CUDA_SUCCESS;
}

CUresult impl_cuStreamSynchronize(CUstream stream) {
  auto& s = state();
  std::lock_guard lock(s.mutex);
  if (is_special(stream)) {
    Context* c = nullptr;
    if (const CUresult res = usable_current(c); res != CUDA_SUCCESS) return res;
    if (capture_forbids(s)) return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
    return CUDA_SUCCESS;
  }
  Stream* st = find_stream(s, stream);
  if (st == nullptr) return CUDA_ERROR_INVALID_HANDLE;
  // Waiting for a capturing stream is never legal, whatever the capture mode.
  if (st->capturing) {
    if (!st->invalidated) {
      st->invalidated = true;
      ++s.invalidations;
    }
    return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
  }
  return CUDA_SUCCESS;
}

CUresult impl_cuStreamIsCapturing(CUstream stream, CUstreamCaptureStatus* status) {
  if (status == nullptr) return CUDA_ERROR_INVALID_VALUE;
  auto& s = state();
  std::lock_guard lock(s.mutex);
  *status = CU_STREAM_CAPTURE_STATUS_NONE;
  if (is_special(stream)) {
    // As the driver: a null or legacy stream means the current context's, so it needs one.
    Context* c = nullptr;
    return usable_current(c);
  }
  Stream* st = find_stream(s, stream);
  if (st == nullptr) return CUDA_ERROR_INVALID_HANDLE;
  if (st->capturing) *status = st->invalidated ? CU_STREAM_CAPTURE_STATUS_INVALIDATED : CU_STREAM_CAPTURE_STATUS_ACTIVE;
  return CUDA_SUCCESS;
}

CUresult impl_cuThreadExchangeStreamCaptureMode(CUstreamCaptureMode* mode) {
  if (mode == nullptr) return CUDA_ERROR_INVALID_VALUE;
  switch (*mode) {
    case CU_STREAM_CAPTURE_MODE_GLOBAL:
    case CU_STREAM_CAPTURE_MODE_THREAD_LOCAL:
    case CU_STREAM_CAPTURE_MODE_RELAXED:
      std::swap(*mode, tls_capture_mode);
      return CUDA_SUCCESS;
  }
  return CUDA_ERROR_INVALID_VALUE;
}

CUresult impl_cuPointerGetAttribute(void* data, CUpointer_attribute attribute, CUdeviceptr pointer) {
  if (data == nullptr) return CUDA_ERROR_INVALID_VALUE;
  auto& s = state();
  std::lock_guard lock(s.mutex);
  CUdeviceptr base = 0;
  const Allocation* a = allocation_containing(s, pointer, &base);
  // Plain host memory and freed pointers are not memory the driver knows.
  if (a == nullptr) return CUDA_ERROR_INVALID_VALUE;
  switch (attribute) {
    case CU_POINTER_ATTRIBUTE_MEMORY_TYPE:
      *static_cast<unsigned*>(data) = CU_MEMORYTYPE_DEVICE;
      break;
    case CU_POINTER_ATTRIBUTE_CONTEXT:
      *static_cast<CUcontext*>(data) = handle(a->context);
      break;
    case CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL:
      *static_cast<int*>(data) = 0;
      break;
    case CU_POINTER_ATTRIBUTE_RANGE_START_ADDR:
      *static_cast<CUdeviceptr*>(data) = base;
      break;
    case CU_POINTER_ATTRIBUTE_RANGE_SIZE:
      *static_cast<std::size_t*>(data) = a->bytes;
      break;
    default:
      return CUDA_ERROR_NOT_SUPPORTED;
  }
  return CUDA_SUCCESS;
}

CUresult impl_cuPointerGetAttributes(unsigned count, CUpointer_attribute* attributes, void** data,
                                     CUdeviceptr pointer) {
  if (attributes == nullptr || data == nullptr) return CUDA_ERROR_INVALID_VALUE;
  for (unsigned i = 0; i < count; ++i) {
    // As the driver: memory it does not know reads as zeros, not as an error.
    const CUresult res = impl_cuPointerGetAttribute(data[i], attributes[i], pointer);
    if (res == CUDA_ERROR_INVALID_VALUE && data[i] != nullptr) {
      std::memset(data[i], 0, attributes[i] == CU_POINTER_ATTRIBUTE_MEMORY_TYPE ? sizeof(unsigned) : sizeof(void*));
    } else if (res != CUDA_SUCCESS) {
      return res;
    }
  }
  return CUDA_SUCCESS;
}

CUresult impl_cuEventCreate(CUevent* event, unsigned flags) {
  if (event == nullptr) return CUDA_ERROR_INVALID_VALUE;
  (void)flags;
  auto& s = state();
  std::lock_guard lock(s.mutex);
  Context* c = nullptr;
  if (const CUresult res = usable_current(c); res != CUDA_SUCCESS) return res;
  auto e = std::make_unique<Event>();
  e->context = c;
  *event = reinterpret_cast<CUevent>(e.get());
  s.events.emplace(e.get(), std::move(e));
  return CUDA_SUCCESS;
}

Event* find_event(State& s, CUevent event) {
  auto it = s.events.find(reinterpret_cast<Event*>(event));
  return it == s.events.end() ? nullptr : it->second.get();
}

CUresult impl_cuEventDestroy(CUevent event) {
  auto& s = state();
  std::lock_guard lock(s.mutex);
  if (s.events.erase(reinterpret_cast<Event*>(event)) == 0) return CUDA_ERROR_INVALID_HANDLE;
  return CUDA_SUCCESS;
}

CUresult impl_cuEventRecord(CUevent event, CUstream stream) {
  auto& s = state();
  std::lock_guard lock(s.mutex);
  Event* e = find_event(s, event);
  if (e == nullptr) return CUDA_ERROR_INVALID_HANDLE;
  if (!is_special(stream) && find_stream(s, stream) == nullptr) return CUDA_ERROR_INVALID_HANDLE;
  e->recorded = true;
  return CUDA_SUCCESS;
}

CUresult impl_cuEventSynchronize(CUevent event) {
  auto& s = state();
  std::lock_guard lock(s.mutex);
  if (find_event(s, event) == nullptr) return CUDA_ERROR_INVALID_HANDLE;
  if (capture_forbids(s)) return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
  return CUDA_SUCCESS;
}

CUresult impl_cuEventElapsedTime(float* ms, CUevent start, CUevent stop) {
  if (ms == nullptr) return CUDA_ERROR_INVALID_VALUE;
  auto& s = state();
  std::lock_guard lock(s.mutex);
  const Event* a = find_event(s, start);
  const Event* b = find_event(s, stop);
  if (a == nullptr || b == nullptr) return CUDA_ERROR_INVALID_HANDLE;
  if (!a->recorded || !b->recorded) return CUDA_ERROR_INVALID_HANDLE;
  *ms = 1.0f;  // nothing runs: every launch takes the same made-up time
  return CUDA_SUCCESS;
}

CUresult impl_cuCtxCreate(CUcontext* context, unsigned flags, CUdevice device) {
  if (context == nullptr) return CUDA_ERROR_INVALID_VALUE;
  (void)flags;
  if (device != 0) return CUDA_ERROR_INVALID_DEVICE;
  auto& s = state();
  std::lock_guard lock(s.mutex);
  s.contexts.push_back(std::make_unique<Context>());
  Context* c = s.contexts.back().get();
  c->id = s.next_context_id++;
  *context = handle(c);
  tls_context_stack.push_back(c);  // cuCtxCreate makes the new context current
  return CUDA_SUCCESS;
}

// ---- the table cuGetProcAddress serves ----

// Counts the call and applies an injected fault; otherwise the fake implementation runs.
std::optional<CUresult> enter(const char* name) {
  auto& s = state();
  std::lock_guard lock(s.mutex);
  ++s.calls[name];
  if (auto it = s.faults.find(name); it != s.faults.end() && it->second.remaining != 0) {
    if (it->second.remaining > 0) --it->second.remaining;
    return it->second.result;
  }
  static constexpr std::string_view kBeforeInit[] = {"cuInit", "cuDriverGetVersion", "cuGetErrorName",
                                                     "cuGetErrorString"};
  if (!s.initialized && std::find(std::begin(kBeforeInit), std::end(kBeforeInit), name) == std::end(kBeforeInit)) {
    return CUDA_ERROR_NOT_INITIALIZED;
  }
  return std::nullopt;
}

template <typename Signature>
struct Entry;

template <typename... Args>
struct Entry<CUresult(CUDAAPI*)(Args...)> {
  template <const char* kName, CUresult (*kImpl)(Args...)>
  static CUresult CUDAAPI call(Args... args) {
    if (const auto injected = enter(kName)) return *injected;
    return kImpl(args...);
  }
};

struct ProcEntry {
  const char* name;
  void* function;
  int max_version;  // the entry's signature holds for requests below this version
};

// NOTE: #name and name_##name use the name as written (cuMemAlloc), before cuda.h's
// macros rename it. A missing impl_ function, or one whose signature differs from the
// runtime's list, is a compile error here.
#define CONVJIT_FAKE_NAME(name, ...) constexpr char name_##name[] = #name;
CONVJIT_DRIVER_ENTRY_POINTS(CONVJIT_FAKE_NAME)
CONVJIT_DRIVER_PINNED_ENTRY_POINTS(CONVJIT_FAKE_NAME)
CONVJIT_FAKE_NAME(cuFuncLoad)
#undef CONVJIT_FAKE_NAME

#define CONVJIT_FAKE_ENTRY(name, params) \
  {#name, reinterpret_cast<void*>(&Entry<CUresult(CUDAAPI*) params>::call<name_##name, &impl_##name>), 1 << 30},
// cuCtxCreate is served at the version the runtime pins (3-argument cuCtxCreate_v2);
// asked at 11040 or later the real driver returns cuCtxCreate_v3, another signature.
#define CONVJIT_FAKE_PINNED_ENTRY(name, version, params) \
  {#name, reinterpret_cast<void*>(&Entry<CUresult(CUDAAPI*) params>::call<name_##name, &impl_##name>), 11040},
const ProcEntry kProcTable[] = {CONVJIT_DRIVER_ENTRY_POINTS(CONVJIT_FAKE_ENTRY) CONVJIT_DRIVER_PINNED_ENTRY_POINTS(
    CONVJIT_FAKE_PINNED_ENTRY) CONVJIT_FAKE_ENTRY(cuFuncLoad, (CUfunction))};
#undef CONVJIT_FAKE_PINNED_ENTRY
#undef CONVJIT_FAKE_ENTRY

}  // namespace

extern "C" CUresult CUDAAPI cuGetProcAddress_v2(const char* symbol, void** function, int version, cuuint64_t flags,
                                                CUdriverProcAddressQueryResult* status) {
  (void)flags;
  if (symbol == nullptr || function == nullptr) return CUDA_ERROR_INVALID_VALUE;
  *function = nullptr;
  for (const ProcEntry& e : kProcTable) {
    if (std::string_view(symbol) != e.name) continue;
    if (version >= e.max_version) {
      if (status != nullptr) *status = CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT;
      return CUDA_ERROR_NOT_FOUND;
    }
    *function = e.function;
    if (status != nullptr) *status = CU_GET_PROC_ADDRESS_SUCCESS;
    return CUDA_SUCCESS;
  }
  if (status != nullptr) *status = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
  return CUDA_ERROR_NOT_FOUND;
}

// ---- the control panel ----

namespace convjit::testing {

void FakeCudaDriver::reset() {
  auto& s = state();
  std::lock_guard lock(s.mutex);
  s.faults.clear();
  s.calls.clear();
  s.launches.clear();
  s.allocation_count = 0;
  s.module_load_count = 0;
  s.invalidations = 0;
  s.destroyed_with_context = 0;
  s.last_image.clear();
  s.im2col_encodes.clear();
  s.tiled_encodes.clear();
  for (auto& [key, stream] : s.streams) stream->capturing = stream->invalidated = false;
  tls_capture_mode = CU_STREAM_CAPTURE_MODE_GLOBAL;
}

void FakeCudaDriver::fail_next(std::string_view entry_point, CUresult result, int times) {
  auto& s = state();
  std::lock_guard lock(s.mutex);
  const bool known = std::any_of(std::begin(kProcTable), std::end(kProcTable),
                                 [&](const ProcEntry& e) { return entry_point == e.name; });
  if (!known) std::abort();  // a typo would inject nothing and the test would prove nothing
  s.faults[std::string(entry_point)] = Fault{result, times};
}

std::uint64_t FakeCudaDriver::calls(std::string_view entry_point) const {
  auto& s = state();
  std::lock_guard lock(s.mutex);
  auto it = s.calls.find(std::string(entry_point));
  return it == s.calls.end() ? 0 : it->second;
}

std::vector<FakeIm2colEncode> FakeCudaDriver::im2col_encodes() const {
  std::lock_guard lock(state().mutex);
  return state().im2col_encodes;
}

std::vector<FakeTiledEncode> FakeCudaDriver::tiled_encodes() const {
  std::lock_guard lock(state().mutex);
  return state().tiled_encodes;
}

std::vector<FakeLaunch> FakeCudaDriver::launches() const {
  std::lock_guard lock(state().mutex);
  return state().launches;
}

std::uint64_t FakeCudaDriver::allocations() const {
  std::lock_guard lock(state().mutex);
  return state().allocation_count;
}

std::uint64_t FakeCudaDriver::module_loads() const {
  std::lock_guard lock(state().mutex);
  return state().module_load_count;
}

std::string FakeCudaDriver::last_module_image() const {
  std::lock_guard lock(state().mutex);
  return state().last_image;
}

std::size_t FakeCudaDriver::live_allocations() const {
  std::lock_guard lock(state().mutex);
  return state().allocations.size();
}

std::size_t FakeCudaDriver::live_modules() const {
  std::lock_guard lock(state().mutex);
  return state().modules.size();
}

std::uint64_t FakeCudaDriver::destroyed_with_context() const {
  std::lock_guard lock(state().mutex);
  return state().destroyed_with_context;
}

int FakeCudaDriver::primary_context_references() const {
  std::lock_guard lock(state().mutex);
  return state().primary->references;
}

void FakeCudaDriver::set_capturing(CUstream stream, bool capturing) {
  auto& s = state();
  std::lock_guard lock(s.mutex);
  Stream* st = find_stream(s, stream);
  if (st == nullptr) std::abort();  // only created streams capture
  st->capturing = capturing;
  st->invalidated = false;
}

bool FakeCudaDriver::capture_invalidated(CUstream stream) const {
  auto& s = state();
  std::lock_guard lock(s.mutex);
  Stream* st = find_stream(s, stream);
  return st != nullptr && st->invalidated;
}

std::uint64_t FakeCudaDriver::capture_invalidations() const {
  std::lock_guard lock(state().mutex);
  return state().invalidations;
}

CUstreamCaptureMode FakeCudaDriver::thread_capture_mode() const { return tls_capture_mode; }
void FakeCudaDriver::set_thread_capture_mode(CUstreamCaptureMode mode) { tls_capture_mode = mode; }

CUcontext FakeCudaDriver::primary_context() const {
  std::lock_guard lock(state().mutex);
  return handle(state().primary);
}

CUdeviceptr FakeCudaDriver::allocate(std::size_t bytes, CUcontext context) {
  auto& s = state();
  std::lock_guard lock(s.mutex);
  Context* c = context == nullptr ? s.primary : find_context(s, context);
  if (c == nullptr) std::abort();
  if (c->primary) retain_primary(s);
  CUdeviceptr pointer = 0;
  if (allocate_in(s, c, &pointer, bytes, c->primary) != CUDA_SUCCESS) std::abort();
  return pointer;
}

void FakeCudaDriver::free(CUdeviceptr pointer) {
  auto& s = state();
  std::lock_guard lock(s.mutex);
  auto it = s.allocations.find(pointer);
  if (it == s.allocations.end()) return;  // already gone with its context
  const bool holds_primary = it->second.holds_primary;
  release_memory(s, it);
  if (holds_primary) release_primary(s);
}

CUstream FakeCudaDriver::create_stream(CUcontext context) {
  auto& s = state();
  std::lock_guard lock(s.mutex);
  Context* c = context == nullptr ? s.primary : find_context(s, context);
  if (c == nullptr) std::abort();
  if (c->primary) retain_primary(s);
  CUstream stream = nullptr;
  create_stream_in(s, c, &stream, 0, c->primary);
  return stream;
}

void FakeCudaDriver::destroy_stream(CUstream stream) {
  auto& s = state();
  std::lock_guard lock(s.mutex);
  auto it = s.streams.find(reinterpret_cast<Stream*>(stream));
  if (it == s.streams.end()) return;
  const bool holds_primary = it->second->holds_primary;
  s.streams.erase(it);
  if (holds_primary) release_primary(s);
}

CUcontext FakeCudaDriver::create_context() {
  auto& s = state();
  std::lock_guard lock(s.mutex);
  s.contexts.push_back(std::make_unique<Context>());
  Context* c = s.contexts.back().get();
  c->id = s.next_context_id++;
  return handle(c);
}

void FakeCudaDriver::destroy_context(CUcontext context) {
  auto& s = state();
  std::lock_guard lock(s.mutex);
  destroy_created_context(s, context);
}

}  // namespace convjit::testing

extern "C" convjit::testing::FakeCudaDriver* convjit_fake_cuda_driver() {
  static convjit::testing::FakeCudaDriver driver;
  return &driver;
}
