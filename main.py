from sentinel_core.cli import main

raise SystemExit(main())
