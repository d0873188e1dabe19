// The back-off n-gram language model of ngram_lm.h: an ARPA reader and per-word queries.
//
// Storage is a trie in sorted arrays, one level per order (KenLM's "trie" layout without its bit
// packing).  Level n holds the n-grams, grouped by their context (the (n-1)-gram without the last
// word, an entry of level n - 1) and sorted by word id within a group; every entry of level
// n - 1 knows where its group of children starts.  Per n-gram: word id, log-probability,
// back-off weight, child offset and the state after it: 20 bytes (12 at the highest order, which
// has no children and no back-off).  Level 0 is one entry, the empty context, whose children are
// all unigrams in file order, so a word id is its unigram's index.
//
// A state is the global index (levels numbered one after another) of the longest context known
// to the model, never an n-gram of the highest order: scoring a word walks from the state's entry
// to ever shorter contexts (each entry keeps the longest proper suffix that is itself an entry),
// adding back-off weights, until the context has the word as a child.
#include "ngram_lm.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <fstream>
#include <limits>
#include <stdexcept>
#include <unordered_map>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace ctc_ext {
namespace {

constexpr double kLn10 = 2.302585092994045684;
// KenLM's log10 probability of <unk> when an ARPA file does not list it.
constexpr double kMissingUnknownLog10 = -100.0;
constexpr const char* kSentenceBegin = "<s>";
constexpr const char* kSentenceEnd = "</s>";
constexpr const char* kUnknown = "<unk>";

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v'; }

std::string_view trim(std::string_view text) {
  while (!text.empty() && is_space(text.front())) text.remove_prefix(1);
  while (!text.empty() && is_space(text.back())) text.remove_suffix(1);
  return text;
}

// Splits on runs of whitespace (ARPA separates fields with tabs, words with spaces; tools vary).
void split_fields(std::string_view line, std::vector<std::string_view>& fields) {
  fields.clear();
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && is_space(line[i])) ++i;
    size_t start = i;
    while (i < line.size() && !is_space(line[i])) ++i;
    if (i > start) fields.push_back(line.substr(start, i - start));
  }
}

// Reads an ARPA file line by line and turns every problem into an error naming path and line.
class ArpaReader {
 public:
  explicit ArpaReader(const std::string& path) : path_(path), stream_(path) {
    if (!stream_) throw std::runtime_error("ctc_ext: cannot open ARPA file '" + path + "'");
  }

  // The next line, or false at the end of the file.
  bool next(std::string_view& line) {
    if (!std::getline(stream_, buffer_)) {
      if (stream_.bad()) fail("read error");
      line = std::string_view();
      return false;
    }
    ++line_number_;
    line = buffer_;
    return true;
  }

  // The next line that is not blank, or false at the end of the file.
  bool next_nonblank(std::string_view& line) {
    while (next(line)) {
      line = trim(line);
      if (!line.empty()) return true;
    }
    return false;
  }

  [[noreturn]] void fail(const std::string& message) const { fail_at(line_number_, message); }

  [[noreturn]] void fail_at(uint64_t line_number, const std::string& message) const {
    throw std::runtime_error("ctc_ext: malformed ARPA file '" + path_ + "', line " + std::to_string(line_number) +
                             ": " + message);
  }

  [[noreturn]] void fail_at_end(const std::string& message) const {
    throw std::runtime_error("ctc_ext: malformed ARPA file '" + path_ + "' (at its end, line " +
                             std::to_string(line_number_) + "): " + message);
  }

  uint64_t line_number() const { return line_number_; }

  // A log10 number of an n-gram line.
  double number(std::string_view text, const char* what) const {
    double value = 0;
    const char* end = text.data() + text.size();
    auto [stop, error] = std::from_chars(text.data(), end, value);
    if (error != std::errc() || stop != end || std::isnan(value)) {
      fail("bad " + std::string(what) + " '" + std::string(text) + "' (expected a log10 number)");
    }
    return value;
  }

 private:
  std::string path_;
  std::ifstream stream_;
  std::string buffer_;
  uint64_t line_number_ = 0;
};

// One n-gram line of order >= 2 before its level is sorted.
struct PendingNgram {
  uint32_t context;  // index of its (n-1)-word prefix in the previous level
  int32_t word;
  float log_prob;
  float log_backoff;
  uint64_t line_number;
};

}  // namespace

