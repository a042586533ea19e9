"""Server side: training, evaluation and (later) export to edge bundles. Needs the [export] extra."""
