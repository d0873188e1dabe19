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
                                         double unk_score, const std::vector<std::string>& known_words)
    : lm_(std::move(lm)),
      words_(std::move(words)),
      lm_weight_(lm_weight),
      word_score_(word_score),
      unk_score_(unk_score),
      has_vocabulary_(lm_->vocabulary() != nullptr) {
  if (has_vocabulary_) {
    const std::vector<std::string>& vocabulary = *lm_->vocabulary();
    for (size_t i = 0; i < vocabulary.size(); ++i) {
      const std::string& word = vocabulary[i];
      if (word.empty() || word == "<s>" || word == "</s>" || word == "<unk>") continue;  // never spelled
      vocabulary_.insert(word, static_cast<int32_t>(i));
    }
    for (const std::string& word : known_words) {
      if (!word.empty()) vocabulary_.insert(word, kKnownUnknown);
    }
  }
}

double LanguageModelScorer::max_extension_score(int64_t token) const {
  // log p_lm <= 0: only word scores (one per word the token finishes) and unk_score can be gains.
  if (lm_weight_ < 0) return std::numeric_limits<double>::infinity();
  const TokenRole& role = words_->role(token);
  const int finished_words = int(role.word_start) + int(role.word_end);
  return finished_words * std::max(0.0, word_score_) + (role.piece.empty() ? 0.0 : std::max(0.0, unk_score_));
}

class LanguageModelSession : public ScorerSession {
 public:
  explicit LanguageModelSession(const LanguageModelScorer& scorer)
      : scorer_(scorer), lm_(scorer.lm_->begin_utterance()), needs_text_(scorer.lm_->needs_word_text()) {}

  int64_t start() override {
    states_.push_back({lm_->start(), WordTrie::kRoot, 0, ""});
    return static_cast<int64_t>(states_.size()) - 1;
  }

  double extend(int64_t handle, int64_t token, int64_t* next_handle) override {
    State state = states_[handle];
    double score = 0;
    scorer_.words_->walk(
        token,
        [&](unsigned char byte) {
          if (scorer_.has_vocabulary_ && state.node != WordTrie::kOff) {
            state.node = scorer_.vocabulary_.step(state.node, byte);
            if (state.node == WordTrie::kOff) score += scorer_.unk_score_;
          }
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

 private:
  struct State {
    int64_t lm_state;
    int32_t node;      // in the vocabulary trie (kRoot without a vocabulary), kOff once off it
    int64_t length;    // bytes in the partial word
    std::string text;  // the partial word, kept only for models that read it
  };

  static double checked_log_prob(double log_prob) {
    if (!(log_prob <= 0)) {
      throw std::invalid_argument("the language model returned " + std::to_string(log_prob) +
                                  "; log-probabilities must be numbers <= 0");
    }
    return log_prob;
  }

  double finish_word(State& state) {
    if (state.length == 0) return 0;
    double score = scorer_.word_score_;
    int32_t word_index = -1;
    if (scorer_.has_vocabulary_) {
      const int32_t value = scorer_.vocabulary_.value(state.node);
      if (value >= 0) word_index = value;
      // Off the trie the penalty was given when the word left it.
      if (value == WordTrie::kNotWord && state.node != WordTrie::kOff) score += scorer_.unk_score_;
    }
    int64_t next = state.lm_state;
    score += scorer_.lm_weight_ * checked_log_prob(lm_->score(state.lm_state, state.text, word_index, &next));
    state = {next, WordTrie::kRoot, 0, ""};
    return score;
  }

  const LanguageModelScorer& scorer_;
  std::unique_ptr<WordLanguageModelSession> lm_;
  const bool needs_text_;
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
    max_weight_ = std::max(max_weight_, weights[p]);
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

  const HotwordScorer& scorer_;
};

std::unique_ptr<ScorerSession> HotwordScorer::begin_utterance() const {
  return std::make_unique<HotwordSession>(*this);
}

}  // namespace ctc_ext
