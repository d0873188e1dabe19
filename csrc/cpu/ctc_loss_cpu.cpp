// CPU forward and backward of the CTC loss: the per-sample schedule.  The recurrence lives in
// ctc_math.h; its row-level work (log-softmax normaliser, alpha / beta steps over the band,
// occupancies, softmax rows) runs in the vectorised primitives of lattice_kernels.h, compiled
// per instruction set and picked at run time (cpu_kernels() below).
//
// Two schedules share every piece:
//   * by sample (N >= threads): one task per sample does everything for it in one sweep, so
//     the frame, its emissions and the occupancies stay in cache;
//   * by frame (N < threads, e.g. a single long utterance): the work that is independent per
//     frame (log-softmax normalisers in the forward, gradient rows in the backward) runs
//     parallel over frames, and only the sequential recurrence runs per sample.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "../arguments.h"
#include "../ctc_math.h"
#include "lattice_kernels.h"

namespace ctc_ext {
namespace {

using cpu::CpuKernelTable;
using cpu::LatticeKernels;

// ---------------------------------------------------------------------------------------------
// Instruction set and schedule selection.

const CpuKernelTable* best_kernel_table() {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("fma")) {
    return cpu::avx512_kernel_table();
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return cpu::avx2_kernel_table();
#endif
  return cpu::generic_kernel_table();
}

bool cpu_supports(const CpuKernelTable* table) {
  if (table == nullptr) return false;
  static const CpuKernelTable* best = best_kernel_table();
  const std::string isa = table->isa;
  const std::string best_isa = best->isa;
  if (isa == "generic" || isa == best_isa) return true;
  return isa == "avx2" && best_isa == "avx512";
}

// The kernel table named `name` (generic, avx2, avx512), checked against this CPU; `setting`
// names where the name came from, for the error.
const CpuKernelTable* kernel_table_named(const std::string& name, const char* setting) {
  const CpuKernelTable* table = name == "generic"  ? cpu::generic_kernel_table()
                                : name == "avx2"   ? cpu::avx2_kernel_table()
                                : name == "avx512" ? cpu::avx512_kernel_table()
                                                   : nullptr;
  TORCH_CHECK(name == "generic" || name == "avx2" || name == "avx512", setting,
              " must be generic, avx2 or avx512, got '", name, "'");
  TORCH_CHECK(cpu_supports(table), setting, "=", name,
              " is not supported by this CPU or build (best: ", best_kernel_table()->isa, ")");
  return table;
}

enum class Schedule { kAutomatic, kBySample, kByFrame };

Schedule schedule_named(const std::string& name, const char* setting) {
  TORCH_CHECK(name == "sample" || name == "frame", setting, " must be sample or frame, got '", name, "'");
  return name == "frame" ? Schedule::kByFrame : Schedule::kBySample;
}

// The instruction set and schedule the kernels use.  By default the best instruction set of this
// CPU and the automatic schedule; CTC_EXT_CPU_ISA (generic, avx2, avx512) and CTC_EXT_CPU_SCHEDULE
// (sample, frame) force one, read once on first use (a bad value fails every call); the tests
// switch paths within a process with the _set_cpu_kernel_path op.
struct KernelPath {
  std::atomic<const CpuKernelTable*> table{nullptr};
  std::atomic<Schedule> schedule{Schedule::kAutomatic};

  void set(const std::string& isa, const std::string& schedule_name, const char* isa_setting,
           const char* schedule_setting) {
    const CpuKernelTable* forced_table = isa.empty() ? best_kernel_table() : kernel_table_named(isa, isa_setting);
    const Schedule forced_schedule =
        schedule_name.empty() ? Schedule::kAutomatic : schedule_named(schedule_name, schedule_setting);
    table = forced_table;
    schedule = forced_schedule;
  }
};

KernelPath& kernel_path() {
  static KernelPath path;
  static const bool read_environment = [] {
    const char* isa = std::getenv("CTC_EXT_CPU_ISA");
    const char* schedule = std::getenv("CTC_EXT_CPU_SCHEDULE");
    path.set(isa ? isa : "", schedule ? schedule : "", "CTC_EXT_CPU_ISA", "CTC_EXT_CPU_SCHEDULE");
    return true;
  }();
  (void)read_environment;
  return path;
}

const CpuKernelTable& cpu_kernels() { return *kernel_path().table.load(); }

template <typename acc_t>
const LatticeKernels<acc_t>& lattice_kernels() {
  if constexpr (std::is_same_v<acc_t, double>) {
    return cpu_kernels().f64;
  } else {
    return cpu_kernels().f32;
  }
}

// Frames per parallel task in the frame schedule: enough classes per task that a small
// problem stays on one thread instead of paying for a wake-up.
int64_t frame_grain(int64_t num_classes) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(num_classes, 1)); }

// Frame-parallel schedule when there are fewer samples than threads and enough frames for more
// than one task, unless a schedule is forced.
bool use_frame_schedule(int64_t batch_size, int64_t max_input_length, int64_t num_classes) {
  const Schedule forced = kernel_path().schedule.load();
  if (forced != Schedule::kAutomatic) return forced == Schedule::kByFrame;
  return batch_size < at::get_num_threads() && batch_size * max_input_length > frame_grain(num_classes);
}

