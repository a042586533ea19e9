"""Model updates in the field: the versioned model store with atomic switch and rollback
(:mod:`.store`), bundle signatures (:mod:`.signing`), the inbox folder (:mod:`.inbox`) and the boot
counter that condemns a version that keeps killing the daemon (:mod:`.boot_guard`)."""
