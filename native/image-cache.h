#pragma once
// The image embedding cache: projector outputs kept by key, least recently used evicted
// first, bounded by the bytes of the embeddings it holds. Used on the engine thread; the
// stats are read from the JS thread, so every member function takes the lock.
#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace mmlm {

struct ImageCacheStats {
    uint64_t hits = 0;
    uint64_t misses = 0;
    uint64_t evictions = 0;
    uint64_t entries = 0;
    uint64_t bytes = 0;
    uint64_t capacityBytes = 0;
};

class ImageCache {
 public:
    using Embeddings = std::shared_ptr<const std::vector<float>>;

    // Empties the cache and sets its bound (0: disabled). Counters are kept.
    void reset(size_t capacityBytes) {
        clear();
        std::lock_guard<std::mutex> lock(mutex_);
        capacity_ = capacityBytes;
    }

    // Empties the cache; the bound and the counters stay.
    void clear() {
        std::lock_guard<std::mutex> lock(mutex_);
        lru_.clear();
        index_.clear();
        bytes_ = 0;
    }

    bool enabled() const {
        std::lock_guard<std::mutex> lock(mutex_);
        return capacity_ > 0;
    }

    // The embeddings stored under `key`, now the most recently used entry; null if there are
    // none. Counts a hit or a miss. What it returns stays valid after the entry is evicted.
    Embeddings get(const std::string& key) {
        std::lock_guard<std::mutex> lock(mutex_);
        auto it = index_.find(key);
        if (it == index_.end()) {
            ++misses_;
            return nullptr;
        }
        lru_.splice(lru_.begin(), lru_, it->second);
        ++hits_;
        return it->second->data;
    }

    // Stores `count` floats under `key` as the most recently used entry, evicting the least
    // recently used until the total fits. An entry larger than the whole bound is not kept.
    void put(const std::string& key, const float* data, size_t count) {
        const size_t size = count * sizeof(float);
        std::lock_guard<std::mutex> lock(mutex_);
        if (size > capacity_) return;
        auto found = index_.find(key);
        if (found != index_.end()) {
            bytes_ -= found->second->bytes;
            lru_.erase(found->second);
            index_.erase(found);
        }
        while (!lru_.empty() && bytes_ + size > capacity_) {
            bytes_ -= lru_.back().bytes;
            index_.erase(lru_.back().key);
            lru_.pop_back();
            ++evictions_;
        }
        lru_.push_front(Entry{key, std::make_shared<const std::vector<float>>(data, data + count), size});
        index_[key] = lru_.begin();
        bytes_ += size;
    }

    ImageCacheStats stats() const {
        std::lock_guard<std::mutex> lock(mutex_);
        return {hits_, misses_, evictions_, index_.size(), bytes_, capacity_};
    }

 private:
    struct Entry {
        std::string key;
        Embeddings data;
        size_t bytes;
    };

    mutable std::mutex mutex_;
    size_t capacity_ = 0;
    size_t bytes_ = 0;
    uint64_t hits_ = 0;
    uint64_t misses_ = 0;
    uint64_t evictions_ = 0;
    std::list<Entry> lru_;  // front: most recently used
    std::unordered_map<std::string, std::list<Entry>::iterator> index_;
};

}  // namespace mmlm
