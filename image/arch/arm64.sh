# image/build's arm64 part (IMAGE_ARCH=arm64), sourced: a Raspberry Pi 4 (image/README.md,
# "Raspberry Pi 4 (arm64)"). The Pi's firmware on an MBR FAT partition starts Debian's
# U-Boot (u-boot-rpi, rpi_arm64), whose boot script picks the root slot (RAUC's uboot
# backend: BOOT_ORDER, BOOT_<slot>_LEFT in uboot.env on that partition). Built on any
# host: what runs inside the arm64 root runs under qemu-user (binfmt_misc).
compatible=edgeloop-arm64
wheel_machine=aarch64
default_out=$repo/build/image-arm64
# The cache's .debs and wheels apart from amd64's.
cache_suffix=-arm64
# Under emulation mmdebstrap and the chroot's pip take minutes of both cores: at the
# lowest priority, so whatever else runs on the build machine keeps its share.
slow=(nice -n 19)
# raspi-firmware (start4.elf, fixup4.dat) is in non-free-firmware. Under emulation one
# mkinitramfs takes minutes, and the kernel, initramfs-tools and each package with an
# initramfs hook would run it again: update-initramfs is a no-op while packages are
# installed, and runs once at the end.
mmdebstrap_arch=(
    --architectures=arm64 --components="main non-free-firmware"
    --essential-hook='chroot "$1" dpkg-divert --quiet --local --rename --divert /usr/sbin/update-initramfs.real --add /usr/sbin/update-initramfs && ln -s /bin/true "$1/usr/sbin/update-initramfs"'
    --customize-hook='rm "$1/usr/sbin/update-initramfs" && chroot "$1" dpkg-divert --quiet --local --rename --remove /usr/sbin/update-initramfs && chroot "$1" update-initramfs -c -k all'
)

kernel=linux-image-arm64
if [ "$rt_kernel" = 1 ]; then kernel=linux-image-rt-arm64; fi
# As on amd64, without GRUB (U-Boot boots) and qemu-guest-agent (no VM boots this
# image); libubootenv-tool: fw_printenv/fw_setenv, through which RAUC's uboot backend
# reads and writes uboot.env (/etc/fw_env.config).
packages=(
    systemd systemd-sysv udev dbus kmod "$kernel" initramfs-tools
    python3 python3-venv
    rauc rauc-service libubootenv-tool e2fsprogs dosfstools fdisk cloud-guest-utils
    util-linux iproute2 procps openssl can-utils
)
# Only for the boot partition's files, copied out by arch_prepare and purged from the
# root by image/customize: the firmware is not updated by a bundle (it is not in a slot).
build_packages=(raspi-firmware u-boot-rpi)
# gpio-sim.ko is the amd64 boot test's e-stop button; no test boots this image.
gpio_sim=0

# The Pi 4's mini UART on GPIO 14/15 is ttyS1 with Debian's kernel and device tree;
# the last console= gets the boot messages.
console="console=tty0 console=ttyS1,115200"

# The boot partition: the firmware's (label FIRMWARE, /boot/firmware as Debian's
# raspi-firmware has it).
boot_label=FIRMWARE
boot_mount=/boot/firmware
boot_mb=128
# MBR: every Pi 4 boot ROM reads it (GPT needs a 2020 or later EEPROM). Its disk
# identifier names the partitions: PARTUUID=<id>-02 is root A on every device, from an
# SD card or a USB disk alike.
disk_id=0x6a0e1a4e

# binfmt_misc's interpreter for arm64 binaries, when it is looked up in the chroot (no F
# flag, as Debian's binfmt-support registers qemu-user-static): copied in for
# image/customize's chroot and taken out again. mmdebstrap does the same for itself.
emulator=
binfmt=/proc/sys/fs/binfmt_misc/qemu-aarch64
if [ "$(uname -m)" != aarch64 ]; then
    # Where systemd does not automount binfmt_misc (a container, a VM without systemd as
    # PID 1) the kernel has it but nobody mounted it, and binfmt-support registered
    # nothing: the build does both (it runs as root anyway).
    if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null || true
    fi
    if [ ! -e "$binfmt" ] && command -v update-binfmts >/dev/null; then
        update-binfmts --enable qemu-aarch64 2>/dev/null || true
    fi
    if [ ! -e "$binfmt" ]; then
        echo "image/build: arm64 binaries cannot run here: install qemu-user-static and" \
            "binfmt-support (make deps), and mount binfmt_misc if it is not:" \
            "mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc" >&2
        exit 1
    fi
    grep -q '^flags:.*F' "$binfmt" || emulator=$(sed -n 's/^interpreter //p' "$binfmt")
