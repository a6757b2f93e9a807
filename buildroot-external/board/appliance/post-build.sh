#!/bin/sh
# Buildroot post-build: finish the read-only root ($1 = TARGET_DIR).
#  - the root is squashfs and /var is the data partition (rootfs/etc/fstab); Buildroot's
#    tmpfs-for-/var arrangement is not used (BR2_INIT_SYSTEMD_VAR_NONE)
#  - an empty machine-id: systemd makes a transient one per boot on the read-only root
#  - the ESP mount point and the kernel kept in /boot, so a slot image carries its kernel
set -eu
TARGET_DIR=$1
: >"$TARGET_DIR/etc/machine-id"
mkdir -p "$TARGET_DIR/efi" "$TARGET_DIR/var"
echo appliance >"$TARGET_DIR/etc/hostname"
# networkd/resolved/timesyncd are enabled by Buildroot's systemd package; the appliance
# units are enabled by the symlinks in the rootfs overlay.
ln -sf ../run/systemd/resolve/stub-resolv.conf "$TARGET_DIR/etc/resolv.conf"
