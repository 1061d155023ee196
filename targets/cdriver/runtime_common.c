/* Pieces both the MCU and the host build need: workspace allocator and the tvm-ffi error hook. */
#include "eecc_driver.h"

static uint32_t ws_top, ws_peak;

/* Kernels free in reverse order of allocation, so a bump pointer is an exact allocator. */
static void* ws_alloc(int device_type, int device_id, uint64_t nbytes, int code, int bits) {
  (void)device_type; (void)device_id; (void)code; (void)bits;
  uint32_t size = (uint32_t)((nbytes + 63u) & ~(uint64_t)63u);
  if (ws_top + size > eecc_workspace_bytes) {
    eecc_log("eecc: kernel workspace exhausted\n");
    return NULL;
  }
  void* p = eecc_workspace + ws_top;
  ws_top += size;
  if (ws_top > ws_peak) ws_peak = ws_top;
  return p;
}

static int ws_free(int device_type, int device_id, void* ptr) {
  (void)device_type; (void)device_id;
  ws_top = (uint32_t)((uint8_t*)ptr - eecc_workspace);
  return 0;
}

void eecc_workspace_init(void) {
  __TVMBackendAllocWorkspace = ws_alloc;
  __TVMBackendFreeWorkspace = ws_free;
  ws_top = ws_peak = 0;
}

uint32_t eecc_workspace_peak(void) { return ws_peak; }

/* The generated argument checks report through tvm-ffi's error API; there is no runtime, so print. */
void TVMFFIErrorSetRaisedFromCStrParts(const char* kind, const char** parts, int32_t num_parts) {
  eecc_log("eecc: kernel error: ");
  eecc_log(kind);
  eecc_log(": ");
  for (int32_t i = 0; i < num_parts; ++i)
    if (parts[i]) eecc_log(parts[i]);
  eecc_log("\n");
}

void TVMFFIErrorSetRaisedFromCStr(const char* kind, const char* msg) {
  const char* parts[1] = {msg};
  TVMFFIErrorSetRaisedFromCStrParts(kind, parts, 1);
}

/* Weak so that a stage whose kernels need no scratch memory still links. */
__attribute__((weak)) void* (*__TVMBackendAllocWorkspace)(int, int, uint64_t, int, int);
__attribute__((weak)) int (*__TVMBackendFreeWorkspace)(int, int, void*);
