// The prefix beam search of prefix_search.h.
#include "prefix_search.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <stdexcept>
#include <string>

#include "../ctc_math.h"

namespace ctc_ext {
namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();
// Added to the scorers' bounds: they sum the same terms as the scores in another order, so may
// round a hair below them.
constexpr double kBoundSlack = 1e-9;

void check_scorer_score(double score, const char* what) {
  if (std::isnan(score) || score == std::numeric_limits<double>::infinity()) {
    throw std::invalid_argument(std::string("a scorer's ") + what + " returned " + std::to_string(score) +
                                "; scores must be numbers below +inf (-inf forbids)");
  }
}

}  // namespace

double PrefixSearch::Hypothesis::ctc() const { return log_add(log_blank, log_nonblank); }

PrefixSearch::PrefixSearch(const SearchOptions& options, const std::vector<const PrefixScorer*>& scorers)
    : options_(options) {
  for (const PrefixScorer* scorer : scorers) sessions_.push_back(scorer->begin_utterance());
  nodes_.push_back({-1, -1, 0, 0.0});
  for (auto& session : sessions_) node_states_.push_back(session->start());
  beam_.push_back({0, 0.0, kNegInf});
  ranked_.resize(options.num_classes);
  std::iota(ranked_.begin(), ranked_.end(), int64_t(0));
  const size_t tables = 64;
  for (auto* table : {&candidate_stamp_, &candidate_position_, &beam_stamp_, &beam_position_, &extended_stamp_}) {
    table->assign(tables, 0);
  }
}

int64_t PrefixSearch::class_of_rank(int64_t rank) {
  if (rank >= sorted_) {
    // Sort the next chunk (at least doubling it): peaked frames only ever sort a handful.
    const int64_t C = options_.num_classes;
    const int64_t wanted = std::min<int64_t>(C, std::max<int64_t>({rank + 1, 2 * sorted_, 8}));
    const double* lp = frame_;
    auto likelier = [lp](int64_t a, int64_t b) { return lp[a] > lp[b] || (lp[a] == lp[b] && a < b); };
    // Select the chunk in linear time, then sort only it (a partial_sort heap over all the rest
    // costs more on flat frames, where many chunks are asked for).
    if (wanted < C) std::nth_element(ranked_.begin() + sorted_, ranked_.begin() + wanted - 1, ranked_.end(), likelier);
    std::sort(ranked_.begin() + sorted_, ranked_.begin() + wanted, likelier);
    sorted_ = wanted;
  }
  return ranked_[rank];
}

PrefixSearch::Hypothesis& PrefixSearch::candidate_of_node(int64_t node) {
  if (candidate_stamp_[node] != stamp_) {
    candidate_stamp_[node] = stamp_;
    candidate_position_[node] = static_cast<int64_t>(candidates_.size());
    candidates_.push_back({node, kNegInf, kNegInf});
  }
  return candidates_[candidate_position_[node]];
}

void PrefixSearch::offer(double score) {
  best_offer_ = std::max(best_offer_, score);
  if (static_cast<int64_t>(cutoff_heap_.size()) < options_.beam_width) {
    cutoff_heap_.push_back(score);
    std::push_heap(cutoff_heap_.begin(), cutoff_heap_.end(), std::greater<double>());
  } else if (score > cutoff_heap_.front()) {
    std::pop_heap(cutoff_heap_.begin(), cutoff_heap_.end(), std::greater<double>());
    cutoff_heap_.back() = score;
    std::push_heap(cutoff_heap_.begin(), cutoff_heap_.end(), std::greater<double>());
  }
}

double PrefixSearch::cutoff() const {
  // Offers only grow (a candidate's score is a log-sum of non-negative parts), so the
  // beam_width-th best offer is a lower bound of the beam_width-th best final score.
  double bound = static_cast<int64_t>(cutoff_heap_.size()) < options_.beam_width ? kNegInf : cutoff_heap_.front();
  return std::max(bound, best_offer_ - options_.beam_threshold);
}

