#!/usr/bin/env bash
# Debian 12's Vulkan build tools are too old for this llama.cpp: its glslc
# (2023.2) lacks GL_KHR_cooperative_matrix and its Vulkan headers (1.3.239)
# lack VK_EXT_layer_settings. This puts Debian 13's glslc (with the glibc and
# libstdc++ it needs), Vulkan headers and SPIRV-Headers in a private folder,
# changing no system packages, and prints the build command that uses them.
#
#   bash scripts/debian12-vulkan-tools.sh [DEST]   (default ~/.cache/multimodal-lm/vulkan-tools-debian13)
#
# Still install Debian 12's libvulkan-dev (the loader library) and a driver
# (mesa-vulkan-drivers) with apt-get.
set -euo pipefail
dest=$(realpath -m "${1:-$HOME/.cache/multimodal-lm/vulkan-tools-debian13}")
arch=$(dpkg --print-architecture)
triplet=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo "$(uname -m)-linux-gnu")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

mkdir -p "$work/lists/partial" "$work/cache/archives/partial"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" >"$work/sources.list"
apt_opts=(-o Dir::Etc::SourceList="$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
  -o Dir::State::Lists="$work/lists" -o Dir::Cache="$work/cache" -o APT::Architecture="$arch"
  -o Debug::NoLocking=1 -o APT::Sandbox::User=root)
apt-get "${apt_opts[@]}" update -qq
(cd "$work" && apt-get "${apt_opts[@]}" download -qq glslc libshaderc1 libc6 libstdc++6 libgcc-s1 libvulkan-dev spirv-headers)

rm -rf "$dest"
mkdir -p "$dest/root"
for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$dest/root"; done
lib="$dest/root/usr/lib/$triplet"
loader=$(find "$lib" -maxdepth 1 -name 'ld-linux*.so.*' | head -n1)
[ -n "$loader" ] || { echo "no dynamic loader found in $lib" >&2; exit 1; }
cat >"$dest/glslc" <<WRAPPER
#!/bin/sh
exec "$loader" --library-path "$lib" "$dest/root/usr/bin/glslc" "\$@"
WRAPPER
chmod +x "$dest/glslc"
# Only the headers are used; the system's libvulkan.so.1 stays the loader.
rm -f "$lib"/libvulkan.so*

args="-DVulkan_GLSLC_EXECUTABLE=$dest/glslc -DVulkan_INCLUDE_DIR=$dest/root/usr/include -DSPIRV-Headers_DIR=$dest/root/usr/share/cmake/SPIRV-Headers"
echo "$args" >"$dest/cmake-args"
"$dest/glslc" --version | head -n1
grep -m1 "define VK_HEADER_VERSION " "$dest/root/usr/include/vulkan/vulkan_core.h"
echo
echo "Build and check the Vulkan variant with them:"
echo "  MULTIMODAL_LM_CMAKE_ARGS=\"\$(cat $dest/cmake-args)\" npm run check:vulkan"
