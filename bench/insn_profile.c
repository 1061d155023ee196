/* QEMU TCG plugin (plugin API version 1, QEMU 7.2): executions of every translated block, for a per-function
 * instruction profile (bench/mcu_profile.py maps the block addresses to the ELF's symbols).
 * Output: one line "<vaddr hex> <instructions in block> <executions>" per executed block, to $PROF_OUT
 * (default prof.txt). A block retranslated at the same address gets another line: sum them.
 * QEMU installs no qemu-plugin.h on Debian, so the few declarations used are written out here. */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

typedef uint64_t qemu_plugin_id_t;
typedef struct qemu_info_t qemu_info_t;
struct qemu_plugin_tb;
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
typedef void (*tb_trans_cb)(qemu_plugin_id_t id, struct qemu_plugin_tb* tb);
typedef void (*udata_cb)(qemu_plugin_id_t id, void* userdata);
void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, tb_trans_cb cb);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb* tb);
uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb* tb);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb* tb, enum qemu_plugin_op op, void* ptr,
                                              uint64_t imm);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, udata_cb cb, void* userdata);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

typedef struct { uint64_t vaddr, n, count; } block;
#define CHUNK 4096  /* records never move: the inline counters point into them */
static block* chunks[1 << 16];
static size_t used;

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb* tb) {
  (void)id;
  if (used == (size_t)CHUNK << 16) return;  /* 268 M translations: stop recording rather than overflow */
  if (used % CHUNK == 0) chunks[used / CHUNK] = calloc(CHUNK, sizeof(block));
  block* b = &chunks[used / CHUNK][used % CHUNK];
  ++used;
  b->vaddr = qemu_plugin_tb_vaddr(tb);
  b->n = qemu_plugin_tb_n_insns(tb);
  qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &b->count, 1);
}

static void at_exit(qemu_plugin_id_t id, void* userdata) {
  (void)id; (void)userdata;
  const char* path = getenv("PROF_OUT");
  FILE* f = fopen(path ? path : "prof.txt", "w");
  if (!f) return;
  for (size_t i = 0; i < used; ++i) {
    block* b = &chunks[i / CHUNK][i % CHUNK];
    if (b->count) fprintf(f, "%" PRIx64 " %" PRIu64 " %" PRIu64 "\n", b->vaddr, b->n, b->count);
  }
  fclose(f);
}

__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t* info,
                                                                int argc, char** argv) {
  (void)info; (void)argc; (void)argv;
  qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
  qemu_plugin_register_atexit_cb(id, at_exit, NULL);
  return 0;
}
