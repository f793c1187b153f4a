"""Rollouts: the canary step machine, its analysis of runtime windows, and A/B statistics."""
