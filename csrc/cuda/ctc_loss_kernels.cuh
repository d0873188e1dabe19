// CUDA kernels of the CTC loss and their launch configuration, on raw pointers only (no torch
// types), so that the very same source also compiles with g++ against the CPU emulation in
// tests/cuda_emulation/cuda_emulation.h (include that header first).  The recurrence itself
// (log-space helpers, extended labels, band, log_alpha layout) comes from ctc_math.h.
//
// Schedule (T frames, N samples, C classes, W_n = 2 L_n + 1 extended states of sample n):
//   forward:  log_normalizer_kernel  rows (t, n) spread over many blocks, a block-reduced
//                                    max and sum-exp per row -> log_normalizer (N, T)
//             forward_lattice_kernel one block per sample; threads stride over the states s of
//                                    the band, one __syncthreads per frame; frames stop at T_n
//   backward: backward_lattice_kernel one block per sample: validates, classifies the sample,
//                                    links equal labels, log_beta over the band into scratch
//             gradient_kernel        rows (t, n) spread over many blocks; each row of the
//                                    gradient is written by one block, classes in parallel
// No kernel uses atomics or warp intrinsics; every sum has a fixed order, so results are
// bitwise reproducible for a given launch configuration.
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
  kernel<<<grid, block, shared_bytes, stream> > >(args...);
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

// How the backward classifies a sample (written by backward_lattice_kernel, read per row).
enum SampleState : int32_t {
  kSampleCompute = 0,  // finite loss: the Eq. 16 gradient
  kSampleZero = 1,     // infinite loss with zero_infinity: zero gradient
  kSampleNaN = 2,      // infinite loss: NaN for t < T_n, zero beyond, like the CPU kernel
  kSampleInvalid = 3,  // invalid lengths or labels: NaN in every row, nothing out of range read
};

// ---------------------------------------------------------------------------------------------
// Device helpers

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
  if (p.padded_width < 0) {
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) bad |= p.target_lengths[j] < 0;
  }
  return __syncthreads_or(bad) == 0;
}

// The sum (or with take_max the max) over the block of one value per thread, in thread order, so
// every thread gets the same bits.  Block-wide (contains barriers).  partials: blockDim.x acc_t.
template <typename acc_t>
__device__ acc_t block_reduce(acc_t* partials, acc_t value, bool take_max) {
  partials[threadIdx.x] = value;
  __syncthreads();
  acc_t result = take_max ? neg_inf<acc_t>() : acc_t(0);
  for (unsigned int i = 0; i < blockDim.x; ++i) {
    result = take_max ? (result < partials[i] ? partials[i] : result) : result + partials[i];
  }
  __syncthreads();
  return result;
}

// log_alpha / log_beta entry s of a row, -inf outside the row's band [first, last].
template <typename acc_t>
__device__ __forceinline__ acc_t band_entry(const acc_t* row, int64_t s, int64_t first, int64_t last) {
  return (s >= first && s <= last) ? row[s] : neg_inf<acc_t>();
}

// ---------------------------------------------------------------------------------------------
// Forward

