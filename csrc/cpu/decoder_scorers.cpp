// The scorers of decoder_scorers.h.
#include "decoder_scorers.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

namespace ctc_ext {

namespace {
constexpr double kNegInf = -std::numeric_limits<double>::infinity();
}

std::vector<TokenWords::Word> TokenWords::words(const std::vector<int64_t>& tokens) const {
  std::vector<Word> words;
  Word current{"", -1, -1};
  auto finish_word = [&] {
    if (!current.text.empty()) words.push_back(current);
    current = {"", -1, -1};
  };
  for (size_t i = 0; i < tokens.size(); ++i) {
    const TokenRole& role = roles_[tokens[i]];
    if (role.word_start) finish_word();
    if (!role.piece.empty()) {
      if (current.text.empty()) current.first_token = static_cast<int64_t>(i);
      current.text += role.piece;
      current.last_token = static_cast<int64_t>(i);
    }
    if (role.word_end) finish_word();
  }
  finish_word();
  return words;
}

void WordTrie::insert(std::string_view word, int32_t value) {
  int32_t node = kRoot;
  for (const char c : word) {
    const uint64_t key = static_cast<uint64_t>(node) << 8 | static_cast<unsigned char>(c);
    const auto found = children_.find(key);
    if (found != children_.end()) {
      node = found->second;
    } else {
      const int32_t created = num_nodes();
      values_.push_back(kNotWord);
      children_.emplace(key, created);
      node = created;
    }
  }
  if (values_[node] == kNotWord) values_[node] = value;
}

// ---------------------------------------------------------------------------------------------
// Language model fusion
namespace {
class NgramWordModelSession : public WordLanguageModelSession {
 public:
  explicit NgramWordModelSession(const NgramLanguageModel& lm) : lm_(lm) {}
  int64_t start() override { return lm_.begin_state(); }
  double score(int64_t state, const std::string&, int32_t word_index, int64_t* next_state) override {
    NgramLanguageModel::State next = 0;
    const double log_prob = lm_.score(static_cast<NgramLanguageModel::State>(state), word_index, &next);
    *next_state = next;
    return log_prob;
  }
  double end(int64_t state) override { return lm_.end_score(static_cast<NgramLanguageModel::State>(state)); }

 private:
  const NgramLanguageModel& lm_;
};
}  // namespace

std::unique_ptr<WordLanguageModelSession> NgramWordModel::begin_utterance() const {
  return std::make_unique<NgramWordModelSession>(*lm_);
}

LanguageModelScorer::LanguageModelScorer(std::shared_ptr<const WordLanguageModel> lm,
                                         std::shared_ptr<const TokenWords> words, double lm_weight, double word_score,
                                         double unk_score, const std::vector<std::string>& known_words, bool lookahead)
    : lm_(std::move(lm)),
      words_(std::move(words)),
      lm_weight_(lm_weight),
      word_score_(word_score),
      unk_score_(unk_score),
      has_vocabulary_(lm_->vocabulary() != nullptr) {
  if (has_vocabulary_) {
    const std::vector<std::string>& vocabulary = *lm_->vocabulary();
    // The look-ahead of a word: lm_weight * its unigram log-probability ("<unk>"'s for known words).
    std::vector<std::pair<std::string_view, double>> word_lookaheads;
    double unknown_log_prob = 0;
    lookahead = lookahead && lm_->unigram_log_prob(-1, &unknown_log_prob);
    unknown_lookahead_ = lookahead ? lm_weight_ * unknown_log_prob : 0.0;
    for (size_t i = 0; i < vocabulary.size(); ++i) {
      const std::string& word = vocabulary[i];
      if (word.empty() || word == "<s>" || word == "</s>" || word == "<unk>") continue;  // never spelled
      vocabulary_.insert(word, static_cast<int32_t>(i));
      double log_prob = 0;
      if (lookahead && lm_->unigram_log_prob(static_cast<int32_t>(i), &log_prob)) {
        word_lookaheads.push_back({word, lm_weight_ * log_prob});
      }
    }
    for (const std::string& word : known_words) {
      if (word.empty()) continue;
      vocabulary_.insert(word, kKnownUnknown);
      word_lookaheads.push_back({word, unknown_lookahead_});
    }
    if (lookahead) {
      // A node's look-ahead: the best of the words at or below it.
      lookahead_.assign(vocabulary_.num_nodes(), -std::numeric_limits<double>::infinity());
      lookahead_[WordTrie::kRoot] = 0;
      for (const auto& [word, value] : word_lookaheads) {
        int32_t node = WordTrie::kRoot;
        for (const char c : word) {
          node = vocabulary_.step(node, static_cast<unsigned char>(c));
          lookahead_[node] = std::max(lookahead_[node], value);
        }
      }
    }
  }
  fresh_word_gain_.assign(words_->size(), 0.0);
  for (int64_t token = 0; token < words_->size(); ++token) {
    const TokenRole& role = words_->role(token);
    if (role.word_start) {
      fresh_word_gain_[token] = gain_bound(WordTrie::kRoot, 0, 0.0, 0.0, token);
      max_fresh_word_gain_ = std::max(max_fresh_word_gain_, fresh_word_gain_[token]);
    } else if (role.word_end && !role.piece.empty()) {
      continuation_ends_word_ = true;
    }
  }
}

double LanguageModelScorer::append_byte(int32_t& node, double& lookahead, unsigned char byte) const {
  if (!has_vocabulary_ || node == WordTrie::kOff) return 0;  // off the trie: penalised when it left
  node = vocabulary_.step(node, byte);
  const double next = lookahead_of(node);
  const double gain = (node == WordTrie::kOff ? unk_score_ : 0.0) + (next - lookahead);
  lookahead = next;
  return gain;
}

double LanguageModelScorer::unscored_word_bound(int32_t node) const {
  if (lm_weight_ < 0) return std::numeric_limits<double>::infinity();
  const bool unknown_in_trie =
      has_vocabulary_ && node != WordTrie::kOff && vocabulary_.value(node) == WordTrie::kNotWord;
  return word_score_ + (unknown_in_trie ? unk_score_ : 0.0);
}

double LanguageModelScorer::gain_bound(int32_t node, int64_t length, double lookahead, double completion,
                                       int64_t token) const {
  double gain = 0;
  bool own_word = true;  // the partial word is still the prefix's own
  words_->walk(
      token,
      [&](unsigned char byte) {
        own_word = false;
        gain += append_byte(node, lookahead, byte);
        ++length;
      },
      [&] {
        if (length == 0) return;
        gain += own_word ? completion : unscored_word_bound(node) - lookahead;
        node = WordTrie::kRoot, length = 0, lookahead = 0, own_word = false;
      });
  return gain;
}

class LanguageModelSession : public ScorerSession {
 public:
  explicit LanguageModelSession(const LanguageModelScorer& scorer)
      : scorer_(scorer),
        lm_(scorer.lm_->begin_utterance()),
        needs_text_(scorer.lm_->needs_word_text()),
        cheap_queries_(scorer.lm_->cheap_queries()) {}