int64_t PrefixSearch::child(int64_t node, int64_t label) {
  const int64_t key = node * options_.num_classes + label;
  const auto found = children_.find(key);
  if (found != children_.end()) return found->second;
  const size_t num_sessions = sessions_.size();
  const int64_t created = static_cast<int64_t>(nodes_.size());
  double total = nodes_[node].scorer_total;
  for (size_t s = 0; s < num_sessions; ++s) {
    const int64_t state = node_states_[node * num_sessions + s];
    int64_t next = state;
    if (total != kNegInf) {  // a forbidden prefix is never extended: no need to score it further
      const double score = sessions_[s]->extend(state, label, &next);
      check_scorer_score(score, "score");
      total += score;
    }
    node_states_.push_back(next);
  }
  nodes_.push_back({node, label, nodes_[node].length + 1, total});
  children_.emplace(key, created);
  if (nodes_.size() > candidate_stamp_.size()) {
    for (auto* table : {&candidate_stamp_, &candidate_position_, &beam_stamp_, &beam_position_, &extended_stamp_}) {
      table->resize(2 * nodes_.size(), 0);
    }
  }
  return created;
}

double PrefixSearch::extension_bound(int64_t node, int64_t label) {
  const size_t num_sessions = sessions_.size();
  double bound = 0;
  for (size_t s = 0; s < num_sessions; ++s) {
    bound += sessions_[s]->extension_bound(node_states_[node * num_sessions + s], label);
  }
  return bound;
}

double PrefixSearch::max_extension_bound(int64_t node) {
  const size_t num_sessions = sessions_.size();
  double bound = 0;
  for (size_t s = 0; s < num_sessions; ++s) {
    bound += sessions_[s]->max_extension_bound(node_states_[node * num_sessions + s]);
  }
  return bound;
}

