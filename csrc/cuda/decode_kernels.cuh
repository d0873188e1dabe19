// CUDA kernels of the greedy decoder and the forced aligner, on raw pointers only (no torch
// types), so that the same source compiles with g++ against the CPU emulation like
// ctc_loss_kernels.cuh (include the emulation header first, and define CTC_CHECK_LAUNCH()).
// They reproduce the CPU ops of csrc/cpu/ bit for bit: the same comparisons in the same order,
// the same tie rules, the same normaliser (computed by the host code with normalised_frames).
//
// Schedule (T frames, N samples, C classes, W_n = 2 L_n + 1 extended states of sample n):
//   greedy:  best_class_kernel  rows (t, n) spread over many blocks (the normaliser's launch
//                               shape); threads stride over the classes, then their (value,
//                               index) candidates meet in a warp-shuffle tree (group_argmax)
//            collapse_kernel    one thread per sample walks its frames: merge repeats, drop blanks
//   align:   viterbi_kernel     one block per sample; threads stride over the states of each
//                               frame, one __syncthreads per frame; scores in two rolling rows and
//                               one back-pointer per lattice cell in global scratch; thread 0
//                               backtracks
// No atomics; the argmax is a total order on (value, index) pairs, so its tree gives the CPU's
// winner whatever its shape: results do not depend on the launch configuration.
#pragma once

#include <cstdint>
#include <limits>

#include "../ctc_math.h"
#include "ctc_loss_kernels.cuh"

