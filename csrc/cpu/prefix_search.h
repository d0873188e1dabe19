// CTC prefix beam search with shallow fusion: the one search behind ctc_ext.beam_search (the
// ctc_ext::beam_search op and its Python-scorer form) and ctc_ext.CTCDecoder (language model,
// lexicon, hotwords, streaming).
//
// Every prefix (a collapsed label sequence) is a node of a prefix tree, so two paths that
// collapse alike reach the same node and their probabilities merge.  For each prefix in the beam
// we keep log p(prefix, path ends in blank) and log p(prefix, path ends in its last label); at
// every frame each prefix either stays (blank, or its last label repeated) or is extended by one
// label, and the beam_width best prefixes survive, ranked by the fused score
//     log p_ctc(prefix | x) + sum of the scorers' scores along the prefix.
// Scorer scores depend only on the prefix, so they are computed once, when its node is created.
// The beam's blank + non-blank sum misses the paths it pruned, so after the last frame every
// hypothesis of the final beam gets its CTC part recomputed exactly over all frames
// (label_log_likelihoods) and the beam is re-ranked by the exact fused score before the n-best is
// taken: `ctc_score` is exact, and a hypothesis never loses its place to the beam's estimate.
//
// Pruning that changes no result: the classes of a frame are visited from the likeliest down, and
// an extension is built only if its score, bounded above with the gain the scorers allow for that
// prefix and class (ScorerSession::extension_bound), reaches the beam's running cutoff (the beam_width-th best
// candidate score so far, a lower bound of the final one), so on peaked frames a wide beam costs about what a narrow
// one does. Extensions into prefixes already in the beam are always added, so surviving scores are exact. Optional
// pruning that may change the result: beam_threshold (drop candidates more than that below the best),
// token_min_log_prob and max_tokens_per_frame (classes a frame may extend by).
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <memory>
#include <unordered_map>
#include <utility>
#include <vector>

namespace ctc_ext {

// One utterance's view of a scorer: states are handles the session hands out (it keeps what
// they stand for), extended by one token at a time.  A session is used by one thread.
class ScorerSession {
 public:
  virtual ~ScorerSession() = default;
  virtual int64_t start() = 0;
  // Log-score of appending `token` to the prefix in `state` (-inf forbids it); writes the state
  // of the extended prefix.
  virtual double extend(int64_t state, int64_t token, int64_t* next_state) = 0;
  // Log-score added at the end of the utterance (e.g. the last word and "</s>").
  virtual double finish(int64_t state) = 0;
  // Upper bounds the search uses to skip, without building them, extensions that could not enter
  // the beam: of extend(state, token)'s score, and of it over all tokens.  They must never be
  // below the score (+inf: nothing known, no such pruning); they may be called for any state
  // handed out, any number of times.
  virtual double extension_bound(int64_t /*state*/, int64_t /*token*/) {
    return std::numeric_limits<double>::infinity();
  }
  virtual double max_extension_bound(int64_t /*state*/) { return std::numeric_limits<double>::infinity(); }
};

// A scorer (language model, lexicon, hotwords, a Python callback), shared by the threads of a
// batch: it only creates sessions.
class PrefixScorer {
 public:
  virtual ~PrefixScorer() = default;
  virtual std::unique_ptr<ScorerSession> begin_utterance() const = 0;
};

struct SearchOptions {
  int64_t num_classes = 0;
  int64_t blank = 0;
  int64_t beam_width = 1;
  // Candidates more than this below the best candidate of the frame are dropped.
  double beam_threshold = std::numeric_limits<double>::infinity();
  // A frame extends prefixes only by classes of at least this log-probability (its likeliest
  // class always), and by at most max_tokens_per_frame classes (0: no limit).
  double token_min_log_prob = -std::numeric_limits<double>::infinity();
  int64_t max_tokens_per_frame = 0;
  // Per class (empty: none): 1 for a word delimiter, a class that only ends a word.  A delimiter
  // that ends no word (at the start, or after another delimiter) is absorbed like a blank, so the
  // label sequences that differ only by such delimiters (spelling the same words) are one
  // hypothesis, with their probabilities summed, instead of taking several places in the beam.
  std::vector<uint8_t> word_delimiters;
};

struct SearchHypothesis {
  std::vector<int64_t> labels;
  double score;         // ctc_score + scorer_score
  double ctc_score;     // log p_ctc(labels | x)
  double scorer_score;  // everything the scorers added, finish() included
};

class PrefixSearch {
 public:
  PrefixSearch(const SearchOptions& options, const std::vector<const PrefixScorer*>& scorers);

