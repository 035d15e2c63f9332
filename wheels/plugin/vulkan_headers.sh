#!/usr/bin/env bash
# Vulkan headers new enough for the pinned llama.cpp, on Debian 12 (bookworm) without changing the
# system: prints an include directory for -DVulkan_INCLUDE_DIR=.
#
# Why: ggml-vulkan.cpp (ggml_vk_instance_init) uses VK_EXT_layer_settings (vk::LayerSettingEXT,
# vk::LayerSettingsCreateInfoEXT), first in Vulkan-Headers 1.3.272; bookworm's libvulkan-dev is
# 1.3.239, so the build stops there (its glslc 2023.2 compiles every shader; it just lacks the
# coopmat / integer-dot / bf16 extensions, whose shader variants upstream then leaves out).
# The headers are header-only and the loader resolves functions at run time, so the headers of
# Debian 13's libvulkan-dev (1.4.309) with bookworm's loader are enough. They are fetched with apt
# under a private state folder (its own sources list and lists; the system's apt state and
# installed packages are untouched), checked against the hash below and unpacked (dpkg-deb -x).
# Elsewhere, a Vulkan SDK or Vulkan-Headers >= 1.3.272 does the same.
# Usage: wheels/plugin/vulkan_headers.sh DEST       (prints DEST/usr/include)
set -euo pipefail
dest="$(mkdir -p "$1" && cd "$1" && pwd)"
version=1.4.309.0-1
sha256=8d329d465e16168afff58b1bd0dd6db46aac2cc3f56054a481b25a04e90b345a
if [ ! -f "$dest/usr/include/vulkan/vulkan_core.h" ]; then
  state="$dest/apt"
  mkdir -p "$state/lists/partial" "$state/cache/archives/partial"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" \
    > "$state/sources.list"
  opts=(-o "Dir::Etc::sourcelist=$state/sources.list" -o Dir::Etc::sourceparts=/nonexistent
        -o "Dir::State::Lists=$state/lists" -o "Dir::Cache=$state/cache" -o APT::Sandbox::User=root)
  apt-get "${opts[@]}" -q update >&2
  (cd "$state" && apt-get "${opts[@]}" -q download "libvulkan-dev=$version" >&2)
  deb="$(ls "$state"/libvulkan-dev_*.deb)"
  echo "$sha256  $deb" | sha256sum -c - >&2
  dpkg-deb -x "$deb" "$dest"
fi
grep -q VK_EXT_layer_settings "$dest/usr/include/vulkan/vulkan_core.h"
echo "$dest/usr/include"
