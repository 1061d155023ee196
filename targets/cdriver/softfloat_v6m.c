/* LLVM calls the GNU soft-float names (__addsf3, ...) for thumbv6m, but libgcc's v6-M build only
 * provides the RTABI ones (__aeabi_fadd, ...): forward one to the other. Weak, so a libgcc that has
 * the GNU names wins. Build with -mfloat-abi=soft: floats travel in core registers either way. */
#include <stdint.h>

#define FWD2(ret, gnu, aeabi, ta, tb) \
  ret aeabi(ta, tb); \
  __attribute__((weak)) ret gnu(ta a, tb b) { return aeabi(a, b); }
#define FWD1(ret, gnu, aeabi, ta) \
  ret aeabi(ta); \
  __attribute__((weak)) ret gnu(ta a) { return aeabi(a); }

FWD2(float, __addsf3, __aeabi_fadd, float, float)
FWD2(float, __subsf3, __aeabi_fsub, float, float)
FWD2(float, __mulsf3, __aeabi_fmul, float, float)
FWD2(float, __divsf3, __aeabi_fdiv, float, float)
FWD2(double, __adddf3, __aeabi_dadd, double, double)
FWD2(double, __subdf3, __aeabi_dsub, double, double)
FWD2(double, __muldf3, __aeabi_dmul, double, double)
FWD2(double, __divdf3, __aeabi_ddiv, double, double)
FWD1(float, __negsf2, __aeabi_fneg, float)
FWD1(float, __floatsisf, __aeabi_i2f, int32_t)
FWD1(float, __floatunsisf, __aeabi_ui2f, uint32_t)
FWD1(float, __floatdisf, __aeabi_l2f, int64_t)
FWD1(int32_t, __fixsfsi, __aeabi_f2iz, float)
FWD1(uint32_t, __fixunssfsi, __aeabi_f2uiz, float)
FWD1(int64_t, __fixsfdi, __aeabi_f2lz, float)
FWD1(double, __extendsfdf2, __aeabi_f2d, float)
FWD1(float, __truncdfsf2, __aeabi_d2f, double)
FWD1(double, __floatsidf, __aeabi_i2d, int32_t)
FWD1(int32_t, __fixdfsi, __aeabi_d2iz, double)
