"""The NF4 data type and a dense layer whose frozen base weight is stored in NF4 next to a LoRA adapter (QLoRA)."""
