// A small CPU emulation of the CUDA execution model, enough to run csrc/cuda/ctc_loss_kernels.cuh
// with g++ (tests only; setup.py never compiles this folder).
//
// What it provides: the built-in variables (threadIdx, blockIdx, blockDim, gridDim), one OS thread
// per CUDA thread of a block running truly concurrently, a real barrier for __syncthreads (and
// __syncthreads_or), per-block dynamic shared memory (filled with a NaN byte pattern at every
// block start, as uninitialised as on a GPU), and the launch limits a GPU enforces (1024 threads
// per block, 48 KiB of dynamic shared memory without opt-in, grid y/z at most 65535).
//
// Warps: the threads of a block are grouped by linear index into warps of 32 (the last one
// partial), and the warp-level collectives __shfl_sync, __shfl_up_sync, __shfl_down_sync,
// __shfl_xor_sync, __ballot_sync, __any_sync and __all_sync exchange values through per-warp
// slots behind a per-warp barrier, so they return exactly what the GPU returns, deterministically.
// They are checked as strictly as the CUDA documentation allows: every lane named in the mask must
// take part in it (a lane that has exited, or has run a different number of collectives, is a
// launch error), and a shuffle that reads a lane outside the mask is an error too.
//
// An emulated collective also orders the memory accesses of the warp's lanes (its barrier is a
// mutex), which on a GPU only __syncwarp / __syncthreads do: ThreadSanitizer cannot report a
// missing barrier between threads of one warp that exchange data through memory around a
// shuffle (checked: deleting the barrier after the beta rows of backward_lattice_kernel is
// reported neither for a one-warp block, ordered by the shuffles, nor for larger ones, ordered by
// group_all_reduce's barriers).
//
// What it cannot show: timing, warp scheduling (threads of a warp interleave as the OS schedules
// them between collectives; blocks run one after another), and the GPU memory model (a CPU is
// more strongly ordered; __syncthreads here is a full fence).  Kernels must therefore not use
// atomics, or warp-synchronous code without the *_sync collectives; they use neither.
#pragma once

#ifndef CTC_EXT_CUDA_EMULATION
#define CTC_EXT_CUDA_EMULATION 1
#endif

#include <algorithm>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};
using uint3 = dim3;
using cudaStream_t = void*;

// The built-in variables, one copy per emulated thread.
inline thread_local uint3 threadIdx;
inline thread_local uint3 blockIdx;
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;

namespace ctc_emulation {

// A reusable barrier over the threads of one block.  arrive_and_drop lets a thread that has left
// the kernel stop counting, as an exited thread does on the GPU.
class BlockBarrier {
 public:
  explicit BlockBarrier(int expected) : expected_(expected) {}

  void arrive_and_wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    const uint64_t generation = generation_;
    if (++arrived_ == expected_) {
      release();
    } else {
      released_.wait(lock, [&] { return generation != generation_; });
    }
  }

  void arrive_and_drop() {
    std::lock_guard<std::mutex> lock(mutex_);
    --expected_;
    if (arrived_ > 0 && arrived_ >= expected_) release();
  }

 private:
  void release() {
    arrived_ = 0;
    ++generation_;
    released_.notify_all();
  }

  std::mutex mutex_;
  std::condition_variable released_;
  int expected_;
  int arrived_ = 0;
  uint64_t generation_ = 0;
};

constexpr unsigned int kWarpSize = 32;

// One warp's exchange: each lane of a collective writes its value and the collective's sequence
// number into its slot, waits at the warp barrier, then reads the slots it needs.  Two sets of
// slots alternate, so a lane may enter the next collective while the others still read this one
// (it cannot get two ahead: that needs everyone at the barrier of the next one).
struct WarpState {
  struct Slot {
    uint64_t bits = 0;      // the value, memcpy'd (at most 8 bytes)
    uint64_t sequence = 0;  // 1 + index of the collective that wrote it; 0 = never
  };
  std::unique_ptr<BlockBarrier> barrier;
  Slot slots[2][kWarpSize];
  unsigned int lanes = 0;  // threads in this warp (the last warp of a block may be partial)
};

// State one block's threads share.
struct BlockState {
  std::unique_ptr<BlockBarrier> barrier;
  std::vector<unsigned char> shared_memory;
  std::vector<int> votes;  // one slot per thread, for __syncthreads_or
  std::vector<WarpState> warps;
  std::mutex error_mutex;
  std::string error;  // the first misuse of a collective; the launch throws it
};

inline thread_local BlockState* current_block = nullptr;
inline thread_local unsigned int linear_thread_index = 0;
inline thread_local uint64_t warp_collectives_done = 0;  // by this thread in this block

inline void report_error(const std::string& message) {
  std::lock_guard<std::mutex> lock(current_block->error_mutex);
  if (current_block->error.empty()) current_block->error = message;
}

