from wise_gui.entry import main

raise SystemExit(main())
