from medlib.cli import main

raise SystemExit(main())