namespace ctc_ext {
namespace cuda {

// ---------------------------------------------------------------------------------------------
// Greedy

// Whether candidate (value, index) beats (best_value, best_index) under at::argmax's rule: NaN
// beats every number, a larger value beats a smaller one, and of equal values (or two NaNs) the
// lower index wins.  best_index < 0 means no candidate yet.
template <typename acc_t>
CTC_HOST_DEVICE inline bool beats_best_class(acc_t value, int64_t index, acc_t best_value, int64_t best_index) {
  if (best_index < 0) return index >= 0;
  if (index < 0) return false;
  const bool value_is_nan = value != value, best_is_nan = best_value != best_value;
  if (value_is_nan != best_is_nan) return value_is_nan;
  if (!value_is_nan && value != best_value) return value > best_value;
  return index < best_index;
}

// The butterfly of warp_all_reduce over (value, index) candidates: every lane ends with the
// warp's best under beats_best_class.
template <typename acc_t>
__device__ void warp_argmax(acc_t& value, int64_t& index) {
  for (int lane_mask = kWarpSize / 2; lane_mask >= 1; lane_mask /= 2) {
    const acc_t other_value = __shfl_xor_sync(kFullWarp, value, lane_mask);
    const int64_t other_index = __shfl_xor_sync(kFullWarp, index, lane_mask);
    if (beats_best_class(other_value, other_index, value, index)) {
      value = other_value;
      index = other_index;
    }
  }
}

// The best (value, index) candidate of a group of blockDim.x threads (one row threadIdx.y of the
// block), for every thread of the group: warp_argmax within each warp, then over the warps'
// winners, as group_all_reduce.  beats_best_class is a strict total order on candidates of
// distinct indices, so the winner is the CPU's whatever the tree.  Block-wide (two barriers).
//   scratch: 32 int64 indices then 32 acc_t values per group, blockDim.y groups
template <typename acc_t>
__device__ void group_argmax(acc_t& value, int64_t& index, unsigned char* scratch) {
  const unsigned int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  const unsigned int warps = blockDim.x / kWarpSize;
  warp_argmax(value, index);
  if (warps == 1) return;  // uniform over the block: no barrier needed
  int64_t* group_indices =
      reinterpret_cast<int64_t*>(scratch + threadIdx.y * kWarpSize * (sizeof(int64_t) + sizeof(acc_t)));
  acc_t* group_values = reinterpret_cast<acc_t*>(group_indices + kWarpSize);
  if (lane == 0) {
    group_indices[warp] = index;
    group_values[warp] = value;
  }
  __syncthreads();
  index = lane < warps ? group_indices[lane] : -1;
  value = lane < warps ? group_values[lane] : acc_t(0);
  warp_argmax(value, index);
  __syncthreads();  // every warp has read the scratch before it is written again
}

// best_class[n][t] = argmax_k logits[t][n][k] (the rule of beats_best_class) for t < T_n; rows
// beyond T_n, and every row of a sample whose input length is out of [0, T], are not written.
// Block (threads_per_row, rows_per_block); rows (t, n) in grid-stride groups of rows_per_block.
// Shared: group_argmax's scratch (best_class_launch_shape).
//   logits: (T, N, C), unit class stride, strides stride_t / stride_n
//   input_lengths: (N,) int64;  best_class: (N, T) int64
template <typename scalar_t, typename acc_t>
__global__ void best_class_kernel(const scalar_t* logits, int64_t stride_t, int64_t stride_n, int64_t T, int64_t N,
                                  int64_t C, const int64_t* input_lengths, int64_t* best_class) {
  unsigned char* scratch = dynamic_shared_memory();
  const int64_t num_rows = T * N;
  const int64_t num_groups = (num_rows + blockDim.y - 1) / blockDim.y;
  for (int64_t group = blockIdx.x; group < num_groups; group += gridDim.x) {
    const int64_t row = group * blockDim.y + threadIdx.y;  // row = t * N + n
    const int64_t t = row / N, n = row % N;
    // t < T_n also excludes negative lengths; lengths above T never index beyond row T - 1
    const bool active = row < num_rows && t < input_lengths[n];
    acc_t best_value = 0;
    int64_t best_index = -1;
    if (active) {
      const scalar_t* frame = logits + t * stride_t + n * stride_n;
      for (int64_t k = threadIdx.x; k < C; k += blockDim.x) {
        const acc_t value = static_cast<acc_t>(frame[k]);
        if (beats_best_class(value, k, best_value, best_index)) {
          best_value = value;
          best_index = k;
        }
      }
    }
    group_argmax(best_value, best_index, scratch);
    if (threadIdx.x == 0 && active) best_class[n * T + t] = best_index;
  }
}

// One thread per sample n: labels[n] = the classes of best_class[n][0:T_n] with repeats merged and
// blanks removed, padded with -1; label_lengths[n] = their number.  A sample whose input length
// is out of [0, T] (only possible when the lengths live on the device, unchecked) gets
// label_lengths[n] = -1 and a row of -1.
//   best_class: (N, T) int64;  labels: (N, T) int64;  label_lengths: (N,) int64
__global__ void collapse_kernel(const int64_t* best_class, const int64_t* input_lengths, int64_t T, int64_t N,
                                int64_t blank, int64_t* labels, int64_t* label_lengths) {
  const int64_t n = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (n >= N) return;
  const int64_t input_length = input_lengths[n];
  const bool valid = input_length >= 0 && input_length <= T;
  const int64_t* path = best_class + n * T;
  int64_t* sample_labels = labels + n * T;
  int64_t length = 0;
  int64_t previous = -1;  // class of the previous frame; a label repeated without a blank between merges
  for (int64_t t = 0; valid && t < input_length; ++t) {
    const int64_t current = path[t];
    if (current != blank && current != previous) sample_labels[length++] = current;
    previous = current;
  }
  for (int64_t t = length; t < T; ++t) sample_labels[t] = -1;
  label_lengths[n] = valid ? length : -1;
}

// Rows (t, n) of the argmax: the normaliser's shape, with group_argmax's scratch (an index and a
// value per warp of each row).
inline LaunchShape best_class_launch_shape(int64_t T, int64_t N, int64_t C, size_t acc_size,
                                           int64_t multiprocessor_count) {
  LaunchShape shape = log_normalizer_launch_shape(T, N, C, acc_size, multiprocessor_count);
  shape.shared_bytes = static_cast<size_t>(shape.block.y) * kWarpSize * (sizeof(int64_t) + acc_size);
  return shape;
}

inline LaunchShape collapse_launch_shape(int64_t N) {
  const int64_t threads = 128;
  const int64_t blocks = (N + threads - 1) / threads;
  return {dim3(static_cast<unsigned int>(blocks > 0 ? blocks : 1)), dim3(static_cast<unsigned int>(threads)), 0};
}

// The whole greedy decode.  Device pointers; best_class is (N, T) int64 scratch.
template <typename scalar_t, typename acc_t>
void launch_greedy_decode(const scalar_t* logits, int64_t stride_t, int64_t stride_n, int64_t T, int64_t N, int64_t C,
                          const int64_t* input_lengths, int64_t blank, int64_t* best_class, int64_t* labels,
                          int64_t* label_lengths, int64_t multiprocessor_count, cudaStream_t stream) {
  if (N == 0) return;
  if (T > 0) {
    const LaunchShape rows = best_class_launch_shape(T, N, C, sizeof(acc_t), multiprocessor_count);
    launch_kernel(best_class_kernel<scalar_t, acc_t>, rows.grid, rows.block, rows.shared_bytes, stream, logits,
                  stride_t, stride_n, T, N, C, input_lengths, best_class);
  }
  const LaunchShape samples = collapse_launch_shape(N);
  launch_kernel(collapse_kernel, samples.grid, samples.block, samples.shared_bytes, stream,
                static_cast<const int64_t*>(best_class), input_lengths, T, N, blank, labels, label_lengths);
}

// ---------------------------------------------------------------------------------------------
// Forced alignment

// How state s was entered at frame t: from s (0, stay), s - 1 (1, advance) or s - 2 (2, skip).
using BackPointer = uint8_t;

// One block per sample n: the Viterbi recursion of align_one_sample (forced_align_cpu.cpp) with
// the same comparisons in the same order, so scores, ties and the path are identical.
//   p: the problem with logits = the frames (T, N, C) in the accumulation dtype, unit class stride
//   log_normalizer: (T, N) contiguous, the logsumexp of every frame
//   score_rows: scratch of log_alpha_numel(N, slots, 2): two rows of W_n per sample
//   back_pointers: scratch of log_alpha_numel(N, slots, T): a (T, W_n) block per sample
//   alignment: (N, T) int64, preset to -1;  frame_log_probs: (N, T), preset to 0
//   path_log_prob: (N,): the best path's score, -inf when no path has a finite score (rows
//     left as preset), NaN for a sample with invalid lengths or labels (only possible when
//     they live on the device, unchecked; nothing out of range is read).
template <typename acc_t>
__global__ void viterbi_kernel(CtcProblemView<acc_t, int64_t> p, const acc_t* log_normalizer, acc_t* score_rows,
                               BackPointer* back_pointers, int64_t* alignment, acc_t* frame_log_probs,
                               acc_t* path_log_prob) {
  const int64_t n = blockIdx.x;
  if (!block_sample_is_valid(p, n)) {
    if (threadIdx.x == 0) path_log_prob[n] = std::numeric_limits<acc_t>::quiet_NaN();
    return;
  }
  const int64_t T = p.max_input_length, N = p.batch_size;
  const int64_t input_length = p.input_lengths[n];
  const int64_t target_length = p.target_lengths[n];
  const int64_t num_states = 2 * target_length + 1;
  const int64_t start = p.label_start[n];
  const int64_t* labels = p.labels + start;
  if (input_length == 0 || target_length > input_length) {
    if (threadIdx.x == 0) {
      path_log_prob[n] = input_length == 0 && target_length == 0 ? acc_t(0) : neg_inf<acc_t>();
    }
    return;
  }
  acc_t* rows = score_rows + log_alpha_offset(n, start, 2);
  BackPointer* sample_back_pointers = back_pointers + log_alpha_offset(n, start, T);
  const acc_t* frames = p.logits + n * p.logits_stride_n;
  auto log_prob = [&](int64_t t, int64_t label) {
    return frames[t * p.logits_stride_t + label] - log_normalizer[t * N + n];
  };
  for (int64_t t = 0; t < input_length; ++t) {
    const int64_t first = band_first(t, input_length, num_states);
    const int64_t last = band_last(t, num_states);
    acc_t* current = rows + (t & 1) * num_states;
    // read only for t > 0; outside its band the previous row is -inf, so reads need no band test
    const acc_t* previous = rows + ((t + 1) & 1) * num_states;
    BackPointer* frame_back_pointers = sample_back_pointers + t * num_states;
    for (int64_t s = threadIdx.x; s < num_states; s += blockDim.x) {
      BackPointer step = 0;
      if (s < first || s > last) {
        current[s] = neg_inf<acc_t>();
      } else if (t == 0) {
        current[s] = log_prob(t, extended_label(labels, 1, s, p.blank));
      } else {
        const acc_t best = best_predecessor(previous, labels, s, &step);
        current[s] = best + log_prob(t, extended_label(labels, 1, s, p.blank));
      }
      frame_back_pointers[s] = step;
    }
    __syncthreads();  // row t is complete before row t + 1 reads it (and overwrites row t - 1)
  }
  if (threadIdx.x != 0) return;
  // A complete path ends in the last label (W - 2) or the final blank (W - 1).
  const acc_t* last_row = rows + ((input_length - 1) & 1) * num_states;
  int64_t state = num_states - 1;
  if (num_states >= 2 && last_row[num_states - 2] > last_row[num_states - 1]) state = num_states - 2;
  const acc_t best_score = last_row[state];
  if (!(best_score > neg_inf<acc_t>())) {  // -inf or NaN: no usable path
    path_log_prob[n] = neg_inf<acc_t>();
    return;
  }
  path_log_prob[n] = best_score;
  for (int64_t t = input_length - 1; t >= 0; --t) {
    const int64_t label = extended_label(labels, 1, state, p.blank);
    alignment[n * T + t] = label;
    frame_log_probs[n * T + t] = log_prob(t, label);
    state -= sample_back_pointers[t * num_states + state];
  }
}

// Scratch of the aligner, in elements: two score rows per sample (acc_t) and one back-pointer per
// lattice cell (BackPointer).
inline int64_t viterbi_score_rows_numel(int64_t N, int64_t num_target_slots) {
  return log_alpha_numel(N, num_target_slots, 2);
}
inline int64_t viterbi_back_pointers_numel(int64_t N, int64_t num_target_slots, int64_t T) {
  return log_alpha_numel(N, num_target_slots, T);
}

// The whole alignment.  Device pointers; p.logits are the frames in the accumulation dtype.
template <typename acc_t>
void launch_forced_align(const CtcProblemView<acc_t, int64_t>& p, const acc_t* log_normalizer, acc_t* score_rows,
                         BackPointer* back_pointers, int64_t* alignment, acc_t* frame_log_probs, acc_t* path_log_prob,
                         cudaStream_t stream) {
  if (p.batch_size == 0) return;
  const LaunchShape lattice = lattice_launch_shape(p.batch_size, p.num_target_slots, p.padded_width);
  launch_kernel(viterbi_kernel<acc_t>, lattice.grid, lattice.block, lattice.shared_bytes, stream, p, log_normalizer,
                score_rows, back_pointers, alignment, frame_log_probs, path_log_prob);
}

}  // namespace cuda
}  // namespace ctc_ext
