// Does compute-sanitizer's racecheck see mbarrier ordering? One producer warp hands a
// 32-word shared buffer to one consumer warp and back, several rounds, ordered four ways:
//   mbarrier_store     st.shared, then mbarrier.arrive (release) / try_wait (acquire)
//   mbarrier_cp_async  cp.async, then cp.async.mbarrier.arrive.noinc (the wgmma kernel's producer)
//   mbarrier_wait_all  cp.async, cp.async.wait_all, then mbarrier.arrive
//   lane0_syncwarp     as mbarrier_store, but the consumer warp hands the buffer back as the
//                      wgmma kernel does: every lane reads, __syncwarp, lane 0 alone arrives
//   lane0              the same without the __syncwarp (other lanes' reads are not ordered
//                      before the arrive by the memory model: a real, if harmless, race)
//   syncthreads        st.shared and __syncthreads (control: correctly ordered, which racecheck knows)
//   unordered          st.shared and reads with no ordering at all (control: a real race)
// In the first three the consumer hands the buffer back with an arrive from every thread,
// so nothing is left to the warp: each is race-free by the PTX memory model. A hazard
// racecheck reports in them, or in lane0_syncwarp (__syncwarp orders the lanes' accesses
// among themselves, and lane 0's arrive releases what precedes it), but not in
// `syncthreads`, is its blind spot.
// Build: nvcc -arch=sm_90a -O2 -o mbarrier_racecheck_probe mbarrier_racecheck_probe.cu
// Run:   compute-sanitizer --tool racecheck ./mbarrier_racecheck_probe VARIANT
#include <cstdio>
#include <cstring>

namespace {
constexpr int kRounds = 4;

__device__ unsigned smem(const void* p) { return static_cast<unsigned>(__cvta_generic_to_shared(p)); }
__device__ void bar_init(unsigned bar, unsigned count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(count));
}
__device__ void bar_arrive(unsigned bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(bar) : "memory");
}
__device__ void bar_wait(unsigned bar, unsigned parity) {
  unsigned done = 0;
  do {
    asm volatile("{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }"
                 : "=r"(done)
                 : "r"(bar), "r"(parity)
                 : "memory");
  } while (!done);
}
__device__ void cp_async4(unsigned dst, const int* src) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(dst), "l"(src) : "memory");
}

enum Variant { kStore, kCpAsync, kWaitAll, kLane0Syncwarp, kLane0, kSyncThreads, kUnordered };

__global__ void probe(Variant variant, const int* in, int* out) {
  __shared__ int buf[32];
  __shared__ alignas(8) unsigned long long full, empty;
  const int lane = threadIdx.x & 31;
  const bool producer = threadIdx.x < 32;
  if (threadIdx.x == 0) {
    bar_init(smem(&full), 32);
    bar_init(smem(&empty), variant == kLane0Syncwarp || variant == kLane0 ? 1 : 32);
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();
  int acc = 0;
  for (int r = 0; r < kRounds; ++r) {
    if (variant == kSyncThreads || variant == kUnordered) {
      if (producer) buf[lane] = in[r * 32 + lane];
      if (variant == kSyncThreads) __syncthreads();
      if (!producer) acc += buf[lane];
      if (variant == kSyncThreads) __syncthreads();
      continue;
    }
    if (producer) {
      bar_wait(smem(&empty), (r & 1) ^ 1);
      if (variant == kStore || variant == kLane0Syncwarp || variant == kLane0) {
        buf[lane] = in[r * 32 + lane];
        bar_arrive(smem(&full));
      } else {
        cp_async4(smem(&buf[lane]), in + r * 32 + lane);
        if (variant == kCpAsync) {
          asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];" ::"r"(smem(&full)) : "memory");
        } else {
          asm volatile("cp.async.wait_all;" ::: "memory");
          bar_arrive(smem(&full));
        }
      }
    } else {
      bar_wait(smem(&full), r & 1);
      acc += buf[lane];
      if (variant == kLane0Syncwarp) __syncwarp();
      if ((variant != kLane0Syncwarp && variant != kLane0) || lane == 0) bar_arrive(smem(&empty));
    }
  }
  if (!producer) out[lane] = acc;
}
}  // namespace

int main(int argc, char** argv) {
  const char* names[] = {"mbarrier_store", "mbarrier_cp_async", "mbarrier_wait_all", "lane0_syncwarp",
                         "lane0",          "syncthreads",       "unordered"};
  int variant = -1;
  for (int i = 0; i < 7; ++i) {
    if (argc > 1 && std::strcmp(argv[1], names[i]) == 0) variant = i;
  }
  if (variant < 0) {
    std::fprintf(stderr, "usage: %s VARIANT (see the comment at the top)\n", argv[0]);
    return 2;
  }
  int host[kRounds * 32];
  for (int i = 0; i < kRounds * 32; ++i) host[i] = i + 1;
  int *in = nullptr, *out = nullptr;
  cudaMalloc(&in, sizeof(host));
  cudaMalloc(&out, 32 * sizeof(int));
  cudaMemcpy(in, host, sizeof(host), cudaMemcpyHostToDevice);
  probe<<<1, 64>>>(static_cast<Variant>(variant), in, out);
  int result[32];
  const cudaError_t err = cudaMemcpy(result, out, sizeof(result), cudaMemcpyDeviceToHost);
  if (err != cudaSuccess) {
    std::fprintf(stderr, "%s: %s\n", names[variant], cudaGetErrorString(err));
    return 1;
  }
  // Lane l sums in[r * 32 + l] over the rounds: 4l + 4 + 32 * (0 + 1 + 2 + 3).
  for (int l = 0; l < 32; ++l) {
    if (variant != kUnordered && result[l] != 4 * l + 4 + 32 * 6) {
      std::printf("%s: lane %d got %d, expected %d\n", names[variant], l, result[l], 4 * l + 4 + 32 * 6);
      return 1;
    }
  }
  std::printf("%s: result ok\n", names[variant]);
  return 0;
}
