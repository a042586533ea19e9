"""Features: what models read from a track. Neck-centred binary skeleton maps (:mod:`.skeleton_map`,
the paper's input), T-frame windows (:mod:`.window`), and body-graph posture and motion features
(:mod:`.motion`)."""
