"""datafree: a data-free knowledge distillation benchmark (see docs/ARCHITECTURE.md)."""
