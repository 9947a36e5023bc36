# U-Boot's boot script (boot.scr on the firmware partition; image/arch/arm64/boot.cmd,
# made by image/build with mkimage): picks root slot A or B the way RAUC's uboot backend
# expects. uboot.env (the same partition) holds BOOT_ORDER (RAUC puts a newly
# installed slot first) and BOOT_<slot>_LEFT, the boots a slot has left: each boot
# takes one, `rauc status mark-good` (edgeloop READY) gives all 3 back, mark-bad sets 0.
# A slot whose boots keep failing before READY runs out and the next in BOOT_ORDER
# boots: the fallback. The kernel, initrd and modules come from the slot itself.
# The first boot (no uboot.env yet): slot A only. B is empty until an update installs
# it (RAUC then sets BOOT_ORDER="B A", BOOT_B_LEFT=3).
test -n "${BOOT_ORDER}" || setenv BOOT_ORDER "A"
test -n "${BOOT_A_LEFT}" || setenv BOOT_A_LEFT 3
test -n "${BOOT_B_LEFT}" || setenv BOOT_B_LEFT 0

setenv slot
setenv part
for BOOT_SLOT in "${BOOT_ORDER}"; do
    if test -n "${slot}"; then
        # the first slot with boots left is taken
    elif test "${BOOT_SLOT}" = "A"; then
        if test ${BOOT_A_LEFT} -gt 0; then
            # setexpr counts in hex: the same digits for 0 to 3.
            setexpr BOOT_A_LEFT ${BOOT_A_LEFT} - 1
            setenv slot A
            setenv part 2
        fi
    elif test "${BOOT_SLOT}" = "B"; then
        if test ${BOOT_B_LEFT} -gt 0; then
            setexpr BOOT_B_LEFT ${BOOT_B_LEFT} - 1
            setenv slot B
            setenv part 3
        fi
    fi
done

if test -z "${slot}"; then
    # Every slot in BOOT_ORDER used up its boots (each failed: a site config both
    # reject, say): start over rather than stop at U-Boot's prompt. A slot marked bad
    # is out of BOOT_ORDER and stays out.
    echo "edgeloop: no root slot has boots left: giving them 3 again"
    test -n "${BOOT_ORDER}" || setenv BOOT_ORDER "A"
    setenv BOOT_A_LEFT 3
    setenv BOOT_B_LEFT 3
    saveenv
    reset
fi
# Written before the kernel is even loaded: a boot that hangs has used its attempt.
saveenv
echo "edgeloop: booting slot ${slot} (${BOOT_A_LEFT} boots left on A, ${BOOT_B_LEFT} on B)"

# Addresses of our own: Debian's kernel (a 33 MiB Image, more with its BSS) and initrd
# do not fit between U-Boot's default kernel_addr_r and ramdisk_addr_r, and the kernel
# would overwrite this script (scriptaddr, 0x02400000) as it runs. Above the script:
# the device tree, the kernel (2 MiB aligned), the initrd; far below U-Boot at the top
# of the first GiB.
setenv fdt_addr_r 0x03000000
setenv kernel_addr_r 0x04000000
setenv ramdisk_addr_r 0x08000000
setenv bootargs "root=PARTUUID=@DISK_ID@-0${part} rauc.slot=${slot} @CMDLINE@"
# The device's machine id, kept since its first boot (edgeloop-machine-id.service).
if test -n "${MACHINE_ID}"; then setenv bootargs "${bootargs} systemd.machine_id=${MACHINE_ID}"; fi
# fdt_addr: the device tree the firmware loaded and completed (memory, MAC address).
# Without one, U-Boot's own (fdtcontroladdr), on a Pi also the firmware's. Copied to
# fdt_addr_r first: the firmware (or QEMU, at 0x08000000) may have put it where the
# kernel or the initrd go; with room for what booti adds (bootargs, the initrd).
setenv fdt ${fdtcontroladdr}
if test -n "${fdt_addr}" && fdt addr -q ${fdt_addr}; then
    setenv fdt ${fdt_addr}
fi
fdt move ${fdt} ${fdt_addr_r} 0x40000
# devtype and devnum: the device distro boot found this script on (the SD card, or a
# USB disk).
load ${devtype} ${devnum}:${part} ${kernel_addr_r} /boot/Image
load ${devtype} ${devnum}:${part} ${ramdisk_addr_r} /boot/initrd
booti ${kernel_addr_r} ${ramdisk_addr_r}:${filesize} ${fdt_addr_r}
echo "edgeloop: slot ${slot} did not boot; resetting"
reset
