/* Compile an OpenCL C file with the first OpenCL platform here (pocl): a syntax and semantics check
 * of TVM's generated kernels. Prints the kernel count, or the build log and exits 1. */
#define CL_TARGET_OPENCL_VERSION 120
#include <CL/cl.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char** argv) {
  if (argc != 2) { fprintf(stderr, "usage: clbuild FILE.cl\n"); return 2; }
  FILE* f = fopen(argv[1], "rb");
  if (!f) { perror(argv[1]); return 2; }
  fseek(f, 0, SEEK_END); long n = ftell(f); fseek(f, 0, SEEK_SET);
  char* src = malloc(n + 1); fread(src, 1, n, f); src[n] = 0; fclose(f);
  cl_platform_id platform; cl_device_id device; cl_int err;
  if (clGetPlatformIDs(1, &platform, NULL) != CL_SUCCESS ||
      clGetDeviceIDs(platform, CL_DEVICE_TYPE_ALL, 1, &device, NULL) != CL_SUCCESS) {
    fprintf(stderr, "no OpenCL device\n"); return 3;
  }
  cl_context ctx = clCreateContext(NULL, 1, &device, NULL, NULL, &err);
  cl_program prog = clCreateProgramWithSource(ctx, 1, (const char**)&src, NULL, &err);
  err = clBuildProgram(prog, 1, &device, "-cl-std=CL1.2", NULL, NULL);
  if (err != CL_SUCCESS) {
    size_t len = 0; clGetProgramBuildInfo(prog, device, CL_PROGRAM_BUILD_LOG, 0, NULL, &len);
    char* log = malloc(len + 1); clGetProgramBuildInfo(prog, device, CL_PROGRAM_BUILD_LOG, len, log, NULL);
    log[len] = 0; fprintf(stderr, "build failed (%d):\n%s\n", err, log); return 1;
  }
  cl_uint kernels = 0; clCreateKernelsInProgram(prog, 0, NULL, &kernels);
  printf("kernels=%u\n", kernels);
  return 0;
}