// log_normalizer[n][t] = logsumexp_k logits[t][n][k] for t < T_n, 0 beyond (the CPU kernel's
// output, whether or not the sample's target fits).  Block (threads_per_row, rows_per_block); rows (t, n)
// are visited in grid-stride groups of rows_per_block.  Shared: threads_per_row * rows_per_block
// acc_t partials.
template <typename scalar_t, typename acc_t, typename index_t>
__global__ void log_normalizer_kernel(CtcProblemView<scalar_t, index_t> p, acc_t* log_normalizer /* (N, T) */) {
  acc_t* partials = reinterpret_cast<acc_t*>(dynamic_shared_memory());
  const int64_t T = p.max_input_length, N = p.batch_size, C = p.num_classes;
  const int64_t num_rows = T * N;
  const int64_t num_groups = (num_rows + blockDim.y - 1) / blockDim.y;
  acc_t* my_partials = partials + threadIdx.y * blockDim.x;
  for (int64_t group = blockIdx.x; group < num_groups; group += gridDim.x) {
    const int64_t row = group * blockDim.y + threadIdx.y;  // row = t * N + n
    const int64_t t = row / N, n = row % N;
    bool active = row < num_rows;
    if (active) active = t < p.input_lengths[n];
    const scalar_t* frame = p.logits + (active ? t * p.logits_stride_t + n * p.logits_stride_n : 0);
    // max, ignoring NaN like std::max(max, x) on the CPU; NaN still reaches the sum below
    acc_t max_value = neg_inf<acc_t>();
    if (active) {
      for (int64_t k = threadIdx.x; k < C; k += blockDim.x) {
        const acc_t x = static_cast<acc_t>(frame[k]);
        max_value = max_value < x ? x : max_value;
      }
    }
    my_partials[threadIdx.x] = max_value;
    __syncthreads();
    max_value = neg_inf<acc_t>();
    for (unsigned int i = 0; i < blockDim.x; ++i) max_value = max_value < my_partials[i] ? my_partials[i] : max_value;
    __syncthreads();
    const bool finite_max = max_value != neg_inf<acc_t>() && max_value != -neg_inf<acc_t>();
    acc_t sum = 0;
    if (active && finite_max) {
      for (int64_t k = threadIdx.x; k < C; k += blockDim.x) sum += std::exp(static_cast<acc_t>(frame[k]) - max_value);
    }
    my_partials[threadIdx.x] = sum;
    __syncthreads();
    if (threadIdx.x == 0 && row < num_rows) {
      acc_t total = 0;
      for (unsigned int i = 0; i < blockDim.x; ++i) total += my_partials[i];
      // an all -inf row has no mass (-inf); +inf propagates
      log_normalizer[n * T + t] = !active ? acc_t(0) : finite_max ? max_value + std::log(total) : max_value;
    }
    __syncthreads();  // the partials are read before the next group writes them
  }
}

