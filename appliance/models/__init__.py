"""Models: signed bundles (:mod:`.bundle`), inference runtimes (:mod:`.runtimes`), one module per model
kind (:mod:`.lstm_vae`, :mod:`.posture_motion`, :mod:`.fused`) and the registry that is the only place
that tells kinds apart (:mod:`.registry`); site models learned on the device (:mod:`.site`,
:mod:`.posture_motion_fit`); whole-sequence scoring for ``appliance score`` (:mod:`.sequence`)."""