  int64_t start() override {
    states_.push_back({lm_->start(), WordTrie::kRoot, 0, "", 0.0, kUnknownCompletion});
    return static_cast<int64_t>(states_.size()) - 1;
  }

  double extend(int64_t handle, int64_t token, int64_t* next_handle) override {
    State state = states_[handle];
    state.completion = kUnknownCompletion;
    double score = 0;
    scorer_.words_->walk(
        token,
        [&](unsigned char byte) {
          score += scorer_.append_byte(state.node, state.lookahead, byte);
          ++state.length;
          if (needs_text_) state.text.push_back(static_cast<char>(byte));
        },
        [&] { score += finish_word(state); });
    states_.push_back(std::move(state));
    *next_handle = static_cast<int64_t>(states_.size()) - 1;
    return score;
  }

  double finish(int64_t handle) override {
    State state = states_[handle];
    const double last_word = finish_word(state);
    return last_word + scorer_.lm_weight_ * checked_log_prob(lm_->end(state.lm_state));
  }

  double extension_bound(int64_t handle, int64_t token) override {
    const TokenRole& role = scorer_.words_->role(token);
    if (role.word_start) return completion(handle) + scorer_.fresh_word_gain_[token];
    const double own = role.word_end ? completion(handle) : 0.0;
    const State& state = states_[handle];
    return scorer_.gain_bound(state.node, state.length, state.lookahead, own, token);
  }

  double max_extension_bound(int64_t handle) override {
    const double own = completion(handle);
    const State& state = states_[handle];
    // Tokens that spell nothing gain 0; a delimiter finishes the word; a word start finishes it
    // and begins another.
    double bound = std::max({0.0, own, own + scorer_.max_fresh_word_gain_});
    // A continuation moves down the trie (the look-ahead never grows) or leaves it.
    if (scorer_.has_vocabulary_ && state.node != WordTrie::kOff) {
      bound = std::max(bound, scorer_.unk_score_ + scorer_.unknown_lookahead_ - state.lookahead);
    }
    if (scorer_.continuation_ends_word_) {
      // ...and may finish the word it lengthens: its look-ahead is taken back, log p_lm <= 0.
      const double word = scorer_.lm_weight_ < 0 ? std::numeric_limits<double>::infinity()
                                                 : scorer_.word_score_ + std::max(0.0, scorer_.unk_score_);
      bound = std::max(bound, std::max(0.0, scorer_.unk_score_) + word - state.lookahead);
    }
    return bound;
  }

