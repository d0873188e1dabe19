// The row primitives for the compiler's baseline instruction set (SSE2 on x86-64): 16-byte
// vectors, the fallback on any CPU.
#include "lattice_kernels.h"

#define CTC_SIMD_BYTES 16
#define CTC_SIMD_NAMESPACE generic
#include "lattice_kernels_impl.h"

namespace ctc_ext {
namespace cpu {

const CpuKernelTable* generic_kernel_table() {
  static const CpuKernelTable table{"generic", generic::lattice_kernels<float>(), generic::lattice_kernels<double>()};
  return &table;
}

}  // namespace cpu
}  // namespace ctc_ext