// One block per sample n.  Threads stride over the states s of each frame's band; a frame's row
// is complete (one __syncthreads) before the next frame reads it, and frames stop at T_n.
//   neg_log_likelihood: (N,)
//   log_alpha: the flat ragged buffer of ctc_math.h when keep_log_alpha (every entry of a valid
//     sample's block written, -inf off the band), else scratch of log_alpha_numel(N, slots, 2)
//     holding two rolling rows per sample.
//   log_normalizer: (N, T) from log_normalizer_kernel
template <typename scalar_t, typename acc_t, typename index_t>
__global__ void forward_lattice_kernel(CtcProblemView<scalar_t, index_t> p, bool keep_log_alpha,
                                       acc_t* neg_log_likelihood, acc_t* log_alpha, const acc_t* log_normalizer) {
  const int64_t n = blockIdx.x;
  if (!block_sample_is_valid(p, n)) {
    if (threadIdx.x == 0) neg_log_likelihood[n] = std::numeric_limits<acc_t>::quiet_NaN();
    return;
  }
  const int64_t T = p.max_input_length;
  const int64_t input_length = p.input_lengths[n];
  const int64_t target_length = p.target_lengths[n];
  const int64_t num_states = 2 * target_length + 1;
  const index_t* labels = p.labels + p.label_start[n];
  acc_t* alpha_block = log_alpha + log_alpha_offset(n, p.label_start[n], keep_log_alpha ? T : 2);
  const scalar_t* sample_logits = p.logits + n * p.logits_stride_n;
  const acc_t* normalizer = log_normalizer + n * T;
  // A frame with a NaN or +inf logit (or only -inf ones) has no softmax: the loss is NaN, as the
  // built-in's, whatever the lattice below makes of it (as in the CPU kernel).
  int non_finite_input = 0;
  for (int64_t t = threadIdx.x; t < input_length; t += blockDim.x) non_finite_input |= !std::isfinite(normalizer[t]);
  const bool finite_input = __syncthreads_or(non_finite_input) == 0;

  // Entries that hold no lattice work are -inf: rows t >= T_n (all rows when there is no path)
  // and the rest of the sample's block, [offset(n) + T W, offset(n + 1)), when L_n < S.
  const bool no_lattice = target_length > input_length || input_length == 0;
  if (keep_log_alpha) {
    const int64_t block_begin = log_alpha_offset(n, p.label_start[n], T);
    const int64_t buffer_end = log_alpha_numel(p.batch_size, p.num_target_slots, T);
    int64_t block_end = n + 1 < p.batch_size ? log_alpha_offset(n + 1, p.label_start[n + 1], T) : buffer_end;
    block_end = block_end < block_begin + T * num_states ? block_begin + T * num_states
                : block_end > buffer_end                 ? buffer_end
                                                         : block_end;
    const int64_t first_padding_row = no_lattice ? 0 : input_length;
    for (int64_t i = first_padding_row * num_states + threadIdx.x; i < block_end - block_begin; i += blockDim.x) {
      alpha_block[i] = neg_inf<acc_t>();
    }
  }
  if (no_lattice) {
    if (threadIdx.x == 0) {
      neg_log_likelihood[n] = !finite_input                  ? std::numeric_limits<acc_t>::quiet_NaN()
                              : target_length > input_length ? std::numeric_limits<acc_t>::infinity()
                                                             : acc_t(0);
    }
    return;
  }
  auto alpha_row = [&](int64_t t) { return alpha_block + (keep_log_alpha ? t : (t & 1)) * num_states; };
  for (int64_t t = 0; t < input_length; ++t) {
    const scalar_t* frame = sample_logits + t * p.logits_stride_t;
    const acc_t frame_normalizer = normalizer[t];
    const int64_t first = band_first(t, input_length, num_states);
    const int64_t last = band_last(t, num_states);
    const int64_t previous_first = band_first(t - 1, input_length, num_states);
    const int64_t previous_last = band_last(t - 1, num_states);
    acc_t* current = alpha_row(t);
    const acc_t* previous = t > 0 ? alpha_row(t - 1) : nullptr;
    // a kept row is written whole (-inf off the band); a rolling row only on the band
    const int64_t write_begin = keep_log_alpha ? 0 : first;
    const int64_t write_end = keep_log_alpha ? num_states - 1 : last;
    for (int64_t s = write_begin + threadIdx.x; s <= write_end; s += blockDim.x) {
      if (s < first || s > last) {
        current[s] = neg_inf<acc_t>();
        continue;
      }
      const acc_t emission = static_cast<acc_t>(frame[extended_label(labels, 1, s, p.blank)]) - frame_normalizer;
      if (t == 0) {
        current[s] = emission;
        continue;
      }
      const acc_t stay = band_entry(previous, s, previous_first, previous_last);
      const acc_t advance = band_entry(previous, s - 1, previous_first, previous_last);
      const acc_t skip =
          can_skip_from(labels, 1, s) ? band_entry(previous, s - 2, previous_first, previous_last) : neg_inf<acc_t>();
      current[s] = emission + log_add3(stay, advance, skip);
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    const acc_t* last_row = alpha_row(input_length - 1);
    const acc_t log_likelihood =
        num_states >= 2 ? log_add(last_row[num_states - 1], last_row[num_states - 2]) : last_row[num_states - 1];
    neg_log_likelihood[n] = finite_input ? -log_likelihood : std::numeric_limits<acc_t>::quiet_NaN();
  }
}

// ---------------------------------------------------------------------------------------------
// Backward

// One block per sample n: validates it, classifies it (SampleState), links each label to the
// previous / next position holding the same label, and computes log_beta over the band.
//   log_beta: ragged scratch shaped like log_alpha (only band entries are written)
//   previous_same_label, next_same_label: (num_target_slots,) int64 scratch, -1 when none
//   sample_state: (N,) int32
template <typename scalar_t, typename acc_t, typename index_t>
__global__ void backward_lattice_kernel(CtcProblemView<scalar_t, index_t> p, bool zero_infinity,
                                        const acc_t* neg_log_likelihood, const acc_t* log_normalizer, acc_t* log_beta,
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
  const int64_t T = p.max_input_length;
  const int64_t input_length = p.input_lengths[n];
  const int64_t target_length = p.target_lengths[n];
  const int64_t num_states = 2 * target_length + 1;
  const int64_t start = p.label_start[n];
  const index_t* labels = p.labels + start;

  // Equal labels are chained so that the gradient kernel sums the occupancies of one class in a
  // fixed order without a per-class buffer.
  for (int64_t i = threadIdx.x; i < target_length; i += blockDim.x) {
    int64_t previous = -1, next = -1;
    for (int64_t j = i - 1; j >= 0; --j) {
      if (labels[j] == labels[i]) {
        previous = j;
        break;
      }
    }
    for (int64_t j = i + 1; j < target_length; ++j) {
      if (labels[j] == labels[i]) {
        next = j;
        break;
      }
    }
    previous_same_label[start + i] = previous;
    next_same_label[start + i] = next;
  }

  acc_t* beta_block = log_beta + log_alpha_offset(n, start, T);
  const scalar_t* sample_logits = p.logits + n * p.logits_stride_n;
  for (int64_t t = input_length - 1; t >= 0; --t) {
    const scalar_t* frame = sample_logits + t * p.logits_stride_t;
    const acc_t frame_normalizer = log_normalizer[n * T + t];
    const int64_t first = band_first(t, input_length, num_states);
    const int64_t last = band_last(t, num_states);
    const int64_t next_first = band_first(t + 1, input_length, num_states);
    const int64_t next_last = band_last(t + 1, num_states);
    acc_t* current = beta_block + t * num_states;
    const acc_t* next = beta_block + (t + 1) * num_states;
    for (int64_t s = first + threadIdx.x; s <= last; s += blockDim.x) {
      const acc_t emission = static_cast<acc_t>(frame[extended_label(labels, 1, s, p.blank)]) - frame_normalizer;
      if (t == input_length - 1) {
        current[s] = emission;  // the band of the last frame is exactly the two final states
        continue;
      }
      const acc_t stay = band_entry(next, s, next_first, next_last);
      const acc_t advance = s + 1 < num_states ? band_entry(next, s + 1, next_first, next_last) : neg_inf<acc_t>();
      const acc_t skip = (s + 2 < num_states && can_skip_from(labels, 1, s + 2))
                             ? band_entry(next, s + 2, next_first, next_last)
                             : neg_inf<acc_t>();
      current[s] = emission + log_add3(stay, advance, skip);
    }
    __syncthreads();
  }
}

// grad[t][n][k] = grad_nll[n] * (softmax(x[t][n])[k] - sum_{s in band, l'_s = k} occupancy[t][s]),
// occupancy = exp(log_alpha + log_beta - emission - m) / Z with m the largest exponent of the
// frame's band and Z the sum (as on the CPU: exp(... + nll) overflows or vanishes once the
// rounding of alpha + beta + nll exceeds exp's range, logits near 1e10 in float).  Rows (t, n) in
// grid-stride order, one block per row at a time: pass 1 writes every class (the blank's
// occupancy already subtracted), pass 2 rewrites the classes of the target's labels.  A label
// class is owned by its first position inside the band, which sums the chain of equal labels in
// order.  Shared: blockDim.x acc_t partials.
//   grad: (T, N, C) with unit class stride, strides grad_stride_t / grad_stride_n
template <typename scalar_t, typename acc_t, typename index_t>
__global__ void gradient_kernel(CtcProblemView<scalar_t, index_t> p, const acc_t* grad_nll /* (N,) */,
                                const acc_t* log_alpha, const acc_t* log_beta, const acc_t* log_normalizer,
                                const int64_t* previous_same_label, const int64_t* next_same_label,
                                const int32_t* sample_state, scalar_t* grad, int64_t grad_stride_t,
                                int64_t grad_stride_n) {
  acc_t* partials = reinterpret_cast<acc_t*>(dynamic_shared_memory());
  const int64_t T = p.max_input_length, N = p.batch_size, C = p.num_classes;
  for (int64_t row = blockIdx.x; row < T * N; row += gridDim.x) {
    const int64_t t = row / N, n = row % N;
    scalar_t* grad_row = grad + t * grad_stride_t + n * grad_stride_n;
    const int32_t state = sample_state[n];
    // the branch is uniform over the block: every thread sees the same row
    if (state == kSampleInvalid || (state == kSampleNaN && t < p.input_lengths[n])) {
      for (int64_t k = threadIdx.x; k < C; k += blockDim.x)
        grad_row[k] = static_cast<scalar_t>(std::numeric_limits<acc_t>::quiet_NaN());
      continue;
    }
    if (state != kSampleCompute || t >= p.input_lengths[n]) {
      for (int64_t k = threadIdx.x; k < C; k += blockDim.x) grad_row[k] = scalar_t(0);
      continue;
    }
    const int64_t input_length = p.input_lengths[n];
    const int64_t target_length = p.target_lengths[n];
    const int64_t num_states = 2 * target_length + 1;
    const int64_t start = p.label_start[n];
    const index_t* labels = p.labels + start;
    const int64_t row_offset = log_alpha_offset(n, start, T) + t * num_states;
    const acc_t* alpha = log_alpha + row_offset;
    const acc_t* beta = log_beta + row_offset;
    const scalar_t* frame = p.logits + t * p.logits_stride_t + n * p.logits_stride_n;
    const acc_t frame_normalizer = log_normalizer[n * T + t];
    const acc_t scale = grad_nll[n];
    const int64_t first = band_first(t, input_length, num_states);
    const int64_t last = band_last(t, num_states);
    auto log_occupancy = [&](int64_t s) {
      const acc_t emission = static_cast<acc_t>(frame[extended_label(labels, 1, s, p.blank)]) - frame_normalizer;
      return alpha[s] + beta[s] - emission;
    };

    // the largest exponent, then the sums of the blank's and of all occupancies relative to it
    acc_t partial_max = neg_inf<acc_t>();
    for (int64_t s = first + threadIdx.x; s <= last; s += blockDim.x) {
      const acc_t value = log_occupancy(s);
      partial_max = partial_max < value ? value : partial_max;
    }
    acc_t reference = block_reduce(partials, partial_max, true);
    if (reference == neg_inf<acc_t>()) reference = 0;  // no reachable state: zeros, not (-inf) - (-inf)
    acc_t partial_blank = 0, partial_total = 0;
    for (int64_t s = first + threadIdx.x; s <= last; s += blockDim.x) {
      const acc_t occupancy = std::exp(log_occupancy(s) - reference);
      partial_total += occupancy;
      if (!(s & 1)) partial_blank += occupancy;
    }
    const acc_t total_occupancy = block_reduce(partials, partial_total, false);
    const acc_t blank_occupancy = block_reduce(partials, partial_blank, false) / total_occupancy;

    for (int64_t k = threadIdx.x; k < C; k += blockDim.x) {
      const acc_t probability = std::exp(static_cast<acc_t>(frame[k]) - frame_normalizer);
      const acc_t occupancy = k == p.blank ? blank_occupancy : acc_t(0);
      grad_row[k] = static_cast<scalar_t>(scale * (probability - occupancy));
    }
    __syncthreads();  // pass 1 is written (and the partials read) before pass 2 rewrites

    // label positions i whose state 2 i + 1 lies in the band
    const int64_t first_label = first / 2;
    const int64_t last_label = last >= 1 ? (last - 1) / 2 : -1;
    for (int64_t i = first_label + threadIdx.x; i <= last_label; i += blockDim.x) {
      if (previous_same_label[start + i] >= first_label) continue;  // not the class's first position
      const int64_t label = static_cast<int64_t>(labels[i]);
      const acc_t emission = static_cast<acc_t>(frame[label]) - frame_normalizer;
      acc_t occupancy = 0;
      for (int64_t j = i; j >= 0 && j <= last_label; j = next_same_label[start + j]) {
        occupancy += std::exp(log_occupancy(2 * j + 1) - reference);
      }
      grad_row[label] = static_cast<scalar_t>(scale * (std::exp(emission) - occupancy / total_occupancy));
    }
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

// Rows (t, n) of the normaliser: enough threads per row for C, rows packed to 128+ threads.
inline LaunchShape log_normalizer_launch_shape(int64_t T, int64_t N, int64_t C, size_t acc_size,
                                               int64_t multiprocessor_count) {
  const int64_t threads_per_row = C <= 32 ? 32 : C <= 256 ? 64 : C <= 2048 ? 128 : 256;
  const int64_t rows_per_block = threads_per_row >= 128 ? 1 : 128 / threads_per_row;
  const int64_t groups = (T * N + rows_per_block - 1) / rows_per_block;
  const int64_t max_blocks = 32 * multiprocessor_count;  // grid-stride beyond this
  const int64_t blocks = groups < max_blocks ? (groups > 0 ? groups : 1) : max_blocks;
  return {dim3(static_cast<unsigned int>(blocks)),
          dim3(static_cast<unsigned int>(threads_per_row), static_cast<unsigned int>(rows_per_block)),
          static_cast<size_t>(threads_per_row * rows_per_block) * acc_size};
}

// One block per sample; the widest possible lattice row sets the block size.  The widest target
// is known on the host without reading lengths: S for padded targets, all slots otherwise.
inline LaunchShape lattice_launch_shape(int64_t N, int64_t num_target_slots, int64_t padded_width) {
  const int64_t max_states = 2 * (padded_width >= 0 ? padded_width : num_target_slots) + 1;
  const int64_t threads = max_states >= 256 ? 256 : round_up(max_states, 32);
  return {dim3(static_cast<unsigned int>(N)), dim3(static_cast<unsigned int>(threads)), 0};
}

// Rows (t, n) of the gradient, one block per row at a time and enough blocks to fill the GPU
// even for N = 1; threads over the classes and the band.
inline LaunchShape gradient_launch_shape(int64_t T, int64_t N, int64_t C, int64_t num_target_slots,
                                         int64_t padded_width, size_t acc_size, int64_t multiprocessor_count) {
  const int64_t max_states = 2 * (padded_width >= 0 ? padded_width : num_target_slots) + 1;
  const int64_t width = C > max_states ? C : max_states;
  const int64_t threads = width >= 256 ? 256 : round_up(width, 32);
  const int64_t rows = T * N;
  const int64_t max_blocks = 16 * multiprocessor_count;
  const int64_t blocks = rows < max_blocks ? (rows > 0 ? rows : 1) : max_blocks;
  return {dim3(static_cast<unsigned int>(blocks)), dim3(static_cast<unsigned int>(threads)),
          static_cast<size_t>(threads) * acc_size};
}

// Scratch the forward needs when log_alpha is not kept: two rolling rows per sample.
inline int64_t forward_scratch_numel(int64_t N, int64_t num_target_slots) {
  return log_alpha_numel(N, num_target_slots, 2);
}

// The whole forward: log_normalizer then the lattice.  Pointers are device pointers; `log_alpha`
// has log_alpha_numel(N, slots, T) elements when keep_log_alpha, forward_scratch_numel otherwise.
template <typename scalar_t, typename acc_t, typename index_t>
void launch_ctc_forward(const CtcProblemView<scalar_t, index_t>& p, bool keep_log_alpha, acc_t* neg_log_likelihood,
                        acc_t* log_alpha, acc_t* log_normalizer, int64_t multiprocessor_count, cudaStream_t stream) {
  if (p.batch_size == 0) return;
  if (p.max_input_length > 0) {
    const LaunchShape normalizer = log_normalizer_launch_shape(p.max_input_length, p.batch_size, p.num_classes,
                                                               sizeof(acc_t), multiprocessor_count);
    launch_kernel(log_normalizer_kernel<scalar_t, acc_t, index_t>, normalizer.grid, normalizer.block,
                  normalizer.shared_bytes, stream, p, log_normalizer);
  }
  const LaunchShape lattice = lattice_launch_shape(p.batch_size, p.num_target_slots, p.padded_width);
  launch_kernel(forward_lattice_kernel<scalar_t, acc_t, index_t>, lattice.grid, lattice.block, lattice.shared_bytes,
                stream, p, keep_log_alpha, neg_log_likelihood, log_alpha, static_cast<const acc_t*>(log_normalizer));
}

// The whole backward.  Scratch: log_beta of log_alpha_numel(N, slots, T) acc_t, two int64
// arrays of num_target_slots, and N int32.
template <typename scalar_t, typename acc_t, typename index_t>
void launch_ctc_backward(const CtcProblemView<scalar_t, index_t>& p, bool zero_infinity, const acc_t* grad_nll,
                         const acc_t* neg_log_likelihood, const acc_t* log_alpha, const acc_t* log_normalizer,
                         acc_t* log_beta, int64_t* previous_same_label, int64_t* next_same_label, int32_t* sample_state,
                         scalar_t* grad, int64_t grad_stride_t, int64_t grad_stride_n, int64_t multiprocessor_count,
                         cudaStream_t stream) {
  if (p.batch_size == 0 || p.max_input_length == 0) return;
  const LaunchShape lattice = lattice_launch_shape(p.batch_size, p.num_target_slots, p.padded_width);
  launch_kernel(backward_lattice_kernel<scalar_t, acc_t, index_t>, lattice.grid, lattice.block, lattice.shared_bytes,
                stream, p, zero_infinity, neg_log_likelihood, log_normalizer, log_beta, previous_same_label,
                next_same_label, sample_state);
  const LaunchShape rows = gradient_launch_shape(p.max_input_length, p.batch_size, p.num_classes, p.num_target_slots,
                                                 p.padded_width, sizeof(acc_t), multiprocessor_count);
  launch_kernel(gradient_kernel<scalar_t, acc_t, index_t>, rows.grid, rows.block, rows.shared_bytes, stream, p,
                grad_nll, log_alpha, static_cast<const acc_t*>(log_beta), log_normalizer,
                static_cast<const int64_t*>(previous_same_label), static_cast<const int64_t*>(next_same_label),
                static_cast<const int32_t*>(sample_state), grad, grad_stride_t, grad_stride_n);
}

}  // namespace cuda
}  // namespace ctc_ext