 private:
  static constexpr double kUnknownCompletion = std::numeric_limits<double>::quiet_NaN();
  struct State {
    int64_t lm_state;
    int32_t node;       // in the vocabulary trie (kRoot without a vocabulary), kOff once off it
    int64_t length;     // bytes in the partial word
    std::string text;   // the partial word, kept only for models that read it
    double lookahead;   // the partial word's look-ahead, included in the prefix's score
    double completion;  // the score of finishing the partial word (a bound for costly models), once asked
  };

  static double checked_log_prob(double log_prob) {
    if (!(log_prob <= 0)) {
      throw std::invalid_argument("the language model returned " + std::to_string(log_prob) +
                                  "; log-probabilities must be numbers <= 0");
    }
    return log_prob;
  }

  // The score of finishing the partial word of a state: exact for models with cheap queries (one
  // query per state, kept), an upper bound for the others.
  double completion(int64_t handle) {
    State& state = states_[handle];
    if (state.length == 0) return 0;
    if (std::isnan(state.completion)) {
      if (cheap_queries_) {
        State finished = state;
        state.completion = finish_word(finished);
      } else {
        state.completion = scorer_.unscored_word_bound(state.node) - state.lookahead;
      }
    }
    return state.completion;
  }

  double finish_word(State& state) {
    if (state.length == 0) return 0;
    double score = scorer_.word_score_ - state.lookahead;  // the real score replaces the look-ahead
    int32_t word_index = -1;
    if (scorer_.has_vocabulary_) {
      const int32_t value = scorer_.vocabulary_.value(state.node);
      if (value >= 0) word_index = value;
      // Off the trie the penalty was given when the word left it.
      if (value == WordTrie::kNotWord && state.node != WordTrie::kOff) score += scorer_.unk_score_;
    }
    int64_t next = state.lm_state;
    score += scorer_.lm_weight_ * checked_log_prob(lm_->score(state.lm_state, state.text, word_index, &next));
    state = {next, WordTrie::kRoot, 0, "", 0.0, kUnknownCompletion};
    return score;
  }

  const LanguageModelScorer& scorer_;
  std::unique_ptr<WordLanguageModelSession> lm_;
  const bool needs_text_, cheap_queries_;
  std::vector<State> states_;
};

std::unique_ptr<ScorerSession> LanguageModelScorer::begin_utterance() const {
  return std::make_unique<LanguageModelSession>(*this);
}

// ---------------------------------------------------------------------------------------------
// Lexicon
LexiconScorer::LexiconScorer(const std::vector<std::string>& lexicon, std::shared_ptr<const TokenWords> words)
    : words_(std::move(words)) {
  for (const std::string& word : lexicon) trie_.insert(word, 0);
}

class LexiconSession : public ScorerSession {
 public:
  explicit LexiconSession(const LexiconScorer& scorer) : scorer_(scorer) {}
  // The state is the trie node of the partial word (kRoot between words).
  int64_t start() override { return WordTrie::kRoot; }

  double extend(int64_t state, int64_t token, int64_t* next_state) override {
    int32_t node = static_cast<int32_t>(state);
    bool allowed = true;
    scorer_.words_->walk(
        token, [&](unsigned char byte) { node = scorer_.trie_.step(node, byte); },
        [&] {
          if (node == WordTrie::kRoot) return;
          if (scorer_.trie_.value(node) == WordTrie::kNotWord) allowed = false;
          node = WordTrie::kRoot;
        });
    if (node == WordTrie::kOff) allowed = false;
    *next_state = allowed ? node : WordTrie::kRoot;
    return allowed ? 0.0 : kNegInf;
  }

  double finish(int64_t state) override {
    const int32_t node = static_cast<int32_t>(state);
    return node == WordTrie::kRoot || scorer_.trie_.value(node) != WordTrie::kNotWord ? 0.0 : kNegInf;
  }
  // extend() is cheap and keeps nothing: its score is the bound.
  double extension_bound(int64_t state, int64_t token) override {
    int64_t next = 0;
    return extend(state, token, &next);
  }
  double max_extension_bound(int64_t) override { return 0; }

