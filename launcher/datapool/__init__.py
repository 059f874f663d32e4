"""Datapool stores and the sync engine."""