  // log_probs: (C,) log-probabilities of the next frame (finite; checked by the callers).
  void step(const double* log_probs);
  // The best `count` hypotheses after the frames so far, scorers' finish() included, best first,
  // by their exact fused score.  log_probs: (frames(), C) row-major, the frames stepped through.
  std::vector<SearchHypothesis> finish(int64_t count, const double* log_probs);
  int64_t frames() const { return num_frames_; }

 private:
  struct Node {
    int64_t parent;  // -1 for the empty prefix (the root)
    int64_t label;   // last label, -1 for the root
    int64_t length;
    double scorer_total;  // sum of the scorers' scores along the prefix
  };
  struct Hypothesis {
    int64_t node;
    double log_blank;     // log p(prefix, the path so far ends in blank)
    double log_nonblank;  // log p(prefix, the path so far ends in the prefix's last label)
    double ctc() const;
  };

  int64_t child(int64_t node, int64_t label);  // creates it (scoring it) when missing
  // Upper bounds of the scorers' gain for extending `node` by `label`, and by any class.
  double extension_bound(int64_t node, int64_t label);
  double max_extension_bound(int64_t node);
  int64_t class_of_rank(int64_t rank);  // the frame's classes, likeliest first, sorted lazily
  Hypothesis& candidate_of_node(int64_t node);
  void offer(double score);  // a candidate's (partial) score, for the running cutoff
  double cutoff() const;
  // Whether delimiters after `node` are absorbed (it is the root or ends with a delimiter).
  bool absorbs_delimiters(int64_t node) const {
    return !options_.word_delimiters.empty() && (node == 0 || options_.word_delimiters[nodes_[node].label]);
  }
  void prune();
  std::vector<int64_t> labels_of(int64_t node) const;

  SearchOptions options_;
  std::vector<std::unique_ptr<ScorerSession>> sessions_;
  std::vector<Node> nodes_;
  std::vector<int64_t> node_states_;               // nodes_.size() * sessions_.size() scorer states
  std::unordered_map<int64_t, int64_t> children_;  // parent * C + label -> child node
  std::vector<Hypothesis> beam_, candidates_;
  std::vector<std::pair<double, int64_t>> scored_;  // (score, candidate index)
  std::vector<double> cutoff_heap_;                 // min-heap of the beam_width best offers
  double best_offer_ = 0;
  int64_t num_frames_ = 0;
  // This frame's classes by decreasing log-probability: ranked_[0, sorted_) is sorted.
  const double* frame_ = nullptr;
  std::vector<int64_t> ranked_;
  int64_t sorted_ = 0, usable_ranks_ = 0;
  // Per node: the frame (stamp) it was last a candidate / in the beam and where, and the frame its
  // parent's extension was last added to it by the loop over the parent's classes.
  int64_t stamp_ = 0;
  std::vector<int64_t> candidate_stamp_, candidate_position_, beam_stamp_, beam_position_, extended_stamp_;
};

// log p_ctc(labels | x) of each label sequence, exactly, in float64: the forward algorithm over all
// frames.  With word delimiters (per class, 1 for a delimiter; empty: none), a delimiter that ends
// no word (at the start, or after a delimiter) is absorbed like a blank, so the result is summed
// over the label sequences that differ from `labels` only by such delimiters, as the search
// scores them.  Sequences sharing a prefix share its computation.  log_probs: (T, C) row-major.
std::vector<double> label_log_likelihoods(const double* log_probs, int64_t T, int64_t C, int64_t blank,
                                          const std::vector<uint8_t>& word_delimiters,
                                          const std::vector<const std::vector<int64_t>*>& sequences);

// The most likely frame path of `labels` (Viterbi): (start, end) frames of every label, end
// exclusive.  log_probs: (T, C) row-major.  labels must have a path of non-zero probability.
std::vector<std::pair<int64_t, int64_t>> label_frames(const double* log_probs, int64_t T, int64_t C, int64_t blank,
                                                      const std::vector<int64_t>& labels);

// Writes the (C,) log-probabilities of one frame, logits[c] - log_normalizer, into out; throws
// std::invalid_argument naming the sample and frame when they are not numbers (a NaN or +inf
// logit) or when no class has non-zero probability.
template <typename scalar_t>
void frame_log_probs(const scalar_t* logits, double log_normalizer, int64_t C, double* out, int64_t sample,
                     int64_t frame) {
  if (!std::isfinite(log_normalizer)) {
    const bool empty = log_normalizer == -std::numeric_limits<double>::infinity();
    throw std::invalid_argument("log_probs of sample " + std::to_string(sample) + " at frame " + std::to_string(frame) +
                                (empty ? " give every class probability 0 (all -inf)" : " hold NaN or +inf"));
  }
  for (int64_t c = 0; c < C; ++c) out[c] = static_cast<double>(logits[c]) - log_normalizer;
}

}  // namespace ctc_ext
