"""Widgets of the aup-tui app."""
