"""Training: the rectified-flow objective, TREAD routing, REPA alignment, the loop and checkpoints."""