 private:
  const LexiconScorer& scorer_;
};

std::unique_ptr<ScorerSession> LexiconScorer::begin_utterance() const {
  return std::make_unique<LexiconSession>(*this);
}

// ---------------------------------------------------------------------------------------------
// Hotwords
HotwordScorer::HotwordScorer(const std::vector<std::vector<std::string>>& phrases, const std::vector<double>& weights,
                             std::shared_ptr<const TokenWords> words)
    : words_(std::move(words)) {
  std::vector<std::string> spelled;
  for (const auto& phrase : phrases) {
    std::string text;
    for (const std::string& word : phrase) text += word + " ";
    spelled.push_back(text);
    trie_.insert(text, 0);
  }
  bonus_.assign(trie_.num_nodes(), 0.0);
  kept_.assign(trie_.num_nodes(), 0.0);
  for (size_t p = 0; p < spelled.size(); ++p) {
    const std::string& text = spelled[p];
    int32_t node = WordTrie::kRoot;
    for (size_t k = 0; k < text.size(); ++k) {
      node = trie_.step(node, static_cast<unsigned char>(text[k]));
      bonus_[node] = std::max(bonus_[node], weights[p] * static_cast<double>(k + 1) / static_cast<double>(text.size()));
    }
  }
  // kept: the weight of the longest complete phrase on the path to each node (what a match that
  // breaks there keeps).
  std::vector<double> complete(trie_.num_nodes(), 0.0);
  for (size_t p = 0; p < spelled.size(); ++p) {
    int32_t node = WordTrie::kRoot;
    for (const char c : spelled[p]) node = trie_.step(node, static_cast<unsigned char>(c));
    complete[node] = std::max(complete[node], weights[p]);
  }
  for (const std::string& text : spelled) {
    int32_t node = WordTrie::kRoot;
    double kept = 0;
    for (const char c : text) {
      node = trie_.step(node, static_cast<unsigned char>(c));
      if (complete[node] > 0) kept = complete[node];
      kept_[node] = kept;
    }
  }
}

class HotwordSession : public ScorerSession {
 public:
  explicit HotwordSession(const HotwordScorer& scorer) : scorer_(scorer) {}
  // state = node * 2 + (the next byte starts a word)
  int64_t start() override { return pack(WordTrie::kRoot, true); }

  double extend(int64_t state, int64_t token, int64_t* next_state) override {
    int32_t node = static_cast<int32_t>(state >> 1);
    bool at_word_start = state & 1;
    double score = 0;
    scorer_.words_->walk(
        token,
        [&](unsigned char byte) {
          score += advance(node, byte, at_word_start);
          at_word_start = false;
        },
        [&] {
          if (at_word_start) return;  // no word to finish
          score += advance(node, ' ', false);
          at_word_start = true;
        });
    *next_state = pack(node, at_word_start);
    return score;
  }

  double finish(int64_t state) override {
    int32_t node = static_cast<int32_t>(state >> 1);
    const bool at_word_start = state & 1;
    double score = at_word_start ? 0.0 : advance(node, ' ', false);
    return score + scorer_.kept_[node] - scorer_.bonus_[node];  // an unfinished phrase gains nothing
  }

  // extend() is cheap and keeps nothing: its score is the bound, and its largest over the tokens
  // is computed once per state (a state is a trie node and a flag).
  double extension_bound(int64_t state, int64_t token) override {
    int64_t next = 0;
    return extend(state, token, &next);
  }
  double max_extension_bound(int64_t state) override {
    if (max_gain_.empty()) max_gain_.assign(2 * static_cast<size_t>(scorer_.trie_.num_nodes()), kUnknown);
    double& bound = max_gain_[state];
    if (std::isnan(bound)) {
      bound = kNegInf;
      for (int64_t token = 0; token < scorer_.words_->size(); ++token) {
        bound = std::max(bound, extension_bound(state, token));
      }
    }
    return bound;
  }

 private:
  static int64_t pack(int32_t node, bool at_word_start) { return int64_t(node) * 2 + (at_word_start ? 1 : 0); }

  // Moves `node` by one byte; returns the change in gain.
  double advance(int32_t& node, unsigned char byte, bool at_word_start) {
    const int32_t next = scorer_.trie_.step(node, byte);
    if (next != WordTrie::kOff) {
      const double gain = scorer_.bonus_[next] - scorer_.bonus_[node];
      node = next;
      return gain;
    }
    double gain = scorer_.kept_[node] - scorer_.bonus_[node];  // the match breaks
    node = WordTrie::kRoot;
    if (at_word_start) {  // a new match may start here
      const int32_t restart = scorer_.trie_.step(WordTrie::kRoot, byte);
      if (restart != WordTrie::kOff) {
        node = restart;
        gain += scorer_.bonus_[restart];
      }
    }
    return gain;
  }

  static constexpr double kUnknown = std::numeric_limits<double>::quiet_NaN();
  const HotwordScorer& scorer_;
  std::vector<double> max_gain_;  // per state: max_extension_bound(), NaN until asked
};

std::unique_ptr<ScorerSession> HotwordScorer::begin_utterance() const {
  return std::make_unique<HotwordSession>(*this);
}

}  // namespace ctc_ext
