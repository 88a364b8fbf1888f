#pragma once
// Compiled kernels per (problem, arch): from this process's table, else from the
// disk cache, else from the remote cache shared by a fleet, else from NVRTC. One
// compile per key in the process, however many threads ask at once.

#include <filesystem>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include "cache/disk_cache.hpp"
#include "cache/remote_cache.hpp"
#include "compile/kernel_key.hpp"
#include "compile/nvrtc.hpp"
#include "convjit/conv2d_desc.hpp"
#include "runtime/counters.hpp"
#include "specialize/specialized_source.hpp"

namespace convjit {

// One problem's kernel through the pipeline's stages: specialized, keyed, compiled (or
// read back from a cache, which stores the compiled stage as an entry of its own format).
struct KernelArtifact {
  Conv2dDesc desc;
  Algorithm algorithm = Algorithm::kDirect;
  std::string arch;
  SpecializedSource source;  // what the key and the compile see
  LaunchSpec launch;         // how to launch it
  KernelKey key;
  CompiledKernel compiled;  // PTX, CUBIN, log and options
  // False when `compiled` came from a disk load of what loading the kernel uses: its
  // PTX stayed on disk, unread (get(..., with_ptx) reads the whole entry).
  bool has_ptx = true;
  std::filesystem::path path;  // the disk entry; empty without a disk cache
};

enum class ArtifactOrigin { kMemory, kDisk, kRemote, kCompiled };

class KernelStore {
 public:
  // `remote`: the fleet's cache behind the disk one, or null.
  KernelStore(std::optional<DiskCache> disk, Counters& counters, std::unique_ptr<RemoteCache> remote = nullptr);

  // Validates `desc` first; throws Error from validation, specialization or NVRTC.
  // `algorithm` is a resolved one (never kAuto); `align`, what the launch's pointers are
  // known to have. A disk hit reads only what loading the kernel uses, leaving the PTX
  // on disk, unless `with_ptx`: then the artifact has it (an artifact in memory without
  // it is replaced by one read whole, or rebuilt when its entry turns out damaged).
  std::shared_ptr<const KernelArtifact> get(const Conv2dDesc& desc, Algorithm algorithm, const std::string& arch,
                                            const AlignmentNeeds& align = kFullAlignment,
                                            ArtifactOrigin* origin = nullptr, bool with_ptx = false);
  // Whether get() would be served without a compile: the kernel is in this process's
  // table (built, not being built), or its entry is on disk (not yet verified). Validates
  // `desc` first.
  bool cached(const Conv2dDesc& desc, Algorithm algorithm, const std::string& arch,
              const AlignmentNeeds& align = kFullAlignment);
  // Compiles again, replacing the memory and disk copies (after the driver refused the image).
  std::shared_ptr<const KernelArtifact> rebuild(const Conv2dDesc& desc, Algorithm algorithm, const std::string& arch,
                                                const AlignmentNeeds& align = kFullAlignment);

  const DiskCache* disk() const noexcept { return disk_ ? &*disk_ : nullptr; }
  const RemoteCache* remote() const noexcept { return remote_.get(); }

 private:
  struct Key {
    Conv2dDesc desc;
    Algorithm algorithm;
    std::string arch;
    AlignmentNeeds align;
    bool operator==(const Key&) const = default;
  };
  struct KeyHash {
    std::size_t operator()(const Key& key) const noexcept;
  };
  using Future = std::shared_future<std::shared_ptr<const KernelArtifact>>;

  // What a disk hit reads: what loading the kernel uses, the whole entry, or the whole
  // entry of a kernel a hit already served without its PTX (read again, not a new hit).
  enum class Read { kForLoad, kWhole, kRestOfAHit };
  static KernelKey key_of(const Conv2dDesc& desc, const SpecializedSource& source, const std::string& arch);
  std::shared_ptr<const KernelArtifact> produce(const Key& key, bool force_compile, Read read, ArtifactOrigin& origin);
  void count(const RemoteCache::FetchReport& report);

  std::optional<DiskCache> disk_;
  std::unique_ptr<RemoteCache> remote_;
  Counters& counters_;
  std::mutex mutex_;
  std::unordered_map<Key, Future, KeyHash> table_;
};

}  // namespace convjit