struct NgramLanguageModel::Impl {
  struct Level {
    std::vector<int32_t> words;         // word id per entry, sorted within each context's group
    std::vector<float> log_probs;       // natural log
    std::vector<float> log_backoffs;    // natural log; empty at the highest order
    std::vector<State> next_states;     // the state after the entry's n-gram (see state_after)
    std::vector<uint32_t> child_begin;  // size + 1 offsets into the next level; empty at the top
    size_t size() const { return words.size(); }
  };

  int order = 0;
  std::vector<Level> levels;                               // levels[0]: the empty context; levels[n]: the n-grams
  std::vector<State> level_offsets;                        // global index of each level's first entry, plus the total
  std::vector<size_t> file_counts;                         // n-grams per order as the file listed them
  std::vector<std::string> vocabulary;                     // by word id (unigram order); <unk> appended if absent
  std::unordered_map<std::string_view, int32_t> word_ids;  // views into `vocabulary`
  std::vector<int32_t> words_by_spelling;                  // ids sorted by spelling, without <s>, </s>, <unk>
  int32_t begin_word = -1, end_word = -1, unknown_word = -1;

  // (level, index in level) of a global state.
  std::pair<int, uint32_t> locate(State state) const {
    int n = order;
    while (state < level_offsets[n]) --n;
    return {n, state - level_offsets[n]};
  }

  // Index in level n + 1 of the child `word` of entry `index` of level n, or -1.
  int64_t find_child(int n, uint32_t index, int32_t word) const {
    const Level& children = levels[n + 1];
    if (n == 0) return word;  // every word is a unigram and its id is its index
    auto first = children.words.begin() + levels[n].child_begin[index];
    auto last = children.words.begin() + levels[n].child_begin[index + 1];
    auto found = std::lower_bound(first, last, word);
    if (found == last || *found != word) return -1;
    return found - children.words.begin();
  }

  // The state after entry `index` of level n has been scored: the entry itself when it can be a
  // context, else (highest order) the longest proper suffix that is an entry.
  State state_after(int n, uint32_t index) const {
    return n < order ? level_offsets[n] + index : levels[n].next_states[index];
  }

  // Natural-log probability of `word` after the context `state`; (level, index) of the n-gram
  // that gave it through `found_level` / `found_index`.
  double score(State state, int32_t word, int* found_level, uint32_t* found_index) const {
    auto [n, index] = locate(state);
    double log_backoff = 0;
    while (true) {
      if (n < order) {
        int64_t child = find_child(n, index, word);
        if (child >= 0) {
          *found_level = n + 1;
          *found_index = static_cast<uint32_t>(child);
          return log_backoff + levels[n + 1].log_probs[child];
        }
        log_backoff += levels[n].log_backoffs[index];
      }
      // n > 0 here: the empty context has every word as a child.
      std::tie(n, index) = locate(levels[n].next_states[index]);
    }
  }

  void check_state(State state) const {
    if (state >= level_offsets.back()) {
      throw std::out_of_range("ctc_ext: n-gram LM state " + std::to_string(state) + " out of range (the model has " +
                              std::to_string(level_offsets.back()) + " states)");
    }
  }

  int32_t checked_word(int32_t word) const {
    if (word == -1) return unknown_word;
    if (word < 0 || word >= static_cast<int32_t>(vocabulary.size())) {
      throw std::out_of_range("ctc_ext: n-gram LM word index " + std::to_string(word) +
                              " out of range (vocabulary of " + std::to_string(vocabulary.size()) +
                              " words; -1 for <unk>)");
    }
    return word;
  }

  void read(ArpaReader& reader);
  void read_header(ArpaReader& reader);
  void read_unigrams(ArpaReader& reader, std::string_view& line);
  void read_level(ArpaReader& reader, int n, std::string_view& line);
  void link_suffixes(int n);
  void index_vocabulary(ArpaReader& reader);
};

namespace {

// "\n-grams:" for order n.
std::string section_name(int n) { return "\\" + std::to_string(n) + "-grams:"; }

}  // namespace

