// Forced alignment on the CPU: the Viterbi form of the CTC forward recursion (max instead of
// logsumexp, with a back-pointer per lattice cell), one sample per task, parallel over the batch.
// The extended-label index math and the reachable band come from ctc_math.h.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "../arguments.h"
#include "../ctc_math.h"

namespace ctc_ext {
namespace {

// How state s was entered at frame t: from s (stay), s - 1 (advance) or s - 2 (skip); the value
// is the step back.
using BackPointer = uint8_t;

// Viterbi alignment of one sample.
//   frames:          (T_n, C) logits of this sample, row stride `stride_t`, unit class stride
//   log_normalizer:  (T_n,) their per-frame logsumexp, stride `normalizer_stride`
//   labels:          the sample's L labels, unit stride
//   alignment:       (T,) output row: the class of the best path per frame, -1 from T_n on
//   frame_log_probs: (T,) output row: log_probs of that class, 0 from T_n on
// Returns the path's log-probability, -inf (and leaves the rows at -1 / 0) when no path has a
// finite score.
template <typename acc_t, typename index_t>
acc_t align_one_sample(const acc_t* frames, int64_t stride_t, const acc_t* log_normalizer, int64_t normalizer_stride,
                       int64_t input_length, const index_t* labels, int64_t target_length, int64_t blank,
                       int64_t* alignment, acc_t* frame_log_probs) {
  const int64_t T_n = input_length;
  const int64_t W = 2 * target_length + 1;
  if (T_n == 0) return target_length == 0 ? acc_t(0) : neg_inf<acc_t>();
  if (target_length > T_n) return neg_inf<acc_t>();  // the target cannot fit; the band is empty

  auto log_prob = [&](int64_t t, int64_t label) {
    return frames[t * stride_t + label] - log_normalizer[t * normalizer_stride];
  };
  std::vector<acc_t> score_rows(2 * W);
  std::vector<BackPointer> back_pointers(T_n * W, 0);
  for (int64_t t = 0; t < T_n; ++t) {
    const int64_t first = band_first(t, T_n, W);
    const int64_t last = band_last(t, W);
    acc_t* current = score_rows.data() + (t & 1) * W;
    std::fill(current, current + W, neg_inf<acc_t>());
    if (t == 0) {
      for (int64_t s = first; s <= last; ++s) current[s] = log_prob(t, extended_label(labels, 1, s, blank));
      continue;
    }
    // Outside the band the previous row is -inf, so the reads below need no band test.
    const acc_t* previous = score_rows.data() + ((t - 1) & 1) * W;
    BackPointer* frame_back_pointers = back_pointers.data() + t * W;
    for (int64_t s = first; s <= last; ++s) {
      BackPointer step = 0;
      const acc_t best = best_predecessor(previous, labels, s, &step);
      current[s] = best + log_prob(t, extended_label(labels, 1, s, blank));
      frame_back_pointers[s] = step;
    }
  }
  // A complete path ends in the last label (W - 2) or the final blank (W - 1).
  const acc_t* last_row = score_rows.data() + ((T_n - 1) & 1) * W;
  int64_t state = W - 1;
  if (W >= 2 && last_row[W - 2] > last_row[W - 1]) state = W - 2;
  const acc_t path_log_prob = last_row[state];
  if (!(path_log_prob > neg_inf<acc_t>())) return neg_inf<acc_t>();  // -inf or NaN: no usable path
  for (int64_t t = T_n - 1; t >= 0; --t) {
    const int64_t label = extended_label(labels, 1, state, blank);
    alignment[t] = label;
    frame_log_probs[t] = log_prob(t, label);
    state -= back_pointers[t * W + state];
  }
  return path_log_prob;
}

// logits: (T, N, C) floating; targets (N, S) padded or 1-D concatenated, int32 / int64;
// input_lengths, target_lengths: (N,) integer.
// Returns alignment (N, T) int64, frame_log_probs (N, T) and path_log_prob (N,) in the
// accumulation dtype.
std::tuple<at::Tensor, at::Tensor, at::Tensor> forced_align_cpu(const at::Tensor& logits, const at::Tensor& targets,
                                                                const at::Tensor& input_lengths,
                                                                const at::Tensor& target_lengths, int64_t blank) {
  TORCH_CHECK(logits.dim() == 3, "logits must be 3-D (T, N, C), got shape ", logits.sizes());
  TORCH_CHECK(logits.device().is_cpu(), "forced_align runs on the CPU, got logits on ", logits.device());
  const CtcProblem problem = prepare_ctc_problem(logits, targets, input_lengths, target_lengths, blank);
  check_ctc_values_on_cpu(problem);
  const int64_t T = problem.max_input_length, N = problem.batch_size;
  const NormalisedFrames normalised = normalised_frames(logits);
  const at::Tensor& frames = normalised.frames;                  // (T, N, C)
  const at::Tensor& log_normalizer = normalised.log_normalizer;  // (T, N)
  const auto acc_options = frames.options();
  at::Tensor alignment = at::full({N, T}, -1, logits.options().dtype(at::kLong));
  at::Tensor frame_log_probs = at::zeros({N, T}, acc_options);
  at::Tensor path_log_prob = at::empty({N}, acc_options);

  AT_DISPATCH_FLOATING_TYPES(frames.scalar_type(), "forced_align_cpu", [&] {
    using acc_t = scalar_t;
    AT_DISPATCH_INDEX_TYPES(problem.targets.scalar_type(), "forced_align_cpu", [&] {
      const acc_t* frames_data = frames.const_data_ptr<acc_t>();
      const acc_t* log_normalizer_data = log_normalizer.const_data_ptr<acc_t>();
      const int64_t stride_t = frames.stride(0), stride_n = frames.stride(1);
      const index_t* labels = problem.targets.const_data_ptr<index_t>();
      const int64_t* label_start = problem.label_start.const_data_ptr<int64_t>();
      const int64_t* input_length_data = problem.input_lengths.const_data_ptr<int64_t>();
      const int64_t* target_length_data = problem.target_lengths.const_data_ptr<int64_t>();
      int64_t* alignment_data = alignment.data_ptr<int64_t>();
      acc_t* frame_log_probs_data = frame_log_probs.data_ptr<acc_t>();
      acc_t* path_log_prob_data = path_log_prob.data_ptr<acc_t>();
      at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
        for (int64_t n = begin; n < end; ++n) {
          path_log_prob_data[n] =
              align_one_sample<acc_t, index_t>(frames_data + n * stride_n, stride_t, log_normalizer_data + n, N,
                                               input_length_data[n], labels + label_start[n], target_length_data[n],
                                               blank, alignment_data + n * T, frame_log_probs_data + n * T);
        }
      });
    });
  });
  return {alignment, frame_log_probs, path_log_prob};
}

}  // namespace

TORCH_LIBRARY_IMPL(ctc_ext, CPU, m) { m.impl("forced_align", &forced_align_cpu); }

}  // namespace ctc_ext
