// Python bindings of the prefix search with scorers (ctc_ext._C.PrefixDecoder and its scorers),
// used by ctc_ext.CTCDecoder and by ctc_ext.beam_search's `scorer` argument.  Batches decode on
// worker threads with the GIL released; Python scorers take the GIL only while they run.
#include <ATen/OpMathType.h>
#include <torch/extension.h>

#include <cmath>
#include <exception>
#include <limits>
#include <mutex>
#include <thread>

#include "../arguments.h"
#include "../python_module.h"
#include "decoder_scorers.h"
#include "prefix_search.h"
#include "sample_queue.h"

namespace py = pybind11;

namespace ctc_ext {
namespace {

// ---------------------------------------------------------------------------------------------
// Python scorers
// A word-level language model written in Python: start() -> state, score(state, word) ->
// (next_state, log_prob), finish(state) -> log_prob, and optionally `vocabulary`.
class PythonLanguageModel : public WordLanguageModel {
 public:
  explicit PythonLanguageModel(py::object lm) : lm_(std::move(lm)) {
    for (const char* method : {"start", "score", "finish"}) {
      if (!py::hasattr(lm_, method) || !PyCallable_Check(lm_.attr(method).ptr())) {
        throw py::type_error(std::string("lm must be a path to an ARPA file, an NgramLM, or an object with start(), ") +
                             "score(state, word) and finish(state); it has no " + method + "()");
      }
    }
    if (py::hasattr(lm_, "vocabulary") && !lm_.attr("vocabulary").is_none()) {
      has_vocabulary_ = true;
      for (const py::handle word : lm_.attr("vocabulary")) vocabulary_.push_back(py::cast<std::string>(word));
    }
  }
  ~PythonLanguageModel() override {
    py::gil_scoped_acquire gil;
    lm_ = py::object();
  }
  std::unique_ptr<WordLanguageModelSession> begin_utterance() const override;
  const std::vector<std::string>* vocabulary() const override { return has_vocabulary_ ? &vocabulary_ : nullptr; }
  bool needs_word_text() const override { return true; }
  bool cheap_queries() const override { return false; }

 private:
  friend class PythonLanguageModelSession;
  py::object lm_;
  bool has_vocabulary_ = false;
  std::vector<std::string> vocabulary_;
};

double python_number(const py::handle value, const char* what) {
  if (!py::isinstance<py::float_>(value) && !py::isinstance<py::int_>(value) && !py::hasattr(value, "__float__")) {
    throw py::type_error(std::string(what) + " must return a float, got " +
                         py::cast<std::string>(py::str(py::type::of(value).attr("__name__"))));
  }
  return py::cast<double>(py::float_(py::reinterpret_borrow<py::object>(value)));
}

class PythonLanguageModelSession : public WordLanguageModelSession {
 public:
  explicit PythonLanguageModelSession(const PythonLanguageModel& lm) : lm_(lm) {}
  ~PythonLanguageModelSession() override {
    py::gil_scoped_acquire gil;
    states_.clear();
  }
  int64_t start() override {
    py::gil_scoped_acquire gil;
    states_.push_back(lm_.lm_.attr("start")());
    return static_cast<int64_t>(states_.size()) - 1;
  }
  double score(int64_t state, const std::string& word, int32_t, int64_t* next_state) override {
    py::gil_scoped_acquire gil;
    const py::object result = lm_.lm_.attr("score")(states_[state], word);
    if (!py::isinstance<py::tuple>(result) || py::len(result) != 2) {
      throw py::type_error("lm.score(state, word) must return a (next_state, log_prob) tuple");
    }
    const py::tuple pair = result;
    const double log_prob = python_number(pair[1], "lm.score(state, word)");
    states_.push_back(pair[0]);
    *next_state = static_cast<int64_t>(states_.size()) - 1;
    return log_prob;
  }
  double end(int64_t state) override {
    py::gil_scoped_acquire gil;
    return python_number(lm_.lm_.attr("finish")(states_[state]), "lm.finish(state)");
  }

