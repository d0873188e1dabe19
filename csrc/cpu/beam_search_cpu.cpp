// CTC prefix beam search on the CPU, one sample per task, parallel over the batch.
//
// Every prefix (a collapsed label sequence) is a node of a prefix tree, so two paths that
// collapse alike reach the same node and their probabilities merge.  For each prefix in the beam
// we keep log p(prefix, path ends in blank) and log p(prefix, path ends in its last label); at
// every frame each prefix either stays (blank, or its last label repeated) or is extended by one
// label, and the beam_width most likely prefixes survive.  Without pruning (a beam that keeps
// every prefix) the final blank + non-blank sum is exactly p(prefix | x).
//
// Exact shortcut: a frame's classes outside its beam_width + 2 most likely ones are not used to
// create new prefixes.  Such an extension p + c scores at most total(p) + lp[c], and p extended
// by each of the (at least beam_width) likelier non-blank classes other than p's last label
// scores at least as much, so p + c would be pruned anyway.  Extensions into prefixes already in
// the beam are always added, so the surviving scores are exact.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <unordered_map>
#include <vector>

#include "../ctc_math.h"
#include "../arguments.h"

namespace ctc_ext {
namespace {

struct PrefixNode {
  int64_t parent;  // -1 for the empty prefix (the root)
  int64_t label;   // last label of the prefix, -1 for the root
  int64_t length;  // number of labels
};

template <typename acc_t>
struct Hypothesis {
  int64_t node;        // prefix tree node, or -1 for a prefix not created yet
  int64_t parent;      // its parent node (for a prefix not created yet)
  int64_t label;       // its last label (for a prefix not created yet)
  acc_t log_blank;     // log p(prefix, the path so far ends in blank)
  acc_t log_nonblank;  // log p(prefix, the path so far ends in the prefix's last label)
  acc_t total() const { return log_add(log_blank, log_nonblank); }
};

template <typename acc_t>
class PrefixBeamSearch {
 public:
  PrefixBeamSearch(int64_t num_classes, int64_t blank, int64_t beam_width)
      : num_classes_(num_classes), blank_(blank), beam_width_(beam_width), is_candidate_class_(num_classes, 0) {
    nodes_.push_back({-1, -1, 0});
    beam_.push_back({0, -1, -1, acc_t(0), neg_inf<acc_t>()});
  }

  // frame: (C,) logits of one frame, unit stride; log_normalizer: their logsumexp, so that
  // frame[c] - log_normalizer is the log-probability of class c.
  void step(const acc_t* frame, acc_t log_normalizer) {
    select_candidate_classes(frame);
    ++stamp_;
    grow_node_tables();
    for (size_t i = 0; i < beam_.size(); ++i) {
      beam_stamp_[beam_[i].node] = stamp_;
      beam_position_[beam_[i].node] = static_cast<int64_t>(i);
    }
    candidates_.clear();
    auto log_prob = [&](int64_t label) { return frame[label] - log_normalizer; };
    for (const Hypothesis<acc_t>& hypothesis : beam_) {
      const int64_t node = hypothesis.node;
      const int64_t last_label = nodes_[node].label;
      const acc_t total = hypothesis.total();
      Hypothesis<acc_t>& same = candidate_of_node(node);
      same.log_blank = log_add(same.log_blank, total + log_prob(blank_));
      if (last_label >= 0) {
        same.log_nonblank = log_add(same.log_nonblank, hypothesis.log_nonblank + log_prob(last_label));
      }
      for (const int64_t label : candidate_classes_) {
        if (label == blank_) continue;
        // A repeated label starts a new token only after a blank.
        const acc_t extension = (label == last_label ? hypothesis.log_blank : total) + log_prob(label);
        const auto child = children_.find(node * num_classes_ + label);
        if (child != children_.end()) {
          Hypothesis<acc_t>& extended = candidate_of_node(child->second);
          extended.log_nonblank = log_add(extended.log_nonblank, extension);
        } else {
          candidates_.push_back({-1, node, label, neg_inf<acc_t>(), extension});
        }
      }
    }
    if (!all_classes_are_candidates_) add_extensions_into_beam_outside_candidates(frame, log_normalizer);
    prune();
  }

  // The surviving hypotheses, best first.
  const std::vector<Hypothesis<acc_t>>& beam() const { return beam_; }

