#!/bin/sh
# Buildroot post-image: lay out the ESP (systemd-boot with boot counting, a kernel per
# slot, loader entries, the operator's appliance.conf) and assemble the GPT disk
# (esp | root-a | root-b | data) with genimage from genimage.cfg.in.
# Called as: post-image.sh BINARIES_DIR (Buildroot passes it as $1).
set -eu
BOARD_DIR=$(cd "$(dirname "$0")" && pwd)
BINARIES_DIR=${1:-$BINARIES_DIR}
EXT=$(cd "$BOARD_DIR/../.." && pwd)

if grep -q '^BR2_aarch64=y' "$BR2_CONFIG"; then
  EFI=aa64 KERNEL=Image ROOT_TYPE=b921b045-1df0-41c3-af44-4c6f280d3fae CONSOLE=ttyAMA0
else
  EFI=x64 KERNEL=bzImage ROOT_TYPE=4f68bce3-e8cd-4db1-96e7-fbcaf984b709 CONSOLE=ttyS0
fi
# The same fixed GUIDs as scripts/build-image: root=PARTUUID= needs no initrd.
ROOTA_GUID=6a9a1c10-0000-4000-8000-00000000000a
ROOTB_GUID=6a9a1c10-0000-4000-8000-00000000000b
CMDLINE="rootfstype=squashfs ro rootwait console=$CONSOLE,115200 console=tty0 quiet"

ESP=$BINARIES_DIR/esp
rm -rf "$ESP"
mkdir -p "$ESP/EFI/BOOT" "$ESP/loader/entries" "$ESP/a" "$ESP/b"
# systemd-boot, installed into efi-part/ by Buildroot's systemd package (BR2_PACKAGE_SYSTEMD_BOOT).
cp "$BINARIES_DIR/efi-part/EFI/BOOT/boot$EFI.efi" "$ESP/EFI/BOOT/BOOT$(echo $EFI | tr a-z A-Z).EFI"
printf 'timeout 0\ndefault appliance-a.conf\neditor no\nconsole-mode keep\n' >"$ESP/loader/loader.conf"
for s in a b; do
  cp "$BINARIES_DIR/$KERNEL" "$ESP/$s/vmlinuz"
  eval guid=\$ROOT$(echo $s | tr a-z A-Z)_GUID
  printf 'title Appliance (slot %s)\nlinux /%s/vmlinuz\noptions root=PARTUUID=%s %s\n' \
    "$s" "$s" "$guid" "$CMDLINE" >"$ESP/loader/entries/appliance-$s.conf"
done
cp "$EXT/../rootfs/usr/share/appliance/appliance.conf" "$ESP/appliance.conf"

sed -e "s/@ROOT_TYPE@/$ROOT_TYPE/" "$BOARD_DIR/genimage.cfg.in" >"$BINARIES_DIR/genimage.cfg"
GENIMAGE_TMP=$BUILD_DIR/genimage.tmp
rm -rf "$GENIMAGE_TMP"
genimage --rootpath "$TARGET_DIR" --tmppath "$GENIMAGE_TMP" --inputpath "$BINARIES_DIR" \
  --outputpath "$BINARIES_DIR" --config "$BINARIES_DIR/genimage.cfg"
echo "appliance image: $BINARIES_DIR/appliance.img"
