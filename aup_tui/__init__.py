"""aup-tui's terminal UI and command line; the engine lives in `backends`."""
