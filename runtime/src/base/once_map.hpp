#pragma once
// A table whose values are built once per key, however many threads ask at once.
// It backs the Runtime's per-context state (contexts, loaded modules, plans), where
// the key carries an opaque CUDA context id: a hit takes only a shared lock, so
// threads driving different contexts never queue behind one another, and a build
// holds only its own key's mutex, so two contexts' first loads run side by side.

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <unordered_map>

namespace convjit {

template <typename Key, typename Value, typename Hash = std::hash<Key>>
class OnceMap {
 public:
  // The built value of `key`, or null when there is none (yet).
  std::shared_ptr<Value> find(const Key& key) const {
    std::shared_lock lock(mutex_);
    const auto it = slots_.find(key);
    if (it == slots_.end() || !it->second->ready.load(std::memory_order_acquire)) return nullptr;
    return it->second->value;
  }

  // The value of `key`, built with `make()` (returning std::shared_ptr<Value>) when
  // there is none. Callers asking for a key under construction wait for that build.
  // A build that throws stores nothing, so the next caller tries again (a transient
  // driver error is not remembered). `built` says whether this call built the value.
  template <typename Make>
  std::shared_ptr<Value> get(const Key& key, Make&& make, bool* built = nullptr) {
    if (built != nullptr) *built = false;
    if (auto value = find(key)) return value;
    Slot* slot = nullptr;
    {
      std::unique_lock lock(mutex_);
      auto& owned = slots_[key];
      if (!owned) owned = std::make_unique<Slot>();
      // NOTE: slots are never erased, so the pointer outlives the table lock.
      slot = owned.get();
    }
    std::lock_guard build(slot->build);
    if (slot->ready.load(std::memory_order_acquire)) return slot->value;
    slot->value = std::forward<Make>(make)();
    slot->ready.store(true, std::memory_order_release);
    if (built != nullptr) *built = true;
    return slot->value;
  }

  // How many keys have a value.
  std::size_t size() const {
    std::shared_lock lock(mutex_);
    std::size_t count = 0;
    for (const auto& [key, slot] : slots_) count += slot->ready.load(std::memory_order_acquire) ? 1 : 0;
    return count;
  }

 private:
  struct Slot {
    std::mutex build;
    std::atomic<bool> ready{false};
    std::shared_ptr<Value> value;  // written once, before `ready`
  };

  mutable std::shared_mutex mutex_;
  std::unordered_map<Key, std::unique_ptr<Slot>, Hash> slots_;
};

}  // namespace convjit