void NgramLanguageModel::Impl::read_header(ArpaReader& reader) {
  std::string_view line;
  // Free text may precede \data\.
  do {
    if (!reader.next(line)) reader.fail_at_end("no \\data\\ section");
  } while (trim(line) != "\\data\\");
  while (reader.next_nonblank(line) && line.rfind("ngram ", 0) == 0) {
    std::string_view spec = trim(line.substr(6));
    size_t equals = spec.find('=');
    uint64_t n = 0, count = 0;
    bool ok = equals != std::string_view::npos;
    if (ok) {
      std::string_view n_text = trim(spec.substr(0, equals)), count_text = trim(spec.substr(equals + 1));
      auto [n_end, n_error] = std::from_chars(n_text.data(), n_text.data() + n_text.size(), n);
      auto [c_end, c_error] = std::from_chars(count_text.data(), count_text.data() + count_text.size(), count);
      ok = n_error == std::errc() && n_end == n_text.data() + n_text.size() && c_error == std::errc() &&
           c_end == count_text.data() + count_text.size() && !n_text.empty() && !count_text.empty();
    }
    if (!ok) reader.fail("bad count line '" + std::string(line) + "' (expected 'ngram N=COUNT')");
    if (n != file_counts.size() + 1) {
      reader.fail("count of order " + std::to_string(n) + " where order " + std::to_string(file_counts.size() + 1) +
                  " was expected (orders must be listed 1, 2, ...)");
    }
    if (count == 0) reader.fail("order " + std::to_string(n) + " has no n-grams");
    file_counts.push_back(count);
  }
  if (file_counts.empty()) reader.fail("the \\data\\ section lists no 'ngram N=COUNT' lines");
  if (line.empty()) reader.fail_at_end("expected '" + section_name(1) + "'");
  uint64_t total = 1;  // the empty context
  for (uint64_t count : file_counts) total += count;
  if (total + 1 >= std::numeric_limits<State>::max()) reader.fail("more n-grams than 32-bit states can index");
  order = static_cast<int>(file_counts.size());
  if (line != section_name(1)) reader.fail("expected '" + section_name(1) + "', got '" + std::string(line) + "'");
}

void NgramLanguageModel::Impl::read_unigrams(ArpaReader& reader, std::string_view& line) {
  Level& unigrams = levels[1];
  std::vector<std::string_view> fields;
  std::unordered_map<std::string, uint64_t> first_line;
  while (reader.next(line) && !(line = trim(line)).empty() && line.front() != '\\') {
    split_fields(line, fields);
    bool top = order == 1;
    if (fields.size() != 2 && !(fields.size() == 3 && !top)) {
      reader.fail("expected 'log10_prob word" + std::string(top ? "'" : " [log10_backoff]'") + ", got " +
                  std::to_string(fields.size()) + " fields");
    }
    double log_prob = reader.number(fields[0], "probability");
    if (log_prob > 0) reader.fail("log10 probability " + std::string(fields[0]) + " is above 0");
    double log_backoff = fields.size() == 3 ? reader.number(fields[2], "back-off weight") : 0.0;
    if (!std::isfinite(log_backoff)) reader.fail("back-off weight must be finite");
    auto [where, inserted] = first_line.emplace(std::string(fields[1]), reader.line_number());
    if (!inserted) {
      reader.fail("unigram '" + std::string(fields[1]) + "' listed twice (first on line " +
                  std::to_string(where->second) + ")");
    }
    if (vocabulary.size() == file_counts[0]) {
      reader.fail("more unigrams than the " + std::to_string(file_counts[0]) + " the header announced");
    }
    vocabulary.emplace_back(fields[1]);
    unigrams.words.push_back(static_cast<int32_t>(unigrams.words.size()));
    unigrams.log_probs.push_back(static_cast<float>(log_prob * kLn10));
    if (!top) unigrams.log_backoffs.push_back(static_cast<float>(log_backoff * kLn10));
  }
  if (vocabulary.size() != file_counts[0]) {
    reader.fail("the header announced " + std::to_string(file_counts[0]) + " unigrams, the section has " +
                std::to_string(vocabulary.size()));
  }
  index_vocabulary(reader);
}

void NgramLanguageModel::Impl::index_vocabulary(ArpaReader& reader) {
  auto id_of = [&](const std::string& word) {
    for (size_t i = 0; i < vocabulary.size(); ++i)
      if (vocabulary[i] == word) return static_cast<int32_t>(i);
    return int32_t{-1};
  };
  begin_word = id_of(kSentenceBegin);
  end_word = id_of(kSentenceEnd);
  unknown_word = id_of(kUnknown);
  if (begin_word < 0) reader.fail("the unigrams have no <s> (sentence begin)");
  if (end_word < 0) reader.fail("the unigrams have no </s> (sentence end)");
  Level& unigrams = levels[1];
  if (unknown_word < 0) {  // KenLM's convention: <unk> at log10 probability -100
    unknown_word = static_cast<int32_t>(vocabulary.size());
    vocabulary.emplace_back(kUnknown);
    unigrams.words.push_back(unknown_word);
    unigrams.log_probs.push_back(static_cast<float>(kMissingUnknownLog10 * kLn10));
    if (order > 1) unigrams.log_backoffs.push_back(0.0f);
  }
  word_ids.reserve(vocabulary.size());
  for (size_t i = 0; i < vocabulary.size(); ++i) word_ids.emplace(vocabulary[i], static_cast<int32_t>(i));
  for (int32_t i = 0; i < static_cast<int32_t>(vocabulary.size()); ++i) {
    if (i != begin_word && i != end_word && i != unknown_word) words_by_spelling.push_back(i);
  }
  std::sort(words_by_spelling.begin(), words_by_spelling.end(),
            [&](int32_t a, int32_t b) { return vocabulary[a] < vocabulary[b]; });
  unigrams.next_states.assign(unigrams.size(), 0);  // a unigram's proper suffix is the empty context
  levels[0].child_begin = {0, static_cast<uint32_t>(unigrams.size())};
}

