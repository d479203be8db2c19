"""Student backends: each implements `Judge._logits_batch` for one kind of artifact."""
