"""Training: turn teacher-labelled records into a judge artifact (see `judge.training.distill.distill`)."""
