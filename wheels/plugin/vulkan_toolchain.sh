#!/usr/bin/env bash
# The Vulkan build tools for the manylinux_2_28 image (AlmaLinux 8), which has the Vulkan loader
# (dnf) but headers older than the pin needs (1.3.268 < 1.3.272: VK_EXT_layer_settings, see
# vulkan_headers.sh), no glslc (shaderc is not packaged there) and no SPIRV-Headers CMake package:
# installs Vulkan-Headers v1.4.309 and builds glslc and SPIRV-Headers from shaderc's pinned
# release, into DEST (then PATH=DEST/bin, CMAKE_PREFIX_PATH=DEST, VULKAN_INCLUDE_DIR=DEST/include).
# Not run here (no GitHub access from this machine): written for the CI job, untested. The LunarG Linux SDK's prebuilt glslc would be quicker but
# needs glibc 2.35 (it is built on Ubuntu 22.04); this image has 2.28, which the wheel tag promises.
# On Debian 12 / Ubuntu use the packages instead: apt-get install libvulkan-dev glslc spirv-headers.
# Usage: wheels/plugin/vulkan_toolchain.sh DEST       (about 10 min on 4 cores; reused if DEST/ready)
set -euo pipefail
dest="$(mkdir -p "$1" && cd "$1" && pwd)"
[ -f "$dest/ready" ] && { echo "$dest"; exit 0; }
# shaderc v2026.3; its DEPS file pins glslang, SPIRV-Tools and SPIRV-Headers by commit.
tag=v2026.3
commit=2c8cae778eec0283b44acbe7ed1a386865d78799
dnf install -y -q vulkan-loader-devel mesa-vulkan-drivers >&2
headers_commit=952f776f6573aafbb62ea717d871cd1d6816c387  # Vulkan-Headers v1.4.309 (Debian 13's)
rm -rf "$dest/src/Vulkan-Headers"
git clone --quiet --depth 1 --branch v1.4.309 https://github.com/KhronosGroup/Vulkan-Headers "$dest/src/Vulkan-Headers"
[ "$(git -C "$dest/src/Vulkan-Headers" rev-parse HEAD)" = "$headers_commit" ] || { echo "Vulkan-Headers v1.4.309 moved" >&2; exit 1; }
cmake -S "$dest/src/Vulkan-Headers" -B "$dest/build-vulkan-headers" -DCMAKE_INSTALL_PREFIX="$dest" >&2
cmake --install "$dest/build-vulkan-headers" >&2
src="$dest/src/shaderc"
rm -rf "$src"
git clone --quiet --depth 1 --branch "$tag" https://github.com/google/shaderc "$src"
[ "$(git -C "$src" rev-parse HEAD)" = "$commit" ] || { echo "shaderc $tag is not $commit" >&2; exit 1; }
python3 "$src/utils/git-sync-deps" >&2
cmake -S "$src" -B "$dest/build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$dest" \
  -DSHADERC_SKIP_TESTS=ON -DSHADERC_SKIP_EXAMPLES=ON -DSHADERC_SKIP_COPYRIGHT_CHECK=ON >&2
cmake --build "$dest/build" --target glslc_exe -j"$(nproc)" >&2
install -D "$dest/build/glslc/glslc" "$dest/bin/glslc"
cmake -S "$src/third_party/spirv-headers" -B "$dest/build-headers" -DCMAKE_INSTALL_PREFIX="$dest" >&2
cmake --install "$dest/build-headers" >&2
touch "$dest/ready"
echo "$dest"
