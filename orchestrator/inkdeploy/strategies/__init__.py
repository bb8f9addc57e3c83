"""Rollout strategies: each turns (fleet, policy, version) into Steps. Pure."""