void PrefixSearch::step(const double* lp) {
  const int64_t blank = options_.blank;
  frame_ = lp;
  ++num_frames_;
  ++stamp_;
  sorted_ = 0;
  int64_t usable_ranks = options_.num_classes;
  if (options_.max_tokens_per_frame > 0) usable_ranks = std::min(usable_ranks, options_.max_tokens_per_frame);
  candidates_.clear();
  cutoff_heap_.clear();
  best_offer_ = kNegInf;
  for (size_t i = 0; i < beam_.size(); ++i) {
    beam_stamp_[beam_[i].node] = stamp_;
    beam_position_[beam_[i].node] = static_cast<int64_t>(i);
  }
  double delimiter_log_prob = kNegInf;  // of any word delimiter
  for (size_t c = 0; c < options_.word_delimiters.size(); ++c) {
    if (options_.word_delimiters[c]) delimiter_log_prob = log_add(delimiter_log_prob, lp[c]);
  }
  // Prefixes that stay: a blank (or an absorbed delimiter), or their last label repeated.
  for (const Hypothesis& hypothesis : beam_) {
    const int64_t last_label = nodes_[hypothesis.node].label;
    double blank_part = hypothesis.ctc() + lp[blank];
    double repeat_part = last_label >= 0 ? hypothesis.log_nonblank + lp[last_label] : kNegInf;
    if (absorbs_delimiters(hypothesis.node)) {
      // A delimiter, repeated or not, counts as a blank: its paths all end "in a blank".
      blank_part = log_add(blank_part, hypothesis.ctc() + delimiter_log_prob);
      repeat_part = kNegInf;
    }
    Hypothesis& same = candidate_of_node(hypothesis.node);
    same.log_blank = log_add(same.log_blank, blank_part);
    same.log_nonblank = log_add(same.log_nonblank, repeat_part);
    offer(same.ctc() + nodes_[hypothesis.node].scorer_total);
  }
  // Extensions, best prefixes first (the beam is sorted) and likeliest classes first, until even
  // the scorers' largest gain for the prefix could not lift an extension to the cutoff.
  for (size_t i = 0; i < beam_.size(); ++i) {
    const Hypothesis hypothesis = beam_[i];
    const int64_t node = hypothesis.node;
    const int64_t last_label = nodes_[node].label;
    const double total = hypothesis.ctc();
    const double prefix_scorer_total = nodes_[node].scorer_total;
    const double max_gain = max_extension_bound(node);
    const bool absorbs = absorbs_delimiters(node);
    for (int64_t rank = 0; rank < usable_ranks; ++rank) {
      const int64_t label = class_of_rank(rank);
      if (rank > 0 && lp[label] < options_.token_min_log_prob) {
        usable_ranks = rank;  // so are all later classes of this frame
        break;
      }
      if (label == blank || (absorbs && options_.word_delimiters[label])) continue;
      if (total + lp[label] + prefix_scorer_total + max_gain + kBoundSlack < cutoff()) break;
      // A repeated label starts a new token only after a blank.
      const double extension = (label == last_label ? hypothesis.log_blank : total) + lp[label];
      if (extension == kNegInf) continue;
      // Skipped when even the bound cannot reach the cutoff (the loop below adds it to a prefix in
      // the beam), before any look-up.
      if (extension + prefix_scorer_total + extension_bound(node, label) + kBoundSlack < cutoff()) continue;
      const auto existing = children_.find(node * options_.num_classes + label);
      if (existing != children_.end() && beam_stamp_[existing->second] == stamp_) {
        Hypothesis& extended = candidate_of_node(existing->second);
        extended.log_nonblank = log_add(extended.log_nonblank, extension);
        extended_stamp_[existing->second] = stamp_;
        continue;
      }
      const int64_t extended_node = existing != children_.end() ? existing->second : child(node, label);
      const double score = extension + nodes_[extended_node].scorer_total;
      if (score == kNegInf || score < cutoff()) continue;
      Hypothesis& extended = candidate_of_node(extended_node);
      extended.log_nonblank = log_add(extended.log_nonblank, extension);
      offer(score);
    }
  }
  // Prefixes in the beam whose parent is in the beam too receive the parent's extension by their
  // last label where the loop above did not add it (it stopped or skipped before that label).
  for (const Hypothesis& hypothesis : beam_) {
    const Node& prefix = nodes_[hypothesis.node];
    if (prefix.parent < 0 || beam_stamp_[prefix.parent] != stamp_) continue;
    if (extended_stamp_[hypothesis.node] == stamp_) continue;  // added above
    const Hypothesis& parent = beam_[beam_position_[prefix.parent]];
    const double from_parent = prefix.label == nodes_[prefix.parent].label ? parent.log_blank : parent.ctc();
    Hypothesis& extended = candidate_of_node(hypothesis.node);
    extended.log_nonblank = log_add(extended.log_nonblank, from_parent + lp[prefix.label]);
  }
  prune();
}

