################################################################################
#
# appliance
#
################################################################################

# Prebuilt: the static musl binary comes from the project's scripts/build-static, so
# there is nothing to download or compile here.
APPLIANCE_VERSION = $(shell sed -n 's/^version = "\(.*\)"/\1/p' $(BR2_EXTERNAL_APPLIANCE_PATH)/../Cargo.toml | head -1)
APPLIANCE_SOURCE =
APPLIANCE_LICENSE = Proprietary
APPLIANCE_BINARY = $(call qstrip,$(BR2_PACKAGE_APPLIANCE_BINARY))

define APPLIANCE_USERS
	appliance 990 appliance 990 * /var/lib/appliance - - Provisioning appliance
endef

define APPLIANCE_INSTALL_TARGET_CMDS
	test -x $(APPLIANCE_BINARY) || { \
		echo "appliance: $(APPLIANCE_BINARY) missing: run scripts/build-static"; exit 1; }
	$(INSTALL) -D -m 0755 $(APPLIANCE_BINARY) $(TARGET_DIR)/usr/bin/appliance
endef

# The units, sysusers/tmpfiles/repart files and the default site settings come with the
# rootfs overlay (the project's rootfs/); enablement symlinks are part of it.
define APPLIANCE_INSTALL_INIT_SYSTEMD
	test -f $(TARGET_DIR)/usr/lib/systemd/system/appliance.service || \
		$(INSTALL) -D -m 0644 $(BR2_EXTERNAL_APPLIANCE_PATH)/../rootfs/usr/lib/systemd/system/appliance.service \
			$(TARGET_DIR)/usr/lib/systemd/system/appliance.service
endef

$(eval $(generic-package))
