// The row primitives compiled for AVX2 + FMA (32-byte vectors), used when the CPU has them.
// Only this TU's own functions get the target: standard headers come in before the pragma.
#include "lattice_kernels.h"

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#pragma GCC optimize("fp-contract=fast")
#define CTC_SIMD_BYTES 32
#define CTC_SIMD_NAMESPACE avx2
#include "lattice_kernels_impl.h"
#pragma GCC pop_options
#endif

namespace ctc_ext {
namespace cpu {

const CpuKernelTable* avx2_kernel_table() {
#if defined(__x86_64__) && defined(__GNUC__)
  static const CpuKernelTable table{"avx2", avx2::lattice_kernels<float>(), avx2::lattice_kernels<double>()};
  return &table;
#else
  return nullptr;
#endif
}

}  // namespace cpu
}  // namespace ctc_ext
