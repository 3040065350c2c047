"""aup-tui's terminal UI and command line; the engine lives in `aup_tui_backends`."""
