"""Inference backends behind one small interface (load, predict, describe)."""
