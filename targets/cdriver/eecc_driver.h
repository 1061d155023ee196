/* eecc stage driver: the ABI shared by generated stage.c, the MCU startup and the host harness. */
#ifndef EECC_DRIVER_H
#define EECC_DRIVER_H
#include <stddef.h>
#include <stdint.h>

/* DLPack 1.x and tvm-ffi layouts, restated so that a build needs no TVM headers. */
typedef struct { int32_t device_type; int32_t device_id; } DLDevice;
typedef struct { uint8_t code; uint8_t bits; uint16_t lanes; } DLDataType;
typedef struct {
  void* data; DLDevice device; int32_t ndim; DLDataType dtype;
  int64_t* shape; int64_t* strides; uint64_t byte_offset;
} DLTensor;
typedef struct {
  int32_t type_index; uint32_t zero_padding;
  union { int64_t v_int64; double v_float64; void* v_ptr; } u;
} TVMFFIAny;
typedef int (*eecc_kernel_fn)(void* self, const TVMFFIAny* args, int32_t num_args, TVMFFIAny* result);
#define EECC_FFI_DLTENSOR_PTR 7

typedef struct { const char* name; void* data; uint32_t nbytes; } eecc_io;

/* generated per stage (stage.c) */
extern const eecc_io eecc_inputs[];
extern const eecc_io eecc_outputs[];
extern const int eecc_num_inputs, eecc_num_outputs;
extern uint8_t eecc_workspace[];
extern const uint32_t eecc_workspace_bytes;
int eecc_run(void);   /* 0 on success; runs every kernel once on the input buffers */

/* provided by the platform side (mcu_main.c / host_main.c) */
void eecc_log(const char* msg);

/* the TVM-generated code calls through these two pointers for in-kernel scratch memory */
extern void* (*__TVMBackendAllocWorkspace)(int, int, uint64_t, int, int);
extern int (*__TVMBackendFreeWorkspace)(int, int, void*);
void eecc_workspace_init(void);
uint32_t eecc_workspace_peak(void);
#endif
