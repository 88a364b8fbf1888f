// What does a new process's first cuModuleLoadData cost, and why? Loads a kernel's CUBIN
// in a fresh context (after an allocation, a memset and a synchronize, as jit_overhead's
// child does before its clock) and times each driver step: cuModuleLoadData, the two
// cuModuleGetFunction, the shared-memory opt-in, cuFuncLoad. Modes:
//   plain     the CUBIN straight after the context's set-up
//   tiny      a one-kernel CUBIN loaded first (is there a first-load cost of its own?)
//   tiny_bg   that load on a second thread during 0.3 ms of host work (the key, the read)
//   host300   the 0.3 ms of host work alone, then the CUBIN
//   hold700   0.7 ms of host work, then the CUBIN
//   twice     the CUBIN, unloaded, loaded again (the steady cost of the same image)
// The CUBIN is the second argument (default head.cubin): the headline's, as convjit's
// NVRTC options build it, or the same PTX assembled with its unused .global lines removed
// (docs/perf.md, "Module load: the globals").
// Build: g++ -std=c++17 -O2 module_load_probe.cpp -o module_load_probe -ldl -lpthread
// Run:   ./module_load_probe MODE [CUBIN]   (tiny.cubin: nvcc -arch=sm_90a -cubin of one
//        empty kernel named convjit_tiny), one new process a sample
#include <dlfcn.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
typedef int CUresult;
typedef int CUdevice;
typedef struct CUctx_st* CUcontext;
typedef struct CUmod_st* CUmodule;
typedef struct CUfunc_st* CUfunction;
typedef unsigned long long CUdeviceptr;
#define F(name, ...)                         \
  typedef CUresult (*name##_t)(__VA_ARGS__); \
  name##_t name
F(cuInit, unsigned);
F(cuDeviceGet, CUdevice*, int);
F(cuDevicePrimaryCtxRetain, CUcontext*, CUdevice);
F(cuCtxSetCurrent, CUcontext);
F(cuMemAlloc_v2, CUdeviceptr*, size_t);
F(cuMemsetD32_v2, CUdeviceptr, unsigned, size_t);
F(cuCtxSynchronize);
F(cuModuleLoadData, CUmodule*, const void*);
F(cuModuleGetFunction, CUfunction*, CUmodule, const char*);
F(cuFuncSetAttribute, CUfunction, int, int);
F(cuFuncLoad, CUfunction);
F(cuModuleUnload, CUmodule);
static double now() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
static std::string slurp(const char* p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}
static void spin(double ms) {
  double t = now();
  while (now() - t < ms) {
  }
}
static void check(CUresult r, const char* what) {
  if (r) {
    std::printf("FAIL %s %d\n", what, r);
    std::exit(1);
  }
}
int main(int argc, char** argv) {
  const std::string mode = argv[1];
  const std::string head = slurp(argc > 2 ? argv[2] : "head.cubin"), tiny = slurp("tiny.cubin");
  const char* kname = "conv2d_wgmma_tf32_nchw_n8c64h512w256_k128r5s7_u1x1_p0x0_d1x1_g1_nobias";
  void* h = dlopen("libcuda.so.1", RTLD_NOW);
#define L(name) name = (name##_t)dlsym(h, #name)
  L(cuInit);
  L(cuDeviceGet);
  L(cuDevicePrimaryCtxRetain);
  L(cuCtxSetCurrent);
  L(cuMemAlloc_v2);
  L(cuMemsetD32_v2);
  L(cuCtxSynchronize);
  L(cuModuleLoadData);
  L(cuModuleGetFunction);
  L(cuFuncSetAttribute);
  L(cuFuncLoad);
  L(cuModuleUnload);
  check(cuInit(0), "init");
  CUdevice dev;
  cuDeviceGet(&dev, 0);
  CUcontext ctx;
  check(cuDevicePrimaryCtxRetain(&ctx, dev), "ctx");
  cuCtxSetCurrent(ctx);
  CUdeviceptr p;
  check(cuMemAlloc_v2(&p, 64 << 20), "alloc");
  cuMemsetD32_v2(p, 0x3c23d70a, 16 << 20);
  cuCtxSynchronize();
  double tiny_ms = 0, t0 = now();
  auto load_tiny = [&] {
    double a = now();
    CUmodule m;
    check(cuModuleLoadData(&m, tiny.data()), "tiny");
    CUfunction f;
    check(cuModuleGetFunction(&f, m, "convjit_tiny"), "tinyf");
    check(cuFuncLoad(f), "tinyload");
    tiny_ms = now() - a;
  };
  if (mode == "tiny") load_tiny();
  if (mode == "hold700") spin(0.7);
  std::thread bg;
  if (mode == "tiny_bg") {
    t0 = now();
    bg = std::thread([&] {
      cuCtxSetCurrent(ctx);
      load_tiny();
    });
    spin(0.3);
    bg.join();
  }
  if (mode == "host300") {
    t0 = now();
    spin(0.3);
  }
  double a = now();
  CUmodule m;
  check(cuModuleLoadData(&m, head.data()), "load");
  double b = now();
  CUfunction f, g;
  check(cuModuleGetFunction(&f, m, kname), "getf");
  check(cuModuleGetFunction(&g, m, (std::string(kname) + "_pack").c_str()), "getg");
  double c = now();
  check(cuFuncSetAttribute(f, 8, 152832), "attr");
  double d = now();
  check(cuFuncLoad(f), "fl");
  check(cuFuncLoad(g), "gl");
  double e = now();
  double again = 0;
  if (mode == "twice") {
    cuModuleUnload(m);
    double s = now();
    check(cuModuleLoadData(&m, head.data()), "load2");
    cuModuleGetFunction(&f, m, kname);
    cuModuleGetFunction(&g, m, (std::string(kname) + "_pack").c_str());
    cuFuncSetAttribute(f, 8, 152832);
    cuFuncLoad(f);
    cuFuncLoad(g);
    again = now() - s;
  }
  std::printf(
      "ML file=%s mode=%s load=%.3f getfn=%.3f attr=%.3f funcload=%.3f head_total=%.3f tiny=%.3f from_t0=%.3f "
      "again=%.3f\n",
      argc > 2 ? argv[2] : "head.cubin", mode.c_str(), b - a, c - b, d - c, e - d, e - a, tiny_ms, e - t0, again);
}
