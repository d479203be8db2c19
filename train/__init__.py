"""Training: turn teacher-labelled records into a judge artifact (see `train.distill.distill`)."""
