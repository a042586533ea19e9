"""Tracking: people across frames, so each worker's skeletons form one track (:mod:`.tracker`)."""