fi

arch_prepare() {  # arch_prepare ROOTFS: the emulator in; the boot partition's files out
    local root=$1 version dtbs
    [ -z "$emulator" ] || install -D -m 0755 "$(readlink -f "$emulator")" "$root$emulator"
    firmware=$work/firmware
    mkdir -p "$firmware"
    # The Pi 4's GPU firmware (start4.elf and its variants for start_x / gpu_mem sizes).
    cp "$root"/usr/lib/raspi-firmware/start4*.elf "$root"/usr/lib/raspi-firmware/fixup4*.dat "$firmware/"
    cp "$root/usr/lib/u-boot/rpi_arm64/u-boot.bin" "$firmware/"
    # The firmware loads the board's device tree (bcm2711-rpi-4-b.dtb, -400, -cm4) by
    # name and hands it to U-Boot, which passes it on (boot.cmd: fdt_addr): the kernel's
    # own, from the image's kernel package.
    version=$(basename "$(ls -d "$root"/lib/modules/*/ | head -1)")
    dtbs=("$root/usr/lib/linux-image-$version/broadcom"/bcm2711-*.dtb)
    [ -e "${dtbs[0]}" ] || { echo "image/build: no bcm2711 device tree in $version" >&2; exit 1; }
    cp "${dtbs[@]}" "$firmware/"
}

arch_finish() {  # arch_finish ROOTFS: the kernel and initrd at fixed names; the emulator out
    local root=$1 version
    [ -z "$emulator" ] || { rm -f "$root$emulator"; rmdir --ignore-fail-on-non-empty "$root$(dirname "$emulator")"; }
    # raspi-firmware's kernel hook copied the kernel, initrd and device trees there for
    # a firmware that boots Linux itself: here U-Boot loads them from the slot, and the
    # firmware partition is mounted over this directory.
    rm -rf "${root:?}$boot_mount"
    mkdir -p "$root$boot_mount"
    version=$(basename "$(ls -d "$root"/lib/modules/*/ | head -1)")
    # Debian's arm64 vmlinuz is the uncompressed Image (with its EFI stub), what booti
    # takes (its header says "ARMd" at 0x38). Hard links, no symlinks, at fixed names:
    # what U-Boot reads from ext4.
    if [ "$(dd if="$root/boot/vmlinuz-$version" bs=1 skip=56 count=4 status=none)" != ARMd ]; then
        echo "image/build: vmlinuz-$version is not an uncompressed arm64 Image" >&2
        exit 1
    fi
    ln -f "$root/boot/vmlinuz-$version" "$root/boot/Image"
    ln -f "$root/boot/initrd.img-$version" "$root/boot/initrd"
}

arch_boot_partition() {  # arch_boot_partition OUT.vfat: firmware, U-Boot, boot.scr
    sed -e "s|@CMDLINE@|$cmdline|" -e "s|@DISK_ID@|${disk_id#0x}|g" \
        "$here/arch/arm64/boot.cmd" > "$work/boot.cmd"
    mkimage -A arm64 -O linux -T script -C none -n "edgeloop slot A/B" \
        -d "$work/boot.cmd" "$firmware/boot.scr" >/dev/null
    cp "$here/arch/arm64/config.txt" "$firmware/config.txt"
    rm -f "$1"
    # FAT32: the size (128 MiB) is above what FAT16 serves well, and the firmware reads both.
    mkfs.vfat -F 32 -n "$boot_label" -C "$1" $(( boot_mb * 1024 )) >/dev/null
    mcopy -i "$1" "$firmware"/* ::/
}

disk_layout="MBR, firmware + root A + root B + data"
arch_partition_table() {  # sfdisk's input for the disk
    cat <<TABLE
label: dos
label-id: $disk_id
start=1MiB, size=${boot_mb}MiB, type=c, bootable
size=${slot_mb}MiB, type=83
size=${slot_mb}MiB, type=83
size=${data_mb}MiB, type=83
TABLE
}