// ---------------------------------------------------------------------------------------------
// Per-sample state.

// Scratch of one thread, reused across the samples it handles.
template <typename acc_t>
struct SampleWorkspace {
  int64_t num_states = 0;           // W = 2 L + 1
  std::vector<int64_t> labels;      // (W,) class of each extended state
  std::vector<acc_t> skip_penalty;  // (W,) 0 where state s may be entered from s - 2, -inf elsewhere
  std::vector<acc_t> emission;      // (W,) log y[t][l'_s] of the current frame
  std::vector<acc_t> rows;          // (2, W) rolling log_alpha or log_beta rows
  std::vector<acc_t> occupancy;     // (W,) occupancy of the current frame
  std::vector<acc_t> frame;         // (C,) the current frame in acc_t (half / bfloat16 input only)
  std::vector<acc_t> grad;          // (C,) the current gradient row in acc_t (half / bfloat16 only)
  std::vector<acc_t> log_alpha;     // (T_n, W) the sample's alpha when the backward recomputes it

  template <typename index_t>
  void set_target(const index_t* sample_labels, int64_t target_length, int64_t blank, int64_t num_classes) {
    num_states = 2 * target_length + 1;
    grow(labels, num_states);
    grow(skip_penalty, num_states);
    grow(emission, num_states);
    grow(rows, 2 * num_states);
    grow(occupancy, num_states);
    grow(frame, num_classes);
    grow(grad, num_classes);
    for (int64_t s = 0; s < num_states; ++s) {
      labels[s] = extended_label(sample_labels, 1, s, blank);
      skip_penalty[s] = can_skip_from(sample_labels, 1, s) ? acc_t(0) : neg_inf<acc_t>();
    }
  }

  template <typename T>
  static void grow(std::vector<T>& v, int64_t size) {
    if (static_cast<int64_t>(v.size()) < size) v.resize(size);
  }
};

// The frame as acc_t: the logits themselves for float / double, a converted copy otherwise
// (vectorised: a scalar c10::Half conversion per class took longer than the rest of the pass).
template <typename scalar_t, typename acc_t>
const acc_t* frame_as_acc(const LatticeKernels<acc_t>& kernels, const scalar_t* frame, int64_t num_classes,
                          std::vector<acc_t>& buffer) {
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    return frame;
  } else {
    static_assert(std::is_same_v<acc_t, float> && sizeof(scalar_t) == 2, "half-precision logits only");
    const auto* bits = reinterpret_cast<const uint16_t*>(frame);
    (std::is_same_v<scalar_t, at::Half> ? kernels.half_to_acc : kernels.bfloat16_to_acc)(bits, buffer.data(),
                                                                                         num_classes);
    return buffer.data();
  }
}

// Rounds a float row into a frame of half-precision scalar_t (vectorised, like frame_as_acc).
template <typename scalar_t>
void store_half_frame(const LatticeKernels<float>& kernels, const float* row, int64_t num_classes, scalar_t* frame) {
  static_assert(sizeof(scalar_t) == 2, "half-precision frames only");
  auto* bits = reinterpret_cast<uint16_t*>(frame);
  (std::is_same_v<scalar_t, at::Half> ? kernels.acc_to_half : kernels.acc_to_bfloat16)(row, bits, num_classes);
}

// The row row_logsumexp should prefetch while it sums `frame`: the next one when the kernels
// read the logits in place; none for half precision, where the sum reads a converted copy and
// the callers prefetch the logits themselves.
template <typename scalar_t, typename acc_t>
const acc_t* row_to_prefetch(const scalar_t* next_frame) {
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    return next_frame;
  } else {
    return nullptr;
  }
}

// Asks for the cache lines of [data, data + bytes): the next frame of a sample is a strided
// row the hardware prefetcher does not see coming.
inline void prefetch(const void* data, int64_t bytes) {
  const uintptr_t begin = reinterpret_cast<uintptr_t>(data) & ~uintptr_t(63);
  const uintptr_t end = reinterpret_cast<uintptr_t>(data) + bytes;
  for (uintptr_t line = begin; line < end; line += 64) __builtin_prefetch(reinterpret_cast<const void*>(line));
}

// Asks Linux for transparent huge pages behind a fresh output before its first write.  A large
// vocabulary's gradient is hundreds of MB that glibc maps fresh for every call; faulted in 4 KiB
// at a time it cost the backward more than all its arithmetic (see CHANGELOG.md).
// Only the 2 MiB-aligned interior of buffers of at least 32 MiB: glibc gives those a mapping of
// their own (its largest dynamic mmap threshold) which goes back to the OS on free, so the
// advice never outlives the tensor.  A hint only: THP off, or no huge page free, changes nothing.
void advise_huge_pages(const at::Tensor& fresh_output) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHugePage = uintptr_t(2) << 20;
  constexpr size_t kMinBytes = size_t(32) << 20;
  const size_t bytes = fresh_output.nbytes();
  if (bytes < kMinBytes) return;
  const uintptr_t data = reinterpret_cast<uintptr_t>(fresh_output.data_ptr());
  const uintptr_t begin = (data + kHugePage - 1) & ~(kHugePage - 1);
  const uintptr_t end = (data + bytes) & ~(kHugePage - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#endif
}

