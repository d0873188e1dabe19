// Greedy (best path) CTC decoding on the CPU: the most likely class of every frame, repeats
// merged, blanks removed.  The per-frame argmax is ATen's (vectorised); the collapse runs one
// sample per task.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../arguments.h"

namespace ctc_ext {
namespace {

// logits: (T, N, C) floating; input_lengths: (N,) integer.
// Returns labels (N, T) int64 padded with -1 and label_lengths (N,) int64.
std::tuple<at::Tensor, at::Tensor> greedy_decode_cpu(const at::Tensor& logits, const at::Tensor& input_lengths_in,
                                                     int64_t blank) {
  const at::Tensor input_lengths = checked_decode_input_lengths(logits, input_lengths_in, blank);
  const int64_t T = logits.size(0), N = logits.size(1);
  // argmax of the logits is the argmax of their log-softmax: no normalisation needed.
  const at::Tensor best_class = logits.argmax(2).transpose(0, 1).contiguous();  // (N, T) int64
  at::Tensor labels = at::full({N, T}, -1, logits.options().dtype(at::kLong));
  at::Tensor label_lengths = at::zeros({N}, logits.options().dtype(at::kLong));
  const int64_t* best_class_data = best_class.const_data_ptr<int64_t>();
  const int64_t* input_length_data = input_lengths.const_data_ptr<int64_t>();
  int64_t* labels_data = labels.data_ptr<int64_t>();
  int64_t* label_length_data = label_lengths.data_ptr<int64_t>();
  at::parallel_for(0, N, 16, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      const int64_t* path = best_class_data + n * T;
      int64_t* sample_labels = labels_data + n * T;
      int64_t length = 0;
      int64_t previous = -1;  // class of the previous frame; a label repeated without a blank between merges
      for (int64_t t = 0; t < input_length_data[n]; ++t) {
        const int64_t current = path[t];
        if (current != blank && current != previous) sample_labels[length++] = current;
        previous = current;
      }
      label_length_data[n] = length;
    }
  });
  return {labels, label_lengths};
}

}  // namespace

TORCH_LIBRARY_IMPL(ctc_ext, CPU, m) { m.impl("greedy_decode", &greedy_decode_cpu); }

}  // namespace ctc_ext
