"""Heartbeats: presence, the latest report on the client, and its history."""