// How many frames ahead the sweeps prefetch.
constexpr int64_t kPrefetchFrames = 2;

// ---------------------------------------------------------------------------------------------
// Forward.

// Whether every frame t < T_n has a finite log-softmax normaliser.  A frame with a NaN or +inf
// logit (or only -inf ones) has no softmax: its loss is NaN, as the built-in's on log_softmax,
// and zero_infinity (which is for targets that cannot be aligned) leaves it NaN.
//   log_normalizer: (T_n,)
template <typename acc_t>
bool frames_have_finite_normalizers(const acc_t* log_normalizer, int64_t input_length) {
  for (int64_t t = 0; t < input_length; ++t) {
    if (!std::isfinite(log_normalizer[t])) return false;
  }
  return true;
}

// Forward recurrence of one sample.
//   sample_logits:   (T_n, C) rows of this sample, row stride stride_t, unit class stride
//   log_alpha_block: (T, W) rows of this sample (rows >= T_n and states outside the band get
//                    -inf), plus the rest of its slot up to block_end; nullptr keeps two rows
//   log_normalizer:  (T,) this sample's row of the (N, T) output; read instead of computed
//                    (and then not written) when normalizer_ready
// Returns the negative log-likelihood: +inf when the target cannot be aligned, NaN for
// non-finite input (frames_have_finite_normalizers).
template <typename scalar_t, typename acc_t>
acc_t forward_one_sample(const LatticeKernels<acc_t>& kernels, const scalar_t* sample_logits, int64_t stride_t,
                         int64_t num_classes, int64_t input_length, SampleWorkspace<acc_t>& ws, acc_t* log_alpha_block,
                         acc_t* log_alpha_block_end, acc_t* log_normalizer, bool normalizer_ready) {
  const int64_t T_n = input_length;
  const int64_t W = ws.num_states;
  const int64_t target_length = (W - 1) / 2;
  const bool feasible = target_length <= T_n && T_n > 0;
  if (log_alpha_block != nullptr) {
    std::fill(log_alpha_block + (feasible ? T_n * W : 0), log_alpha_block_end, neg_inf<acc_t>());
  }
  if (!feasible && !normalizer_ready) {
    for (int64_t t = 0; t < T_n; ++t) {
      const acc_t* frame = frame_as_acc(kernels, sample_logits + t * stride_t, num_classes, ws.frame);
      log_normalizer[t] = kernels.row_logsumexp(frame, num_classes, nullptr);
    }
  }
  if (!feasible) {
    if (!frames_have_finite_normalizers(log_normalizer, T_n)) return std::numeric_limits<acc_t>::quiet_NaN();
    if (target_length > T_n) return std::numeric_limits<acc_t>::infinity();  // the target cannot fit
    return 0;                                                                // empty input, empty target
  }

  auto alpha_row = [&](int64_t t) { return log_alpha_block ? log_alpha_block + t * W : ws.rows.data() + (t & 1) * W; };
  acc_t* emission = ws.emission.data();
  // row_logsumexp prefetches the next frame itself where it reads the logits in place; the
  // other sweeps ask for frames a few ahead here.
  const bool row_sum_prefetches = !normalizer_ready && std::is_same_v<scalar_t, acc_t>;
  for (int64_t t = 0; t < T_n; ++t) {
    if (!row_sum_prefetches && t + kPrefetchFrames < T_n) {
      prefetch(sample_logits + (t + kPrefetchFrames) * stride_t, num_classes * sizeof(scalar_t));
    }
    const acc_t* frame = frame_as_acc(kernels, sample_logits + t * stride_t, num_classes, ws.frame);
    if (!normalizer_ready) {
      const scalar_t* next_frame = t + 1 < T_n ? sample_logits + (t + 1) * stride_t : nullptr;
      log_normalizer[t] = kernels.row_logsumexp(frame, num_classes, row_to_prefetch<scalar_t, acc_t>(next_frame));
    }
    const int64_t first = band_first(t, T_n, W);
    const int64_t last = band_last(t, W);
    kernels.gather_emissions(frame, ws.labels.data(), log_normalizer[t], emission, first, last + 1);
    acc_t* current = alpha_row(t);
    std::fill(current, current + first, neg_inf<acc_t>());
    std::fill(current + last + 1, current + W, neg_inf<acc_t>());
    if (t == 0) {
      std::copy(emission + first, emission + last + 1, current + first);
      continue;
    }
    // Outside the band every entry of the previous row is -inf, so the reads need no band test.
    const acc_t* previous = alpha_row(t - 1);
    for (int64_t s = first; s <= std::min<int64_t>(last, 1); ++s) {  // states without an s - 2
      current[s] = alpha_state(LatticeRow<acc_t>{previous, 0, W - 1}, s, false, emission[s]);
    }
    const int64_t vector_first = std::max<int64_t>(first, 2);
    if (vector_first <= last) {
      kernels.alpha_step(previous, emission, ws.skip_penalty.data(), current, vector_first, last + 1);
    }
  }
  const acc_t* last_row = alpha_row(T_n - 1);
  const acc_t log_likelihood = W >= 2 ? log_add(last_row[W - 1], last_row[W - 2]) : last_row[W - 1];
  // The lattice's log_add3 need not carry a NaN emission to the end: decide from the normalisers.
  if (!frames_have_finite_normalizers(log_normalizer, T_n)) return std::numeric_limits<acc_t>::quiet_NaN();
  return -log_likelihood;
}

