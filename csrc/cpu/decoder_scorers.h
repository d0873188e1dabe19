// The scorers of ctc_ext.CTCDecoder (prefix_search.h's PrefixScorer): word-level language model
// fusion, lexicon constraint and hotwords, all over the words that tokens spell (TokenWords).
// Python objects (a Python language model, beam_search's per-prefix callback) plug in through
// WordLanguageModel and PrefixScorer in decoder_bindings.cpp.
#pragma once

#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "ngram_lm.h"
#include "prefix_search.h"

namespace ctc_ext {

// What a token does to the words of the text: finish the current word first (word_start: "▁ab",
// a word-piece without "##", a character of a script without spaces), append `piece`, finish the
// word after it (word_end: a delimiter such as "|" with an empty piece, a character of a script
// without spaces).  The conventions are resolved in Python (ctc_ext/decoder.py).
struct TokenRole {
  std::string piece;
  bool word_start = false;
  bool word_end = false;
};

class TokenWords {
 public:
  TokenWords(std::vector<TokenRole> roles, std::string separator)
      : roles_(std::move(roles)), separator_(std::move(separator)) {}

  // Calls on_break() where a word may end and on_char(byte) for each byte the token appends.
  template <typename OnChar, typename OnBreak>
  void walk(int64_t token, OnChar&& on_char, OnBreak&& on_break) const {
    const TokenRole& role = roles_[token];
    if (role.word_start) on_break();
    for (const char c : role.piece) on_char(static_cast<unsigned char>(c));
    if (role.word_end) on_break();
  }

  struct Word {
    std::string text;
    int64_t first_token, last_token;  // indices into the token sequence of its first and last piece
  };
  std::vector<Word> words(const std::vector<int64_t>& tokens) const;
  const std::string& separator() const { return separator_; }
  int64_t size() const { return static_cast<int64_t>(roles_.size()); }
  const TokenRole& role(int64_t token) const { return roles_[token]; }

 private:
  std::vector<TokenRole> roles_;
  std::string separator_;  // between the words of the text: " ", or "" for scripts without spaces
};

// A byte trie of words, each with a value (e.g. its index in a language model's vocabulary).
class WordTrie {
 public:
  static constexpr int32_t kRoot = 0;
  static constexpr int32_t kOff = -1;                                       // fell off the trie
  static constexpr int32_t kNotWord = std::numeric_limits<int32_t>::min();  // a node that ends no word

  WordTrie() : values_(1, kNotWord) {}
  // Inserts `word` with `value` unless it is there already (the first value stays).
  void insert(std::string_view word, int32_t value);
  int32_t step(int32_t node, unsigned char byte) const {
    if (node == kOff) return kOff;
    const auto found = children_.find(static_cast<uint64_t>(node) << 8 | byte);
    return found == children_.end() ? kOff : found->second;
  }
  int32_t value(int32_t node) const { return node == kOff ? kNotWord : values_[node]; }
  int32_t num_nodes() const { return static_cast<int32_t>(values_.size()); }

 private:
  std::unordered_map<uint64_t, int32_t> children_;  // node << 8 | byte -> child
  std::vector<int32_t> values_;
};

// A word-level language model, one session per utterance; natural-log probabilities.
class WordLanguageModelSession {
 public:
  virtual ~WordLanguageModelSession() = default;
  virtual int64_t start() = 0;  // the state after "<s>"
  // log p(word | state); word_index is the word's value in vocabulary() (-1: unknown to the model).
  virtual double score(int64_t state, const std::string& word, int32_t word_index, int64_t* next_state) = 0;
  virtual double end(int64_t state) = 0;  // log p("</s>" | state)
};

class WordLanguageModel {
 public:
  virtual ~WordLanguageModel() = default;
  virtual std::unique_ptr<WordLanguageModelSession> begin_utterance() const = 0;
  // The words the model knows, valued by their index (partial words are checked against it), or
  // nullptr when the model cannot tell.
  virtual const std::vector<std::string>* vocabulary() const = 0;
  virtual bool needs_word_text() const = 0;  // whether score() reads `word` (else only word_index)
  // Whether a query is cheap enough for the search to make it only to bound a prefix's score
  // (the C++ n-gram model: yes; a Python model: no).
  virtual bool cheap_queries() const = 0;
  // Natural-log unigram probability of a word of vocabulary() (-1: "<unk>"), for the look-ahead
  // of partial words; false when the model cannot tell.
  virtual bool unigram_log_prob(int32_t /*word_index*/, double* /*log_prob*/) const { return false; }
};

// The C++ n-gram model (ngram_lm.h) as a word-level model: states are its states.
class NgramWordModel : public WordLanguageModel {
 public:
  explicit NgramWordModel(std::shared_ptr<const NgramLanguageModel> lm) : lm_(std::move(lm)) {}
  std::unique_ptr<WordLanguageModelSession> begin_utterance() const override;
  const std::vector<std::string>* vocabulary() const override { return &lm_->vocabulary(); }
  bool needs_word_text() const override { return false; }
  bool cheap_queries() const override { return true; }
  bool unigram_log_prob(int32_t word_index, double* log_prob) const override {
    *log_prob = lm_->score(lm_->null_state(), word_index, nullptr);
    return true;
  }

