# image/build's amd64 part (IMAGE_ARCH=amd64, the default), sourced: an industrial PC
# or a VM booting by UEFI. GRUB on a GPT ESP picks the root slot (image/grub.cfg, RAUC's
# grub backend); gpio-sim.ko is built for the boot test (image/build-gpio-sim).
compatible=edgeloop-amd64
wheel_machine=x86_64
default_out=$repo/build/image
# The cache's .debs and wheels: amd64's, in the directories it always had.
cache_suffix=
# Nothing emulated here: the steps run at normal priority.
slow=()
mmdebstrap_arch=()

kernel=linux-image-amd64
headers=linux-headers-amd64
if [ "$rt_kernel" = 1 ]; then kernel=linux-image-rt-amd64; headers=linux-headers-rt-amd64; fi
# Debian's packages only. rauc-service and dbus: the rauc command talks to the rauc
# service over D-Bus (mark-good and install both go through it).
# qemu-guest-agent: idle on hardware (started only when a VM's agent port exists); the
# boot test (tests/image) checks the guest through it.
packages=(
    systemd systemd-sysv udev dbus kmod "$kernel" initramfs-tools
    python3 python3-venv
    rauc rauc-service grub-common e2fsprogs dosfstools fdisk cloud-guest-utils util-linux
    iproute2 procps openssl qemu-guest-agent can-utils
)
# Only for building gpio-sim.ko against the image's own kernel (Debian's kernels do
# not enable it): removed again by image/customize, so not on the device.
build_packages=("$headers" linux-source-6.1 gcc make xz-utils)
gpio_sim=1

console="console=tty0 console=ttyS0,115200"

# The boot partition: the EFI system partition (label EFI, /boot/efi).
boot_label=EFI
boot_mount=/boot/efi
boot_mb=64
# Fixed partition UUIDs: grub.cfg boots root=PARTUUID=, the same on every device.
uuid_a=6a0e1a4e-5e0b-4a0a-9b1e-0000000000a1
uuid_b=6a0e1a4e-5e0b-4a0a-9b1e-0000000000b1

arch_prepare() {  # arch_prepare ROOTFS: before image/customize; nothing on amd64
    :
}

arch_finish() {  # arch_finish ROOTFS: after image/customize; nothing on amd64
    :
}

arch_boot_partition() {  # arch_boot_partition OUT.vfat: GRUB, grub.cfg, grubenv
    local grub_cfg=$work/grub.cfg
    sed -e "s|@CMDLINE@|$cmdline|" -e "s|@UUID_A@|$uuid_a|" -e "s|@UUID_B@|$uuid_b|" \
        "$here/grub.cfg" > "$grub_cfg"
    grub-mkimage -O x86_64-efi -p /EFI/BOOT -o "$work/BOOTX64.EFI" \
        part_gpt fat ext2 normal linux loadenv test regexp echo configfile serial terminal \
        all_video efi_gop gzio sleep reboot
    grub-editenv "$work/grubenv" create
    grub-editenv "$work/grubenv" set ORDER="A B" A_OK=1 A_TRY=0 B_OK=0 B_TRY=0
    rm -f "$1"
    mkfs.vfat -n "$boot_label" -C "$1" $(( boot_mb * 1024 )) >/dev/null
    mmd -i "$1" ::/EFI ::/EFI/BOOT
    mcopy -i "$1" "$work/BOOTX64.EFI" "$grub_cfg" "$work/grubenv" ::/EFI/BOOT/
}

disk_layout="GPT, EFI + rootfs-a + rootfs-b + data"
arch_partition_table() {  # sfdisk's input for the disk
    cat <<TABLE
label: gpt
start=1MiB, size=${boot_mb}MiB, type=uefi, name=esp
size=${slot_mb}MiB, type=4f68bce3-e8cd-4db1-96e7-fbcaf984b709, uuid=$uuid_a, name=rootfs-a
size=${slot_mb}MiB, type=4f68bce3-e8cd-4db1-96e7-fbcaf984b709, uuid=$uuid_b, name=rootfs-b
size=${data_mb}MiB, type=linux, name=data
TABLE
}