void PrefixSearch::prune() {
  scored_.clear();
  double best = kNegInf;
  for (size_t i = 0; i < candidates_.size(); ++i) {
    const double score = candidates_[i].ctc() + nodes_[candidates_[i].node].scorer_total;
    if (score > kNegInf) scored_.push_back({score, static_cast<int64_t>(i)});
    best = std::max(best, score);
  }
  if (options_.beam_threshold < std::numeric_limits<double>::infinity()) {
    const double floor = best - options_.beam_threshold;
    scored_.erase(std::remove_if(scored_.begin(), scored_.end(), [floor](const auto& e) { return e.first < floor; }),
                  scored_.end());
  }
  // Best first; ties: the earlier candidate, so results are deterministic.
  auto better = [](const std::pair<double, int64_t>& a, const std::pair<double, int64_t>& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  if (static_cast<int64_t>(scored_.size()) > options_.beam_width) {
    std::nth_element(scored_.begin(), scored_.begin() + options_.beam_width, scored_.end(), better);
    scored_.resize(options_.beam_width);
  }
  std::sort(scored_.begin(), scored_.end(), better);
  beam_.clear();
  for (const auto& entry : scored_) beam_.push_back(candidates_[entry.second]);
}

std::vector<int64_t> PrefixSearch::labels_of(int64_t node) const {
  std::vector<int64_t> labels(nodes_[node].length);
  for (int64_t i = nodes_[node].length - 1; i >= 0; --i, node = nodes_[node].parent) labels[i] = nodes_[node].label;
  return labels;
}

std::vector<SearchHypothesis> PrefixSearch::finish(int64_t count, const double* log_probs) {
  const size_t num_sessions = sessions_.size();
  std::vector<SearchHypothesis> results;
  for (const Hypothesis& hypothesis : beam_) {
    double scorer_score = nodes_[hypothesis.node].scorer_total;
    for (size_t s = 0; s < num_sessions && scorer_score != kNegInf; ++s) {
      const double score = sessions_[s]->finish(node_states_[hypothesis.node * num_sessions + s]);
      check_scorer_score(score, "finish");
      scorer_score += score;
    }
    if (scorer_score == kNegInf) continue;
    results.push_back({labels_of(hypothesis.node), 0.0, 0.0, scorer_score});
  }
  // The beam's CTC sums miss the paths it pruned: recompute them exactly, then re-rank.
  std::vector<const std::vector<int64_t>*> sequences;
  for (const SearchHypothesis& result : results) sequences.push_back(&result.labels);
  const std::vector<double> exact = label_log_likelihoods(log_probs, num_frames_, options_.num_classes, options_.blank,
                                                          options_.word_delimiters, sequences);
  for (size_t i = 0; i < results.size(); ++i) {
    results[i].ctc_score = exact[i];
    results[i].score = exact[i] + results[i].scorer_score;
  }
  // Ties keep the beam's order, so results are deterministic.
  std::stable_sort(results.begin(), results.end(),
                   [](const SearchHypothesis& a, const SearchHypothesis& b) { return a.score > b.score; });
  if (static_cast<int64_t>(results.size()) > count) results.resize(count);
  return results;
}

namespace {

// The forward variables of one prefix over all frames: blank[t] = log p(frames 0..t collapse to the
// prefix, the path ends in a blank or an absorbed delimiter), label[t] = ... ends in its last label.
struct PrefixColumns {
  int64_t depth = 0;
  int64_t last_label = -1;  // -1 for the empty prefix
  std::vector<double> blank, label;
};

}  // namespace

std::vector<double> label_log_likelihoods(const double* log_probs, int64_t T, int64_t C, int64_t blank,
                                          const std::vector<uint8_t>& word_delimiters,
                                          const std::vector<const std::vector<int64_t>*>& sequences) {
  const size_t n = sequences.size();
  std::vector<double> result(n, kNegInf);
  if (n == 0) return result;
  const bool has_delimiters = !word_delimiters.empty();
  auto is_delimiter = [&](int64_t c) { return has_delimiters && word_delimiters[c] != 0; };
  // (T,) log-probability of a blank or any delimiter: what a blank state absorbs at the start and
  // after a delimiter.
  std::vector<double> absorbed(T);
  for (int64_t t = 0; t < T; ++t) {
    const double* frame = log_probs + t * C;
    absorbed[t] = frame[blank];
    for (int64_t c = 0; c < static_cast<int64_t>(word_delimiters.size()); ++c) {
      if (word_delimiters[c]) absorbed[t] = log_add(absorbed[t], frame[c]);
    }
  }

  // Sequences in lexicographic order, so each shares with the previous one its longest common
  // prefix; the columns of a shared prefix are kept (a stack, by increasing depth) only at the
  // depths a later sequence starts from.
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t(0));
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return *sequences[a] < *sequences[b]; });
  std::vector<int64_t> shared(n, 0);  // shared[k]: common prefix length of order[k - 1] and order[k]
  for (size_t k = 1; k < n; ++k) {
    const auto& a = *sequences[order[k - 1]];
    const auto& b = *sequences[order[k]];
    const auto mismatch = std::mismatch(a.begin(), a.end(), b.begin(), b.end());
    shared[k] = static_cast<int64_t>(mismatch.first - a.begin());
  }

  PrefixColumns root;
  root.blank.resize(T);
  root.label.assign(T, kNegInf);
  for (int64_t t = 0; t < T; ++t) root.blank[t] = (t > 0 ? root.blank[t - 1] : 0.0) + absorbed[t];
  std::vector<PrefixColumns> kept{root};
  PrefixColumns current, next;
  next.blank.resize(T);
  next.label.resize(T);
  std::vector<int64_t> wanted;  // depths to keep while extending the current sequence, deepest first
  for (size_t k = 0; k < n; ++k) {
    const std::vector<int64_t>& labels = *sequences[order[k]];
    const int64_t start = shared[k];
    while (kept.back().depth > start) kept.pop_back();
    current = kept.back();  // its depth is `start`: kept while extending an earlier sequence
    wanted.clear();
    int64_t lowest = std::numeric_limits<int64_t>::max();
    for (size_t j = k + 1; j < n && lowest > start; ++j) {
      if (shared[j] < lowest) {
        lowest = shared[j];
        if (lowest > start) wanted.push_back(lowest);
      }
    }
    for (int64_t depth = start + 1; depth <= static_cast<int64_t>(labels.size()); ++depth) {
      const int64_t label = labels[depth - 1];
      // A delimiter does not stay: repeated, it is absorbed by the blank after it, which absorbs
      // delimiters as well as blanks.
      const bool delimiter = is_delimiter(label);
      const bool skips = current.last_label >= 0 && current.last_label != label;
      double blank_before = kNegInf, label_before = kNegInf;
      double parent_blank_before = current.depth == 0 ? 0.0 : kNegInf, parent_label_before = kNegInf;
      for (int64_t t = 0; t < T; ++t) {
        const double* frame = log_probs + t * C;
        const double into_label =
            log_add3(delimiter ? kNegInf : label_before, parent_blank_before, skips ? parent_label_before : kNegInf);
        next.label[t] = into_label + frame[label];
        next.blank[t] = log_add(blank_before, label_before) + (delimiter ? absorbed[t] : frame[blank]);
        blank_before = next.blank[t];
        label_before = next.label[t];
        parent_blank_before = current.blank[t];
        parent_label_before = current.label[t];
      }
      next.depth = depth;
      next.last_label = label;
      std::swap(current, next);
      if (!wanted.empty() && wanted.back() == depth) {
        kept.push_back(current);
        wanted.pop_back();
      }
    }
    result[order[k]] = T == 0 ? (labels.empty() ? 0.0 : kNegInf) : log_add(current.blank[T - 1], current.label[T - 1]);
  }
  return result;
}

