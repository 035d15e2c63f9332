# The CUDA plugins (pybonsai-cuda12 from ../cuda12/, pybonsai-cuda13 from ../cuda13/), included by
# ../CMakeLists.txt. ggml-cuda enables the CUDA language itself; this file picks the toolkit major,
# the architecture list, the RPATH to NVIDIA's runtime wheels and the upstream CUDA options.

# The CUDA major version this plugin is for: the wheel's name, its runtime wheels' names and the
# SONAMEs it links (libcudart.so.<major>) all depend on it.
set(PYBONSAI_CUDA_MAJOR 12 CACHE STRING "CUDA major version of the plugin (12 or 13)")
set_property(CACHE PYBONSAI_CUDA_MAJOR PROPERTY STRINGS 12 13)
option(PYBONSAI_CUDA_ANY_TOOLKIT
  "accept a CUDA toolkit of another major version (configure/compile checks only: NOT a cu12 plugin)" OFF)
set(PYBONSAI_PLUGIN_PACKAGE "pybonsai_cuda${PYBONSAI_CUDA_MAJOR}")
set(PYBONSAI_PLUGIN_TARGET ggml-cuda)

# Real code (SASS) for one architecture per GPU family, sized to stay under PyPI's 100 MB per file
# (each SASS architecture adds ~19 MB of compressed device code; see README.md "Size"):
#   75  Turing (T4, RTX 20xx)   80  Ampere A100/A30, and (binary compatible within CC 8.x) RTX 30xx,
#   A10, A40 (8.6), Ada L4, L40S, RTX 40xx (8.9): ggml maps a device to the highest compiled arch
#   <= its CC (ggml_cuda_highest_compiled_arch), so it only takes paths compiled for 8.0
#   90  Hopper (H100, H200)     120 Blackwell RTX 50xx / RTX PRO (upstream makes it 120a)
# No PTX: compute_90 PTX (for B200 sm_100, GB10 sm_121 by JIT) would push the wheel over 100 MB.
# 86-real, 89-real, 100-real, 121-real and 90-virtual are the next candidates, with a PyPI size
# increase. sm_120 needs CUDA >= 12.8. Override with -DCMAKE_CUDA_ARCHITECTURES=... (e.g. 90-real).
set(PYBONSAI_CUDA_ARCHITECTURES "75-real;80-real;90-real;120-real")
if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
  set(CMAKE_CUDA_ARCHITECTURES "${PYBONSAI_CUDA_ARCHITECTURES}")
endif()
string(REPLACE ";" "," PYBONSAI_CUDA_ARCHITECTURES_USED "${CMAKE_CUDA_ARCHITECTURES}")

find_package(CUDAToolkit REQUIRED)
if(NOT CUDAToolkit_VERSION_MAJOR EQUAL PYBONSAI_CUDA_MAJOR)
  if(PYBONSAI_CUDA_ANY_TOOLKIT)
    message(WARNING "CUDA ${CUDAToolkit_VERSION}: configuring anyway (PYBONSAI_CUDA_ANY_TOOLKIT); "
                    "the result is not a valid pybonsai-cuda${PYBONSAI_CUDA_MAJOR} plugin")
  else()
    message(FATAL_ERROR "pybonsai-cuda${PYBONSAI_CUDA_MAJOR} needs a CUDA ${PYBONSAI_CUDA_MAJOR}.x toolkit "
                        "(12: >= 12.8 for sm_120); found ${CUDAToolkit_VERSION} at ${CUDAToolkit_BIN_DIR}. "
                        "Point -DCUDAToolkit_ROOT= (and CUDACXX) at a CUDA ${PYBONSAI_CUDA_MAJOR} toolkit: "
                        "python wheels/plugin/toolchain.py --cuda ${PYBONSAI_CUDA_MAJOR} <dir> assembles one.")
  endif()
endif()

# The plugin finds libggml-base.so in the base package (already loaded in practice) and NVIDIA's
# runtime wheels next to it in site-packages; pybonsai.gpu also preloads those before loading it.
if(PYBONSAI_CUDA_MAJOR EQUAL 12)  # nvidia-cuda-runtime-cu12, nvidia-cublas-cu12: one directory each
  set(nvidia_rpath "$ORIGIN/../nvidia/cuda_runtime/lib;$ORIGIN/../nvidia/cublas/lib")
else()                             # CUDA 13 wheels share nvidia/cu13/lib
  set(nvidia_rpath "$ORIGIN/../nvidia/cu${PYBONSAI_CUDA_MAJOR}/lib")
endif()
set(CMAKE_INSTALL_RPATH "$ORIGIN;$ORIGIN/../pybonsai;${nvidia_rpath}")

set(GGML_CUDA ON CACHE BOOL "" FORCE)
# No NCCL: it would link whatever the build machine has, and we do not ship multi-GPU support.
set(GGML_CUDA_NCCL OFF CACHE BOOL "" FORCE)
# VMM stays on (upstream default): ggml-cuda links libcuda.so.1 directly (cuMemCreate &co.) and
# grows its pool without fragmentation. The driver is required anyway, and pybonsai.gpu checks for
# it before loading the plugin, so a missing driver is reported as such, not as a dlopen error.
# -DGGML_CUDA_NO_VMM=ON drops the libcuda.so.1 link (legacy cudaMalloc pool, more memory waste).
# Fatbin compression (CUDA >= 12.8): "size" is upstream's default and what keeps the wheel small.
set(GGML_CUDA_COMPRESSION_MODE "size" CACHE STRING "")
# Our CUDA kernels (csrc/kernels/cuda), for a vendor patch that compiles them into ggml-cuda.
set(PYBONSAI_CUDA_KERNELS_DIR "${PYBONSAI_ROOT}/csrc/kernels/cuda")
