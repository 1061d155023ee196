/* Bare-metal Cortex-M startup and test loop for QEMU mps2 boards: semihosting file I/O,
 * SysTick-based instruction counting (run QEMU with -icount shift=5). */
#include "eecc_driver.h"

extern uint32_t __data_load, __data_start, __data_end, __bss_start, __bss_end;
extern uint32_t __stack_bottom, __stack_top;
int main(void);

/* ---- semihosting (ARM semihosting spec, M-profile uses BKPT 0xAB) ---- */
static int semihost(int op, void* arg) {
  register int r0 __asm__("r0") = op;
  register void* r1 __asm__("r1") = arg;
  __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
  return r0;
}
static uint32_t slen(const char* s) { uint32_t n = 0; while (s[n]) ++n; return n; }
void eecc_log(const char* msg) { semihost(0x04, (void*)msg); }
static int sh_open(const char* path, int mode) {
  uint32_t a[3] = {(uint32_t)path, (uint32_t)mode, slen(path)};
  return semihost(0x01, a);
}
static int sh_close(int fd) { uint32_t a[1] = {(uint32_t)fd}; return semihost(0x02, a); }
/* SYS_READ / SYS_WRITE return the number of bytes NOT transferred */
static int sh_read(int fd, void* buf, uint32_t n) { uint32_t a[3] = {(uint32_t)fd, (uint32_t)buf, n}; return semihost(0x06, a); }
static int sh_write(int fd, const void* buf, uint32_t n) { uint32_t a[3] = {(uint32_t)fd, (uint32_t)buf, n}; return semihost(0x05, a); }
static void sh_exit(int ok) { semihost(0x18, (void*)(ok ? 0x20026 : 0x20023)); for (;;) {} }

static void log_u64(const char* key, uint64_t v) {
  char buf[24]; int i = 23; buf[i] = 0;
  do { buf[--i] = (char)('0' + v % 10); v /= 10; } while (v);
  eecc_log(key); eecc_log(&buf[i]);
}

/* ---- SysTick: 24-bit down counter on the CPU clock; wraps counted in the interrupt ---- */
#define SYST_CSR (*(volatile uint32_t*)0xE000E010)
#define SYST_RVR (*(volatile uint32_t*)0xE000E014)
#define SYST_CVR (*(volatile uint32_t*)0xE000E018)
static volatile uint32_t systick_wraps;
void SysTick_Handler(void) { ++systick_wraps; }
static uint64_t ticks(void) {
  uint32_t w, v;
  do { w = systick_wraps; v = SYST_CVR; } while (w != systick_wraps);
  return ((uint64_t)w << 24) + (0xFFFFFFu - v);
}

#define STACK_PAINT 0xA5A5A5A5u
static uint32_t stack_used(void) {
  uint32_t* p = &__stack_bottom;
  while (p < &__stack_top && *p == STACK_PAINT) ++p;
  return (uint32_t)((uint8_t*)&__stack_top - (uint8_t*)p);
}

#ifdef EECC_PROGRAM
#include "program_main.inc"
#else
int main(void) {
  eecc_workspace_init();
  SYST_RVR = 0xFFFFFFu; SYST_CVR = 0; SYST_CSR = 7; /* enable, interrupt, processor clock */
  int fin = sh_open("input.bin", 1), fout = sh_open("output.bin", 5);
  if (fin < 0 || fout < 0) { eecc_log("eecc: cannot open input.bin/output.bin\n"); return 1; }
  uint64_t total = 0, samples = 0;
  for (;;) {
    int got = 1;
    for (int i = 0; i < eecc_num_inputs; ++i)
      if (sh_read(fin, eecc_inputs[i].data, eecc_inputs[i].nbytes) != 0) got = 0;
    if (!got) break;
    uint64_t t0 = ticks();
    int rc = eecc_run();
    total += ticks() - t0;
    if (rc != 0) { eecc_log("eecc: stage failed\n"); return 1; }
    for (int i = 0; i < eecc_num_outputs; ++i) sh_write(fout, eecc_outputs[i].data, eecc_outputs[i].nbytes);
    ++samples;
  }
  sh_close(fin); sh_close(fout);
  log_u64("eecc: samples=", samples);
  log_u64(" ticks=", total);
  log_u64(" workspace_peak=", eecc_workspace_peak());
  log_u64(" stack_used=", stack_used());
  eecc_log("\n");
  return 0;
}
#endif

void Reset_Handler(void) {
  uint32_t *src = &__data_load, *dst = &__data_start;
  while (dst < &__data_end) *dst++ = *src++;
  for (dst = &__bss_start; dst < &__bss_end; ++dst) *dst = 0;
  /* paint the stack below the current frame so stack_used() can find the high-water mark */
  uint32_t* sp; __asm__ volatile("mov %0, sp" : "=r"(sp));
  for (uint32_t* p = &__stack_bottom; p < sp - 16; ++p) *p = STACK_PAINT;
#if defined(__ARM_FP)
  (*(volatile uint32_t*)0xE000ED88) |= 0xFu << 20; /* CPACR: CP10/CP11 full access, before any FP use */
  __asm__ volatile("dsb\n isb");
#endif
  sh_exit(main() == 0);
}

static void Fault_Handler(void) { eecc_log("eecc: hard fault\n"); sh_exit(0); }
static void Default_Handler(void) { for (;;) {} }

__attribute__((section(".vectors"), used)) static void (*const vectors[16])(void) = {
  (void (*)(void))&__stack_top, Reset_Handler, Default_Handler, Fault_Handler,
  Fault_Handler, Fault_Handler, Fault_Handler, 0, 0, 0, 0,
  Default_Handler, Default_Handler, 0, Default_Handler, SysTick_Handler,
};

/* The TVM object carries exception-table entries that reference the EHABI personality routine. */
__attribute__((weak)) void __aeabi_unwind_cpp_pr0(void) {}