// ---------------------------------------------------------------------------------------------
// Backward.

// What the gradient of a sample is, from its lengths and its loss.  A NaN loss (non-finite
// input) gives a NaN gradient whatever zero_infinity says.  Then the lengths decide:
// neg_log_likelihood is an argument of the public backward op, and a finite value for a target
// that cannot fit must not send the beta sweep over an empty band.
enum class SampleGradient { kFinite, kZero, kNaN };

template <typename acc_t>
SampleGradient sample_gradient(int64_t input_length, int64_t target_length, acc_t neg_log_likelihood,
                               bool zero_infinity) {
  if (std::isnan(neg_log_likelihood)) return SampleGradient::kNaN;
  const bool fits = target_length <= input_length;
  const bool infinite = std::isinf(neg_log_likelihood) && neg_log_likelihood > 0;
  if (fits && !infinite) return SampleGradient::kFinite;
  // No path: zero with zero_infinity, else undefined as in the built-in (which returns NaN).
  return zero_infinity ? SampleGradient::kZero : SampleGradient::kNaN;
}

template <typename scalar_t>
void fill_frame(scalar_t* grad_frame, int64_t num_classes, scalar_t value) {
  std::fill(grad_frame, grad_frame + num_classes, value);
}

// One gradient row (Graves Eq. 16): grad[k] = scale * (softmax(x[t])[k] - sum_{s: l'_s = k} occupancy[s]),
// the occupancies normalised to sum to 1.
//   frame: (C,) logits in acc_t;  occupancy: (W,) relative occupancies (the largest is 1), valid
//   on [first, last];  grad_frame: (C,)
template <typename scalar_t, typename acc_t>
void write_gradient_frame(const LatticeKernels<acc_t>& kernels, const acc_t* frame, acc_t log_normalizer, acc_t scale,
                          const acc_t* occupancy, const int64_t* state_labels, int64_t first, int64_t last,
                          int64_t num_classes, scalar_t* grad_frame, std::vector<acc_t>& buffer) {
  acc_t* row;
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    row = grad_frame;
  } else {
    row = buffer.data();
  }
  kernels.scaled_softmax(frame, log_normalizer, scale, row, num_classes);
  // Every even state is the blank: sum those with independent partial sums instead of a chain
  // of read-modify-writes on one address.  Label states mostly hit distinct classes.
  acc_t blank_sums[4] = {0, 0, 0, 0};
  int64_t s = first + (first & 1);
  for (; s + 6 <= last; s += 8) {
    for (int i = 0; i < 4; ++i) blank_sums[i] += occupancy[s + 2 * i];
  }
  for (; s <= last; s += 2) blank_sums[0] += occupancy[s];
  const acc_t blank_occupancy = (blank_sums[0] + blank_sums[1]) + (blank_sums[2] + blank_sums[3]);
  acc_t label_occupancy = 0;
  for (s = first | 1; s <= last; s += 2) label_occupancy += occupancy[s];
  // The occupancies come relative to the frame's likeliest state (the sum is >= 1); dividing by
  // their sum makes them the posterior, and removes the rounding drift that alpha and beta share
  // at this frame, so gradient rows sum to 0 to working precision.
  const acc_t occupancy_scale = scale / (blank_occupancy + label_occupancy);
  row[state_labels[0]] -= occupancy_scale * blank_occupancy;
  for (s = first | 1; s <= last; s += 2) row[state_labels[s]] -= occupancy_scale * occupancy[s];
  if constexpr (!std::is_same_v<scalar_t, acc_t>) store_half_frame(kernels, row, num_classes, grad_frame);
}

