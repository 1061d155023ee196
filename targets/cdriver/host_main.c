/* Linux harness for a stage built as a shared library: input.bin -> eecc_run -> output.bin (cwd). */
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "eecc_driver.h"

void eecc_log(const char* msg) { fputs(msg, stderr); }

/* Marks eecc_run() for an instruction-counting emulator (targets/cdriver/insn_count.c); getpid ignores
 * the arguments, so on a real board this costs one cheap system call per inference. */
static void mark(long phase) { syscall(SYS_getpid, 0xEECCL, phase); }

int main(void) {
  eecc_workspace_init();
  FILE* fin = fopen("input.bin", "rb");
  FILE* fout = fopen("output.bin", "wb");
  if (!fin || !fout) { eecc_log("eecc: cannot open input.bin/output.bin\n"); return 1; }
  unsigned long samples = 0;
  for (;;) {
    int got = 1;
    for (int i = 0; i < eecc_num_inputs; ++i)
      if (fread(eecc_inputs[i].data, 1, eecc_inputs[i].nbytes, fin) != eecc_inputs[i].nbytes) got = 0;
    if (!got) break;
    mark(0);
    int rc = eecc_run();
    mark(1);
    if (rc != 0) { fprintf(stderr, "eecc: kernel %d failed\n", rc - 1); return 1; }
    for (int i = 0; i < eecc_num_outputs; ++i) fwrite(eecc_outputs[i].data, 1, eecc_outputs[i].nbytes, fout);
    ++samples;
  }
  fclose(fin); fclose(fout);
  fprintf(stderr, "eecc: samples=%lu workspace_peak=%u\n", samples, eecc_workspace_peak());
  return 0;
}
