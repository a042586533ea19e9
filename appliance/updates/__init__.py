"""Model updates in the field: the versioned model store with atomic switch and rollback
(:mod:`.store`), one install's staged steps (:mod:`.install`), whether this appliance can run a bundle
(:mod:`.compatibility`), the update log (:mod:`.update_log`), versions marked bad
(:mod:`.bad_versions`), bundle signatures (:mod:`.signing`), the inbox folder (:mod:`.inbox`) and the
boot counter that condemns a version that keeps killing the daemon (:mod:`.boot_guard`)."""