// The beta sweep of one sample with a finite loss: log_beta in two rolling rows, and for each
// frame t (from the last) the relative occupancies of its band (see LatticeKernels::occupancy)
// handed to on_frame(t, frame, log_normalizer[t], occupancy, first, last).
//   log_alpha_block: (T_n, W) this sample's rows
template <typename scalar_t, typename acc_t, typename OnFrame>
void beta_sweep(const LatticeKernels<acc_t>& kernels, const scalar_t* sample_logits, int64_t stride_t,
                int64_t num_classes, int64_t input_length, SampleWorkspace<acc_t>& ws, const acc_t* log_alpha_block,
                const acc_t* log_normalizer, OnFrame on_frame) {
  const int64_t T_n = input_length;
  const int64_t W = ws.num_states;
  acc_t* emission = ws.emission.data();
  for (int64_t t = T_n - 1; t >= 0; --t) {
    if (t >= kPrefetchFrames) {
      prefetch(sample_logits + (t - kPrefetchFrames) * stride_t, num_classes * sizeof(scalar_t));
      prefetch(log_alpha_block + (t - kPrefetchFrames) * W, W * sizeof(acc_t));
    }
    const acc_t* frame = frame_as_acc(kernels, sample_logits + t * stride_t, num_classes, ws.frame);
    const int64_t first = band_first(t, T_n, W);
    const int64_t last = band_last(t, W);
    kernels.gather_emissions(frame, ws.labels.data(), log_normalizer[t], emission, first, last + 1);
    acc_t* current = ws.rows.data() + (t & 1) * W;
    const acc_t* next = ws.rows.data() + ((t + 1) & 1) * W;
    std::fill(current, current + first, neg_inf<acc_t>());
    std::fill(current + last + 1, current + W, neg_inf<acc_t>());
    if (t == T_n - 1) {
      std::copy(emission + first, emission + last + 1, current + first);  // the two final states
    } else {
      const int64_t vector_last = std::min<int64_t>(last, W - 3);
      if (first <= vector_last) {
        kernels.beta_step(next, emission, ws.skip_penalty.data(), current, first, vector_last + 1);
      }
      for (int64_t s = std::max<int64_t>(first, W - 2); s <= last; ++s) {  // states without an s + 2
        current[s] = beta_state(LatticeRow<acc_t>{next, 0, W - 1}, s, false, emission[s]);
      }
    }
    kernels.occupancy(log_alpha_block + t * W, current, emission, ws.occupancy.data(), first, last + 1);
    on_frame(t, frame, log_normalizer[t], ws.occupancy.data(), first, last);
  }
}

// ---------------------------------------------------------------------------------------------
// Host functions.

std::tuple<at::Tensor, at::Tensor, at::Tensor> ctc_loss_forward_cpu(const at::Tensor& logits_in,
                                                                    const at::Tensor& targets,
                                                                    const at::Tensor& input_lengths,
                                                                    const at::Tensor& target_lengths, int64_t blank,
                                                                    bool keep_log_alpha) {
  const CtcProblem problem = prepare_ctc_problem(logits_in, targets, input_lengths, target_lengths, blank);
  check_ctc_values_on_cpu(problem);
  const at::Tensor logits = with_contiguous_classes(logits_in);
  const int64_t T = problem.max_input_length, N = problem.batch_size, C = problem.num_classes;
  const auto acc_type = at::toOpMathType(logits.scalar_type());
  const auto acc_options = logits.options().dtype(acc_type);
  at::Tensor neg_log_likelihood = at::empty({N}, acc_options);
  at::Tensor log_alpha = at::empty({keep_log_alpha ? log_alpha_numel(N, problem.num_target_slots, T) : 0}, acc_options);
  // Frames beyond an input length keep a normaliser of 0 (filled below, only where needed).
  at::Tensor log_normalizer = at::empty({N, T}, acc_options);
  const bool by_frame = use_frame_schedule(N, T, C);

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "ctc_loss_forward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const LatticeKernels<acc_t>& kernels = lattice_kernels<acc_t>();
    const scalar_t* logits_data = logits.const_data_ptr<scalar_t>();
    const int64_t stride_t = logits.stride(0), stride_n = logits.stride(1);
    const int64_t* input_length = problem.input_lengths.const_data_ptr<int64_t>();
    const int64_t* target_length = problem.target_lengths.const_data_ptr<int64_t>();
    const int64_t* label_start = problem.label_start.const_data_ptr<int64_t>();
    acc_t* nll_data = neg_log_likelihood.data_ptr<acc_t>();
    acc_t* alpha_data = log_alpha.data_ptr<acc_t>();
    acc_t* normalizer_data = log_normalizer.data_ptr<acc_t>();
    for (int64_t n = 0; n < N; ++n) {
      std::fill(normalizer_data + n * T + std::min(std::max<int64_t>(input_length[n], 0), T),
                normalizer_data + (n + 1) * T, acc_t(0));
    }
    if (by_frame) {
      at::parallel_for(0, N * T, frame_grain(C), [&](int64_t begin, int64_t end) {
        std::vector<acc_t> buffer(C);
        for (int64_t frame_index = begin; frame_index < end; ++frame_index) {
          const int64_t n = frame_index / T, t = frame_index % T;
          if (t >= input_length[n]) continue;
          const acc_t* frame = frame_as_acc(kernels, logits_data + n * stride_n + t * stride_t, C, buffer);
          const scalar_t* next_frame = frame_index + 1 < end ? logits_data + ((frame_index + 1) / T) * stride_n +
                                                                   ((frame_index + 1) % T) * stride_t
                                                             : nullptr;
          normalizer_data[n * T + t] = kernels.row_logsumexp(frame, C, row_to_prefetch<scalar_t, acc_t>(next_frame));
        }
      });
    }
    AT_DISPATCH_INDEX_TYPES(problem.targets.scalar_type(), "ctc_loss_forward_cpu", [&] {
      const index_t* labels = problem.targets.const_data_ptr<index_t>();
      at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
        SampleWorkspace<acc_t> ws;
        for (int64_t n = begin; n < end; ++n) {
          ws.set_target(labels + label_start[n], target_length[n], problem.blank, C);
          acc_t* block = nullptr;
          acc_t* block_end = nullptr;
          if (keep_log_alpha) {
            // Sample n owns [offset(n), offset(n + 1)) of the flat buffer.
            block = alpha_data + log_alpha_offset(n, label_start[n], T);
            block_end = n + 1 < N ? alpha_data + log_alpha_offset(n + 1, label_start[n + 1], T)
                                  : alpha_data + log_alpha.numel();
          }
          nll_data[n] =
              forward_one_sample<scalar_t, acc_t>(kernels, logits_data + n * stride_n, stride_t, C, input_length[n], ws,
                                                  block, block_end, normalizer_data + n * T, by_frame);
        }
      });
    });
  });
  return {neg_log_likelihood, log_alpha, log_normalizer};
}

