"""The service: the daemon that composes everything (:mod:`.daemon`), one camera's pipeline after pose
(:mod:`.pipeline`), systemd notify/watchdog and logging (:mod:`.systemd`), start-up checks
(:mod:`.preflight`), credentials, the installer and the bundled demo."""