 private:
  std::shared_ptr<const NgramLanguageModel> lm_;
};

// Shallow fusion: every finished word scores lm_weight * log p_lm(word | history) + word_score,
// plus unk_score when the model does not know it; a partial word that is no prefix of a known
// word scores unk_score at once (it can only finish unknown); finish() scores the last word and
// lm_weight * log p_lm("</s>" | history).  known_words (hotwords, lexicon) are not penalised.
//
// Look-ahead (`lookahead`, for models that give unigram probabilities): a partial word also
// carries lm_weight * the best unigram log-probability of the vocabulary words it begins (its
// trie node's look-ahead; off the trie, that of "<unk>"), so that prefixes ending inside a word
// are not ranked as if its word cost nothing.  Each extension adds the change of look-ahead, and
// the look-ahead is taken back when the word is scored, so finished hypotheses keep their exact
// fused score: it only changes which prefixes the beam keeps.
class LanguageModelScorer : public PrefixScorer {
 public:
  LanguageModelScorer(std::shared_ptr<const WordLanguageModel> lm, std::shared_ptr<const TokenWords> words,
                      double lm_weight, double word_score, double unk_score,
                      const std::vector<std::string>& known_words, bool lookahead);
  std::unique_ptr<ScorerSession> begin_utterance() const override;

 private:
  friend class LanguageModelSession;
  double lookahead_of(int32_t node) const {
    if (lookahead_.empty()) return 0;
    return node == WordTrie::kOff ? unknown_lookahead_ : lookahead_[node];
  }
  // Appends a byte to a partial word (its trie node and look-ahead); returns the change of score.
  double append_byte(int32_t& node, double& lookahead, unsigned char byte) const;
  // An upper bound of the score of finishing a word at trie node `node` without asking the
  // model: log p_lm <= 0.
  double unscored_word_bound(int32_t node) const;
  // An upper bound of the score of appending `token` to a prefix whose partial word has trie node
  // `node`, `length` bytes and look-ahead `lookahead`, `completion` being the score of finishing
  // that partial word: exact but for words the token begins and ends (unscored_word_bound).
  double gain_bound(int32_t node, int64_t length, double lookahead, double completion, int64_t token) const;

  std::shared_ptr<const WordLanguageModel> lm_;
  std::shared_ptr<const TokenWords> words_;
  double lm_weight_, word_score_, unk_score_;
  bool has_vocabulary_;
  WordTrie vocabulary_;            // values: index in the model's vocabulary, or kKnownUnknown
  std::vector<double> lookahead_;  // per trie node (empty: no look-ahead); 0 at the root
  double unknown_lookahead_ = 0;   // of a partial word off the trie
  // Per token that starts a word: gain_bound() after the previous word is finished (from the
  // root); and their largest.
  std::vector<double> fresh_word_gain_;
  double max_fresh_word_gain_ = -std::numeric_limits<double>::infinity();
  bool continuation_ends_word_ = false;  // some token that starts no word spells bytes and ends one
 public:
  static constexpr int32_t kKnownUnknown = -2;
};

// Only words of the lexicon: a prefix whose partial word is no prefix of a lexicon word, or
// that finishes a word outside it, scores -inf.
class LexiconScorer : public PrefixScorer {
 public:
  LexiconScorer(const std::vector<std::string>& lexicon, std::shared_ptr<const TokenWords> words);
  std::unique_ptr<ScorerSession> begin_utterance() const override;

 private:
  friend class LexiconSession;
  WordTrie trie_;
  std::shared_ptr<const TokenWords> words_;
};

// Hotwords: phrases (lists of words) with a positive weight, spelled "word word " (one space
// after each word).  A prefix whose text from a word start spells the first k of a phrase's L
// bytes gains weight * k / L: the whole phrase, its last word finished, gains weight, and a match
// that breaks gives back all but the weight of the longest whole phrase it had completed.
class HotwordScorer : public PrefixScorer {
 public:
  HotwordScorer(const std::vector<std::vector<std::string>>& phrases, const std::vector<double>& weights,
                std::shared_ptr<const TokenWords> words);
  std::unique_ptr<ScorerSession> begin_utterance() const override;

 private:
  friend class HotwordSession;
  WordTrie trie_;                     // "word word " per phrase (a trailing space ends it)
  std::vector<double> bonus_, kept_;  // per node: gain so far, and gain kept if the match breaks
  std::shared_ptr<const TokenWords> words_;
};

}  // namespace ctc_ext