std::vector<std::pair<int64_t, int64_t>> label_frames(const double* log_probs, int64_t T, int64_t C, int64_t blank,
                                                      const std::vector<int64_t>& labels) {
  const int64_t L = static_cast<int64_t>(labels.size());
  std::vector<std::pair<int64_t, int64_t>> spans(L, {0, 0});
  if (L == 0 || T == 0) return spans;
  const int64_t S = 2 * L + 1;  // blank, l1, blank, l2, ..., blank
  auto label_of_state = [&](int64_t s) { return s % 2 == 0 ? blank : labels[s / 2]; };
  std::vector<double> score(S, kNegInf), next(S);
  std::vector<uint8_t> back(T * S, 0);  // how many states back the best predecessor is: 0, 1 or 2
  score[0] = log_probs[blank];
  score[1] = log_probs[labels[0]];
  for (int64_t t = 1; t < T; ++t) {
    const double* frame = log_probs + t * C;
    for (int64_t s = 0; s < S; ++s) {
      double best = score[s];
      uint8_t step = 0;
      if (s >= 1 && score[s - 1] > best) best = score[s - 1], step = 1;
      if (s >= 2 && s % 2 == 1 && labels[s / 2] != labels[s / 2 - 1] && score[s - 2] > best) {
        best = score[s - 2], step = 2;
      }
      next[s] = best + frame[label_of_state(s)];
      back[t * S + s] = step;
    }
    score.swap(next);
  }
  int64_t s = (S >= 2 && score[S - 2] > score[S - 1]) ? S - 2 : S - 1;
  if (score[s] == kNegInf) return spans;
  for (int64_t t = T - 1; t >= 0; --t) {
    if (s % 2 == 1) {
      auto& span = spans[s / 2];
      if (span.second == 0) span.second = t + 1;
      span.first = t;
    }
    s -= back[t * S + s];
  }
  return spans;
}

}  // namespace ctc_ext
