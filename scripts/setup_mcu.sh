#!/usr/bin/env bash
# Install the microcontroller toolchain that the mcu:<board> targets build and
# test with: the GNU Arm Embedded compiler, newlib (with rdimon semihosting)
# and QEMU's Arm system emulator (Debian packages). Quick when already present.
# Needs root or passwordless sudo; exits non-zero with one line otherwise.
set -euo pipefail
need=()
command -v arm-none-eabi-gcc >/dev/null 2>&1 || need+=(gcc-arm-none-eabi)
command -v arm-none-eabi-size >/dev/null 2>&1 || need+=(binutils-arm-none-eabi)
# newlib's semihosting specs file (rdimon) ships in libnewlib-arm-none-eabi
[ -f /usr/lib/arm-none-eabi/newlib/rdimon.specs ] || need+=(libnewlib-arm-none-eabi)
command -v qemu-system-arm >/dev/null 2>&1 || need+=(qemu-system-arm)
if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
    sudo=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
else
    echo "setup_mcu: need root or passwordless sudo to install: ${need[*]}" >&2
    exit 1
fi
echo "installing the MCU toolchain (${need[*]}) ..." >&2
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
if ! { "${sudo[@]}" apt-get update && \
       "${sudo[@]}" apt-get install -y --no-install-recommends "${need[@]}"; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "setup_mcu: apt-get install failed: ${need[*]}" >&2
    exit 1
fi
rm -f "$log"
echo "installed the MCU toolchain" >&2