// What both backward schedules read and write: the arguments of ctc_loss_backward as raw pointers.
template <typename scalar_t, typename acc_t, typename index_t>
struct BackwardArguments {
  const LatticeKernels<acc_t>& kernels;
  const scalar_t* logits;  // (T, N, C), unit class stride
  int64_t stride_t, stride_n;
  scalar_t* grad;  // (T, N, C), unit class stride
  int64_t grad_stride_t, grad_stride_n;
  const index_t* labels;            // flattened targets
  const int64_t* label_start;       // (N,)
  const int64_t* input_length;      // (N,)
  const int64_t* target_length;     // (N,)
  const acc_t* log_alpha;           // flat, ctc_math.h layout; nullptr: recomputed per sample
  const acc_t* log_normalizer;      // (N, T)
  const acc_t* neg_log_likelihood;  // (N,)
  const acc_t* grad_scale;          // (N,) grad_nll
  int64_t T, N, C, blank;
  bool zero_infinity;

  SampleGradient kind(int64_t n) const {
    return sample_gradient(input_length[n], target_length[n], neg_log_likelihood[n], zero_infinity);
  }
  scalar_t* grad_frame(int64_t n, int64_t t) const { return grad + n * grad_stride_n + t * grad_stride_t; }
  const scalar_t* sample_logits(int64_t n) const { return logits + n * stride_n; }

  // Sample n's (T_n, W) log_alpha rows: in the forward's buffer, or recomputed into ws (ws holds
  // sample n's target).
  const acc_t* sample_log_alpha(int64_t n, SampleWorkspace<acc_t>& ws) const {
    if (log_alpha != nullptr) return log_alpha + log_alpha_offset(n, label_start[n], T);
    const int64_t rows = input_length[n] * ws.num_states;
    SampleWorkspace<acc_t>::grow(ws.log_alpha, rows);
    // normalizer_ready: forward_one_sample reads the saved normalisers and writes none.
    forward_one_sample<scalar_t, acc_t>(kernels, sample_logits(n), stride_t, C, input_length[n], ws,
                                        ws.log_alpha.data(), ws.log_alpha.data() + rows,
                                        const_cast<acc_t*>(log_normalizer + n * T), true);
    return ws.log_alpha.data();
  }
};

// Frames t < T_n of a sample without a computed gradient: NaN, or zero with zero_infinity.
template <typename scalar_t, typename acc_t, typename index_t>
void fill_sample_without_gradient(const BackwardArguments<scalar_t, acc_t, index_t>& a, int64_t n,
                                  SampleGradient kind) {
  const scalar_t value = kind == SampleGradient::kNaN ? std::numeric_limits<scalar_t>::quiet_NaN() : scalar_t(0);
  for (int64_t t = 0; t < a.input_length[n]; ++t) fill_frame(a.grad_frame(n, t), a.C, value);
}

// By sample: one task per sample runs its beta sweep and writes its gradient rows as it goes.
template <typename scalar_t, typename acc_t, typename index_t>
void backward_by_sample(const BackwardArguments<scalar_t, acc_t, index_t>& a) {
  at::parallel_for(0, a.N, 1, [&](int64_t begin, int64_t end) {
    SampleWorkspace<acc_t> ws;
    for (int64_t n = begin; n < end; ++n) {
      const int64_t T_n = a.input_length[n];
      const SampleGradient kind = a.kind(n);
      if (kind != SampleGradient::kFinite || T_n == 0) {
        fill_sample_without_gradient(a, n, kind);
      } else {
        ws.set_target(a.labels + a.label_start[n], a.target_length[n], a.blank, a.C);
        const acc_t scale = a.grad_scale[n];
        beta_sweep<scalar_t, acc_t>(
            a.kernels, a.sample_logits(n), a.stride_t, a.C, T_n, ws, a.sample_log_alpha(n, ws),
            a.log_normalizer + n * a.T,
            [&](int64_t t, const acc_t* frame, acc_t lse, const acc_t* occupancy, int64_t first, int64_t last) {
              write_gradient_frame<scalar_t, acc_t>(a.kernels, frame, lse, scale, occupancy, ws.labels.data(), first,
                                                    last, a.C, a.grad_frame(n, t), ws.grad);
            });
      }
      for (int64_t t = T_n; t < a.T; ++t) fill_frame(a.grad_frame(n, t), a.C, scalar_t(0));
    }
  });
}

