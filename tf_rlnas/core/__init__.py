"""Plumbing shared by every algorithm: seeding, logging, checkpoints, export, the trainer loop."""
