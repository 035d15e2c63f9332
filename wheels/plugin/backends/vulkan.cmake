# The Vulkan plugin (pybonsai-vulkan from ../vulkan/), included by ../CMakeLists.txt: AMD, Intel and
# NVIDIA GPUs (and Mesa's lavapipe, a CPU-based Vulkan device our tests run on) on Linux and Windows.
#
# Build needs: the Vulkan headers + loader link library (Debian: libvulkan-dev), glslc (Debian:
# glslc; upstream's vulkan-shaders-gen compiles every shader with it at build time and embeds the
# SPIR-V in the library) and SPIRV-Headers' CMake package (Debian: spirv-headers). Run time needs
# only the system's Vulkan loader (libvulkan.so.1, from the GPU driver / Mesa): it is NEVER bundled
# (build_and_test_vulkan.sh excludes it from auditwheel repair), since a loader must match the
# installed drivers' ICDs.
set(PYBONSAI_PLUGIN_PACKAGE pybonsai_vulkan)
set(PYBONSAI_PLUGIN_TARGET ggml-vulkan)
find_package(Vulkan REQUIRED COMPONENTS glslc)
set(PYBONSAI_VULKAN_HEADERS_VERSION "${Vulkan_VERSION}")
execute_process(COMMAND "${Vulkan_GLSLC_EXECUTABLE}" --version OUTPUT_VARIABLE glslc_version
                OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
string(REGEX REPLACE "\n.*" "" PYBONSAI_GLSLC_VERSION "${glslc_version}")  # first line only
message(STATUS "pybonsai-vulkan: Vulkan headers ${Vulkan_VERSION}, ${PYBONSAI_GLSLC_VERSION}")

# libggml-base.so from the base package (already loaded in practice); libvulkan.so.1 by SONAME from
# the system.
set(CMAKE_INSTALL_RPATH "$ORIGIN;$ORIGIN/../pybonsai")
set(GGML_VULKAN ON CACHE BOOL "" FORCE)
