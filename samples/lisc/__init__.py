"""The lisc sample."""