  // Writes the labels of `node` into out[0 .. length) and returns length.
  int64_t write_labels(int64_t node, int64_t* out) const {
    const int64_t length = nodes_[node].length;
    for (int64_t i = length - 1; i >= 0; --i, node = nodes_[node].parent) out[i] = nodes_[node].label;
    return length;
  }

 private:
  // The beam_width + 2 most likely classes of the frame (largest logits), in one pass: a
  // shortlist kept sorted, where most classes cost a single comparison with its last entry.
  void select_candidate_classes(const acc_t* frame) {
    all_classes_are_candidates_ = beam_width_ >= num_classes_ - 2;  // (beam_width + 2 could overflow)
    const int64_t wanted = all_classes_are_candidates_ ? num_classes_ : beam_width_ + 2;
    if (all_classes_are_candidates_) {
      candidate_classes_.resize(num_classes_);
      std::iota(candidate_classes_.begin(), candidate_classes_.end(), int64_t(0));
      return;
    }
    for (const int64_t label : candidate_classes_) is_candidate_class_[label] = 0;
    candidate_classes_.clear();
    for (int64_t label = 0; label < num_classes_; ++label) {
      const int64_t size = static_cast<int64_t>(candidate_classes_.size());
      if (size == wanted) {
        if (!(frame[label] > frame[candidate_classes_.back()])) continue;
        candidate_classes_.back() = label;
      } else {
        candidate_classes_.push_back(label);
      }
      for (int64_t i = static_cast<int64_t>(candidate_classes_.size()) - 1;
           i > 0 && frame[candidate_classes_[i]] > frame[candidate_classes_[i - 1]]; --i) {
        std::swap(candidate_classes_[i], candidate_classes_[i - 1]);
      }
    }
    for (const int64_t label : candidate_classes_) is_candidate_class_[label] = 1;
  }

  // Prefixes in the beam whose parent is in the beam too receive the parent's extension by their
  // last label even when that label is not a candidate class this frame.
  void add_extensions_into_beam_outside_candidates(const acc_t* frame, acc_t log_normalizer) {
    for (const Hypothesis<acc_t>& hypothesis : beam_) {
      const PrefixNode& prefix = nodes_[hypothesis.node];
      if (prefix.parent < 0 || is_candidate_class_[prefix.label]) continue;
      if (beam_stamp_[prefix.parent] != stamp_) continue;
      const Hypothesis<acc_t>& parent = beam_[beam_position_[prefix.parent]];
      const int64_t parent_last_label = nodes_[prefix.parent].label;
      const acc_t from_parent = prefix.label == parent_last_label ? parent.log_blank : parent.total();
      const acc_t extension = from_parent + (frame[prefix.label] - log_normalizer);
      Hypothesis<acc_t>& extended = candidate_of_node(hypothesis.node);
      extended.log_nonblank = log_add(extended.log_nonblank, extension);
    }
  }

  // The candidate for an existing node, created on first use this frame.  Returned references
  // stay valid only until the next call (candidates_ may grow).
  Hypothesis<acc_t>& candidate_of_node(int64_t node) {
    if (candidate_stamp_[node] != stamp_) {
      candidate_stamp_[node] = stamp_;
      candidate_position_[node] = static_cast<int64_t>(candidates_.size());
      candidates_.push_back({node, nodes_[node].parent, nodes_[node].label, neg_inf<acc_t>(), neg_inf<acc_t>()});
    }
    return candidates_[candidate_position_[node]];
  }

  void grow_node_tables() {
    const size_t size = nodes_.size();
    if (candidate_stamp_.size() >= size) return;
    candidate_stamp_.resize(2 * size, 0);
    candidate_position_.resize(2 * size, 0);
    beam_stamp_.resize(2 * size, 0);
    beam_position_.resize(2 * size, 0);
  }

