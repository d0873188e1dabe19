// CUDA kernels of the CTC loss and their launch configuration, on raw pointers only (no torch
// types), so that the very same source also compiles with g++ against the CPU emulation in
// tests/cuda_emulation/cuda_emulation.h (include that header first).  The recurrence itself
// (log-space helpers, extended labels, band, log_alpha layout) comes from ctc_math.h.
//
// Schedule (T frames, N samples, C classes, W_n = 2 L_n + 1 extended states of sample n; the
// design and what it leaves open: docs/cuda.md, "Kernel design"):
//   forward:  log_normalizer_kernel   rows (t, n) spread over many blocks; max and sum-exp of a
//                                     row by a warp-shuffle tree -> log_normalizer (N, T)
//             forward_lattice_kernel  one block per sample; threads stride over the states s of
//                                     the band, one __syncthreads per frame; frames stop at T_n
//   backward: backward_prepare_kernel one block per sample: validates and classifies it, links
//                                     equal labels through a block-wide bitonic sort
//             gradient_rows_kernel    rows (t, n) spread over many blocks: softmax (or NaN / 0)
//                                     times grad_nll for every class
//             backward_lattice_kernel one block per sample: log_beta in rolling rows and, per
//                                     frame, the occupancies of the band, which overwrite the
//                                     blank's and the labels' classes of the gradient row
// No atomics; every sum has a fixed order (reductions are fixed trees over warp shuffles whose
// shape depends on blockDim only), so results are bitwise reproducible run to run.
//
// Launch configuration: the *_launch_shape functions at the end of this file.
//
// The including file defines CTC_CHECK_LAUNCH(), run after every launch (the CUDA build uses
// C10_CUDA_KERNEL_LAUNCH_CHECK; the emulation throws from the launch itself).
#pragma once

#include <cstddef>
#include <cstdint>

#include "../ctc_math.h"

#ifndef CTC_EXT_CUDA_EMULATION
#include <cuda_runtime.h>
#endif

#ifndef CTC_CHECK_LAUNCH
#error "define CTC_CHECK_LAUNCH() before including ctc_loss_kernels.cuh"
#endif