inline unsigned int lane_index() { return linear_thread_index % kWarpSize; }

// The lanes of this thread's warp, as a mask (all 32 unless the block's last warp is partial).
inline unsigned int warp_lanes_mask() {
  const unsigned int lanes = current_block->warps[linear_thread_index / kWarpSize].lanes;
  return lanes == kWarpSize ? 0xffffffffu : (1u << lanes) - 1;
}

// One warp collective: publishes `value`, waits for the warp, and hands `read(lane) -> bits` to
// `combine`, which may read the value of any lane in `mask`.
template <typename Combine>
auto warp_collective(const char* name, unsigned int mask, uint64_t value, Combine combine) {
  WarpState& warp = current_block->warps[linear_thread_index / kWarpSize];
  const unsigned int lane = lane_index();
  const uint64_t sequence = ++warp_collectives_done;
  WarpState::Slot* slots = warp.slots[sequence & 1];
  slots[lane] = {value, sequence};
  if (!(mask >> lane & 1u)) report_error(std::string(name) + ": the calling lane is not in the mask");
  if (mask & ~warp_lanes_mask()) report_error(std::string(name) + ": the mask names lanes the warp does not have");
  warp.barrier->arrive_and_wait();
  for (unsigned int other = 0; other < warp.lanes; ++other) {
    if ((mask >> other & 1u) && slots[other].sequence != sequence) {
      report_error(std::string(name) + ": lane " + std::to_string(other) +
                   " of the mask did not take part (exited or diverged)");
    }
  }
  auto read = [&](unsigned int other) -> uint64_t {
    if (!(mask >> other & 1u)) {
      report_error(std::string(name) + ": reads lane " + std::to_string(other) + ", outside the mask");
      return value;
    }
    return slots[other].bits;
  };
  return combine(read);
}

template <typename T>
uint64_t to_bits(T value) {
  static_assert(sizeof(T) <= sizeof(uint64_t) && std::is_trivially_copyable_v<T>, "shuffle of an 8-byte type at most");
  uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof(T));
  return bits;
}

template <typename T>
T from_bits(uint64_t bits) {
  T value;
  std::memcpy(&value, &bits, sizeof(T));
  return value;
}

// The source lane of each shuffle, as the CUDA Programming Guide defines it: lanes form segments
// of `width` (a power of two up to 32); a source past the caller's segment (down, xor) or before
// it (up) returns the caller's own value; xor alone may read an earlier segment.
template <typename T, typename Source>
T shuffle(const char* name, unsigned int mask, T value, int width, Source source, bool earlier_segments = false) {
  if (width <= 0 || width > static_cast<int>(kWarpSize) || (width & (width - 1)) != 0) {
    report_error(std::string(name) + ": width must be a power of two up to 32");
    width = kWarpSize;
  }
  const unsigned int lane = lane_index();
  const unsigned int segment_begin = lane / width * width;
  const unsigned int src = source(lane, segment_begin);
  return warp_collective(name, mask, to_bits(value), [&](auto read) {
    if ((src < segment_begin && !earlier_segments) || src >= segment_begin + width) return value;
    return from_bits<T>(read(src));
  });
}

inline unsigned int vote_bits(const char* name, unsigned int mask, int predicate) {
  return warp_collective(name, mask, predicate != 0, [&](auto read) {
    unsigned int ballot = 0;
    for (unsigned int other = 0; other < kWarpSize; ++other) {
      if ((mask >> other & 1u) && read(other)) ballot |= 1u << other;
    }
    return ballot;
  });
}

inline unsigned char* dynamic_shared_memory() { return current_block->shared_memory.data(); }

inline void syncthreads() { current_block->barrier->arrive_and_wait(); }

// Non-zero when pred is non-zero for any thread of the block; a barrier like __syncthreads.
inline int syncthreads_or(int pred) {
  current_block->votes[linear_thread_index] = pred;
  syncthreads();
  int any = 0;
  for (int vote : current_block->votes) any |= (vote != 0);
  syncthreads();  // every thread has read the votes before any slot is written again
  return any;
}

constexpr unsigned int kMaxThreadsPerBlock = 1024;
constexpr size_t kMaxDynamicSharedBytes = 48 * 1024;