 private:
  const PythonLanguageModel& lm_;
  std::vector<py::object> states_;
};

std::unique_ptr<WordLanguageModelSession> PythonLanguageModel::begin_utterance() const {
  return std::make_unique<PythonLanguageModelSession>(*this);
}

// beam_search's per-prefix callback: scorer(prefix_labels, next_label) -> float, weighted.
class PythonPrefixScorer : public PrefixScorer {
 public:
  PythonPrefixScorer(py::object function, double weight) : function_(std::move(function)), weight_(weight) {}
  ~PythonPrefixScorer() override {
    py::gil_scoped_acquire gil;
    function_ = py::object();
  }
  std::unique_ptr<ScorerSession> begin_utterance() const override;

 private:
  friend class PythonPrefixSession;
  py::object function_;
  double weight_;
};

class PythonPrefixSession : public ScorerSession {
 public:
  explicit PythonPrefixSession(const PythonPrefixScorer& scorer) : scorer_(scorer) {}
  // A state is an entry of a prefix tree (parent entry, last label).
  int64_t start() override {
    entries_.push_back({-1, -1});
    return 0;
  }
  double extend(int64_t state, int64_t token, int64_t* next_state) override {
    std::vector<int64_t> prefix;
    for (int64_t entry = state; entries_[entry].first >= 0; entry = entries_[entry].first) {
      prefix.push_back(entries_[entry].second);
    }
    std::reverse(prefix.begin(), prefix.end());
    double score;
    {
      py::gil_scoped_acquire gil;
      score = python_number(scorer_.function_(py::cast(prefix), token), "scorer(prefix_labels, next_label)");
    }
    entries_.push_back({state, token});
    *next_state = static_cast<int64_t>(entries_.size()) - 1;
    return score == -std::numeric_limits<double>::infinity() ? score : scorer_.weight_ * score;
  }
  double finish(int64_t) override { return 0; }

 private:
  const PythonPrefixScorer& scorer_;
  std::vector<std::pair<int64_t, int64_t>> entries_;
};

std::unique_ptr<ScorerSession> PythonPrefixScorer::begin_utterance() const {
  return std::make_unique<PythonPrefixSession>(*this);
}

// ---------------------------------------------------------------------------------------------
// The decoder
struct Decoded {
  std::vector<int64_t> tokens;
  std::vector<std::pair<int64_t, int64_t>> token_frames;
  std::string text;
  std::vector<std::tuple<std::string, int64_t, int64_t>> words;
  double score, ctc_score, scorer_score;
};

// (T, C) logits of one sample -> row-major log-probabilities, the normaliser computed here in
// float64 one frame at a time, so that a stream fed in chunks sees the same numbers.
template <typename scalar_t>
void append_log_probs(const scalar_t* logits, int64_t stride_t, int64_t T, int64_t C, int64_t sample,
                      int64_t first_frame, std::vector<double>& out) {
  for (int64_t t = 0; t < T; ++t) {
    const scalar_t* row = logits + t * stride_t;
    double high = -std::numeric_limits<double>::infinity();
    for (int64_t c = 0; c < C; ++c) high = std::max(high, static_cast<double>(row[c]));
    double sum = 0;
    if (std::isfinite(high)) {
      for (int64_t c = 0; c < C; ++c) sum += std::exp(static_cast<double>(row[c]) - high);
    }
    const double log_normalizer = std::isfinite(high) ? high + std::log(sum) : high;
    const size_t at = out.size();
    out.resize(at + C);
    frame_log_probs(row, std::isnan(sum) ? sum : log_normalizer, C, out.data() + at, sample, first_frame + t);
  }
}

class PrefixDecoder {
 public:
  PrefixDecoder(int64_t num_classes, int64_t blank, int64_t beam_width, int64_t nbest, double beam_threshold,
                double token_min_log_prob, int64_t max_tokens_per_frame,
                std::vector<std::shared_ptr<PrefixScorer>> scorers, std::shared_ptr<TokenWords> words)
      : nbest_(nbest), scorers_(std::move(scorers)), words_(std::move(words)) {
    options_.num_classes = num_classes;
    options_.blank = blank;
    options_.beam_width = beam_width;
    options_.beam_threshold = beam_threshold;
    options_.token_min_log_prob = token_min_log_prob;
    options_.max_tokens_per_frame = max_tokens_per_frame;
    if (words_) {
      std::vector<uint8_t> delimiters(num_classes, 0);
      bool any = false;
      for (int64_t c = 0; c < num_classes && c < words_->size(); ++c) {
        const TokenRole& role = words_->role(c);
        delimiters[c] = c != blank && role.piece.empty() && role.word_end && !role.word_start;
        any = any || delimiters[c];
      }
      if (any) options_.word_delimiters = std::move(delimiters);
    }
    for (const auto& scorer : scorers_) scorer_pointers_.push_back(scorer.get());
  }

