// A small CPU emulation of the CUDA execution model, enough to run csrc/cuda/ctc_loss_kernels.cuh
// with g++ (tests only; setup.py never compiles this folder).
//
// What it provides: the built-in variables (threadIdx, blockIdx, blockDim, gridDim), one OS thread
// per CUDA thread of a block running truly concurrently, a real barrier for __syncthreads (and
// __syncthreads_or), per-block dynamic shared memory (filled with a NaN byte pattern at every
// block start, as uninitialised as on a GPU), and the launch limits a GPU enforces (1024 threads
// per block, 48 KiB of dynamic shared memory without opt-in, grid y/z at most 65535).
//
// What it cannot show: timing, warp scheduling (there are no warps: threads of a block interleave
// as the OS schedules them, blocks run one after another), and the GPU memory model (a CPU is
// more strongly ordered; __syncthreads here is a full fence).  Kernels must therefore not use
// warp intrinsics or atomics that are not emulated here; they use none.
#pragma once

#ifndef CTC_EXT_CUDA_EMULATION
#define CTC_EXT_CUDA_EMULATION 1
#endif

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

// State one block's threads share.
struct BlockState {
  std::unique_ptr<BlockBarrier> barrier;
  std::vector<unsigned char> shared_memory;
  std::vector<int> votes;  // one slot per thread, for __syncthreads_or
};

inline thread_local BlockState* current_block = nullptr;
inline thread_local unsigned int linear_thread_index = 0;

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
      std::apply(kernel, kernel_args);
      state.barrier->arrive_and_drop();
      gate.arrive_and_wait();  // every thread has finished the block
    }
  };
  std::vector<std::thread> pool;
  pool.reserve(threads);
  for (unsigned int i = 0; i < threads; ++i) pool.emplace_back(worker, i);
  for (unsigned long long b = 0; b < blocks; ++b) {
    current_block_index = uint3(b % grid.x, (b / grid.x) % grid.y, b / (1ull * grid.x * grid.y));
    state.barrier = std::make_unique<BlockBarrier>(static_cast<int>(threads));
    std::memset(state.shared_memory.data(), 0xff, state.shared_memory.size());  // NaN in float and double
    gate.arrive_and_wait();
    gate.arrive_and_wait();
  }
  stop = true;
  gate.arrive_and_wait();
  for (auto& thread : pool) thread.join();
}

}  // namespace ctc_emulation

inline void __syncthreads() { ctc_emulation::syncthreads(); }
inline int __syncthreads_or(int pred) { return ctc_emulation::syncthreads_or(pred); }