void NgramLanguageModel::Impl::read_level(ArpaReader& reader, int n, std::string_view& line) {
  const bool top = n == order;
  std::vector<PendingNgram> pending;
  pending.reserve(file_counts[n - 1]);
  std::vector<std::string_view> fields;
  while (reader.next(line) && !(line = trim(line)).empty() && line.front() != '\\') {
    split_fields(line, fields);
    const size_t words = static_cast<size_t>(n);
    if (fields.size() != words + 1 && !(fields.size() == words + 2 && !top)) {
      reader.fail("expected 'log10_prob' and " + std::to_string(n) + " words" +
                  (top ? std::string(" (no back-off at the highest order)") : std::string(" [and log10_backoff]")) +
                  ", got " + std::to_string(fields.size()) + " fields");
    }
    if (pending.size() == file_counts[n - 1]) {
      reader.fail("more " + std::to_string(n) + "-grams than the " + std::to_string(file_counts[n - 1]) +
                  " the header announced");
    }
    double log_prob = reader.number(fields[0], "probability");
    if (log_prob > 0) reader.fail("log10 probability " + std::string(fields[0]) + " is above 0");
    double log_backoff = fields.size() == words + 2 ? reader.number(fields[words + 1], "back-off weight") : 0.0;
    if (!std::isfinite(log_backoff)) reader.fail("back-off weight must be finite");
    // Walk the context down the trie from the empty context.
    int64_t context = 0;
    int32_t word = -1;
    for (size_t k = 1; k <= words; ++k) {
      auto id = word_ids.find(fields[k]);
      if (id == word_ids.end()) reader.fail("word '" + std::string(fields[k]) + "' is not among the unigrams");
      word = id->second;
      if (k == words) break;
      context = find_child(static_cast<int>(k) - 1, static_cast<uint32_t>(context), word);
      if (context < 0) {
        std::string prefix;
        for (size_t j = 1; j <= k; ++j) prefix += (j > 1 ? " " : "") + std::string(fields[j]);
        reader.fail("context '" + prefix + "' of this " + std::to_string(n) + "-gram is not itself an n-gram");
      }
    }
    pending.push_back({static_cast<uint32_t>(context), word, static_cast<float>(log_prob * kLn10),
                       static_cast<float>(log_backoff * kLn10), reader.line_number()});
  }
  if (pending.size() != file_counts[n - 1]) {
    reader.fail("the header announced " + std::to_string(file_counts[n - 1]) + " " + std::to_string(n) +
                "-grams, the section has " + std::to_string(pending.size()));
  }
  std::sort(pending.begin(), pending.end(), [](const PendingNgram& a, const PendingNgram& b) {
    return a.context != b.context ? a.context < b.context
           : a.word != b.word     ? a.word < b.word
                                  : a.line_number < b.line_number;
  });
  Level& level = levels[n];
  Level& parents = levels[n - 1];
  level.words.reserve(pending.size());
  level.log_probs.reserve(pending.size());
  if (!top) level.log_backoffs.reserve(pending.size());
  parents.child_begin.assign(parents.size() + 1, 0);
  for (size_t i = 0; i < pending.size(); ++i) {
    const PendingNgram& ngram = pending[i];
    if (i > 0 && ngram.context == pending[i - 1].context && ngram.word == pending[i - 1].word) {
      reader.fail_at(ngram.line_number,
                     "the same " + std::to_string(n) + "-gram as line " + std::to_string(pending[i - 1].line_number));
    }
    ++parents.child_begin[ngram.context + 1];
    level.words.push_back(ngram.word);
    level.log_probs.push_back(ngram.log_prob);
    if (!top) level.log_backoffs.push_back(ngram.log_backoff);
  }
  for (size_t i = 0; i < parents.size(); ++i) parents.child_begin[i + 1] += parents.child_begin[i];
  // next_states[i] for the entries of this level: the longest proper suffix that is an entry,
  // found by scoring the word after the context's own suffix.
  level.next_states.resize(pending.size());
  for (size_t i = 0; i < pending.size(); ++i) {
    int found_level = 0;
    uint32_t found_index = 0;
    score(parents.next_states[pending[i].context], pending[i].word, &found_level, &found_index);
    level.next_states[i] = level_offsets[found_level] + found_index;
  }
}