// By frame: the beta sweeps run per sample and store the occupancies; then the gradient rows, the
// bulk of the work, run parallel over all frames.  The occupancies are stored compactly: sample
// n's (T, 2 L_n + 1) block at log_alpha_offset(n, occupancy_start[n], T), occupancy_start being
// the running sum of the target lengths (not the padded label_start, whose blocks follow S).
template <typename scalar_t, typename acc_t, typename index_t>
void backward_by_frame(const BackwardArguments<scalar_t, acc_t, index_t>& a, const int64_t* occupancy_start,
                       acc_t* occupancies) {
  at::parallel_for(0, a.N, 1, [&](int64_t begin, int64_t end) {
    SampleWorkspace<acc_t> ws;
    for (int64_t n = begin; n < end; ++n) {
      const int64_t T_n = a.input_length[n];
      if (a.kind(n) != SampleGradient::kFinite || T_n == 0) continue;
      ws.set_target(a.labels + a.label_start[n], a.target_length[n], a.blank, a.C);
      const int64_t W = ws.num_states;
      acc_t* sample_occupancies = occupancies + log_alpha_offset(n, occupancy_start[n], a.T);
      beta_sweep<scalar_t, acc_t>(
          a.kernels, a.sample_logits(n), a.stride_t, a.C, T_n, ws, a.sample_log_alpha(n, ws),
          a.log_normalizer + n * a.T,
          [&](int64_t t, const acc_t*, acc_t, const acc_t* occupancy, int64_t first, int64_t last) {
            std::copy(occupancy + first, occupancy + last + 1, sample_occupancies + t * W + first);
          });
    }
  });
  at::parallel_for(0, a.N * a.T, frame_grain(a.C), [&](int64_t begin, int64_t end) {
    SampleWorkspace<acc_t> ws;
    int64_t workspace_sample = -1;
    for (int64_t frame_index = begin; frame_index < end; ++frame_index) {
      const int64_t n = frame_index / a.T, t = frame_index % a.T;
      const int64_t T_n = a.input_length[n];
      scalar_t* grad_frame = a.grad_frame(n, t);
      const SampleGradient kind = a.kind(n);
      if (t >= T_n || kind != SampleGradient::kFinite) {
        const bool nan = t < T_n && kind == SampleGradient::kNaN;
        fill_frame(grad_frame, a.C, nan ? std::numeric_limits<scalar_t>::quiet_NaN() : scalar_t(0));
        continue;
      }
      if (workspace_sample != n) {
        ws.set_target(a.labels + a.label_start[n], a.target_length[n], a.blank, a.C);
        workspace_sample = n;
      }
      const int64_t W = ws.num_states;
      const acc_t* frame = frame_as_acc(a.kernels, a.sample_logits(n) + t * a.stride_t, a.C, ws.frame);
      const acc_t* occupancy = occupancies + log_alpha_offset(n, occupancy_start[n], a.T) + t * W;
      write_gradient_frame<scalar_t, acc_t>(a.kernels, frame, a.log_normalizer[n * a.T + t], a.grad_scale[n], occupancy,
                                            ws.labels.data(), band_first(t, T_n, W), band_last(t, W), a.C, grad_frame,
                                            ws.grad);
    }
  });
}

// log_alpha may be empty (ctc_loss_forward(..., keep_log_alpha=False)): each sample's alpha is
// then recomputed from the saved normalisers, which the autograd node uses when the padded layout
// would waste memory (targets much shorter than their padded width).
at::Tensor ctc_loss_backward_cpu(const at::Tensor& grad_nll, const at::Tensor& logits_in, const at::Tensor& targets,
                                 const at::Tensor& input_lengths, const at::Tensor& target_lengths,
                                 const at::Tensor& neg_log_likelihood, const at::Tensor& log_alpha,
                                 const at::Tensor& log_normalizer, int64_t blank, bool zero_infinity) {
  const CtcProblem problem = prepare_ctc_problem(logits_in, targets, input_lengths, target_lengths, blank);
  check_ctc_values_on_cpu(problem);
  const at::Tensor logits = with_contiguous_classes(logits_in);
  const int64_t T = problem.max_input_length, N = problem.batch_size, C = problem.num_classes;
  const auto acc_type = at::toOpMathType(logits.scalar_type());
  check_ctc_backward_state(problem, logits, grad_nll, neg_log_likelihood, log_alpha, log_normalizer);

  at::Tensor grad = at::empty_like(logits_in);
  // Kernels write rows with unit class stride; a gradient laid out otherwise is filled afterwards.
  at::Tensor grad_out = grad.stride(2) == 1 ? grad : at::empty_like(logits);
  advise_huge_pages(grad_out);
  const at::Tensor grad_scale = grad_nll.to(acc_type).contiguous();
  const at::Tensor alpha = log_alpha.contiguous();
  const at::Tensor normalizer = log_normalizer.contiguous();
  const at::Tensor nll = neg_log_likelihood.contiguous();
  const int64_t* target_length = problem.target_lengths.const_data_ptr<int64_t>();
  const bool by_frame = use_frame_schedule(N, T, C);
  // Frame schedule: where each sample's occupancies begin (see backward_by_frame).  The lengths
  // were checked and their sum overflow-checked by check_ctc_values_on_cpu.
  std::vector<int64_t> occupancy_start(by_frame ? N : 0);
  int64_t total_target_length = 0;
  for (int64_t n = 0; n < static_cast<int64_t>(occupancy_start.size()); ++n) {
    occupancy_start[n] = total_target_length;
    total_target_length += target_length[n];
  }
  at::Tensor occupancies =
      at::empty({by_frame ? log_alpha_numel(N, total_target_length, T) : 0}, logits.options().dtype(acc_type));

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "ctc_loss_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    AT_DISPATCH_INDEX_TYPES(problem.targets.scalar_type(), "ctc_loss_backward_cpu", [&] {
      const BackwardArguments<scalar_t, acc_t, index_t> arguments{
          lattice_kernels<acc_t>(),
          logits.const_data_ptr<scalar_t>(),
          logits.stride(0),
          logits.stride(1),
          grad_out.data_ptr<scalar_t>(),
          grad_out.stride(0),
          grad_out.stride(1),
          problem.targets.const_data_ptr<index_t>(),
          problem.label_start.const_data_ptr<int64_t>(),
          problem.input_lengths.const_data_ptr<int64_t>(),
          target_length,
          alpha.numel() > 0 ? alpha.const_data_ptr<acc_t>() : nullptr,
          normalizer.const_data_ptr<acc_t>(),
          nll.const_data_ptr<acc_t>(),
          grad_scale.const_data_ptr<acc_t>(),
          T,
          N,
          C,
          problem.blank,
          zero_infinity};
      if (by_frame) {
        backward_by_frame(arguments, occupancy_start.data(), occupancies.data_ptr<acc_t>());
      } else {
        backward_by_sample(arguments);
      }
    });
  });
  if (!grad_out.is_same(grad)) grad.copy_(grad_out);
  return grad;
}

