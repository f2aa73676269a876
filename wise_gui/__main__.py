from wise_gui.cli import main

raise SystemExit(main())
