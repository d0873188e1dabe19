// The CTC recurrence in one place: log-space arithmetic, the extended-label index math and the
// reachable band of the lattice.  Shared by every backend (CPU, CUDA and its CPU emulation), so
// it depends on nothing but the C++ standard library and compiles as host and device code.
//
// Conventions used throughout (docs/math.md states the recursions, the band and the gradient):
//   T_n  input length of sample n,   L  its target length,   W = 2L + 1 extended states.
//   Extended target l' = b l1 b l2 ... b lL b: even states are blanks, state 2i+1 is label i.
//   log_alpha[t][s] and log_beta[t][s] both include the emission of frame t.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

// Empty for host compilers, the CPU emulation of the CUDA kernels included.
#if defined(__CUDACC__)
#define CTC_HOST_DEVICE __host__ __device__
#else
#define CTC_HOST_DEVICE
#endif

namespace ctc_ext {

template <typename scalar_t>
CTC_HOST_DEVICE inline scalar_t neg_inf() {
  return -std::numeric_limits<scalar_t>::infinity();
}

// log(exp(a) + exp(b)), exact for any magnitudes, -inf when both are -inf.
template <typename scalar_t>
CTC_HOST_DEVICE inline scalar_t log_add(scalar_t a, scalar_t b) {
  const scalar_t hi = a > b ? a : b;
  const scalar_t lo = a > b ? b : a;
  if (hi == neg_inf<scalar_t>()) return hi;  // avoids (-inf) - (-inf) = NaN
  return hi + std::log1p(std::exp(lo - hi));
}

// log(exp(a) + exp(b) + exp(c)): one max, two exps and one log1p (the largest term is exp(0)).
template <typename scalar_t>
CTC_HOST_DEVICE inline scalar_t log_add3(scalar_t a, scalar_t b, scalar_t c) {
  if (a >= b && a >= c) {
    if (a == neg_inf<scalar_t>()) return a;
    return a + std::log1p(std::exp(b - a) + std::exp(c - a));
  }
  if (b >= c) return b + std::log1p(std::exp(a - b) + std::exp(c - b));
  return c + std::log1p(std::exp(a - c) + std::exp(b - c));
}

// Class of extended state s: blank for even s, label (s - 1) / 2 for odd s.
// `labels` points at the first label of the sample; `label_stride` is the step between labels.
template <typename index_t>
CTC_HOST_DEVICE inline int64_t extended_label(const index_t* labels, int64_t label_stride, int64_t s, int64_t blank) {
  return (s & 1) ? static_cast<int64_t>(labels[((s - 1) / 2) * label_stride]) : blank;
}

// Whether state s may be entered from s - 2 (forward) / s may reach s + 2 (backward): only a
// label state whose label differs from the label two states before it.
template <typename index_t>
CTC_HOST_DEVICE inline bool can_skip_from(const index_t* labels, int64_t label_stride, int64_t s) {
  if (!(s & 1) || s < 2) return false;
  const int64_t label_index = (s - 1) / 2;
  return labels[label_index * label_stride] != labels[(label_index - 1) * label_stride];
}

// Whether state s may reach s + 2 (backward): the mirror of can_skip_from, false past the end.
template <typename index_t>
CTC_HOST_DEVICE inline bool can_skip_to(const index_t* labels, int64_t label_stride, int64_t num_states, int64_t s) {
  return s + 2 < num_states && can_skip_from(labels, label_stride, s + 2);
}

// One row of log_alpha or log_beta whose entries are meaningful on its band [first, last] only:
// reads outside it (a neighbour past the band, s - 1 = -1, s + 1 = W) are -inf, so the entries
// there may be stale scratch and no caller needs its own boundary test.
template <typename acc_t>
struct LatticeRow {
  const acc_t* values;
  int64_t first;
  int64_t last;

  CTC_HOST_DEVICE acc_t at(int64_t s) const { return (s >= first && s <= last) ? values[s] : neg_inf<acc_t>(); }
};

// The recurrence of one extended state, the scalar form every backend uses (the CPU vector
// primitives of cpu/lattice_kernels_impl.h are its lane-wise copy):
//   alpha_t(s) = y_t(l'_s) * (alpha_{t-1}(s) + alpha_{t-1}(s - 1) + [skip] alpha_{t-1}(s - 2))
//   beta_t(s)  = y_t(l'_s) * (beta_{t+1}(s) + beta_{t+1}(s + 1) + [skip] beta_{t+1}(s + 2))
// in log space; `emission` is log y_t(l'_s), `skip_allowed` is can_skip_from(labels, 1, s) for
// alpha and can_skip_to(labels, 1, W, s) for beta.
template <typename acc_t>
CTC_HOST_DEVICE inline acc_t alpha_state(const LatticeRow<acc_t>& previous, int64_t s, bool skip_allowed,
                                         acc_t emission) {
  const acc_t skip = skip_allowed ? previous.at(s - 2) : neg_inf<acc_t>();
  return emission + log_add3(previous.at(s), previous.at(s - 1), skip);
}

template <typename acc_t>
CTC_HOST_DEVICE inline acc_t beta_state(const LatticeRow<acc_t>& next, int64_t s, bool skip_allowed, acc_t emission) {
  const acc_t skip = skip_allowed ? next.at(s + 2) : neg_inf<acc_t>();
  return emission + log_add3(next.at(s), next.at(s + 1), skip);
}

// The Viterbi form of the alpha step: the best predecessor of state s in the previous row
// (stay, advance from s - 1, or skip from s - 2 where allowed).  Returns its score and stores in
// *step how many states back it is (0, 1 or 2).  Ties keep the nearer state, so every backend
// picks the same path.
template <typename scalar_t, typename index_t>
CTC_HOST_DEVICE inline scalar_t best_predecessor(const scalar_t* previous, const index_t* labels, int64_t s,
                                                 uint8_t* step) {
  scalar_t best = previous[s];
  *step = 0;
  if (s >= 1 && previous[s - 1] > best) {
    best = previous[s - 1];
    *step = 1;
  }
  if (can_skip_from(labels, 1, s) && previous[s - 2] > best) {
    best = previous[s - 2];
    *step = 2;
  }
  return best;
}

// The reachable band: states s at frame t that lie on at least one complete path of a sample
// with input length input_length and W extended states.  Empty (first > last) when the target
// cannot fit, i.e. when the target length exceeds the input length.
CTC_HOST_DEVICE inline int64_t band_first(int64_t t, int64_t input_length, int64_t num_states) {
  const int64_t first = num_states - 2 * (input_length - t);
  return first > 0 ? first : 0;
}

CTC_HOST_DEVICE inline int64_t band_last(int64_t t, int64_t num_states) {
  const int64_t last = 2 * t + 1;
  return last < num_states - 1 ? last : num_states - 1;
}

// Offset of sample n's log_alpha block, (T, 2 L_n + 1) row-major, inside the flat log_alpha
// buffer of T * (2 * num_target_slots + N) elements: `label_start` is where the sample's labels
// begin in the flattened targets (n * S for padded targets, the running sum of target lengths
// for concatenated ones), so blocks never overlap and no host-side maximum is needed.
CTC_HOST_DEVICE inline int64_t log_alpha_offset(int64_t n, int64_t label_start, int64_t max_input_length) {
  return max_input_length * (2 * label_start + n);
}

CTC_HOST_DEVICE inline int64_t log_alpha_numel(int64_t batch_size, int64_t num_target_slots, int64_t max_input_length) {
  return max_input_length * (2 * num_target_slots + batch_size);
}

}  // namespace ctc_ext
