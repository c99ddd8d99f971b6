// AVX-512 (F, BW, VL, DQ) + VNNI kernels (see kernels_x86.inc): vpdpbusd on
// 256-bit registers, with the 32 vector registers AVX-512 gives for larger
// tiles. Reached only through avx512_kernels(), after a CPU check.
#define KERNEL_NS avx512
#define KERNEL_NAME "avx512"
#define KERNEL_SET_FN avx512_kernel_set
#define USE_VNNI 1
#define TILE_R 4
#define TILE_C 8
#define TILE_C_FLOAT 4
#define TILE_R_DECODE 8
#include "engine/kernels_x86.inc"