  std::unique_ptr<PrefixSearch> new_search() const {
    return std::make_unique<PrefixSearch>(options_, scorer_pointers_);
  }

  // The n-best of a search that has seen `log_probs` ((T, C) row-major), with frames and words.
  std::vector<Decoded> results(PrefixSearch& search, const std::vector<double>& log_probs) const {
    const int64_t C = options_.num_classes;
    const int64_t T = static_cast<int64_t>(log_probs.size()) / C;
    std::vector<Decoded> decoded;
    for (SearchHypothesis& hypothesis : search.finish(nbest_, log_probs.data())) {
      Decoded d;
      d.token_frames = label_frames(log_probs.data(), T, C, options_.blank, hypothesis.labels);
      if (words_) {
        for (const TokenWords::Word& word : words_->words(hypothesis.labels)) {
          if (!d.words.empty()) d.text += words_->separator();
          d.text += word.text;
          d.words.emplace_back(word.text, d.token_frames[word.first_token].first,
                               d.token_frames[word.last_token].second);
        }
      }
      d.tokens = std::move(hypothesis.labels);
      d.score = hypothesis.score;
      d.ctc_score = hypothesis.ctc_score;
      d.scorer_score = hypothesis.scorer_score;
      decoded.push_back(std::move(d));
    }
    return decoded;
  }

  // logits: (T, N, C) floating on the CPU; input_lengths: (N,) integer.
  py::list decode(const at::Tensor& logits_in, const at::Tensor& input_lengths_in, int64_t num_threads) const {
    const at::Tensor input_lengths = checked_decode_input_lengths(logits_in, input_lengths_in, options_.blank);
    TORCH_CHECK(logits_in.size(2) == options_.num_classes, "log_probs must have C = ", options_.num_classes,
                " classes (one per token), got ", logits_in.size(2));
    const at::Tensor logits = with_contiguous_classes(logits_in.to(at::toOpMathType(logits_in.scalar_type())));
    const int64_t N = logits.size(1), C = options_.num_classes;
    std::vector<std::vector<Decoded>> decoded(N);
    {
      py::gil_scoped_release no_gil;
      AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "PrefixDecoder.decode", [&] {
        const scalar_t* data = logits.const_data_ptr<scalar_t>();
        const int64_t* lengths = input_lengths.const_data_ptr<int64_t>();
        const int64_t stride_t = logits.stride(0), stride_n = logits.stride(1);
        parallel_over_samples(lengths, N, num_threads, [&](int64_t n) {
          std::vector<double> log_probs;
          append_log_probs(data + n * stride_n, stride_t, lengths[n], C, n, 0, log_probs);
          const auto search = new_search();
          for (int64_t t = 0; t < lengths[n]; ++t) search->step(log_probs.data() + t * C);
          decoded[n] = results(*search, log_probs);
        });
      });
    }
    py::list out;
    for (const auto& sample : decoded) out.append(to_python(sample));
    return out;
  }

