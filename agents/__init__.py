"""Personas and the agents that answer for them."""
