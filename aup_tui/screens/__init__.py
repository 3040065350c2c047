"""Screens of the aup-tui app."""
