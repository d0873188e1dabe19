// The ctc_ext::beam_search op on the CPU: the prefix search of prefix_search.h without scorers,
// one sample per task, parallel over the batch.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "../arguments.h"
#include "prefix_search.h"
#include "sample_queue.h"

namespace ctc_ext {
namespace {

// logits: (T, N, C) floating; input_lengths: (N,) integer.
// Returns labels (N, top_k, T) int64 padded with -1, label_lengths (N, top_k) int64, log_probs
// (N, top_k) in the accumulation dtype (-inf in unused slots) and num_hypotheses (N,) int64.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> beam_search_cpu(const at::Tensor& logits,
                                                                           const at::Tensor& input_lengths_in,
                                                                           int64_t blank, int64_t beam_width,
                                                                           int64_t top_k) {
  const at::Tensor input_lengths = checked_decode_input_lengths(logits, input_lengths_in, blank);
  TORCH_CHECK(beam_width >= 1, "beam_width must be at least 1, got ", beam_width);
  TORCH_CHECK(top_k >= 1, "top_k must be at least 1, got ", top_k);
  const int64_t T = logits.size(0), N = logits.size(1), C = logits.size(2);
  const NormalisedFrames normalised = normalised_frames(logits);
  const at::Tensor& frames = normalised.frames;                  // (T, N, C)
  const at::Tensor& log_normalizer = normalised.log_normalizer;  // (T, N)
  const auto long_options = logits.options().dtype(at::kLong);
  at::Tensor labels = at::full({N, top_k, T}, -1, long_options);
  at::Tensor label_lengths = at::zeros({N, top_k}, long_options);
  at::Tensor hypothesis_log_probs = at::full({N, top_k}, -std::numeric_limits<double>::infinity(), frames.options());
  at::Tensor num_hypotheses = at::zeros({N}, long_options);
  SearchOptions options;
  options.num_classes = C;
  options.blank = blank;
  options.beam_width = beam_width;

  AT_DISPATCH_FLOATING_TYPES(frames.scalar_type(), "beam_search_cpu", [&] {
    const scalar_t* frames_data = frames.const_data_ptr<scalar_t>();
    const scalar_t* log_normalizer_data = log_normalizer.const_data_ptr<scalar_t>();
    const int64_t stride_t = frames.stride(0), stride_n = frames.stride(1);
    const int64_t* input_length_data = input_lengths.const_data_ptr<int64_t>();
    int64_t* labels_data = labels.data_ptr<int64_t>();
    int64_t* label_lengths_data = label_lengths.data_ptr<int64_t>();
    scalar_t* hypothesis_log_probs_data = hypothesis_log_probs.data_ptr<scalar_t>();
    int64_t* num_hypotheses_data = num_hypotheses.data_ptr<int64_t>();
    // One worker per thread, each taking samples longest first from a shared queue
    // (at::parallel_for alone would give each thread a fixed slice of the batch).
    SampleQueue queue(input_length_data, N);
    at::parallel_for(0, std::min<int64_t>(N, at::get_num_threads()), 1, [&](int64_t, int64_t) {
      std::vector<double> sample_log_probs;  // (T_n, C): the exact rescoring of the final beam needs them all
      for (int64_t n = queue.next(); n >= 0; n = queue.next()) {
        PrefixSearch search(options, {});
        const int64_t T_n = input_length_data[n];
        sample_log_probs.resize(T_n * C);
        for (int64_t t = 0; t < T_n; ++t) {
          double* frame = sample_log_probs.data() + t * C;
          try {
            frame_log_probs(frames_data + t * stride_t + n * stride_n, log_normalizer_data[t * N + n], C, frame, n, t);
          } catch (...) {
            queue.stop();  // the other workers take no new sample; parallel_for rethrows this
            throw;
          }
          search.step(frame);
        }
        const std::vector<SearchHypothesis> best = search.finish(top_k, sample_log_probs.data());
        for (size_t k = 0; k < best.size(); ++k) {
          const int64_t slot = n * top_k + static_cast<int64_t>(k);
          std::copy(best[k].labels.begin(), best[k].labels.end(), labels_data + slot * T);
          label_lengths_data[slot] = static_cast<int64_t>(best[k].labels.size());
          hypothesis_log_probs_data[slot] = static_cast<scalar_t>(best[k].ctc_score);
        }
        num_hypotheses_data[n] = static_cast<int64_t>(best.size());
      }
    });
  });
  return {labels, label_lengths, hypothesis_log_probs, num_hypotheses};
}

}  // namespace

TORCH_LIBRARY_IMPL(ctc_ext, CPU, m) { m.impl("beam_search", &beam_search_cpu); }

}  // namespace ctc_ext
