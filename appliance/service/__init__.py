"""The service: the daemon that composes everything (:mod:`.daemon`) from one job per module: the
camera supervisor (:mod:`.camera_worker`), the model manager (:mod:`.model_manager`), the status
builder (:mod:`.status`) and the command handler (:mod:`.command_handler`); one camera's pipeline
after pose (:mod:`.pipeline`); systemd notify/watchdog and logging (:mod:`.systemd`); start-up checks
(:mod:`.preflight`), credentials, the installer and the bundled demo."""
