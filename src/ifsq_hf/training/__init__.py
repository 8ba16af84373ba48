"""What the three training scripts share: losses, REPA, flow matching, EMA, checkpointing, logging."""