namespace ctc_ext {
namespace cuda {

#ifdef CTC_EXT_CUDA_EMULATION
inline unsigned char* dynamic_shared_memory() { return ctc_emulation::dynamic_shared_memory(); }

// The one place that knows the launch syntax.
template <typename... KernelArgs, typename... Args>
void launch_kernel(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t,
                   Args... args) {
  ctc_emulation::launch(kernel, grid, block, shared_bytes, args...);
  CTC_CHECK_LAUNCH();
}
#else
__device__ __forceinline__ unsigned char* dynamic_shared_memory() {
  extern __shared__ __align__(16) unsigned char ctc_dynamic_shared[];
  return ctc_dynamic_shared;
}

template <typename... KernelArgs, typename... Args>
void launch_kernel(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t stream,
                   Args... args) {
  // clang-format would split the triple chevrons, which nvcc rejects.
  // clang-format off
  kernel<<<grid, block, shared_bytes, stream>>>(args...);
  // clang-format on
  CTC_CHECK_LAUNCH();
}
#endif

// What every kernel knows about the problem, all on the device.
template <typename scalar_t, typename index_t>
struct CtcProblemView {
  const scalar_t* logits;  // (T, N, C), class stride 1
  int64_t logits_stride_t;
  int64_t logits_stride_n;
  const index_t* labels;          // (num_target_slots,) flattened targets
  const int64_t* label_start;     // (N,) where sample n's labels begin in `labels`
  const int64_t* input_lengths;   // (N,)
  const int64_t* target_lengths;  // (N,)
  int64_t max_input_length;       // T
  int64_t batch_size;             // N
  int64_t num_classes;            // C
  int64_t blank;
  int64_t num_target_slots;
  int64_t padded_width;  // S for (N, S) padded targets, -1 for concatenated ones
};

// How the backward classifies a sample (written by backward_prepare_kernel).
enum SampleState : int32_t {
  kSampleCompute = 0,  // finite loss: the Eq. 16 gradient
  kSampleZero = 1,     // infinite loss with zero_infinity: zero gradient
  kSampleNaN = 2,      // infinite loss: NaN for t < T_n, zero beyond, like the CPU kernel
  kSampleInvalid = 3,  // invalid lengths or labels: NaN in every row, nothing out of range read
};

// ---------------------------------------------------------------------------------------------
// Device helpers

constexpr unsigned int kWarpSize = 32;
constexpr unsigned int kFullWarp = 0xffffffffu;

// Concatenated targets: whether a target length before sample n is negative, which makes
// label_start[n] (a running sum) meaningless.  Per thread; OR it over the block.
template <typename scalar_t, typename index_t>
__device__ int block_earlier_length_is_negative(const CtcProblemView<scalar_t, index_t>& p, int64_t n) {
  int negative = 0;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) negative |= p.target_lengths[j] < 0;
  return negative;
}

// Whether sample n's lengths and labels are valid.  The device-side counterpart of
// check_ctc_values_on_cpu: an invalid sample gets a NaN loss and gradient instead of an error,
// and nothing it would index out of range is ever read.  Block-wide (contains a barrier).
template <typename scalar_t, typename index_t>
__device__ bool block_sample_is_valid(const CtcProblemView<scalar_t, index_t>& p, int64_t n) {
  const int64_t input_length = p.input_lengths[n];
  const int64_t target_length = p.target_lengths[n];
  const int64_t start = p.label_start[n];
  int bad = input_length < 0 || input_length > p.max_input_length || target_length < 0 || start < 0 ||
            start > p.num_target_slots || target_length > p.num_target_slots - start ||
            (p.padded_width >= 0 && target_length > p.padded_width);
  if (!bad) {
    for (int64_t i = threadIdx.x; i < target_length; i += blockDim.x) {
      const int64_t label = static_cast<int64_t>(p.labels[start + i]);
      bad |= label < 0 || label >= p.num_classes || label == p.blank;
    }
  }
  // Concatenated targets: a negative length before n shifts label_start[n] (a running sum).
  if (p.padded_width < 0) bad |= block_earlier_length_is_negative(p, n);
  return __syncthreads_or(bad) == 0;
}

// Where sample n's slot of the flat log_alpha buffer begins: log_alpha_offset with the label
// start clipped to the targets, so that the offset of an invalid sample stays in the buffer.
template <typename scalar_t, typename index_t>
__device__ int64_t clipped_log_alpha_offset(const CtcProblemView<scalar_t, index_t>& p, int64_t n) {
  const int64_t start = p.label_start[n];
  const int64_t clipped = start < 0 ? 0 : start > p.num_target_slots ? p.num_target_slots : start;
  return log_alpha_offset(n, clipped, p.max_input_length);
}

// The two combining rules of the reductions.  Every tree below applies them as op(lower-indexed
// operand, higher-indexed operand), so both lanes of a pair compute bitwise the same value even
// where an operation is not commutative in its bits (max of -0 and +0).
struct SumOp {
  template <typename acc_t>
  __device__ acc_t operator()(acc_t lower, acc_t higher) const {
    return lower + higher;
  }
};

// max ignoring NaN, like std::max(max, x) on the CPU (NaN still reaches the sum-exp)
struct MaxOp {
  template <typename acc_t>
  __device__ acc_t operator()(acc_t lower, acc_t higher) const {
    return lower < higher ? higher : lower;
  }
};

// min of integers (sample indices)
struct MinOp {
  template <typename value_t>
  __device__ value_t operator()(value_t lower, value_t higher) const {
    return higher < lower ? higher : lower;
  }
};

// Butterfly over the 32 lanes of a warp: after log2(32) shuffle steps every lane holds the same
// reduction of the warp's 32 values, always the same tree.
template <typename acc_t, typename Op>
__device__ acc_t warp_all_reduce(acc_t value, Op op) {
  const unsigned int lane = threadIdx.x % kWarpSize;
  for (int lane_mask = kWarpSize / 2; lane_mask >= 1; lane_mask /= 2) {
    const acc_t other = __shfl_xor_sync(kFullWarp, value, lane_mask);
    value = (lane & lane_mask) ? op(other, value) : op(value, other);
  }
  return value;
}

// Reduction over a group of blockDim.x threads (one row threadIdx.y of the block; blockDim.x a
// multiple of 32, at most 1024): a butterfly inside each warp, then every warp reduces the
// group's warp results with the same butterfly, so every thread gets the result without another
// broadcast.  Block-wide (two barriers; every thread of the block must call it).
//   scratch: 32 acc_t per group, blockDim.y groups
template <typename acc_t, typename Op>
__device__ acc_t group_all_reduce(acc_t value, Op op, acc_t identity, acc_t* scratch) {
  const unsigned int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  const unsigned int warps = blockDim.x / kWarpSize;
  acc_t* group_scratch = scratch + threadIdx.y * kWarpSize;
  value = warp_all_reduce(value, op);
  if (warps == 1) return value;  // uniform over the block: no barrier needed
  if (lane == 0) group_scratch[warp] = value;
  __syncthreads();
  value = warp_all_reduce(lane < warps ? group_scratch[lane] : identity, op);
  __syncthreads();  // every warp has read the scratch before it is written again
  return value;
}

// Shared memory of group_all_reduce for a block of `rows` groups.
inline size_t group_reduce_shared_bytes(int64_t rows, size_t acc_size) {
  return static_cast<size_t>(rows) * kWarpSize * acc_size;
}

// ---------------------------------------------------------------------------------------------
// Forward

// Concatenated targets: the first sample whose target length is negative (N when there is
// none).  Its label start and every later one are meaningless (a running sum of lengths), so
// no sample from it on may place anything by them.  Group-wide, like group_all_reduce.
//   scratch: 32 int64 per group
template <typename scalar_t, typename index_t>
__device__ int64_t group_first_negative_length(const CtcProblemView<scalar_t, index_t>& p, int64_t* scratch) {
  int64_t first = p.batch_size;
  for (int64_t j = threadIdx.x; j < p.batch_size; j += blockDim.x) {
    if (p.target_lengths[j] < 0) {
      first = j;  // a thread's samples rise: its first hit is its smallest
      break;
    }
  }
  return group_all_reduce(first, MinOp(), p.batch_size, scratch);
}

// Row t of sample n's block of the kept log_alpha, filled with the emissions log y_t(l'_s) =
// x_t(l'_s) - log_normalizer_t on the band and -inf off it: forward_lattice_kernel reads each
// entry (a frame ahead) and overwrites it with alpha, so this gather costs no memory and leaves
// the sweep one contiguous row to read per frame instead of scattered logits.  Written only when
// the sample's lengths and label start place the block inside its own slot (rows t < T_n of a
// valid sample, the contract of the buffer); an invalid sample's slot is then filled with NaN
// by forward_lattice_kernel, and a label out of range is never read.  Threads of the group
// stride over the row.  The caller checks t < T_n and that no earlier target length is
// negative (group_first_negative_length).
template <typename scalar_t, typename acc_t, typename index_t>
__device__ void group_write_emission_row(const CtcProblemView<scalar_t, index_t>& p, int64_t t, int64_t n,
                                         const scalar_t* frame, acc_t frame_normalizer, acc_t* log_alpha) {
  const int64_t input_length = p.input_lengths[n];
  const int64_t target_length = p.target_lengths[n];
  const int64_t start = p.label_start[n];
  const bool inside_slot = input_length <= p.max_input_length && target_length >= 0 && start >= 0 &&
                           start <= p.num_target_slots && target_length <= p.num_target_slots - start &&
                           (p.padded_width < 0 || target_length <= p.padded_width);
  if (!inside_slot) return;
  const int64_t num_states = 2 * target_length + 1;
  const index_t* labels = p.labels + start;
  acc_t* row = log_alpha + log_alpha_offset(n, start, p.max_input_length) + t * num_states;
  const int64_t first = band_first(t, input_length, num_states);
  const int64_t last = band_last(t, num_states);
  for (int64_t s = threadIdx.x; s < num_states; s += blockDim.x) {
    acc_t emission = neg_inf<acc_t>();
    if (s >= first && s <= last) {
      const int64_t state_class = extended_label(labels, 1, s, p.blank);
      emission = state_class >= 0 && state_class < p.num_classes
                     ? static_cast<acc_t>(frame[state_class]) - frame_normalizer
                     : std::numeric_limits<acc_t>::quiet_NaN();  // an invalid sample, NaN-filled later
    }
    row[s] = emission;
  }
}

// log_normalizer[n][t] = logsumexp_k logits[t][n][k] for t < T_n, 0 beyond (the CPU kernel's
// output, whether or not the sample's target fits) and, when log_alpha is kept (not null), the
// emissions of row t of the sample's log_alpha block (group_write_emission_row), from the frame
// just read.  Block (threads_per_row, rows_per_block); rows (t, n) are visited in grid-stride
// groups of rows_per_block, each reduced by its row of threads, so every SM works whatever N is.
// Shared: group_reduce_shared_bytes(rows_per_block) of the wider of acc_t and int64.
template <typename scalar_t, typename acc_t, typename index_t>
__global__ void log_normalizer_kernel(CtcProblemView<scalar_t, index_t> p, acc_t* log_normalizer /* (N, T) */,
                                      acc_t* log_alpha /* kept buffer (ctc_math.h layout) or nullptr */) {
  unsigned char* shared = dynamic_shared_memory();
  acc_t* scratch = reinterpret_cast<acc_t*>(shared);
  const int64_t T = p.max_input_length, N = p.batch_size, C = p.num_classes;
  const int64_t num_rows = T * N;
  const int64_t num_groups = (num_rows + blockDim.y - 1) / blockDim.y;
  const bool gather = log_alpha != nullptr;  // uniform
  const int64_t first_negative_length =
      gather && p.padded_width < 0 ? group_first_negative_length(p, reinterpret_cast<int64_t*>(shared)) : N;
  for (int64_t group = blockIdx.x; group < num_groups; group += gridDim.x) {
    const int64_t row = group * blockDim.y + threadIdx.y;  // row = t * N + n
    const int64_t t = row / N, n = row % N;
    bool active = row < num_rows;
    if (active) active = t < p.input_lengths[n];
    const scalar_t* frame = p.logits + (active ? t * p.logits_stride_t + n * p.logits_stride_n : 0);
    acc_t max_value = neg_inf<acc_t>();
    if (active) {
      for (int64_t k = threadIdx.x; k < C; k += blockDim.x)
        max_value = MaxOp()(max_value, static_cast<acc_t>(frame[k]));
    }
    max_value = group_all_reduce(max_value, MaxOp(), neg_inf<acc_t>(), scratch);
    const bool finite_max = max_value != neg_inf<acc_t>() && max_value != -neg_inf<acc_t>();
    acc_t sum = 0;
    if (active && finite_max) {
      for (int64_t k = threadIdx.x; k < C; k += blockDim.x) sum += std::exp(static_cast<acc_t>(frame[k]) - max_value);
    }
    sum = group_all_reduce(sum, SumOp(), acc_t(0), scratch);
    // an all -inf row has no mass (-inf); +inf propagates
    const acc_t frame_normalizer = !active ? acc_t(0) : finite_max ? max_value + std::log(sum) : max_value;
    if (threadIdx.x == 0 && row < num_rows) log_normalizer[n * T + t] = frame_normalizer;
    if (gather && active && n <= first_negative_length)
      group_write_emission_row(p, t, n, frame, frame_normalizer, log_alpha);
  }
}

// The entries of sample n's slot of the kept log_alpha that neither the emission gather nor the
// lattice write: for a valid sample -inf in rows t >= T_n (every row when there is no path) and
// in the rest of the slot up to the next sample's block ([offset(n) + T W, offset(n + 1)) when
// L_n < S); for an invalid sample NaN over its whole slot (over whatever the gather wrote).
// With concatenated targets a negative target length makes every later label start meaningless
// (and every later sample invalid): the first sample with one fills from its own offset to the
// end of the buffer, the later ones nothing.
template <typename scalar_t, typename acc_t, typename index_t>
__device__ void block_fill_unused_log_alpha(const CtcProblemView<scalar_t, index_t>& p, int64_t n, bool valid,
                                            acc_t* log_alpha) {
  const int64_t T = p.max_input_length;
  const int64_t buffer_end = log_alpha_numel(p.batch_size, p.num_target_slots, T);
  const bool concatenated = p.padded_width < 0;
  if (!valid && concatenated && __syncthreads_or(block_earlier_length_is_negative(p, n))) return;
  const int64_t slot_begin = clipped_log_alpha_offset(p, n);
  int64_t slot_end = n + 1 < p.batch_size ? clipped_log_alpha_offset(p, n + 1) : buffer_end;
  if (!valid && concatenated && p.target_lengths[n] < 0) slot_end = buffer_end;
  int64_t fill_begin = slot_begin;
  acc_t fill = std::numeric_limits<acc_t>::quiet_NaN();
  if (valid) {
    const int64_t input_length = p.input_lengths[n];
    const int64_t target_length = p.target_lengths[n];
    const int64_t num_states = 2 * target_length + 1;
    const bool no_lattice = target_length > input_length || input_length == 0;
    fill_begin += (no_lattice ? 0 : input_length) * num_states;
    const int64_t block_end = slot_begin + T * num_states;  // the slot holds at least the block
    if (slot_end < block_end) slot_end = block_end;
    fill = neg_inf<acc_t>();
  }
  for (int64_t i = fill_begin + threadIdx.x; i < slot_end; i += blockDim.x) log_alpha[i] = fill;
}

// Where a lattice sweep finds the emission log y_t(l'_s) of state s at frame t.  `load` is the
// frame's memory access, issued a frame ahead (HeldEmissions); `emission` is the arithmetic, done
// at the use, so that no instruction waits on the load before the frame that needs it.
//   KeptRows: row t of the sample's (T_n, W) block of the kept log_alpha; in the forward it holds
//     the emissions (log_normalizer_kernel's gather), one contiguous row per frame, each entry
//     read and then overwritten with alpha by the same thread; the backward reads alpha so.
//   LogitEmissions: gathered from the (T, N, C) logits and the log normaliser, x_t(l'_s) -
//     log_normalizer_t (rolling forward rows, and the backward).
template <typename acc_t>
struct KeptRows {
  using raw_t = acc_t;
  const acc_t* rows;  // (T_n, W) block of the sample
  int64_t num_states;
  __device__ raw_t load(int64_t t, int64_t s, int64_t /* state_class */) const { return rows[t * num_states + s]; }
  __device__ acc_t normalizer(int64_t /* t */) const { return acc_t(0); }
  __device__ acc_t emission(raw_t raw, acc_t /* frame_normalizer */) const { return raw; }
};

template <typename scalar_t, typename acc_t>
struct LogitEmissions {
  using raw_t = scalar_t;
  const scalar_t* logits;  // the sample's column: logits + n * stride_n
  int64_t logits_stride_t;
  const acc_t* log_normalizer;  // (T,) of the sample
  __device__ raw_t load(int64_t t, int64_t /* s */, int64_t state_class) const {
    return logits[t * logits_stride_t + state_class];
  }
  __device__ acc_t normalizer(int64_t t) const { return log_normalizer[t]; }
  __device__ acc_t emission(raw_t raw, acc_t frame_normalizer) const {
    return static_cast<acc_t>(raw) - frame_normalizer;
  }
};

// Fully unrolls a loop of constant trip count, so that the arrays it indexes stay in registers
// (nvcc; the emulation leaves it to g++).
#ifdef CTC_EXT_CUDA_EMULATION
#define CTC_UNROLL
#else
#define CTC_UNROLL _Pragma("unroll")
#endif

// States per thread whose emissions are held in registers a frame ahead; a band wider than this
// many blocks (W > 4 * 256 states) loads the rest in the frame that uses them.
constexpr int kHeldStates = 4;

// The raw emissions of frame t for the first kHeldStates states a thread owns in it.  A thread
// owns the states s = first + threadIdx.x + k blockDim.x of the band [first, last] (the order in
// which the backward's per-thread partial sums add them).
template <typename Emissions, typename acc_t>
struct HeldEmissions {
  typename Emissions::raw_t raw[kHeldStates] = {};
  acc_t frame_normalizer = 0;
};

template <typename acc_t, typename Emissions, typename index_t>
__device__ __forceinline__ HeldEmissions<Emissions, acc_t> load_held_emissions(const Emissions& emissions,
                                                                               const index_t* labels, int64_t blank,
                                                                               int64_t t, int64_t first, int64_t last) {
  HeldEmissions<Emissions, acc_t> held;
  held.frame_normalizer = emissions.normalizer(t);
  CTC_UNROLL
  for (int k = 0; k < kHeldStates; ++k) {
    const int64_t s = first + threadIdx.x + k * static_cast<int64_t>(blockDim.x);
    if (s <= last) held.raw[k] = emissions.load(t, s, extended_label(labels, 1, s, blank));
  }
  return held;
}

// visit(s, k, emission) for every state a thread owns in frame t's band [first, last], in rising
// order: the held ones (k < kHeldStates, a constant once unrolled) from registers, the rest
// (bands beyond kHeldStates blocks; k = kHeldStates) loaded now.
template <typename acc_t, typename Emissions, typename index_t, typename Visit>
__device__ __forceinline__ void for_owned_states(const Emissions& emissions,
                                                 const HeldEmissions<Emissions, acc_t>& held, const index_t* labels,
                                                 int64_t blank, int64_t t, int64_t first, int64_t last, Visit visit) {
  const int64_t stride = blockDim.x;
  CTC_UNROLL
  for (int k = 0; k < kHeldStates; ++k) {
    const int64_t s = first + threadIdx.x + k * stride;
    if (s <= last) visit(s, k, emissions.emission(held.raw[k], held.frame_normalizer));
  }
  for (int64_t s = first + threadIdx.x + kHeldStates * stride; s <= last; s += stride) {
    const acc_t emission =
        emissions.emission(emissions.load(t, s, extended_label(labels, 1, s, blank)), held.frame_normalizer);
    visit(s, kHeldStates, emission);
  }
}

// The alpha sweep of one sample over frames [0, T_n): row t (alpha_block + row_stride(t) W) gets
// alpha on the band; off the band a kept row already holds -inf (the gather), a rolling row is
// never read there.  Frame t + 1's emissions are loaded at the start of frame t, so that their
// latency overlaps frame t's work and its barrier instead of lengthening every step.
template <typename acc_t, typename Emissions, typename index_t>
__device__ __forceinline__ void block_alpha_sweep(const Emissions& emissions, acc_t* alpha_block, bool rolling_rows,
                                                  const index_t* labels, int64_t blank, int64_t input_length,
                                                  int64_t num_states) {
  auto alpha_row = [&](int64_t t) { return alpha_block + (rolling_rows ? (t & 1) : t) * num_states; };
  auto held = load_held_emissions<acc_t>(emissions, labels, blank, 0, band_first(0, input_length, num_states),
                                         band_last(0, num_states));
  for (int64_t t = 0; t < input_length; ++t) {
    decltype(held) next;
    if (t + 1 < input_length) {
      next = load_held_emissions<acc_t>(emissions, labels, blank, t + 1, band_first(t + 1, input_length, num_states),
                                        band_last(t + 1, num_states));
    }
    const int64_t first = band_first(t, input_length, num_states);
    const int64_t last = band_last(t, num_states);
    const LatticeRow<acc_t> previous{t > 0 ? alpha_row(t - 1) : nullptr, band_first(t - 1, input_length, num_states),
                                     band_last(t - 1, num_states)};
    acc_t* current = alpha_row(t);
    for_owned_states(emissions, held, labels, blank, t, first, last, [&](int64_t s, int, acc_t emission) {
      current[s] = t == 0 ? emission : alpha_state(previous, s, can_skip_from(labels, 1, s), emission);
    });
    __syncthreads();  // row t is complete before frame t + 1 reads it
    held = next;
  }
}

// One block per sample n: the alpha sweep, one __syncthreads per frame, frames stop at T_n.
//   neg_log_likelihood: (N,)
//   log_alpha: the flat ragged buffer of ctc_math.h when keep_log_alpha, every entry written:
//     a valid sample's rows (-inf off the band and for t >= T_n) and the rest of its slot with
//     -inf, an invalid sample's slot with NaN; rows t < T_n hold the emissions from
//     log_normalizer_kernel on entry.  Else scratch of forward_scratch_numel holding two rolling
//     rows per sample.
//   log_normalizer: (N, T) from log_normalizer_kernel
template <typename scalar_t, typename acc_t, typename index_t>
__global__ void forward_lattice_kernel(CtcProblemView<scalar_t, index_t> p, bool keep_log_alpha,
                                       acc_t* neg_log_likelihood, acc_t* log_alpha, const acc_t* log_normalizer) {
  const int64_t n = blockIdx.x;
  const int64_t T = p.max_input_length;
  const bool valid = block_sample_is_valid(p, n);
  if (keep_log_alpha) block_fill_unused_log_alpha(p, n, valid, log_alpha);
  if (!valid) {
    if (threadIdx.x == 0) neg_log_likelihood[n] = std::numeric_limits<acc_t>::quiet_NaN();
    return;
  }
  const int64_t input_length = p.input_lengths[n];
  const int64_t target_length = p.target_lengths[n];
  const int64_t num_states = 2 * target_length + 1;
  const index_t* labels = p.labels + p.label_start[n];
  acc_t* alpha_block = log_alpha + log_alpha_offset(n, p.label_start[n], keep_log_alpha ? T : 2);
  const acc_t* normalizer = log_normalizer + n * T;
  // A frame with a NaN or +inf logit (or only -inf ones) has no softmax: the loss is NaN, as the
  // built-in's, whatever the lattice below makes of it (as in the CPU kernel).
  int non_finite_input = 0;
  for (int64_t t = threadIdx.x; t < input_length; t += blockDim.x) non_finite_input |= !std::isfinite(normalizer[t]);
  const bool finite_input = __syncthreads_or(non_finite_input) == 0;
  if (target_length > input_length || input_length == 0) {
    if (threadIdx.x == 0) {
      neg_log_likelihood[n] = !finite_input                  ? std::numeric_limits<acc_t>::quiet_NaN()
                              : target_length > input_length ? std::numeric_limits<acc_t>::infinity()
                                                             : acc_t(0);
    }
    return;
  }
  if (keep_log_alpha) {
    block_alpha_sweep(KeptRows<acc_t>{alpha_block, num_states}, alpha_block, false, labels, p.blank, input_length,
                      num_states);
  } else {
    const LogitEmissions<scalar_t, acc_t> emissions{p.logits + n * p.logits_stride_n, p.logits_stride_t, normalizer};
    block_alpha_sweep(emissions, alpha_block, true, labels, p.blank, input_length, num_states);
  }
  if (threadIdx.x == 0) {
    const acc_t* last_row = alpha_block + (keep_log_alpha ? input_length - 1 : (input_length - 1) & 1) * num_states;
    const acc_t log_likelihood =
        num_states >= 2 ? log_add(last_row[num_states - 1], last_row[num_states - 2]) : last_row[num_states - 1];
    neg_log_likelihood[n] = finite_input ? -log_likelihood : std::numeric_limits<acc_t>::quiet_NaN();
  }
}

// ---------------------------------------------------------------------------------------------
// Backward

// One block per sample n: validates it, classifies it (SampleState) and, for a sample whose
// gradient is computed, links each label position to the previous / next position holding the
// same label, so that the lattice kernel sums the occupancies of one class in a fixed order.
// The links come from a stable sort of the positions by label: a bitonic network over the
// positions (O(L log^2 L) work in log^2 L barrier-separated steps), then neighbours in sorted
// order with equal labels are linked.
//   sorted_positions: (num_target_slots,) int64 scratch
//   previous_same_label, next_same_label: (num_target_slots,) int64, -1 when none
//   sample_state: (N,) int32
template <typename scalar_t, typename acc_t, typename index_t>
__global__ void backward_prepare_kernel(CtcProblemView<scalar_t, index_t> p, bool zero_infinity,
                                        const acc_t* neg_log_likelihood, int64_t* sorted_positions,
                                        int64_t* previous_same_label, int64_t* next_same_label, int32_t* sample_state) {
  const int64_t n = blockIdx.x;
  if (!block_sample_is_valid(p, n)) {
    if (threadIdx.x == 0) sample_state[n] = kSampleInvalid;
    return;
  }
  // A NaN loss (non-finite input) gives a NaN gradient whatever zero_infinity says.  Then the
  // lengths decide before the loss, an argument of the public backward op (see the CPU kernel).
  const acc_t nll = neg_log_likelihood[n];
  if (nll != nll) {
    if (threadIdx.x == 0) sample_state[n] = kSampleNaN;
    return;
  }
  if (nll == -neg_inf<acc_t>() || p.target_lengths[n] > p.input_lengths[n]) {
    if (threadIdx.x == 0) sample_state[n] = zero_infinity ? kSampleZero : kSampleNaN;
    return;
  }
  if (threadIdx.x == 0) sample_state[n] = kSampleCompute;
  const int64_t L = p.target_lengths[n];
  const int64_t start = p.label_start[n];
  const index_t* labels = p.labels + start;
  int64_t* order = sorted_positions + start;
  for (int64_t i = threadIdx.x; i < L; i += blockDim.x) order[i] = i;
  __syncthreads();
  // Ascending comparators only, over the positions padded to a power of two with virtual +inf
  // keys: a comparator that touches the padding never moves anything, so it is skipped.  Each
  // phase k first compares mirrored positions of each k-block (i, i ^ (k - 1)), then halves
  // (i, i ^ j); the comparators of a step are disjoint pairs, one thread each.
  for (int64_t k = 2; k / 2 < L; k *= 2) {
    for (int64_t j = k / 2; j >= 1; j /= 2) {
      for (int64_t i = threadIdx.x; i < L; i += blockDim.x) {
        const int64_t partner = j == k / 2 ? i ^ (k - 1) : i ^ j;
        if (partner <= i || partner >= L) continue;
        const int64_t a = order[i], b = order[partner];
        const int64_t label_a = static_cast<int64_t>(labels[a]), label_b = static_cast<int64_t>(labels[b]);
        if (label_b < label_a || (label_b == label_a && b < a)) {
          order[i] = b;
          order[partner] = a;
        }
      }
      __syncthreads();
    }
  }
  for (int64_t r = threadIdx.x; r < L; r += blockDim.x) {
    const int64_t position = order[r];
    const index_t label = labels[position];
    previous_same_label[start + position] = r > 0 && labels[order[r - 1]] == label ? order[r - 1] : -1;
    next_same_label[start + position] = r + 1 < L && labels[order[r + 1]] == label ? order[r + 1] : -1;
  }
}

// grad[t][n][k] = grad_nll[n] * softmax(x[t][n])[k] for every class of the rows of computed
// samples (the lattice kernel then overwrites the classes of the blank and the labels), NaN or 0
// for the others.  Rows (t, n) in grid-stride order, classes over the threads of a block.
//   grad: (T, N, C) with unit class stride, strides grad_stride_t / grad_stride_n
template <typename scalar_t, typename acc_t, typename index_t>
__global__ void gradient_rows_kernel(CtcProblemView<scalar_t, index_t> p, const acc_t* grad_nll /* (N,) */,
                                     const acc_t* log_normalizer, const int32_t* sample_state, scalar_t* grad,
                                     int64_t grad_stride_t, int64_t grad_stride_n) {
  const int64_t T = p.max_input_length, N = p.batch_size, C = p.num_classes;
  for (int64_t row = blockIdx.x; row < T * N; row += gridDim.x) {
    const int64_t t = row / N, n = row % N;
    scalar_t* grad_row = grad + t * grad_stride_t + n * grad_stride_n;
    const int32_t state = sample_state[n];
    if (state == kSampleInvalid || (state == kSampleNaN && t < p.input_lengths[n])) {
      for (int64_t k = threadIdx.x; k < C; k += blockDim.x)
        grad_row[k] = static_cast<scalar_t>(std::numeric_limits<acc_t>::quiet_NaN());
    } else if (state != kSampleCompute || t >= p.input_lengths[n]) {
      for (int64_t k = threadIdx.x; k < C; k += blockDim.x) grad_row[k] = scalar_t(0);
    } else {
      const scalar_t* frame = p.logits + t * p.logits_stride_t + n * p.logits_stride_n;
      const acc_t frame_normalizer = log_normalizer[n * T + t];
      const acc_t scale = grad_nll[n];
      for (int64_t k = threadIdx.x; k < C; k += blockDim.x) {
        grad_row[k] = static_cast<scalar_t>(scale * std::exp(static_cast<acc_t>(frame[k]) - frame_normalizer));
      }
    }
  }
}

// One block per computed sample n: log_beta from the last frame back, in two rolling rows, and
// for each frame t the occupancies of its band, occupancy[s] = exp(log_alpha + log_beta -
// emission - m) / Z with m the largest exponent of the band and Z the sum, which give the
// gradient of the classes on the path:
//   grad[t][n][k] = grad_nll[n] * (softmax(x[t][n])[k] - sum_{s in band, l'_s = k} occupancy[s]).
// The blank's sum is a fixed tree over the threads' partials (group_all_reduce); a label class is
// owned by its first position inside the band, which sums the chain of equal labels in order.
// Two occupancy rows alternate too, so that one barrier per frame suffices.  Frame t - 1's
// emissions (from the logits) and log_alpha entries are loaded at the start of frame t
// (HeldEmissions), off the critical path of the step.
//   log_alpha: the kept forward buffer (ctc_math.h layout)
//   lattice_scratch: backward_lattice_scratch_numel acc_t, 4 rows of W_n per sample
//   grad: as in gradient_rows_kernel, which has run before
// Shared: group_reduce_shared_bytes(1).
template <typename scalar_t, typename acc_t, typename index_t>
__global__ void backward_lattice_kernel(CtcProblemView<scalar_t, index_t> p, const acc_t* grad_nll,
                                        const acc_t* log_alpha, const acc_t* log_normalizer, acc_t* lattice_scratch,
                                        const int64_t* previous_same_label, const int64_t* next_same_label,
                                        const int32_t* sample_state, scalar_t* grad, int64_t grad_stride_t,
                                        int64_t grad_stride_n) {
  acc_t* scratch = reinterpret_cast<acc_t*>(dynamic_shared_memory());
  const int64_t n = blockIdx.x;
  if (sample_state[n] != kSampleCompute) return;  // uniform over the block
  const int64_t T = p.max_input_length;
  const int64_t input_length = p.input_lengths[n];
  const int64_t num_states = 2 * p.target_lengths[n] + 1;
  const int64_t start = p.label_start[n];
  const index_t* labels = p.labels + start;
  const acc_t* alpha_block = log_alpha + log_alpha_offset(n, start, T);
  acc_t* beta_rows = lattice_scratch + log_alpha_offset(n, start, 4);
  acc_t* occupancy_rows = beta_rows + 2 * num_states;
  const scalar_t* sample_logits = p.logits + n * p.logits_stride_n;
  const acc_t scale = grad_nll[n];
  if (input_length == 0) return;
  // A frame's emissions and log_alpha entries are loaded at the start of the frame after it (in
  // sweep order), like the forward's emissions: the kept log_alpha row is read like an emission row.
  const LogitEmissions<scalar_t, acc_t> emissions{sample_logits, p.logits_stride_t, log_normalizer + n * T};
  const KeptRows<acc_t> alpha_rows{alpha_block, num_states};
  auto load_held = [&](int64_t t, auto source) {
    return load_held_emissions<acc_t>(source, labels, p.blank, t, band_first(t, input_length, num_states),
                                      band_last(t, num_states));
  };
  auto held = load_held(input_length - 1, emissions);
  auto held_alpha = load_held(input_length - 1, alpha_rows);
  for (int64_t t = input_length - 1; t >= 0; --t) {
    decltype(held) next;  // frame t - 1's, in flight while frame t is finished
    decltype(held_alpha) next_alpha;
    if (t > 0) {
      next = load_held(t - 1, emissions);
      next_alpha = load_held(t - 1, alpha_rows);
    }
    const scalar_t* frame = sample_logits + t * p.logits_stride_t;
    const acc_t frame_normalizer = held.frame_normalizer;
    const int64_t first = band_first(t, input_length, num_states);
    const int64_t last = band_last(t, num_states);
    const LatticeRow<acc_t> later{beta_rows + ((t + 1) & 1) * num_states, band_first(t + 1, input_length, num_states),
                                  band_last(t + 1, num_states)};
    acc_t* current = beta_rows + (t & 1) * num_states;
    acc_t* occupancy = occupancy_rows + (t & 1) * num_states;
    const acc_t* alpha = alpha_block + t * num_states;
    // log occupancies first, then their exp relative to the frame's largest, normalised by their
    // sum (as the CPU kernel: exp(alpha + beta - emission + nll) overflows or vanishes once the
    // rounding of alpha + beta + nll exceeds exp's range, logits near 1e10 in float)
    acc_t max_partial = neg_inf<acc_t>();
    for_owned_states(emissions, held, labels, p.blank, t, first, last, [&](int64_t s, int k, acc_t emission) {
      // the band of the last frame is exactly the two final states
      const acc_t beta =
          t == input_length - 1 ? emission : beta_state(later, s, can_skip_to(labels, 1, num_states, s), emission);
      current[s] = beta;
      occupancy[s] = (k < kHeldStates ? held_alpha.raw[k] : alpha[s]) + beta - emission;
      max_partial = max_partial < occupancy[s] ? occupancy[s] : max_partial;
    });
    acc_t reference = group_all_reduce(max_partial, MaxOp(), neg_inf<acc_t>(), scratch);
    if (reference == neg_inf<acc_t>()) reference = 0;  // no reachable state: zeros, not (-inf) - (-inf)
    acc_t blank_partial = 0, total_partial = 0;
    for (int64_t s = first + threadIdx.x; s <= last; s += blockDim.x) {  // each thread its own states
      const acc_t state_occupancy = std::exp(occupancy[s] - reference);
      occupancy[s] = state_occupancy;
      total_partial += state_occupancy;
      if (!(s & 1)) blank_partial += state_occupancy;
    }
    __syncthreads();  // the rows of frame t are complete (group_all_reduce may have no barrier)
    const acc_t total_occupancy = group_all_reduce(total_partial, SumOp(), acc_t(0), scratch);
    const acc_t blank_occupancy = group_all_reduce(blank_partial, SumOp(), acc_t(0), scratch) / total_occupancy;
    scalar_t* grad_row = grad + t * grad_stride_t + n * grad_stride_n;
    if (threadIdx.x == 0) {
      const acc_t probability = std::exp(static_cast<acc_t>(frame[p.blank]) - frame_normalizer);
      grad_row[p.blank] = static_cast<scalar_t>(scale * (probability - blank_occupancy));
    }
    // label positions i whose state 2 i + 1 lies in the band
    const int64_t first_label = first / 2;
    const int64_t last_label = last >= 1 ? (last - 1) / 2 : -1;
    for (int64_t i = first_label + threadIdx.x; i <= last_label; i += blockDim.x) {
      if (previous_same_label[start + i] >= first_label) continue;  // not the class's first position
      const int64_t label = static_cast<int64_t>(labels[i]);
      acc_t label_occupancy = 0;
      for (int64_t j = i; j >= 0 && j <= last_label; j = next_same_label[start + j]) {
        label_occupancy += occupancy[2 * j + 1];
      }
      const acc_t probability = std::exp(static_cast<acc_t>(frame[label]) - frame_normalizer);
      grad_row[label] = static_cast<scalar_t>(scale * (probability - label_occupancy / total_occupancy));
    }
    held = next;
    held_alpha = next_alpha;
  }
}

// ---------------------------------------------------------------------------------------------
// Launch configuration (host code, shared with the emulation)

struct LaunchShape {
  dim3 grid;
  dim3 block;
  size_t shared_bytes;
};

inline int64_t round_up(int64_t value, int64_t multiple) { return (value + multiple - 1) / multiple * multiple; }

// Rows (t, n) of the normaliser: enough threads per row for C (whole warps: the reductions shuffle
// within warps), rows packed to 128+ threads.
inline LaunchShape log_normalizer_launch_shape(int64_t T, int64_t N, int64_t C, size_t acc_size,
                                               int64_t multiprocessor_count) {
  const int64_t threads_per_row = C <= 32 ? 32 : C <= 256 ? 64 : C <= 2048 ? 128 : 256;
  const int64_t rows_per_block = threads_per_row >= 128 ? 1 : 128 / threads_per_row;
  const int64_t groups = (T * N + rows_per_block - 1) / rows_per_block;
  const int64_t max_blocks = 32 * multiprocessor_count;  // grid-stride beyond this
  const int64_t blocks = groups < max_blocks ? (groups > 0 ? groups : 1) : max_blocks;
  return {dim3(static_cast<unsigned int>(blocks)),
          dim3(static_cast<unsigned int>(threads_per_row), static_cast<unsigned int>(rows_per_block)),
          group_reduce_shared_bytes(rows_per_block, acc_size > sizeof(int64_t) ? acc_size : sizeof(int64_t))};
}

// One block per sample; the widest possible lattice row sets the block size (whole warps, for
// the backward's reduction).  The widest target is known on the host without reading lengths: S
// for padded targets, all slots otherwise.
// The backward lattice kernel adds group_reduce_shared_bytes(1) of shared memory.
inline LaunchShape lattice_launch_shape(int64_t N, int64_t num_target_slots, int64_t padded_width) {
  const int64_t max_states = 2 * (padded_width >= 0 ? padded_width : num_target_slots) + 1;
  const int64_t threads = max_states >= 256 ? 256 : round_up(max_states, kWarpSize);
  return {dim3(static_cast<unsigned int>(N)), dim3(static_cast<unsigned int>(threads)), 0};
}

// Rows (t, n) of the gradient, one block per row at a time and enough blocks to fill the GPU
// even for N = 1; threads over the classes.
inline LaunchShape gradient_rows_launch_shape(int64_t T, int64_t N, int64_t C, int64_t multiprocessor_count) {
  const int64_t threads = C >= 256 ? 256 : round_up(C, kWarpSize);
  const int64_t rows = T * N;
  const int64_t max_blocks = 16 * multiprocessor_count;
  const int64_t blocks = rows < max_blocks ? (rows > 0 ? rows : 1) : max_blocks;
  return {dim3(static_cast<unsigned int>(blocks)), dim3(static_cast<unsigned int>(threads)), 0};
}

// Scratch the forward needs when log_alpha is not kept: two rolling rows per sample.
inline int64_t forward_scratch_numel(int64_t N, int64_t num_target_slots) {
  return log_alpha_numel(N, num_target_slots, 2);
}

// Scratch of backward_lattice_kernel: two rolling log_beta rows and two occupancy rows per sample.
inline int64_t backward_lattice_scratch_numel(int64_t N, int64_t num_target_slots) {
  return log_alpha_numel(N, num_target_slots, 4);
}

// log_normalizer_kernel: log_normalizer (N, T) and, when `log_alpha` is not null (the kept
// buffer), the emissions of every row t < T_n of every sample placed inside its slot.
template <typename scalar_t, typename acc_t, typename index_t>
void launch_log_normalizer(const CtcProblemView<scalar_t, index_t>& p, acc_t* log_normalizer, acc_t* log_alpha,
                           int64_t multiprocessor_count, cudaStream_t stream) {
  if (p.batch_size == 0 || p.max_input_length == 0) return;
  const LaunchShape shape =
      log_normalizer_launch_shape(p.max_input_length, p.batch_size, p.num_classes, sizeof(acc_t), multiprocessor_count);
  launch_kernel(log_normalizer_kernel<scalar_t, acc_t, index_t>, shape.grid, shape.block, shape.shared_bytes, stream, p,
                log_normalizer, log_alpha);
}

// The whole forward: log_normalizer (and the emissions) then the lattice.  Pointers are device pointers; `log_alpha`
// has log_alpha_numel(N, slots, T) elements when keep_log_alpha, forward_scratch_numel otherwise.
template <typename scalar_t, typename acc_t, typename index_t>
void launch_ctc_forward(const CtcProblemView<scalar_t, index_t>& p, bool keep_log_alpha, acc_t* neg_log_likelihood,
                        acc_t* log_alpha, acc_t* log_normalizer, int64_t multiprocessor_count, cudaStream_t stream) {
  if (p.batch_size == 0) return;
  launch_log_normalizer(p, log_normalizer, keep_log_alpha ? log_alpha : nullptr, multiprocessor_count, stream);
  const LaunchShape lattice = lattice_launch_shape(p.batch_size, p.num_target_slots, p.padded_width);
  launch_kernel(forward_lattice_kernel<scalar_t, acc_t, index_t>, lattice.grid, lattice.block, lattice.shared_bytes,
                stream, p, keep_log_alpha, neg_log_likelihood, log_alpha, static_cast<const acc_t*>(log_normalizer));
}

// The whole backward.  Scratch: backward_lattice_scratch_numel(N, slots) acc_t, three int64
// arrays of num_target_slots (sorted positions, previous and next same label), and N int32.
template <typename scalar_t, typename acc_t, typename index_t>
void launch_ctc_backward(const CtcProblemView<scalar_t, index_t>& p, bool zero_infinity, const acc_t* grad_nll,
                         const acc_t* neg_log_likelihood, const acc_t* log_alpha, const acc_t* log_normalizer,
                         acc_t* lattice_scratch, int64_t* label_links, int32_t* sample_state, scalar_t* grad,
                         int64_t grad_stride_t, int64_t grad_stride_n, int64_t multiprocessor_count,
                         cudaStream_t stream) {
  if (p.batch_size == 0 || p.max_input_length == 0) return;
  int64_t* sorted_positions = label_links;
  int64_t* previous_same_label = label_links + p.num_target_slots;
  int64_t* next_same_label = label_links + 2 * p.num_target_slots;
  const LaunchShape lattice = lattice_launch_shape(p.batch_size, p.num_target_slots, p.padded_width);
  launch_kernel(backward_prepare_kernel<scalar_t, acc_t, index_t>, lattice.grid, lattice.block, lattice.shared_bytes,
                stream, p, zero_infinity, neg_log_likelihood, sorted_positions, previous_same_label, next_same_label,
                sample_state);
  const LaunchShape rows =
      gradient_rows_launch_shape(p.max_input_length, p.batch_size, p.num_classes, multiprocessor_count);
  launch_kernel(gradient_rows_kernel<scalar_t, acc_t, index_t>, rows.grid, rows.block, rows.shared_bytes, stream, p,
                grad_nll, log_normalizer, static_cast<const int32_t*>(sample_state), grad, grad_stride_t,
                grad_stride_n);
  launch_kernel(backward_lattice_kernel<scalar_t, acc_t, index_t>, lattice.grid, lattice.block,
                group_reduce_shared_bytes(1, sizeof(acc_t)), stream, p, grad_nll, log_alpha, log_normalizer,
                lattice_scratch, static_cast<const int64_t*>(previous_same_label),
                static_cast<const int64_t*>(next_same_label), static_cast<const int32_t*>(sample_state), grad,
                grad_stride_t, grad_stride_n);
}

}  // namespace cuda
}  // namespace ctc_ext
