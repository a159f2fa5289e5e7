"""Forward models, one class per modality, over a shared interface (:mod:`.base`)."""
