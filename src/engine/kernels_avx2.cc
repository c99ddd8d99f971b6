// AVX2 + FMA + F16C kernels (see kernels_x86.inc). Compiled with -mavx2 -mfma
// -mf16c; reached only through avx2_kernels(), after a CPU check.
#define KERNEL_NS avx2
#define KERNEL_NAME "avx2"
#define KERNEL_SET_FN avx2_kernel_set
#define USE_VNNI 0
#define TILE_R 2
#define TILE_C 4
#define TILE_C_FLOAT 4
#define TILE_R_DECODE 4
#include "engine/kernels_x86.inc"
