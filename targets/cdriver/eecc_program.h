/* eecc multi-stage program: the consecutive stages of one core, run back to back (generated program.c). */
#ifndef EECC_PROGRAM_H
#define EECC_PROGRAM_H
#include "eecc_driver.h"

#define EECC_MAX_ARGS 32   /* mcu_driver.MAX_ARGS */
#define EECC_MAX_STAGES 16 /* mcu_driver.MAX_STAGES */

typedef struct {
  const eecc_kernel_fn* calls; const uint8_t* nargs; const uint16_t* argv;
  void* const* views;       /* each view's data pointer: what a kernel reads of its DLTensor* (mcu_abi.py) */
  uint32_t num_calls;
  const eecc_io* inputs;   /* stage 0: its own buffers; stage k > 0: where stage k-1 wrote the hand-off */
  const eecc_io* outputs;
  uint8_t num_inputs, num_outputs, logits; /* logits: index of the class scores in outputs */
  const uint8_t* exit_flag;                /* the exit gate's decision; NULL for the last stage */
} eecc_stage;

extern const eecc_stage eecc_stages[];
extern const int eecc_num_stages;

int eecc_stage_run(int k);   /* stage k's kernels on the buffers as they are: 0 on success */
int eecc_cascade_run(void);  /* stage 0, its gate, stage 1, ...: the stage whose exit was taken, < 0 on error */
void eecc_stage_done(int k); /* called after each stage of eecc_cascade_run; weak no-op (the test loop counts here) */
#endif