  static py::list to_python(const std::vector<Decoded>& sample) {
    py::list hypotheses;
    for (const Decoded& d : sample) {
      hypotheses.append(
          py::make_tuple(d.tokens, d.token_frames, d.text, d.words, d.score, d.ctc_score, d.scorer_score));
    }
    return hypotheses;
  }

  int64_t num_classes() const { return options_.num_classes; }

 private:
  // Runs body(n) for n in [0, N) on up to num_threads threads (the caller's included), samples
  // longest first from a shared queue (lengths: (N,)); the first exception stops the others and
  // is rethrown.
  template <typename Body>
  static void parallel_over_samples(const int64_t* lengths, int64_t N, int64_t num_threads, Body&& body) {
    SampleQueue queue(lengths, N);
    std::exception_ptr error;
    std::mutex error_mutex;
    auto work = [&] {
      for (int64_t n = queue.next(); n >= 0; n = queue.next()) {
        try {
          body(n);
        } catch (...) {
          std::lock_guard<std::mutex> lock(error_mutex);
          if (!error) error = std::current_exception();
          queue.stop();
        }
      }
    };
    const int64_t workers = std::max<int64_t>(1, std::min(num_threads, N));
    std::vector<std::thread> threads;
    for (int64_t i = 1; i < workers; ++i) threads.emplace_back(work);
    work();
    for (auto& thread : threads) thread.join();
    if (error) std::rethrow_exception(error);
  }

  SearchOptions options_;
  int64_t nbest_;
  std::vector<std::shared_ptr<PrefixScorer>> scorers_;
  std::vector<const PrefixScorer*> scorer_pointers_;
  std::shared_ptr<TokenWords> words_;
};

// Frames fed in chunks; finish() gives exactly what PrefixDecoder.decode gives for all of them.
class DecoderStream {
 public:
  explicit DecoderStream(std::shared_ptr<const PrefixDecoder> decoder)
      : decoder_(std::move(decoder)), search_(decoder_->new_search()) {}

  // chunk: (T', C) floating on the CPU.
  void feed(const at::Tensor& chunk_in) {
    TORCH_CHECK(search_, "this stream is finished; start a new one with decoder.stream()");
    const int64_t C = decoder_->num_classes();
    TORCH_CHECK(chunk_in.dim() == 2 && chunk_in.size(1) == C, "a chunk must be (T, C) with C = ", C, ", got shape ",
                chunk_in.sizes());
    TORCH_CHECK(at::isFloatingType(chunk_in.scalar_type()), "a chunk must be floating, got ", chunk_in.scalar_type());
    const at::Tensor chunk = chunk_in.detach().cpu().to(at::toOpMathType(chunk_in.scalar_type())).contiguous();
    py::gil_scoped_release no_gil;
    const size_t first = log_probs_.size();
    AT_DISPATCH_FLOATING_TYPES(chunk.scalar_type(), "DecoderStream.feed", [&] {
      append_log_probs(chunk.const_data_ptr<scalar_t>(), chunk.stride(0), chunk.size(0), C, 0, search_->frames(),
                       log_probs_);
    });
    for (size_t at = first; at < log_probs_.size(); at += C) search_->step(log_probs_.data() + at);
  }

  py::list finish() {
    TORCH_CHECK(search_, "this stream is finished already");
    std::vector<Decoded> decoded;
    {
      py::gil_scoped_release no_gil;
      decoded = decoder_->results(*search_, log_probs_);
      search_.reset();
    }
    return PrefixDecoder::to_python(decoded);
  }