void NgramLanguageModel::Impl::read(ArpaReader& reader) {
  read_header(reader);
  levels.resize(order + 1);
  // Offsets of levels not read yet stay above every state, so locate() works while loading.
  level_offsets.assign(order + 2, std::numeric_limits<State>::max());
  level_offsets[0] = 0;
  level_offsets[1] = 1;
  levels[0].words = {-1};
  levels[0].log_probs = {0.0f};
  levels[0].log_backoffs = {0.0f};
  levels[0].next_states = {0};
  std::string_view line;
  for (int n = 1; n <= order; ++n) {
    if (n == 1) {
      read_unigrams(reader, line);
    } else {
      read_level(reader, n, line);
    }
    level_offsets[n + 1] = level_offsets[n] + static_cast<State>(levels[n].size());
    // The line that ended the section: the next section's name, \end\ or a blank line.
    if (line.empty() && !reader.next_nonblank(line)) {
      reader.fail_at_end("expected '" + (n < order ? section_name(n + 1) : std::string("\\end\\")) + "'");
    }
    const std::string expected = n < order ? section_name(n + 1) : "\\end\\";
    if (line != expected) reader.fail("expected '" + expected + "', got '" + std::string(line) + "'");
  }
}

NgramLanguageModel::NgramLanguageModel() : impl_(std::make_unique<Impl>()) {}
NgramLanguageModel::~NgramLanguageModel() = default;

std::shared_ptr<const NgramLanguageModel> NgramLanguageModel::load_arpa(const std::string& path) {
  ArpaReader reader(path);
  std::shared_ptr<NgramLanguageModel> model(new NgramLanguageModel());
  model->impl_->read(reader);
#if defined(__GLIBC__)
  // Loading sorts each order in a scratch buffer as large as the order itself; hand the freed
  // heap back so that the model's resident size is what it holds.
  malloc_trim(0);
#endif
  return model;
}

int NgramLanguageModel::order() const { return impl_->order; }

NgramLanguageModel::State NgramLanguageModel::begin_state() const {
  // <s> as a context; in a unigram model no context is kept.
  return impl_->state_after(1, static_cast<uint32_t>(impl_->begin_word));
}

NgramLanguageModel::State NgramLanguageModel::null_state() const { return 0; }

int32_t NgramLanguageModel::word_index(std::string_view word) const {
  auto found = impl_->word_ids.find(word);
  return found == impl_->word_ids.end() ? -1 : found->second;
}

bool NgramLanguageModel::is_word_prefix(std::string_view prefix) const {
  const auto& vocabulary = impl_->vocabulary;
  const auto& sorted = impl_->words_by_spelling;
  auto first = std::lower_bound(sorted.begin(), sorted.end(), prefix,
                                [&](int32_t word, std::string_view key) { return vocabulary[word] < key; });
  return first != sorted.end() && std::string_view(vocabulary[*first]).substr(0, prefix.size()) == prefix;
}

double NgramLanguageModel::score(State state, int32_t word, State* next) const {
  impl_->check_state(state);
  int found_level = 0;
  uint32_t found_index = 0;
  double log_prob = impl_->score(state, impl_->checked_word(word), &found_level, &found_index);
  if (next != nullptr) *next = impl_->state_after(found_level, found_index);
  return log_prob;
}

double NgramLanguageModel::end_score(State state) const { return score(state, impl_->end_word, nullptr); }

const std::vector<std::string>& NgramLanguageModel::vocabulary() const { return impl_->vocabulary; }

size_t NgramLanguageModel::num_ngrams(int n) const {
  if (n < 1 || n > impl_->order) {
    throw std::out_of_range("ctc_ext: n-gram order " + std::to_string(n) + " out of range [1, " +
                            std::to_string(impl_->order) + "]");
  }
  return impl_->file_counts[n - 1];
}

}  // namespace ctc_ext
