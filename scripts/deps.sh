# Sourced by the scripts: makes sure the Swift toolchain and the Debian packages kevd needs are present,
# installing only what is missing (apt-get needs root, or sudo).

# Debian packages the build and tests need: libudev for the udev source, libsystemd for systemd integration,
# pkg-config to find them, iproute2 for the udev tests' private network namespaces, tzdata for cron tests,
# systemd for systemd-socket-activate (the socket-activation test; systemd need not be running), libnats-dev
# for [[forward]] to NATS JetStream, nats-server for the forwarding tests (they start their own on loopback),
# libtomlplusplus-dev for the TOML parser (toml++'s headers, compiled into kevd and kevctl: nothing at run time),
# python3-fusepy and fuse3 for the failed-sync tests' fault-injecting file system (scripts/faultfs.py).
KEVD_DEBIAN_PACKAGES=(libudev-dev libsystemd-dev pkg-config iproute2 tzdata systemd libnats-dev nats-server libtomlplusplus-dev python3-fusepy fuse3)

# The test bed (scripts/vmtest) also needs: dpkg-dev and debhelper to build the package, lintian to check it,
# mmdebstrap to build the Debian 12 image from this machine's apt sources, e2fsprogs for mkfs.ext4 -d,
# qemu-system-x86 to boot it, python3 for the host side of the scenarios, gcc and libc6-dev for the input
# scenario's static uinput emitter (Tests/VM/guest/uinput-emit.c; the guest has no compiler).
KEVD_VMTEST_PACKAGES=(dpkg-dev debhelper lintian mmdebstrap e2fsprogs qemu-system-x86 python3 gcc libc6-dev)

kevd_find_swift() {
    if command -v swift >/dev/null 2>&1; then return 0; fi
    if [ -x /opt/swift/usr/bin/swift ]; then
        export PATH="/opt/swift/usr/bin:$PATH"
        return 0
    fi
    echo "kevd: no Swift toolchain found. Install Swift 6.0 or newer (https://www.swift.org/install/linux/)" >&2
    echo "      and put its usr/bin on PATH (this project's machines have it at /opt/swift)." >&2
    return 1
}

kevd_install_packages() {
    local missing=()
    for package in "$@"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "kevd: installing Debian packages: ${missing[*]}" >&2
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || { echo "kevd: run as root or install sudo to install: ${missing[*]}" >&2; return 1; }
        sudo=(sudo)
    fi
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
}

kevd_prepare() {
    kevd_find_swift
    kevd_install_packages "${KEVD_DEBIAN_PACKAGES[@]}" "$@"
}