// Test hook: one row primitive of one instruction set applied to a tensor, so the tests can
// check every compiled path: exp, log, exp_nonpositive (float / double in, same out), and the
// half-precision conversions half_to_float, bfloat16_to_float (float16 / bfloat16 in, float out),
// float_to_half, float_to_bfloat16 (float in, float16 / bfloat16 out).
at::Tensor simd_math_cpu(const at::Tensor& input, c10::string_view function, c10::string_view isa) {
  const CpuKernelTable* table = kernel_table_named(std::string(isa), "isa");
  const at::Tensor in = input.contiguous();
  const auto dtype = in.scalar_type();
  if (function == "half_to_float" || function == "bfloat16_to_float") {
    const bool half = function == "half_to_float";
    TORCH_CHECK(dtype == (half ? at::kHalf : at::kBFloat16), "input of ", std::string(function), " must be ",
                half ? "float16" : "bfloat16");
    at::Tensor out = at::empty(in.sizes(), in.options().dtype(at::kFloat));
    (half ? table->f32.half_to_acc : table->f32.bfloat16_to_acc)(reinterpret_cast<const uint16_t*>(in.const_data_ptr()),
                                                                 out.data_ptr<float>(), in.numel());
    return out;
  }
  if (function == "float_to_half" || function == "float_to_bfloat16") {
    const bool half = function == "float_to_half";
    TORCH_CHECK(dtype == at::kFloat, "input of ", std::string(function), " must be float32");
    at::Tensor out = at::empty(in.sizes(), in.options().dtype(half ? at::kHalf : at::kBFloat16));
    (half ? table->f32.acc_to_half : table->f32.acc_to_bfloat16)(
        in.const_data_ptr<float>(), reinterpret_cast<uint16_t*>(out.data_ptr()), in.numel());
    return out;
  }
  TORCH_CHECK(function == "exp" || function == "log" || function == "exp_nonpositive",
              "function must be exp, log, exp_nonpositive, half_to_float, bfloat16_to_float, float_to_half or "
              "float_to_bfloat16");
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble, "input must be float32 or float64");
  at::Tensor out = at::empty_like(in);
  auto apply = [&](const auto& kernels, auto* out_data, const auto* in_data) {
    auto* elementwise = function == "exp" ? kernels.exp : function == "log" ? kernels.log : kernels.exp_nonpositive;
    elementwise(in_data, out_data, in.numel());
  };
  if (dtype == at::kFloat) {
    apply(table->f32, out.data_ptr<float>(), in.const_data_ptr<float>());
  } else {
    apply(table->f64, out.data_ptr<double>(), in.const_data_ptr<double>());
  }
  return out;
}

// The instruction set the kernels use now (honouring CTC_EXT_CPU_ISA), for the benchmark report.
std::string cpu_kernel_isa() { return cpu_kernels().isa; }

void set_cpu_kernel_path(c10::string_view isa, c10::string_view schedule) {
  kernel_path().set(std::string(isa), std::string(schedule), "isa", "schedule");
}

}  // namespace

TORCH_LIBRARY_IMPL(ctc_ext, CPU, m) {
  m.impl("ctc_loss_forward", &ctc_loss_forward_cpu);
  m.impl("ctc_loss_backward", &ctc_loss_backward_cpu);
  m.impl("_simd_math", &simd_math_cpu);
}

// These take no tensor, so they have no dispatch key: catch-all kernels.
TORCH_LIBRARY_IMPL(ctc_ext, CompositeExplicitAutograd, m) {
  m.impl("_cpu_kernel_isa", &cpu_kernel_isa);
  m.impl("_set_cpu_kernel_path", &set_cpu_kernel_path);
}

}  // namespace ctc_ext
