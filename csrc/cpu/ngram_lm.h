// A back-off n-gram language model read from an ARPA file (any order, <s>, </s>, <unk>), queried
// one word at a time with states that stand for the longest context the model knows.  Used by
// the prefix beam search as the word-level language model of shallow fusion.
//
// Interface only until the implementation lands (csrc/cpu/ngram_lm.cpp).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace ctc_ext {

class NgramLanguageModel {
 public:
  // The longest context (at most order - 1 words) that the model holds as an n-gram: two
  // histories with equal states give every next word the same probability, so the search may
  // merge them.  Cheap to copy, hash and compare.
  using State = uint32_t;

  // Reads an ARPA file; a malformed file raises (c10::Error / std::runtime_error) naming the path
  // and the line number.
  static std::shared_ptr<const NgramLanguageModel> load_arpa(const std::string& path);

  int order() const;
  // The state after "<s>" (start of an utterance) and the empty context.
  State begin_state() const;
  State null_state() const;
  // Index of a word of the vocabulary, or -1 when the model does not know it (scored as <unk>).
  int32_t word_index(std::string_view word) const;
  // Whether some word of the vocabulary starts with `prefix` (partial words during the search).
  bool is_word_prefix(std::string_view prefix) const;
  // Natural-log probability of `word` (an index from word_index, or -1 for <unk>) after `state`,
  // back-off weights included; writes the state after it.
  double score(State state, int32_t word, State* next) const;
  // Natural-log probability of "</s>" after `state`.
  double end_score(State state) const;
  const std::vector<std::string>& vocabulary() const;
  size_t num_ngrams(int n) const;  // how many n-grams of order n the file held

  ~NgramLanguageModel();

 private:
  NgramLanguageModel();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ctc_ext
