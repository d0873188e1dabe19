// The samples of a batch handed to worker threads one at a time, longest first: a thread that
// finishes a sample takes the next, so unequal lengths never leave one thread with the long tail
// (as a static split of the batch would, e.g. of a batch sorted by length), and the last
// samples to start are the shortest.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <numeric>
#include <vector>

namespace ctc_ext {

class SampleQueue {
 public:
  // lengths: (N,) the work of each sample (its frames).
  SampleQueue(const int64_t* lengths, int64_t N) : order_(N) {
    std::iota(order_.begin(), order_.end(), int64_t(0));
    std::stable_sort(order_.begin(), order_.end(), [lengths](int64_t a, int64_t b) { return lengths[a] > lengths[b]; });
  }
  // The next sample to work on, or -1 when none is left (or after stop()).
  int64_t next() {
    const int64_t position = next_.fetch_add(1, std::memory_order_relaxed);
    return position < static_cast<int64_t>(order_.size()) ? order_[position] : -1;
  }
  // Hands out no more samples (after an error).
  void stop() { next_.store(static_cast<int64_t>(order_.size()), std::memory_order_relaxed); }

 private:
  std::vector<int64_t> order_;
  std::atomic<int64_t> next_{0};
};

}  // namespace ctc_ext
