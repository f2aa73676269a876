"""Entry point of the PyInstaller bundle: the same `wise-gui` command line as the installed script."""

from wise_gui.entry import main

if __name__ == "__main__":
    raise SystemExit(main())