  // Keeps the beam_width best candidates of non-zero probability, best first (ties: the earlier
  // candidate, so results are deterministic), and creates nodes for the new prefixes among them.
  void prune() {
    scored_.clear();
    for (size_t i = 0; i < candidates_.size(); ++i) {
      const acc_t score = candidates_[i].total();
      if (score > neg_inf<acc_t>()) scored_.push_back({score, static_cast<int64_t>(i)});
    }
    auto better = [](const std::pair<acc_t, int64_t>& a, const std::pair<acc_t, int64_t>& b) {
      return a.first > b.first || (a.first == b.first && a.second < b.second);
    };
    if (static_cast<int64_t>(scored_.size()) > beam_width_) {
      std::nth_element(scored_.begin(), scored_.begin() + beam_width_, scored_.end(), better);
      scored_.resize(beam_width_);
    }
    std::sort(scored_.begin(), scored_.end(), better);
    beam_.clear();
    for (const auto& entry : scored_) {
      Hypothesis<acc_t> hypothesis = candidates_[entry.second];
      if (hypothesis.node < 0) {
        hypothesis.node = static_cast<int64_t>(nodes_.size());
        nodes_.push_back({hypothesis.parent, hypothesis.label, nodes_[hypothesis.parent].length + 1});
        children_.emplace(hypothesis.parent * num_classes_ + hypothesis.label, hypothesis.node);
      }
      beam_.push_back(hypothesis);
    }
  }

  const int64_t num_classes_;
  const int64_t blank_;
  const int64_t beam_width_;
  std::vector<PrefixNode> nodes_;
  std::unordered_map<int64_t, int64_t> children_;  // parent * C + label -> child node
  std::vector<Hypothesis<acc_t>> beam_;
  std::vector<Hypothesis<acc_t>> candidates_;
  std::vector<std::pair<acc_t, int64_t>> scored_;  // (score, candidate index)
  std::vector<int64_t> candidate_classes_;
  std::vector<char> is_candidate_class_;
  bool all_classes_are_candidates_ = true;
  // Per node: the frame (stamp) at which it was last a candidate / in the beam, and where.
  int64_t stamp_ = 0;
  std::vector<int64_t> candidate_stamp_, candidate_position_, beam_stamp_, beam_position_;
};

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
  // Log-probabilities are formed only for the few classes the search looks at.
  const NormalisedFrames normalised = normalised_frames(logits);
  const at::Tensor& frames = normalised.frames;                  // (T, N, C)
  const at::Tensor& log_normalizer = normalised.log_normalizer;  // (T, N)
  const auto long_options = logits.options().dtype(at::kLong);
  at::Tensor labels = at::full({N, top_k, T}, -1, long_options);
  at::Tensor label_lengths = at::zeros({N, top_k}, long_options);
  at::Tensor hypothesis_log_probs = at::full({N, top_k}, neg_inf<double>(), frames.options());
  at::Tensor num_hypotheses = at::zeros({N}, long_options);

  AT_DISPATCH_FLOATING_TYPES(frames.scalar_type(), "beam_search_cpu", [&] {
    using acc_t = scalar_t;
    const acc_t* frames_data = frames.const_data_ptr<acc_t>();
    const acc_t* log_normalizer_data = log_normalizer.const_data_ptr<acc_t>();
    const int64_t stride_t = frames.stride(0), stride_n = frames.stride(1);
    const int64_t* input_length_data = input_lengths.const_data_ptr<int64_t>();
    int64_t* labels_data = labels.data_ptr<int64_t>();
    int64_t* label_lengths_data = label_lengths.data_ptr<int64_t>();
    acc_t* hypothesis_log_probs_data = hypothesis_log_probs.data_ptr<acc_t>();
    int64_t* num_hypotheses_data = num_hypotheses.data_ptr<int64_t>();
    at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
      for (int64_t n = begin; n < end; ++n) {
        PrefixBeamSearch<acc_t> search(C, blank, beam_width);
        for (int64_t t = 0; t < input_length_data[n]; ++t) {
          search.step(frames_data + t * stride_t + n * stride_n, log_normalizer_data[t * N + n]);
        }
        const auto& beam = search.beam();
        const int64_t count = std::min<int64_t>(top_k, static_cast<int64_t>(beam.size()));
        for (int64_t k = 0; k < count; ++k) {
          const int64_t slot = n * top_k + k;
          label_lengths_data[slot] = search.write_labels(beam[k].node, labels_data + slot * T);
          hypothesis_log_probs_data[slot] = beam[k].total();
        }
        num_hypotheses_data[n] = count;
      }
    });
  });
  return {labels, label_lengths, hypothesis_log_probs, num_hypotheses};
}

}  // namespace

TORCH_LIBRARY_IMPL(ctc_ext, CPU, m) { m.impl("beam_search", &beam_search_cpu); }

}  // namespace ctc_ext
