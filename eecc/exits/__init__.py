"""Exits: head design (heads), training every candidate head on cached features (run), ensemble weights."""
