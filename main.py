from sentinel_cli import main

raise SystemExit(main())