 private:
  std::shared_ptr<const PrefixDecoder> decoder_;
  std::unique_ptr<PrefixSearch> search_;
  // (frames so far, C) float64, T x C x 8 bytes: the exact CTC rescoring of the final beam and the
  // Viterbi token frames need them all.
  std::vector<double> log_probs_;
};

}  // namespace

void bind_decoder(py::module_& module) {
  py::class_<TokenWords, std::shared_ptr<TokenWords>>(module, "TokenWords")
      .def(py::init([](const std::vector<std::tuple<std::string, bool, bool>>& roles, std::string separator) {
             std::vector<TokenRole> converted;
             for (const auto& [piece, word_start, word_end] : roles) converted.push_back({piece, word_start, word_end});
             return std::make_shared<TokenWords>(std::move(converted), std::move(separator));
           }),
           py::arg("roles"), py::arg("separator"));
  py::class_<PrefixScorer, std::shared_ptr<PrefixScorer>>(module, "PrefixScorer");
  py::class_<LanguageModelScorer, PrefixScorer, std::shared_ptr<LanguageModelScorer>>(module, "LanguageModelScorer")
      .def(py::init([](py::object lm, std::shared_ptr<TokenWords> words, double lm_weight, double word_score,
                       double unk_score, const std::vector<std::string>& known_words, bool lookahead) {
             std::shared_ptr<const WordLanguageModel> model;
             if (py::isinstance<NgramLanguageModel>(lm)) {
               model = std::make_shared<NgramWordModel>(py::cast<std::shared_ptr<NgramLanguageModel>>(lm));
             } else {
               model = std::make_shared<PythonLanguageModel>(std::move(lm));
             }
             return std::make_shared<LanguageModelScorer>(model, std::move(words), lm_weight, word_score, unk_score,
                                                          known_words, lookahead);
           }),
           py::arg("lm"), py::arg("words"), py::arg("lm_weight"), py::arg("word_score"), py::arg("unk_score"),
           py::arg("known_words"), py::arg("lookahead"));
  py::class_<LexiconScorer, PrefixScorer, std::shared_ptr<LexiconScorer>>(module, "LexiconScorer")
      .def(py::init<const std::vector<std::string>&, std::shared_ptr<const TokenWords>>(), py::arg("lexicon"),
           py::arg("words"));
  py::class_<HotwordScorer, PrefixScorer, std::shared_ptr<HotwordScorer>>(module, "HotwordScorer")
      .def(py::init<const std::vector<std::vector<std::string>>&, const std::vector<double>&,
                    std::shared_ptr<const TokenWords>>(),
           py::arg("phrases"), py::arg("weights"), py::arg("words"));
  py::class_<PythonPrefixScorer, PrefixScorer, std::shared_ptr<PythonPrefixScorer>>(module, "PythonPrefixScorer")
      .def(py::init<py::object, double>(), py::arg("function"), py::arg("weight"));
  py::class_<PrefixDecoder, std::shared_ptr<PrefixDecoder>>(module, "PrefixDecoder")
      .def(py::init<int64_t, int64_t, int64_t, int64_t, double, double, int64_t,
                    std::vector<std::shared_ptr<PrefixScorer>>, std::shared_ptr<TokenWords>>(),
           py::arg("num_classes"), py::arg("blank"), py::arg("beam_width"), py::arg("nbest"), py::arg("beam_threshold"),
           py::arg("token_min_log_prob"), py::arg("max_tokens_per_frame"), py::arg("scorers"), py::arg("words"))
      .def("decode", &PrefixDecoder::decode, py::arg("logits"), py::arg("input_lengths"), py::arg("num_threads"))
      .def("stream", [](std::shared_ptr<PrefixDecoder> self) { return std::make_shared<DecoderStream>(self); });
  py::class_<DecoderStream, std::shared_ptr<DecoderStream>>(module, "DecoderStream")
      .def("feed", &DecoderStream::feed, py::arg("chunk"))
      .def("finish", &DecoderStream::finish);
}

}  // namespace ctc_ext
