/* The run loop of a multi-stage program: each stage's kernels in call order, the exit gate's flag between
 * stages. Stage k+1's input tensors point at stage k's outputs, so nothing is copied on the way. */
#include "eecc_program.h"

int eecc_stage_run(int k) {
  const eecc_stage* s = &eecc_stages[k];
  TVMFFIAny args[EECC_MAX_ARGS], ret;
  unsigned i = 0;
  for (unsigned c = 0; c < s->num_calls; ++c) {
    for (unsigned a = 0; a < s->nargs[c]; ++a) {
      args[a].type_index = EECC_FFI_DLTENSOR_PTR; args[a].zero_padding = 0;
      args[a].u.v_int64 = 0; args[a].u.v_ptr = (void*)&s->views[s->argv[i++]];
    }
    ret.type_index = 0; ret.zero_padding = 0; ret.u.v_int64 = 0;
    if (s->calls[c](0, args, s->nargs[c], &ret) != 0) return (int)c + 1;
  }
  return 0;
}

int eecc_cascade_run(void) {
  for (int k = 0; k < eecc_num_stages; ++k) {
    if (eecc_stage_run(k) != 0) return -1 - k;
    eecc_stage_done(k);
    if (eecc_stages[k].exit_flag == 0 || *eecc_stages[k].exit_flag) return k;
  }
  return -1;
}

__attribute__((weak)) void eecc_stage_done(int k) { (void)k; }