// kernel<<<grid, block, shared_bytes>>>(args...): the blocks run one after another, each on
// block.x * block.y * block.z concurrent threads.
template <typename... KernelArgs, typename... Args>
void launch(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, size_t shared_bytes, Args... args) {
  const unsigned long long threads = 1ull * block.x * block.y * block.z;
  const unsigned long long blocks = 1ull * grid.x * grid.y * grid.z;
  if (threads == 0 || threads > kMaxThreadsPerBlock) {
    throw std::runtime_error("emulated launch: invalid block size " + std::to_string(threads));
  }
  if (grid.y > 65535 || grid.z > 65535 || grid.x == 0 || grid.x > 2147483647u) {
    throw std::runtime_error("emulated launch: invalid grid");
  }
  if (shared_bytes > kMaxDynamicSharedBytes) {
    throw std::runtime_error("emulated launch: " + std::to_string(shared_bytes) +
                             " bytes of dynamic shared memory exceed 48 KiB");
  }
  const std::tuple<KernelArgs...> kernel_args(args...);
  BlockState state;
  state.shared_memory.resize(shared_bytes + 16);
  state.votes.resize(threads);
  state.warps = std::vector<WarpState>((threads + kWarpSize - 1) / kWarpSize);
  for (size_t w = 0; w < state.warps.size(); ++w) {
    state.warps[w].lanes = static_cast<unsigned int>(std::min<unsigned long long>(kWarpSize, threads - w * kWarpSize));
  }
  // Start and end of every block: the pool of threads plus the launching thread.
  BlockBarrier gate(static_cast<int>(threads) + 1);
  uint3 current_block_index;
  bool stop = false;

  auto worker = [&](unsigned int linear) {
    threadIdx = uint3(linear % block.x, (linear / block.x) % block.y, linear / (block.x * block.y));
    blockDim = block;
    gridDim = grid;
    linear_thread_index = linear;
    current_block = &state;
    for (;;) {
      gate.arrive_and_wait();  // the block is set up
      if (stop) return;
      blockIdx = current_block_index;
      warp_collectives_done = 0;
      std::apply(kernel, kernel_args);
      state.barrier->arrive_and_drop();
      state.warps[linear / kWarpSize].barrier->arrive_and_drop();
      gate.arrive_and_wait();  // every thread has finished the block
    }
  };
  std::vector<std::thread> pool;
  pool.reserve(threads);
  for (unsigned int i = 0; i < threads; ++i) pool.emplace_back(worker, i);
  for (unsigned long long b = 0; b < blocks; ++b) {
    current_block_index = uint3(b % grid.x, (b / grid.x) % grid.y, b / (1ull * grid.x * grid.y));
    state.barrier = std::make_unique<BlockBarrier>(static_cast<int>(threads));
    for (WarpState& warp : state.warps) {
      warp.barrier = std::make_unique<BlockBarrier>(static_cast<int>(warp.lanes));
      for (auto& set : warp.slots) {
        for (auto& slot : set) slot = {};
      }
    }
    std::memset(state.shared_memory.data(), 0xff, state.shared_memory.size());  // NaN in float and double
    gate.arrive_and_wait();
    gate.arrive_and_wait();
    if (!state.error.empty()) break;
  }
  stop = true;
  gate.arrive_and_wait();
  for (auto& thread : pool) thread.join();
  if (!state.error.empty()) throw std::runtime_error("emulated launch: " + state.error);
}

}  // namespace ctc_emulation

inline void __syncthreads() { ctc_emulation::syncthreads(); }
inline int __syncthreads_or(int pred) { return ctc_emulation::syncthreads_or(pred); }

// Warp-level collectives (see the header comment).  Widths and lane arguments as in CUDA; `var`
// is any trivially copyable type of at most 8 bytes.
template <typename T>
T __shfl_sync(unsigned int mask, T var, int src_lane, int width = 32) {
  return ctc_emulation::shuffle("__shfl_sync", mask, var, width, [&](unsigned int, unsigned int segment_begin) {
    return segment_begin + (static_cast<unsigned int>(src_lane) & static_cast<unsigned int>(width - 1));
  });
}

template <typename T>
T __shfl_up_sync(unsigned int mask, T var, unsigned int delta, int width = 32) {
  // an unsigned wrap below 0 lands before the segment: the caller's own value
  return ctc_emulation::shuffle("__shfl_up_sync", mask, var, width,
                                [&](unsigned int lane, unsigned int) { return lane - delta; });
}

template <typename T>
T __shfl_down_sync(unsigned int mask, T var, unsigned int delta, int width = 32) {
  return ctc_emulation::shuffle("__shfl_down_sync", mask, var, width,
                                [&](unsigned int lane, unsigned int) { return lane + delta; });
}

template <typename T>
T __shfl_xor_sync(unsigned int mask, T var, int lane_mask, int width = 32) {
  return ctc_emulation::shuffle(
      "__shfl_xor_sync", mask, var, width,
      [&](unsigned int lane, unsigned int) { return lane ^ static_cast<unsigned int>(lane_mask); }, true);
}

inline unsigned int __ballot_sync(unsigned int mask, int predicate) {
  return ctc_emulation::vote_bits("__ballot_sync", mask, predicate);
}
inline int __any_sync(unsigned int mask, int predicate) {
  return ctc_emulation::vote_bits("__any_sync", mask, predicate) != 0;
}
inline int __all_sync(unsigned int mask, int predicate) {
  return ctc_emulation::vote_bits("__all_sync", mask, predicate) == mask;
}
